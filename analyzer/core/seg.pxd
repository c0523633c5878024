# The segment as the compiled core sees it: one TCP segment, or one ICMP / ICMPv6 error quoting
# a TCP header, decoded into C-level data. The decoder (decode.pyx) fills it; the observer
# (observer.pyx), the endpoint facts (conn.pyx) and Zeek's view (zeekview.pyx) read it.
# Field meanings are those of analyzer.segment.Segment, which documents each one.

from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t

cdef enum:
    F_FIN = 0x01  # sender has finished sending
    F_SYN = 0x02  # synchronise sequence numbers
    F_RST = 0x04  # reset the connection
    F_PSH = 0x08  # push
    F_ACK = 0x10  # acknowledgment field is significant
    F_URG = 0x20  # urgent pointer is significant
    F_ECE = 0x40  # ECN echo
    F_CWR = 0x80  # congestion window reduced

# ICMP kinds, in the order of analyzer.segment.ICMP_KINDS (index 0: not an ICMP error)
cdef enum:
    ICMP_NONE = 0
    ICMP_NET_UNREACH = 1
    ICMP_HOST_UNREACH = 2
    ICMP_PORT_UNREACH = 3
    ICMP_PROTO_UNREACH = 4
    ICMP_ADMIN_PROHIBITED = 5
    ICMP_FRAG_NEEDED = 6
    ICMP_OTHER_UNREACH = 7
    ICMP_TIME_EXCEEDED = 8

# TCP checksum verdicts
cdef enum:
    CSUM_BAD = 0  # checked, wrong
    CSUM_OK = 1  # checked, right
    CSUM_UNKNOWN = 2  # could not be checked (truncated, offloaded, ICMP quote)

ctypedef struct Addr:
    uint8_t b[16]  # IPv6 address, or IPv4 in b[0:4] with b[4:16] zero (ip_version tells)

# Tunnel kinds (Zeek's Tunnel::Type names, analyzer.segment.TUNNEL_KINDS order; 0: none)
cdef enum:
    TUN_NONE = 0
    TUN_IP = 1  # IP in IP: 4in4, 6in4 (proto 41), 4in6, 6in6
    TUN_GRE = 2  # GRE, ERSPAN included, over IP or UDP 4754
    TUN_TEREDO = 3
    TUN_AYIYA = 4
    TUN_VXLAN = 5
    TUN_GENEVE = 6
    TUN_GTPV1 = 7

# The encapsulation a segment arrived in: the innermost tunnel's outer header.
ctypedef struct Tunnel:
    Addr outer_src  # outer IP source
    Addr outer_dst  # outer IP destination
    uint16_t outer_sport  # outer UDP ports (0 for IP-in-IP and GRE over IP)
    uint16_t outer_dport
    uint8_t kind  # TUN_*
    uint8_t outer_version  # 4 or 6
    uint8_t depth  # tunnels around the segment (1: one)

ctypedef struct Seg:
    int64_t frame  # 1-based position in the input, as Wireshark counts
    double ts  # capture timestamp, seconds since the epoch
    Addr src  # source address (of the quoted header, for ICMP errors)
    Addr dst  # destination address
    uint16_t sport  # source port
    uint16_t dport  # destination port
    uint32_t seq  # sequence number
    uint32_t ack  # acknowledgment number (meaningful with F_ACK)
    uint8_t flags  # TCP flag bits
    uint8_t ip_version  # 4 or 6
    uint8_t ttl  # IPv4 TTL or IPv6 hop limit
    uint8_t has_options  # the TCP header carries options (data offset > 5)
    uint16_t window  # raw advertised window (not scaled)
    uint16_t ip_id  # IPv4 identification (0 for IPv6)
    uint32_t payload_len  # TCP payload bytes, from the IP length
    int64_t payload_captured  # payload bytes actually captured; -1 when not known
    uint8_t has_tsopt  # the timestamp option is present (tsval / tsecr meaningful)
    uint32_t tsval  # TCP timestamp option value
    uint32_t tsecr  # TCP timestamp echo reply
    uint8_t checksum  # CSUM_BAD, CSUM_OK or CSUM_UNKNOWN
    uint8_t icmp_kind  # ICMP_NONE, or the kind of ICMP error
    int16_t icmp_type  # raw ICMP type (v4 or v6 numbering), -1 when none
    int16_t icmp_code  # raw ICMP code, -1 when none
    Addr icmp_from  # address that sent the ICMP error
    Tunnel tunnel  # kind TUN_NONE: not tunnelled

cdef inline bint addr_eq(const Addr* a, const Addr* b) noexcept nogil:
    cdef int i
    for i in range(16):
        if a.b[i] != b.b[i]:
            return False
    return True

# Conversion between the Python Segment and Seg (tests, and readers not yet native).
cdef int seg_from_py(object seg, Seg* out) except -1
cdef object seg_to_py(const Seg* s)
cdef object addr_text(const Addr* a, int ip_version)
cdef int addr_parse(str text, Addr* out) except -1
