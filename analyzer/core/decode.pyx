# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The decoder and record walker, the project's only one: a capture (pcap or pcapng,
gzip-compressed or not, file or standard input) -> Segs, with statistics (ReadStats'
fields, analyzer/capture/stats.py), problems (analyzer.errors: DamagedCapture, DamagedFrames) and
notes.

The input is read in large blocks into one reused buffer; records are walked inside it, a partial
record carried over to the next block. Frames are decoded by C functions over (pointer, captured
length) that never read past the captured length. Python objects appear only per block, for
damage and notes (once each), and for pcapng interfaces.

gzip input needs care: a corrupted deflate stream makes zlib throw away what the failing call had
decompressed, so how much is read before the error depends on the read sizes. A gzip file is read
in large blocks; on a zlib error it is reopened and walked again from the start asking the stream
for a record at a time (record header, then record), without handing over again the frames
already given: the records then come out that reading a record at a time gives before the error,
whatever the block size (those the gzip module's failing call had decompressed are lost). gzip on
standard input, which cannot be reopened, is read that way from the start. (Truncation and
the other gzip errors lose nothing, whatever the read sizes.)
"""

from cpython.buffer cimport PyBUF_WRITE
from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_GET_SIZE
from cpython.memoryview cimport PyMemoryView_FromMemory
from libc.stdint cimport int16_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memcmp, memcpy, memmove, memset

from analyzer.core.seg cimport (
    CSUM_BAD,
    CSUM_OK,
    CSUM_UNKNOWN,
    ICMP_ADMIN_PROHIBITED,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    ICMP_NET_UNREACH,
    ICMP_NONE,
    ICMP_OTHER_UNREACH,
    ICMP_PORT_UNREACH,
    ICMP_PROTO_UNREACH,
    ICMP_TIME_EXCEEDED,
    Seg,
    seg_to_py,
)
from analyzer.core.seg cimport (  # tunnels.pxi
    TUN_AYIYA,
    TUN_GENEVE,
    TUN_GRE,
    TUN_GTPV1,
    TUN_IP,
    TUN_NONE,
    TUN_TEREDO,
    TUN_VXLAN,
    Tunnel,
)

import gzip
import io
import os
import sys
import zlib

from analyzer.capture.formats import (
    BOM_BE,
    BOM_LE,
    PCAP_LITTLE,
    PCAP_MAGICS,
    PCAP_NANOS,
    SHB_MAGIC,
    pcap_header,
)
from analyzer.capture.stats import COUNTER_NAMES as _COUNTER_NAMES
from analyzer.capture.stats import STAT_FIELDS as _STAT_FIELDS
from analyzer.capture.stats import ReadStats
from analyzer.errors import DamagedCapture, DamagedFrames, UnreadableCapture

# --- constants ------------------------------------------------------------------------------

cdef enum:
    # link-layer header types (https://www.tcpdump.org/linktypes.html)
    LT_NULL = 0  # BSD loopback: 4-byte address family, writer's byte order
    LT_ETHERNET = 1  # IEEE 802.3 Ethernet
    LT_RAW_BSD = 12  # raw IP on most BSDs
    LT_RAW_OPENBSD = 14  # raw IP on OpenBSD
    LT_RAW = 101  # raw IPv4 or IPv6
    LT_LOOP = 108  # OpenBSD loopback: 4-byte address family, network byte order
    LT_LINUX_SLL = 113  # Linux cooked capture v1
    LT_IPV4 = 228  # raw IPv4
    LT_IPV6 = 229  # raw IPv6
    LT_LINUX_SLL2 = 276  # Linux cooked capture v2
    LT_MASK = 0xFFFF  # the link type is the low 16 bits of the field
    N_LINKS = 0x10001  # link types 0..0xFFFF, plus -1 (a pcapng undescribed interface)

    # ethertypes
    ETH_P_IP = 0x0800  # IPv4
    ETH_P_IPV6 = 0x86DD  # IPv6
    ETH_P_8021Q = 0x8100  # 802.1Q VLAN tag
    ETH_P_8021AD = 0x88A8  # 802.1ad service tag (QinQ outer)
    ETH_P_QINQ_OLD = 0x9100  # pre-standard QinQ outer tag
    ETH_P_MPLS_UC = 0x8847  # MPLS unicast
    ETH_P_MPLS_MC = 0x8848  # MPLS multicast
    ETH_P_PPPOE_SESS = 0x8864  # PPPoE session stage
    ETH_P_FABRICPATH = 0x8903  # Cisco FabricPath
    ETH_MIN_TYPE = 0x0600  # below: an 802.3 length, not an ethertype
    PPP_IP = 0x0021  # PPP protocol: IPv4
    PPP_IPV6 = 0x0057  # PPP protocol: IPv6
    AF_INET = 2  # address family of IPv4 in NULL / LOOP headers
    MAX_NESTING = 16  # VLAN tags / MPLS labels / encapsulations followed per frame

    # IP protocol numbers / IPv6 next headers
    IPPROTO_HOPOPTS = 0  # IPv6 hop-by-hop options
    IPPROTO_ICMP = 1  # ICMPv4
    IPPROTO_TCP = 6  # TCP
    IPPROTO_ROUTING = 43  # IPv6 routing header
    IPPROTO_FRAGMENT = 44  # IPv6 fragment header
    IPPROTO_AH = 51  # authentication header (length in 4-byte units, minus 2)
    IPPROTO_ICMPV6 = 58  # ICMPv6
    IPPROTO_DSTOPTS = 60  # IPv6 destination options
    MAX_EXT_HEADERS = 16  # IPv6 extension headers followed
    RT_TYPE0 = 0  # routing header type 0: addresses, the final one last
    RT_TYPE2 = 2  # mobile IPv6 type 2: one home address
    RT_SRH = 4  # segment routing: segment list[0] is the final segment

    ICMP_UNREACH = 3  # ICMPv4 destination unreachable
    ICMP_TIMXCEED = 11  # ICMPv4 time exceeded
    ICMP6_DST_UNREACH = 1  # ICMPv6 destination unreachable
    ICMP6_PACKET_TOO_BIG = 2  # ICMPv6 packet too big
    ICMP6_TIME_EXCEEDED = 3  # ICMPv6 time exceeded

    TCPOPT_EOL = 0  # end of option list
    TCPOPT_NOP = 1  # padding
    TCPOPT_MSS = 2  # maximum segment size, length 4
    TCPOPT_SACKOK = 4  # SACK permitted, length 2
    TCPOPT_TIMESTAMP = 8  # timestamps, length 10

    # pcap
    PCAP_HEADER_LEN = 24  # global header
    PCAP_RECORD_LEN = 16  # record header: ts_sec ts_frac caplen origlen
    PCAP_MAX_CAPLEN = 256 * 1024  # larger record lengths are corruption (libpcap's bound)

    # pcapng
    BT_SHB = 0x0A0D0D0A  # section header block
    BT_IDB = 0x00000001  # interface description block
    BT_PB = 0x00000002  # packet block (obsolete)
    BT_SPB = 0x00000003  # simple packet block
    BT_EPB = 0x00000006  # enhanced packet block
    NG_MIN_BLOCK = 12  # type + two lengths
    NG_MIN_SHB = 28  # section header: type, length, BOM, version, section length, length
    NG_VERSION_MAJOR = 1  # supported major version
    NG_MAX_BLOCK = 16 * 1024 * 1024  # larger block lengths are corruption
    OPT_ENDOFOPT = 0  # end of options
    OPT_IF_TSRESOL = 9  # timestamp resolution
    OPT_IF_TSOFFSET = 14  # seconds added to timestamps

    BLOCK_SIZE = 4 * 1024 * 1024  # read buffer (grown for a larger record)

# walker results
cdef enum:
    REC = 1  # a record
    NEED = 0  # more bytes needed (self._need from _pos)
    END = -1  # no more records

GZIP_MAGIC = b"\x1f\x8b"  # gzip member header
BUFFER_SIZE = 1 << 16  # read buffer of the file object and of the decompressor's input
STDIN = "-"  # path meaning standard input
_READ_ERRORS = (OSError, EOFError, zlib.error)  # a decompressor or I/O failure mid-file
MAX_EXACT_UNITS = 2 ** 53  # integers up to this convert to double exactly
_GZIP_OPEN_ERRORS = (OSError, EOFError, zlib.error, gzip.BadGzipFile)  # at the first read
UNDESCRIBED = "pcapng packet block refers to an undescribed interface"  # a damaged frame

# Built with AddressSanitizer (make fuzz-asan): each frame is decoded from its own allocation of
# exactly its captured length, so that a read past it is reported (in the block buffer it would
# read the next record's bytes unnoticed). 0 in the ordinary build: the copy compiles away.
cdef extern from *:
    """
    #if defined(__SANITIZE_ADDRESS__)
    #define RSTSCOPE_EXACT_FRAMES 1
    #else
    #define RSTSCOPE_EXACT_FRAMES 0
    #endif
    """
    const bint RSTSCOPE_EXACT_FRAMES

cdef bint _HOST_LITTLE  # words loaded in the host's order are byte-swapped (sum_mod)
cdef uint32_t _probe = 1
_HOST_LITTLE = (<uint8_t*>&_probe)[0] == 1


# --- bytes ----------------------------------------------------------------------------------

cdef inline uint32_t be16(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 8) | p[1]


cdef inline uint32_t be32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[0] << 24) | (<uint32_t>p[1] << 16) | (<uint32_t>p[2] << 8) | p[3]


cdef inline uint32_t le32(const uint8_t* p) noexcept nogil:
    return (<uint32_t>p[3] << 24) | (<uint32_t>p[2] << 16) | (<uint32_t>p[1] << 8) | p[0]


cdef inline uint32_t u32(const uint8_t* p, bint little) noexcept nogil:
    return le32(p) if little else be32(p)


cdef inline uint32_t u16(const uint8_t* p, bint little) noexcept nogil:
    return ((<uint32_t>p[1] << 8) | p[0]) if little else be16(p)


cdef extern from *:
    # GCC and Clang's 128-bit integer (x86-64, arm64): a 64-bit add with its carry kept (sum_mod)
    ctypedef unsigned long long wide_sum_t "unsigned __int128"


cdef uint64_t sum_mod(const uint8_t* p, Py_ssize_t n) noexcept nogil:
    """The big-endian integer of p[0:n], padded with a zero byte to an even length, modulo 0xFFFF
    (the Internet checksum's arithmetic). 2**16 == 1 mod 0xFFFF, so this is the sum of its 16-bit words,
    or of its 64-bit words (0xFFFF divides 2**64 - 1, so a carry out of bit 63 is worth 1). A word
    loaded in a little-endian host's order is the byte swap, 256 times the value mod 0xFFFF
    (256**2 == 1). The 64-bit words go into two 128-bit sums that keep their carries (add and
    adc, no compare per word; two so that the adds overlap): about twice the bytes per cycle."""
    cdef wide_sum_t even = 0, odd = 0
    cdef uint64_t acc, w, v
    cdef uint32_t h
    cdef Py_ssize_t i = 0
    while i + 16 <= n:
        memcpy(&w, p + i, 8)
        memcpy(&v, p + i + 8, 8)
        even += w
        odd += v
        i += 16
    if i + 8 <= n:
        memcpy(&w, p + i, 8)
        even += w
        i += 8
    even += odd
    acc = <uint64_t>even % 0xFFFF + <uint64_t>(even >> 64) % 0xFFFF
    if i + 4 <= n:
        memcpy(&h, p + i, 4)
        acc += h
        i += 4
    if _HOST_LITTLE:
        acc = (acc % 0xFFFF) << 8
    if i + 2 <= n:
        acc += be16(p + i)
        i += 2
    if i < n:
        acc += <uint64_t>p[i] << 8
    return acc % 0xFFFF


include "tunnels.pxi"  # LLC/SNAP, PBB, VN-Tag and the tunnels Zeek decodes


# --- link layers ------------------------------------------------------------------------

cdef Py_ssize_t after_mpls(const uint8_t* d, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    cdef int i, version
    for i in range(MAX_NESTING):
        if n < off + 4:
            return -1
        if d[off + 2] & 1:  # bottom of the label stack
            off += 4
            if n <= off:
                return -1
            version = d[off] >> 4
            return off if version == 4 or version == 6 else -1
        off += 4
    return -1


cdef Py_ssize_t after_ethertype(const uint8_t* d, Py_ssize_t n, uint32_t etype,
                                Py_ssize_t off) noexcept nogil:
    cdef int i
    cdef uint32_t proto
    for i in range(MAX_NESTING):
        if etype == ETH_P_IP or etype == ETH_P_IPV6:
            return off
        if etype == ETH_P_8021Q or etype == ETH_P_8021AD or etype == ETH_P_QINQ_OLD:
            if n < off + 4:
                return -1
            etype = be16(d + off + 2)
            off += 4
        elif etype == ETH_P_MPLS_UC or etype == ETH_P_MPLS_MC:
            return after_mpls(d, n, off)
        elif etype == ETH_P_PPPOE_SESS:
            if n < off + 8:
                return -1
            proto = be16(d + off + 6)
            return off + 8 if proto == PPP_IP or proto == PPP_IPV6 else -1
        elif etype == ETH_P_FABRICPATH:
            off += 2  # FTag/TTL, then a whole inner Ethernet header
            if n < off + 14:
                return -1
            etype = be16(d + off + 12)
            off += 14
        elif etype == ETH_P_PBB:  # I-TAG (4 bytes), then the customer's Ethernet header
            if n <= off + 18:
                return -1
            etype = be16(d + off + 16)
            off += 18
        elif etype == ETH_P_VNTAG:  # 4 bytes of tag, then the ethertype
            if n <= off + 6:
                return -1
            etype = be16(d + off + 4)
            off += 6
        elif etype <= ETH_MAX_LENGTH:  # an 802.3 length: LLC, maybe SNAP
            return after_llc(d, n, off)
        else:
            return -1
    return -1


cdef inline bint family_ip(uint32_t family) noexcept nogil:
    # AF_INET, and AF_INET6 as Linux, NetBSD/OpenBSD, FreeBSD, macOS number it
    return family == AF_INET or family == 10 or family == 24 or family == 28 or family == 30


cdef inline bint link_supported(int lt) noexcept nogil:
    return (lt == LT_NULL or lt == LT_ETHERNET or lt == LT_RAW_BSD or lt == LT_RAW_OPENBSD
            or lt == LT_RAW or lt == LT_LOOP or lt == LT_LINUX_SLL or lt == LT_IPV4
            or lt == LT_IPV6 or lt == LT_LINUX_SLL2)


cdef Py_ssize_t find_ip(const uint8_t* d, Py_ssize_t n, int lt) noexcept nogil:
    cdef uint32_t etype, family
    if lt == LT_ETHERNET:
        if n < 14:
            return -1
        etype = be16(d + 12)
        if etype == ETH_P_IP:
            return 14
        return after_ethertype(d, n, etype, 14)
    if lt == LT_RAW or lt == LT_RAW_BSD or lt == LT_RAW_OPENBSD or lt == LT_IPV4 \
            or lt == LT_IPV6:
        return 0 if n > 0 and (d[0] >> 4 == 4 or d[0] >> 4 == 6) else -1
    if lt == LT_LINUX_SLL:
        if n < 16:
            return -1
        return after_ethertype(d, n, be16(d + 14), 16)
    if lt == LT_LINUX_SLL2:
        if n < 20:
            return -1
        return after_ethertype(d, n, be16(d), 20)
    if lt == LT_NULL:
        if n < 4:
            return -1
        family = le32(d)
        if family > 0xFFFF:  # written by a big-endian host
            family = be32(d)
        return 4 if family_ip(family) else -1
    if lt == LT_LOOP:
        if n < 4:
            return -1
        return 4 if family_ip(be32(d)) else -1
    return -1


# --- IP / TCP / ICMP -----------------------------------------------------------------------

cdef Py_ssize_t routing_final(const uint8_t* d, Py_ssize_t p, Py_ssize_t end) noexcept nogil:
    """Offset of the final destination in the routing header at p, or -1 (ip._routing_final)."""
    cdef int rtype = d[p + 2]
    cdef Py_ssize_t hdr_end = p + (<Py_ssize_t>d[p + 1] + 1) * 8
    cdef Py_ssize_t a
    if rtype == RT_TYPE0 or rtype == RT_TYPE2:
        a = hdr_end - 16
    elif rtype == RT_SRH:
        a = p + 8
    else:
        return -1
    if a < p + 8 or a + 16 > end or a + 16 > hdr_end:
        return -1
    return a


cdef int ip6_upper(const uint8_t* d, int nxt, Py_ssize_t p, Py_ssize_t end, Py_ssize_t* t,
                   bint* fragmented, Py_ssize_t* final) noexcept nogil:
    """Walk the IPv6 extension headers from p (bounded by end <= captured length): the upper
    protocol (-1: the chain stops) and its offset in *t (ip._ip6_upper)."""
    cdef int i
    cdef uint32_t frag
    cdef Py_ssize_t size
    fragmented[0] = False
    final[0] = -1
    for i in range(MAX_EXT_HEADERS):
        if nxt == IPPROTO_TCP or nxt == IPPROTO_ICMPV6 or nxt == IPPROTO_UDP \
                or nxt == IPPROTO_GRE or nxt == IPPROTO_IPIP or nxt == IPPROTO_IPV6:
            t[0] = p
            return nxt
        if nxt == IPPROTO_HOPOPTS or nxt == IPPROTO_ROUTING or nxt == IPPROTO_DSTOPTS:
            if p + 8 > end:
                t[0] = p
                return -1
            if nxt == IPPROTO_ROUTING and d[p + 3]:  # segments left: the destination changes
                final[0] = routing_final(d, p, end)
            size = (<Py_ssize_t>d[p + 1] + 1) * 8
            nxt = d[p]
        elif nxt == IPPROTO_FRAGMENT:
            if p + 8 > end:
                t[0] = p
                return -1
            frag = be16(d + p + 2)
            if frag & 0xFFF8:  # non-first fragment: no TCP header here
                fragmented[0] = True
                t[0] = p
                return -1
            if frag & 1:
                fragmented[0] = True
            nxt = d[p]
            size = 8
        elif nxt == IPPROTO_AH:
            if p + 8 > end:
                t[0] = p
                return -1
            size = (<Py_ssize_t>d[p + 1] + 2) * 4
            nxt = d[p]
        else:  # ESP, no next header, anything else
            t[0] = p
            return -1
        p += size
    t[0] = p
    return -1


cdef inline void put_ts(Seg* s, const uint8_t* p) noexcept nogil:
    s.has_tsopt = 1
    s.tsval = be32(p)
    s.tsecr = be32(p + 4)


cdef void tcp_timestamps(const uint8_t* d, Py_ssize_t start, Py_ssize_t end,
                         Seg* s) noexcept nogil:
    """The timestamp option in d[start:end] (end <= captured length) into s (ip.tcp_timestamps,
    fast paths included, so that the same option wins when the list is odd)."""
    cdef Py_ssize_t i = start
    cdef int kind, length
    # NOP, NOP, timestamp: Linux after the handshake
    if start + 12 <= end and d[start] == TCPOPT_NOP and d[start + 1] == TCPOPT_NOP \
            and d[start + 2] == TCPOPT_TIMESTAMP and d[start + 3] == 10:
        put_ts(s, d + start + 4)
        return
    # MSS, SACK permitted, timestamp: Linux SYNs
    if start + 16 <= end and d[start] == TCPOPT_MSS and d[start + 1] == 4 \
            and d[start + 4] == TCPOPT_SACKOK and d[start + 5] == 2 \
            and d[start + 6] == TCPOPT_TIMESTAMP and d[start + 7] == 10:
        put_ts(s, d + start + 8)
        return
    while i < end:
        kind = d[i]
        if kind == TCPOPT_EOL:
            return
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return
        length = d[i + 1]
        if length < 2 or i + length > end:
            return
        if kind == TCPOPT_TIMESTAMP and length == 10:
            put_ts(s, d + i + 2)
            return
        i += length


cdef inline int icmp_kind(int version, int icmp_type, int code) noexcept nogil:
    if version == 4:
        if icmp_type == ICMP_UNREACH:
            if code == 0 or code == 6 or code == 11:
                return ICMP_NET_UNREACH
            if code == 1 or code == 7 or code == 12:
                return ICMP_HOST_UNREACH
            if code == 2:
                return ICMP_PROTO_UNREACH
            if code == 3:
                return ICMP_PORT_UNREACH
            if code == 4:
                return ICMP_FRAG_NEEDED
            if code == 9 or code == 10 or code == 13:
                return ICMP_ADMIN_PROHIBITED
            return ICMP_OTHER_UNREACH
        if icmp_type == ICMP_TIMXCEED:
            return ICMP_TIME_EXCEEDED
        return ICMP_NONE
    if icmp_type == ICMP6_DST_UNREACH:
        if code == 0:
            return ICMP_NET_UNREACH
        if code == 3:
            return ICMP_HOST_UNREACH
        if code == 4:
            return ICMP_PORT_UNREACH
        if code == 1 or code == 5 or code == 6:
            return ICMP_ADMIN_PROHIBITED
        return ICMP_OTHER_UNREACH
    if icmp_type == ICMP6_PACKET_TOO_BIG:
        return ICMP_FRAG_NEEDED
    if icmp_type == ICMP6_TIME_EXCEEDED:
        return ICMP_TIME_EXCEEDED
    return ICMP_NONE


cdef int decode_icmp(const uint8_t* d, Py_ssize_t n, Py_ssize_t t, Py_ssize_t end, int version,
                     const uint8_t* icmp_from, int ttl, Counts* st, Seg* s) noexcept nogil:
    """An ICMP(v6) error at t quoting a TCP header, as the Seg of the quoted one (ip._icmp)."""
    cdef Py_ssize_t q, qt, have, qpayload
    cdef int kind, qversion, ihl, hlen, proto
    cdef uint32_t ip_id
    cdef bint frag6
    cdef Py_ssize_t final6
    if end < n:
        n = end
    if n < t + 8:
        st.non_tcp += 1
        return 0
    kind = icmp_kind(version, d[t], d[t + 1])
    if kind == ICMP_NONE:
        st.non_tcp += 1
        return 0
    q = t + 8  # the quoted IP header
    if n < q + 20:
        st.non_tcp += 1
        return 0
    qversion = d[q] >> 4
    if qversion == 4:
        ihl = (d[q] & 15) << 2
        if ihl < 20 or d[q + 9] != IPPROTO_TCP or be16(d + q + 6) & 0x1FFF:
            st.non_tcp += 1
            return 0
        ip_id = be16(d + q + 4)
        qt = q + ihl
        qpayload = <Py_ssize_t>be16(d + q + 2) - ihl
    elif qversion == 6:
        if n < q + 40:
            st.non_tcp += 1
            return 0
        ip_id = 0
        proto = ip6_upper(d, d[q + 6], q + 40, n, &qt, &frag6, &final6)
        if proto != IPPROTO_TCP:
            st.non_tcp += 1
            return 0
        qpayload = q + 40 + <Py_ssize_t>be16(d + q + 4) - qt
    else:
        st.non_tcp += 1
        return 0
    if n < qt + 8:
        st.non_tcp += 1
        return 0
    memset(s, 0, sizeof(Seg))
    if qversion == 4:
        memcpy(s.src.b, d + q + 12, 4)
        memcpy(s.dst.b, d + q + 16, 4)
    else:
        memcpy(s.src.b, d + q + 8, 16)
        memcpy(s.dst.b, d + q + 24, 16)
    memcpy(s.icmp_from.b, icmp_from, 4 if version == 4 else 16)
    s.sport = be16(d + qt)
    s.dport = be16(d + qt + 2)
    s.seq = be32(d + qt + 4)
    have = n - qt
    if have >= 12:
        s.ack = be32(d + qt + 8)
    if have >= 14:
        hlen = (d[qt + 12] >> 4) << 2
        s.flags = d[qt + 13]
        s.has_options = hlen > 20
        if hlen >= 20 and qpayload >= hlen:
            s.payload_len = <uint32_t>(qpayload - hlen)
    if have >= 16:
        s.window = be16(d + qt + 14)
    s.ip_version = qversion
    s.ttl = ttl
    s.ip_id = ip_id
    s.payload_captured = -1
    s.checksum = CSUM_UNKNOWN
    s.icmp_kind = kind
    s.icmp_type = d[t]
    s.icmp_code = d[t + 1]
    st.icmp_errors += 1
    return 1


cdef int decode_ip(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, bint check_ip, Counts* st,
                   Seg* s) noexcept nogil:
    return decode_ip_in(d, n, off, check_ip, st, s, 0)


cdef int decode_ip_in(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, bint check_ip,
                      Counts* st, Seg* s, int depth) noexcept nogil:
    """decode_ip for a packet inside depth tunnels."""
    cdef int version, ihl, ttl, proto, hlen, nxt, r
    cdef uint32_t frag, ip_id, csum
    cdef Py_ssize_t total, t, end, plen, tcp_len, lim, final
    cdef bint fragmented
    cdef uint64_t addr_sum, pseudo, total_sum
    if n < off + 20:
        st.truncated_frames += 1
        return 0
    version = d[off] >> 4
    if version == 4:
        ihl = (d[off] & 15) << 2
        if ihl < 20:
            st.malformed += 1
            return 0
        if n < off + ihl:
            st.truncated_frames += 1
            return 0
        if sum_mod(d + off, ihl):
            st.bad_ip_checksums += 1
            if check_ip:
                return 0
        frag = be16(d + off + 6)
        if frag & 0x1FFF:  # non-first fragment
            st.non_tcp += 1
            return 0
        total = be16(d + off + 2)
        if total == 0:  # TSO/GSO capture: the length was left to the NIC
            total = n - off
        elif total < ihl:
            st.malformed += 1
            return 0
        t = off + ihl
        end = off + total  # may lie beyond the captured bytes
        ttl = d[off + 8]
        proto = d[off + 9]
        fragmented = (frag & 0x2000) != 0
        if proto == IPPROTO_ICMP:
            return decode_icmp(d, n, t, end, 4, d + off + 12, ttl, st, s)
        if proto != IPPROTO_TCP:
            r = decode_tunnel(d, n, off, 4, proto, t, end, fragmented, check_ip, st, s, depth)
            if r >= 0:
                return r
            st.non_tcp += 1
            return 0
        addr_sum = sum_mod(d + off + 12, 8)
        ip_id = be16(d + off + 4)
    elif version == 6:
        if n < off + 40:
            st.truncated_frames += 1
            return 0
        plen = be16(d + off + 4)
        nxt = d[off + 6]
        ttl = d[off + 7]
        ip_id = 0
        if plen == 0:  # jumbogram or GSO: trust the captured length
            plen = n - off - 40
        end = off + 40 + plen
        lim = end if end < n else n
        proto = ip6_upper(d, nxt, off + 40, lim, &t, &fragmented, &final)
        if proto == IPPROTO_ICMPV6:
            return decode_icmp(d, n, t, end, 6, d + off + 8, ttl, st, s)
        if proto != IPPROTO_TCP:
            if t <= n:
                r = decode_tunnel(d, n, off, 6, proto, t, end, fragmented, check_ip, st, s,
                                  depth)
                if r >= 0:
                    return r
            if t > n:
                st.truncated_frames += 1
            else:
                st.non_tcp += 1
            return 0
        addr_sum = sum_mod(d + off + 8, 16) + sum_mod(d + final if final >= 0 else d + off + 24,
                                                      16)
    else:
        st.non_tcp += 1
        return 0

    # the TCP header at t; the IP packet ends at end
    if n < t + 20:
        st.truncated_frames += 1
        return 0
    hlen = (d[t + 12] >> 4) << 2
    if hlen < 20 or t + hlen > end:
        st.malformed += 1
        return 0
    if hlen > 20 and n < t + hlen:
        st.truncated_frames += 1
        return 0
    memset(s, 0, sizeof(Seg))
    if hlen > 20:
        s.has_options = 1
        tcp_timestamps(d, t + 20, t + hlen, s)
    if version == 4:
        memcpy(s.src.b, d + off + 12, 4)
        memcpy(s.dst.b, d + off + 16, 4)
    else:
        memcpy(s.src.b, d + off + 8, 16)
        memcpy(s.dst.b, d + off + 24, 16)
    tcp_len = end - t
    s.checksum = CSUM_UNKNOWN
    if n >= end and not fragmented:
        total_sum = sum_mod(d + t, tcp_len)
        pseudo = (addr_sum + IPPROTO_TCP + <uint64_t>tcp_len) % 0xFFFF
        csum = be16(d + t + 16)
        if (total_sum + pseudo) % 0xFFFF == 0:
            s.checksum = CSUM_OK
        elif csum % 0xFFFF == pseudo or (0xFFFF - csum) % 0xFFFF == pseudo:
            st.offloaded_checksums += 1  # the pseudo-header sum: offloaded to the NIC
        else:
            s.checksum = CSUM_BAD
            st.bad_tcp_checksums += 1
    s.sport = be16(d + t)
    s.dport = be16(d + t + 2)
    s.seq = be32(d + t + 4)
    s.ack = be32(d + t + 8)
    s.flags = d[t + 13]
    s.window = be16(d + t + 14)
    s.ip_version = version
    s.ttl = ttl
    s.ip_id = ip_id
    s.payload_len = <uint32_t>(tcp_len - hlen)
    lim = end if end < n else n
    s.payload_captured = lim - t - hlen if lim > t + hlen else 0
    s.icmp_type = -1
    s.icmp_code = -1
    st.tcp_segments += 1
    return 1


cdef str why_malformed(const uint8_t* d, Py_ssize_t n, Py_ssize_t off):
    """What decode_ip found impossible in the IP packet at d[off:], in words (the
    _why_malformed: for the first damaged frame only)."""
    cdef int ihl, hlen
    cdef Py_ssize_t total, plen, t, end, final
    cdef bint frag
    if d[off] >> 4 == 4:
        ihl = (d[off] & 15) * 4
        if ihl < 20:
            return f"IPv4 header length {ihl} is less than the minimum 20"
        total = be16(d + off + 2)
        if total and total < ihl:
            return f"IPv4 total length {total} is less than its header length {ihl}"
        t = off + ihl
        end = off + (total if total else n - off)
    else:
        plen = be16(d + off + 4)
        end = off + 40 + (plen if plen else n - off - 40)
        ip6_upper(d, d[off + 6], off + 40, end if end < n else n, &t, &frag, &final)
    if t + 12 >= n:
        return "impossible IP/TCP header lengths"
    hlen = (d[t + 12] >> 4) * 4
    if hlen < 20:
        return f"TCP data offset {hlen // 4} ({hlen} bytes) is less than the minimum 5"
    return f"TCP header length {hlen} exceeds the {end - t} bytes left in the IP packet"


# --- the reader -----------------------------------------------------------------------------

def _stats_equal(a, b):
    try:
        return all(getattr(a, f) == getattr(b, f) for f in _STAT_FIELDS)
    except AttributeError:
        return NotImplemented


def _snapshot(values):
    return ReadStats(**values)


cdef class NativeStats:
    """A NativeReader's statistics, live while it reads: ReadStats' fields
    (analyzer/capture/stats.py documents them); equal to a ReadStats with the same values, and
    pickled as one. Counters may be set (the chunked reading rebases frames and bytes_read)."""

    cdef NativeReader _r

    def __cinit__(self, NativeReader reader):
        self._r = reader

    cdef NativeReader _reader(self):
        cdef NativeReader r = self._r
        while r._delegate is not None:  # replayed: the counts are the new reader's
            r = r._delegate
        return r

    def __getattr__(self, name):
        cdef NativeReader r = self._reader()
        if name == "format":
            return r.format
        if name == "compressed":
            return bool(r.compressed)
        if name == "link_types":
            return {lt: r._link_counts[lt + 1] for lt in r._link_order}
        if name in _COUNTER_NAMES:
            return (<dict>r._c)[name]
        raise AttributeError(name)

    def __setattr__(self, name, value):
        cdef NativeReader r = self._reader()
        if name not in _COUNTER_NAMES:
            raise AttributeError(f"{name} cannot be set")
        counts = <dict>r._c
        counts[name] = value
        r._c = counts

    def __dir__(self):
        return list(_STAT_FIELDS)

    def values(self):
        return {f: getattr(self, f) for f in _STAT_FIELDS}

    def __eq__(self, other):
        return _stats_equal(self, other)

    def __reduce__(self):
        return _snapshot, (self.values(),)

    def __repr__(self):
        return "NativeStats(" + ", ".join(f"{f}={v!r}" for f, v in self.values().items()) + ")"


cdef class NativeReader:
    """Segments of one capture, from open_native. The observer calls fill(); tests and plots
    iterate segments(); live capture takes raw frames(). ``stats``: the counters (a
    NativeStats); ``problems``: a DamagedCapture when reading stopped early on damage, and one
    DamagedFrames, first, when frames were skipped as damaged while reading went on;
    ``notes``: one line per oddity that is not damage (an unsupported link type)."""

    def __cinit__(self):
        self._buf = NULL
        self._ifaces = NULL
        self._link_counts = <int64_t*>calloc(N_LINKS, sizeof(int64_t))
        self._link_ok = <uint8_t*>calloc(N_LINKS, sizeof(uint8_t))
        if self._link_counts == NULL or self._link_ok == NULL:
            raise MemoryError()

    def __init__(self, str path, stream, close, str fmt, bytes head, tuple pcap_header,
                 bint compressed, bint check_ip_checksums, bint interactive=False,
                 str source=None):
        """Made by open_native. pcap_header: (little_endian, nanoseconds, snaplen, linktype) for
        pcap; head: the bytes already read (pcapng: the first section header block); source:
        the path of a file that may be reopened (None for standard input)."""
        self.path = path
        self.problems = []
        self.notes = []
        self.format = fmt
        self.compressed = compressed
        self._stream = stream
        self._close = close
        self._check_ip = check_ip_checksums
        self._interactive = interactive
        self._pcapng = fmt == "pcapng"
        self._iface_units = []
        self._link_order = []
        self._damaged_offset = None
        self._read_exact = None
        self._source = source
        self._delegate = None
        self._skip_frames = 0
        self._gzip_blocks = compressed and source is not None
        if compressed and source is None:
            self._read_exact = getattr(stream, "_buffer", stream).read
        memset(&self._c, 0, sizeof(Counts))
        self._cap = BLOCK_SIZE if self._read_exact is None else 1 << 16
        if len(head) > self._cap:
            self._cap = len(head)
        self._buf = <uint8_t*>malloc(self._cap)
        if self._buf == NULL:
            raise MemoryError()
        memcpy(self._buf, PyBytes_AS_STRING(head), len(head))
        self._end = len(head)
        if self._pcapng:
            self._little = True
        else:
            little, nanos, snaplen, linktype = pcap_header
            self._little = little
            self._div = 1e9 if nanos else 1e6
            self._snaplen = snaplen
            # libpcap's bound, raised up to 16 times as much by a large snaplen
            self._limit = max(PCAP_MAX_CAPLEN, min(snaplen, 16 * PCAP_MAX_CAPLEN))
            self._linktype = linktype
            self._base = PCAP_HEADER_LEN
            self._c.bytes_read = PCAP_HEADER_LEN

    def __dealloc__(self):
        free(self._buf)
        free(self._ifaces)
        free(self._link_counts)
        free(self._link_ok)

    # -- Python side --

    @property
    def stats(self):
        """The counters, live (a NativeStats)."""
        if self._stats is None:
            self._stats = NativeStats(self)
        return self._stats

    def close(self):
        if self._delegate is not None:
            self._delegate.close()
        if self._close is not None:
            try:
                self._close()
            except OSError:
                pass
            self._close = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def segments(self, Py_ssize_t batch=4096):
        """Python Segments (tests): the same as fill gives, converted with seg_to_py."""
        cdef Seg* buf = <Seg*>malloc(batch * sizeof(Seg))
        cdef Py_ssize_t i, got
        if buf == NULL:
            raise MemoryError()
        try:
            while True:
                got = self.fill(buf, batch)
                if got == 0:
                    return
                for i in range(got):
                    yield seg_to_py(&buf[i])
        finally:
            free(buf)

    def __iter__(self):
        return self.segments()

    def frames(self):
        """(timestamp, link type, frame bytes) per record, as the records arrive (live capture
        reads a capture tool's pcap stream with it, opened by open_stream): the record walk of
        fill without decoding. Damage ends it as it ends fill; ``stats.frames`` counts the
        records. Not to be mixed with fill on one reader."""
        cdef const uint8_t* data
        cdef Py_ssize_t caplen
        cdef int lt, r
        cdef double ts
        if self._delegate is not None:
            yield from self._delegate.frames()
            return
        try:
            while not self._done:
                r = self._next(&data, &caplen, &lt, &ts)
                if r == NEED:
                    r = self._refill()
                    if r == 2:  # (a zlib error: no replay for raw frames)
                        r = self._refill_failed()
                    if r:
                        break
                    continue
                if r == END:
                    break
                self._c.frames += 1
                yield ts, lt, (<const char*>data)[:caplen]
        finally:
            self.finish()

    def finish(self):
        """Close the input and report the damaged frames skipped on the way (one DamagedFrames,
        first in problems: every skipped frame precedes the point where reading stopped)."""
        if self._delegate is not None:
            return self._delegate.finish()
        self.close()
        if not self._finished and self._damaged_frame:
            count = self._c.malformed + self._link_counts[0]
            self.problems.insert(0, DamagedFrames(self.path, self._damaged_why, count,
                                                  frame=self._damaged_frame,
                                                  offset=self._damaged_offset))
        self._finished = True
        self._done = True

    # -- the walk --

    cdef int _damage(self, str message, object offset, object frame) except -1:
        self.problems.append(DamagedCapture(self.path, message, offset=offset, frame=frame))
        return 0

    cdef int _new_link(self, int lt) except -1:
        """First frame of link type lt: remember its order, note it if unsupported."""
        self._link_order.append(lt)
        self._link_ok[lt + 1] = 1 if lt >= 0 and link_supported(lt) else 2
        if lt >= 0 and self._link_ok[lt + 1] == 2:
            self.notes.append(f"link type {lt} is not supported (first: frame "
                              f"{self._c.frames}); its frames are skipped")
        return 0

    cdef Py_ssize_t fill(self, Seg* out, Py_ssize_t cap) except -1:
        cdef Py_ssize_t produced = 0, caplen, off
        cdef const uint8_t* data
        cdef uint8_t* exact = NULL  # the frame's own copy (sanitizer build only)
        cdef int lt, r
        cdef double ts
        cdef Seg* s
        cdef Counts* c = &self._c
        if self._delegate is not None:
            return self._delegate.fill(out, cap)
        if self._done:
            if not self._finished:
                self.finish()
            return 0
        try:
            while produced < cap:
                r = self._next(&data, &caplen, &lt, &ts)
                if r == NEED:
                    if produced and self._interactive:
                        break  # hand over what is decoded rather than wait on a pipe
                    r = self._refill()
                    if r == 2:  # a zlib error in a gzip file: walk it again, exactly
                        if self._replay():
                            return produced + self._delegate.fill(out + produced,
                                                                  cap - produced)
                        r = self._refill_failed()
                    if r:
                        break  # read error: recorded
                    continue
                if r == END:
                    self._done = True
                    break
                c.frames += 1
                if not self._link_ok[lt + 1]:
                    self._new_link(lt)
                self._link_counts[lt + 1] += 1
                if self._link_ok[lt + 1] != 1:
                    c.non_tcp += 1
                    if lt < 0 and not self._damaged_frame:
                        self._damaged_frame = c.frames
                        self._damaged_offset = None
                        self._damaged_why = UNDESCRIBED
                    continue
                if RSTSCOPE_EXACT_FRAMES:
                    exact = <uint8_t*>malloc(caplen if caplen else 1)
                    if exact == NULL:
                        raise MemoryError()
                    memcpy(exact, data, caplen)
                    data = exact
                try:
                    off = find_ip(data, caplen, lt)
                    if off < 0:
                        c.non_tcp += 1
                        continue
                    s = out + produced
                    if decode_ip(data, caplen, off, self._check_ip, c, s):
                        s.frame = c.frames
                        s.ts = ts
                        if c.frames > self._skip_frames:
                            produced += 1
                    elif c.malformed and not self._damaged_frame:
                        self._damaged_frame = c.frames
                        # in the pcap walk the record's offset is known: its header, then the
                        # frame
                        self._damaged_offset = None if self._pcapng else \
                            c.bytes_read - PCAP_RECORD_LEN - caplen
                        self._damaged_why = why_malformed(data, caplen, off)
                finally:
                    if RSTSCOPE_EXACT_FRAMES:
                        free(exact)
        except BaseException:
            self.finish()
            raise
        if self._done and not self._finished:
            self.finish()
        return produced

    cdef int _refill(self) except -1:
        """Read more input so that _need bytes from _pos may be present; 1 after a read error
        (recorded as damage), else 0. Sets _eof at the end."""
        cdef Py_ssize_t want, got, newcap
        cdef uint8_t* nb
        cdef bytes chunk
        # carry the partial record (less than _need bytes) to the front; grow for a record
        # larger than the buffer
        if self._pos:
            memmove(self._buf, self._buf + self._pos, self._end - self._pos)
            self._base += self._pos
            self._end -= self._pos
            self._pos = 0
        if self._need > self._cap:
            newcap = self._need if self._read_exact is not None else self._need + BLOCK_SIZE
            nb = <uint8_t*>realloc(self._buf, newcap)
            if nb == NULL:
                raise MemoryError()
            self._buf = nb
            self._cap = newcap
        try:
            if self._read_exact is not None:
                # a record at a time (see the module docstring)
                want = self._need - (self._end - self._pos)
                chunk = self._read_exact(want)
                got = PyBytes_GET_SIZE(chunk)
                memcpy(self._buf + self._end, PyBytes_AS_STRING(chunk), got)
                if got < want:
                    self._eof = True
            elif self._gzip_blocks:
                chunk = self._stream.read1(self._cap - self._end)
                got = PyBytes_GET_SIZE(chunk)
                memcpy(self._buf + self._end, PyBytes_AS_STRING(chunk), got)
                if not got:
                    self._eof = True
            elif self._interactive:
                # a pipe: what is buffered, else one read of what is there (readinto1 with a
                # large buffer would wait for more after copying the buffered bytes)
                chunk = self._stream.read1(self._cap - self._end)
                got = PyBytes_GET_SIZE(chunk)
                memcpy(self._buf + self._end, PyBytes_AS_STRING(chunk), got)
                if not got:
                    self._eof = True
            else:
                view = PyMemoryView_FromMemory(<char*>self._buf + self._end,
                                               self._cap - self._end, PyBUF_WRITE)
                got = self._stream.readinto1(view) or 0
                view.release()
                if not got:
                    self._eof = True
        except _READ_ERRORS as exc:
            if self._gzip_blocks and isinstance(exc, zlib.error):
                self._error = exc
                return 2
            self._error = exc
            return self._refill_failed()
        self._end += got
        return 0

    cdef int _refill_failed(self) except -1:
        """Record the read error as damage where reading stopped; 1."""
        self._damage(f"read error: {self._error}", self._c.bytes_read, self._c.frames + 1)
        self._error = None
        self._done = True
        return 1

    cdef bint _replay(self) except -1:
        """After a zlib error in a gzip file read in blocks: reopen it, and let a reader asking
        for a record at a time go on, past the frames already handed over (their
        counts, notes and damage are made again). False if the file cannot be reopened."""
        cdef NativeReader fresh
        try:
            fresh = _open_file(self._source, self.path, self._check_ip, False)
        except (UnreadableCapture, OSError):
            return False
        self.close()
        fresh._skip_frames = self._c.frames
        del self.problems[:]
        del self.notes[:]
        fresh.problems = self.problems
        fresh.notes = self.notes
        self._delegate = fresh
        self._damaged_frame = 0
        self._done = True
        self._finished = True
        return True

    cdef int _next(self, const uint8_t** data, Py_ssize_t* caplen, int* lt,
                   double* ts) except -2:
        """The next record: REC (its frame, link type, time), NEED or END (pcap.records)."""
        cdef Py_ssize_t avail = self._end - self._pos
        cdef const uint8_t* h
        cdef uint32_t n
        if self._pcapng:
            return self._next_pcapng(data, caplen, lt, ts)
        h = self._buf + self._pos
        if avail < PCAP_RECORD_LEN:
            if not self._eof:
                self._need = PCAP_RECORD_LEN
                return NEED
            if avail:
                self._damage(f"truncated record header ({avail} of {PCAP_RECORD_LEN} bytes)",
                             self._base + self._pos, self._c.frames + 1)
            return END
        n = u32(h + 8, self._little)
        if n > self._limit:
            self._damage(f"record length {n} is absurd (snaplen {self._snaplen})",
                         self._base + self._pos, self._c.frames + 1)
            return END
        if avail < PCAP_RECORD_LEN + n:
            if not self._eof:
                self._need = PCAP_RECORD_LEN + n
                return NEED
            self._damage(f"truncated record: {avail - PCAP_RECORD_LEN} of {n} bytes present",
                         self._base + self._pos, self._c.frames + 1)
            return END
        # the arithmetic of pcap.records: sec + frac / div
        ts[0] = <double>u32(h, self._little) + <double>u32(h + 4, self._little) / self._div
        data[0] = h + PCAP_RECORD_LEN
        caplen[0] = n
        lt[0] = self._linktype
        self._pos += PCAP_RECORD_LEN + n
        self._c.bytes_read = self._base + self._pos
        return REC

    cdef int _next_pcapng(self, const uint8_t** data, Py_ssize_t* caplen, int* lt,
                          double* ts) except -2:
        """The next packet block (pcapng.records): linktype -1 for an undescribed interface."""
        cdef Py_ssize_t avail, top, body_len, block_at
        cdef const uint8_t* b
        cdef const uint8_t* body
        cdef uint32_t btype, blen, trailer, iface, ncap, origlen
        cdef uint64_t ticks
        cdef bint little
        cdef Iface* ifc
        while True:
            avail = self._end - self._pos
            b = self._buf + self._pos
            if avail < 8:
                if not self._eof:
                    self._need = 8
                    return NEED
                if avail:
                    self._damage(f"truncated block header ({avail} of 8 bytes)",
                                 self._base + self._pos, self._c.frames + 1)
                return END
            top = 8
            if memcmp(b, b"\x0a\x0d\x0d\x0a", 4) == 0:
                if avail < 12:
                    if not self._eof:
                        self._need = 12
                        return NEED
                    self._damage("truncated section header block", self._base + self._pos,
                                 self._c.frames + 1)
                    return END
                if memcmp(b + 8, b"\x4d\x3c\x2b\x1a", 4) == 0:
                    self._little = True
                elif memcmp(b + 8, b"\x1a\x2b\x3c\x4d", 4) == 0:
                    self._little = False
                else:
                    bom = (<const char*>b)[8:12]
                    self._damage(f"section header with bad byte-order magic {bom.hex(' ')}",
                                 self._base + self._pos, self._c.frames + 1)
                    return END
                self._n_ifaces = 0  # a new section forgets its interfaces
                del self._iface_units[:]
                top = 12
            little = self._little
            btype = u32(b, little)
            blen = u32(b + 4, little)
            if blen < NG_MIN_BLOCK or blen % 4 or blen > NG_MAX_BLOCK or blen < top + 4:
                self._damage(f"block of type 0x{btype:08x} has impossible length {blen}",
                             self._base + self._pos, self._c.frames + 1)
                return END
            if avail < blen:
                if not self._eof:
                    self._need = blen
                    return NEED
                self._damage(f"truncated block of type 0x{btype:08x}: {avail} of {blen} bytes "
                             "present", self._base + self._pos, self._c.frames + 1)
                return END
            trailer = u32(b + blen - 4, little)
            if trailer != blen:
                self._damage(f"block of type 0x{btype:08x}: trailing length {trailer} differs "
                             f"from leading length {blen}", self._base + self._pos,
                             self._c.frames + 1)
                return END
            if btype == BT_SHB:
                if blen < NG_MIN_SHB:
                    self._damage(f"section header block too short ({blen} bytes)",
                                 self._base + self._pos, self._c.frames + 1)
                    return END
                if u16(b + 12, little) != NG_VERSION_MAJOR:
                    self._damage(f"section header with unsupported pcapng version "
                                 f"{u16(b + 12, little)}.{u16(b + 14, little)}",
                                 self._base + self._pos, self._c.frames + 1)
                    return END
            block_at = self._base + self._pos
            self._pos += blen
            self._c.bytes_read = self._base + self._pos
            body = b + 8
            body_len = blen - 12  # after type and length, trailer excluded
            if btype == BT_EPB or btype == BT_PB:
                if body_len < 20:
                    self._damage("enhanced packet block too short" if btype == BT_EPB
                                 else "packet block too short", block_at, self._c.frames + 1)
                    return END
                if btype == BT_EPB:
                    iface = u32(body, little)
                else:
                    iface = u16(body, little)
                ncap = u32(body + 12, little)
                if ncap > body_len - 20:
                    self._damage(("enhanced packet block" if btype == BT_EPB else "packet block")
                                 + f": captured length {ncap} exceeds the block", block_at,
                                 self._c.frames + 1)
                    return END
                data[0] = body + 20
                caplen[0] = ncap
                if iface >= self._n_ifaces:
                    lt[0] = -1
                    ts[0] = self._last_ts
                    return REC
                ifc = &self._ifaces[iface]
                ticks = (<uint64_t>u32(body + 4, little) << 32) | u32(body + 8, little)
                if ifc.exact_units:
                    # pcapng.records: q, r = divmod(ticks, units); q + r / units + offset
                    self._last_ts = (<double>(ticks // ifc.units)
                                     + <double>(ticks % ifc.units) / <double>ifc.units) \
                        + <double>ifc.offset
                else:
                    self._last_ts = self._ts_slow(iface, ticks)
                ts[0] = self._last_ts
                lt[0] = ifc.linktype
                return REC
            if btype == BT_SPB:
                if body_len < 4:
                    self._damage("simple packet block too short", block_at, self._c.frames + 1)
                    return END
                ts[0] = self._last_ts
                data[0] = body + 4
                if not self._n_ifaces:
                    lt[0] = -1
                    caplen[0] = body_len - 4
                    return REC
                origlen = u32(body, little)
                caplen[0] = origlen if origlen < body_len - 4 else body_len - 4
                if self._ifaces[0].snaplen and self._ifaces[0].snaplen < caplen[0]:
                    caplen[0] = self._ifaces[0].snaplen
                lt[0] = self._ifaces[0].linktype
                return REC
            if btype == BT_IDB:
                if body_len < 8:
                    self._damage("interface description block too short", block_at,
                                 self._c.frames + 1)
                    return END
                self._add_iface(body, body_len)
                continue
            if btype != BT_SHB:
                self._c.skipped_blocks += 1

    cdef int _add_iface(self, const uint8_t* body, Py_ssize_t body_len) except -1:
        """An interface from an IDB body (after type and length, trailer excluded)."""
        cdef bint little = self._little
        cdef Iface* grown
        cdef Iface* ifc
        units, offset = idb_clock(body, body_len, little)
        if self._n_ifaces == self._ifaces_cap:
            grown = <Iface*>realloc(self._ifaces, (self._ifaces_cap * 2 + 4) * sizeof(Iface))
            if grown == NULL:
                raise MemoryError()
            self._ifaces = grown
            self._ifaces_cap = self._ifaces_cap * 2 + 4
        ifc = &self._ifaces[self._n_ifaces]
        ifc.linktype = u16(body, little) & LT_MASK
        ifc.snaplen = u32(body + 4, little)
        ifc.exact_units = units <= MAX_EXACT_UNITS
        ifc.units = units if ifc.exact_units else 0
        ifc.offset = offset
        self._iface_units.append((units, offset))
        self._n_ifaces += 1
        return 0

    cdef double _ts_slow(self, Py_ssize_t i, uint64_t ticks) except? -1.0:
        """The timestamp with Python integers, for resolutions finer than 2**-53 s (where
        double arithmetic could round differently from Python's exact int / int)."""
        units, offset = self._iface_units[i]
        q, r = divmod(<object>ticks, units)
        return q + r / units + offset


cdef tuple idb_clock(const uint8_t* body, Py_ssize_t body_len, bint little):
    """(timestamp ticks per second, seconds added) of an IDB body: its first if_tsresol and
    if_tsoffset options (microseconds and 0 without them)."""
    cdef Py_ssize_t i = 8, length
    cdef uint32_t code
    resol = None
    tsoff = None
    while i + 4 <= body_len:
        code = u16(body + i, little)
        length = u16(body + i + 2, little)
        if code == OPT_ENDOFOPT or i + 4 + length > body_len:
            break
        if code == OPT_IF_TSRESOL and resol is None:
            resol = (<const char*>body)[i + 4:i + 4 + length]
        elif code == OPT_IF_TSOFFSET and tsoff is None:
            tsoff = (<const char*>body)[i + 4:i + 4 + length]
        i += 4 + ((length + 3) & ~3)
    units = 1_000_000  # default: microseconds
    if resol:
        v = resol[0]
        units = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
    offset = 0
    if tsoff is not None and len(tsoff) == 8:
        offset = int.from_bytes(tsoff, "little" if little else "big", signed=True)
    return units, offset


def idb_interface(const uint8_t[::1] body, bint little):
    """(link type, snaplen, ticks per second, seconds added) of an interface description
    block's body, as the reader takes them (the scale-out walk times pcapng files with it)."""
    if body.shape[0] < 8:
        raise ValueError("an interface description block body has at least 8 bytes")
    units, offset = idb_clock(&body[0], body.shape[0], little)
    return u16(&body[0], little) & LT_MASK, u32(&body[4], little), units, offset


# --- opening ----------------------------------------------------------------------------

class _Prefixed(io.RawIOBase):
    """A raw stream that first returns ``prefix``, then reads from ``stream``."""

    def __init__(self, prefix, stream):
        self._prefix = prefix
        self._stream = stream

    def readable(self):
        return True

    def readinto(self, b):
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def _read_upto(f, n):
    """Up to n bytes, looping over short reads (pipes); fewer only at the end."""
    out = b""
    for _ in range(n + 1):
        if len(out) >= n:
            break
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def _is_tty(stream):
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False


def open_native(path, *, check_ip_checksums=False, name=None):
    """Open ``path`` (or "-" for standard input): a NativeReader, or UnreadableCapture (one
    line naming the file) when nothing can be read: missing file, wrong magic, unsupported
    format, a damaged file header.

    ``name`` replaces ``path`` in messages. With ``check_ip_checksums`` IPv4 packets with a wrong
    header checksum are dropped (counted either way).
    """
    shown = name or path
    if path == STDIN:
        raw = sys.stdin.buffer
        if _is_tty(raw):
            raise UnreadableCapture(shown, "standard input is a terminal, not a capture")
        return _open_stream(shown, raw, None, check_ip_checksums, None)
    return _open_file(path, shown, check_ip_checksums, True)


def open_stream(stream, name, *, check_ip_checksums=False):
    """A reader of an open binary stream (a pipe from a capture tool), named ``name`` in
    messages: decoded frames are handed over as they arrive, without waiting to fill a block.
    The caller closes the stream. UnreadableCapture as open_native."""
    return _open_stream(name, stream, None, check_ip_checksums, None)


def _open_file(path, shown, check_ip, gzip_blocks):
    """A reader of the file at path. gzip_blocks: a gzip file is read in large blocks (else
    a record at a time, for the replay)."""
    try:
        raw = open(path, "rb", buffering=BUFFER_SIZE)  # noqa: SIM115 - closed by the reader
    except FileNotFoundError:
        raise UnreadableCapture(shown, "no such file") from None
    except IsADirectoryError:
        raise UnreadableCapture(shown, "is a directory, not a capture file") from None
    except OSError as exc:
        raise UnreadableCapture(shown, f"cannot open: {exc.strerror or exc}") from None
    try:
        return _open_stream(shown, raw, raw.close, check_ip, path if gzip_blocks else None)
    except BaseException:
        raw.close()
        raise


def _open_stream(shown, raw, close, check_ip, source):
    """The reader of an open stream, after the checks of its start. source: the path of a file
    that may be reopened, or None (standard input: decoded frames are handed over before
    waiting on the pipe)."""
    interactive = close is None
    try:
        head = _read_upto(raw, 4)
    except OSError as exc:
        raise UnreadableCapture(shown, f"cannot read: {exc.strerror or exc}", offset=0) from None
    if not head:
        raise UnreadableCapture(shown, "empty file", offset=0)
    compressed = head[:2] == GZIP_MAGIC
    stream = raw
    if compressed:
        stream = gzip.GzipFile(fileobj=io.BufferedReader(_Prefixed(head, raw), BUFFER_SIZE),
                               mode="rb")
        try:
            head = _read_upto(stream, 4)
        except _GZIP_OPEN_ERRORS as exc:
            raise UnreadableCapture(shown, f"gzip data cannot be decompressed: {exc}",
                                    offset=0) from None
        if not head:
            raise UnreadableCapture(shown, "empty file (after gzip decompression)", offset=0)
    what = "gzip-compressed data is" if compressed else "file is"
    if len(head) < 4:
        raise UnreadableCapture(shown, f"{what} too short to be a capture ({len(head)} bytes)",
                                offset=0)
    if head in PCAP_MAGICS:
        try:
            rest = _read_upto(stream, PCAP_HEADER_LEN - 4)
        except _READ_ERRORS as exc:
            raise UnreadableCapture(shown, f"cannot read: {exc}", offset=4) from None
        if len(rest) < PCAP_HEADER_LEN - 4:
            raise UnreadableCapture(shown, "pcap file header is truncated", offset=0)
        return NativeReader(shown, stream, close, "pcap", b"", pcap_header(head + rest),
                            compressed, check_ip, interactive, source)
    if head == SHB_MAGIC:
        try:
            head += _read_upto(stream, 8)
        except _READ_ERRORS as exc:
            raise UnreadableCapture(shown, f"cannot read: {exc}", offset=4) from None
        if head[8:12] not in (BOM_LE, BOM_BE):
            raise UnreadableCapture(shown, "pcapng section header has no valid byte-order magic"
                                    f" (found {head[8:12].hex(' ') or 'nothing'})", offset=8)
        head += _first_shb(shown, stream, head)
        return NativeReader(shown, stream, close, "pcapng", head, None, compressed, check_ip,
                            interactive, source)
    found = head.hex(" ")
    raise UnreadableCapture(shown, f"not a pcap or pcapng file (starts with {found})", offset=0)


def _first_shb(shown, stream, head):
    """The rest of the first section header block (head: its first 12 bytes), read and checked:
    damage there means nothing can be read, as for a pcap file header."""
    order = "little" if head[8:12] == BOM_LE else "big"
    blen = int.from_bytes(head[4:8], order)
    if blen < NG_MIN_SHB or blen % 4 or blen > NG_MAX_BLOCK:
        raise UnreadableCapture(shown, f"pcapng section header has impossible length {blen}",
                                offset=0)
    try:
        rest = _read_upto(stream, blen - len(head))
    except _READ_ERRORS as exc:
        raise UnreadableCapture(shown, f"cannot read: {exc}", offset=len(head)) from None
    if len(rest) < blen - len(head):
        raise UnreadableCapture(shown, "pcapng section header is truncated "
                                f"({len(head) + len(rest)} of {blen} bytes present)", offset=0)
    trailer = int.from_bytes(rest[len(rest) - 4:], order)
    if trailer != blen:
        raise UnreadableCapture(shown, f"pcapng section header: trailing length {trailer} differs "
                                f"from leading length {blen}", offset=0)
    major = int.from_bytes(rest[0:2], order)
    if major != NG_VERSION_MAJOR:
        minor = int.from_bytes(rest[2:4], order)
        raise UnreadableCapture(shown, f"section header with unsupported pcapng version "
                                f"{major}.{minor}", offset=0)
    return rest


# --- measuring ------------------------------------------------------------------------------

def count_segments(path, Py_ssize_t batch=4096, check_ip_checksums=False):
    """(segments, frames) of a capture, read with fill() into one buffer: the decoder's speed
    without any Python object per segment."""
    cdef NativeReader r = open_native(path, check_ip_checksums=check_ip_checksums)
    cdef Seg* buf = <Seg*>malloc(batch * sizeof(Seg))
    cdef Py_ssize_t total = 0, got
    if buf == NULL:
        raise MemoryError()
    try:
        while True:
            got = r.fill(buf, batch)
            if got == 0:
                break
            total += got
    finally:
        free(buf)
        r.close()
    return total, r.stats.frames


def decode_frame(const uint8_t[::1] frame, int linktype, bint check_ip_checksums=False,
                 int64_t number=1, double ts=0.0):
    """One frame through the link and IP decoders (tests: any buffer, e.g. one ending at a guard
    page): (Segment or None, {counter: increment}) for the counters a frame moves."""
    cdef Counts c
    cdef Seg s
    cdef Py_ssize_t n = frame.shape[0], off = -1
    cdef const uint8_t* d = &frame[0] if n else <const uint8_t*>&s  # (never read when n == 0)
    cdef int got = 0
    memset(&c, 0, sizeof(Counts))
    if linktype >= 0 and link_supported(linktype & LT_MASK):
        off = find_ip(d, n, linktype & LT_MASK)
    if off < 0:
        c.non_tcp += 1
    else:
        got = decode_ip(d, n, off, check_ip_checksums, &c, &s)
    seg = None
    if got:
        s.frame = number
        s.ts = ts
        seg = seg_to_py(&s)
    counts = {k: v for k, v in (<dict>c).items() if v}
    return seg, counts


def ip_offset(const uint8_t[::1] frame, int linktype):
    """Offset of the IP header in a frame of that link type, or -1 (not IP, or a link type the
    decoder does not know): where the fuzzer makes IP and TCP fields lie."""
    cdef Py_ssize_t n = frame.shape[0]
    if n == 0 or linktype < 0 or not link_supported(linktype & LT_MASK):
        return -1
    return find_ip(&frame[0], n, linktype & LT_MASK)


# --- rotated sets ---------------------------------------------------------------------------

def merge_stat_values(parts):
    """One capture's ReadStats values from its files' (``values()`` dicts, in order), as the
    concatenation would count: counters and link types add up, ``bytes_read`` is the last
    file's, format and compression the first's. None for no file."""
    if not parts:
        return None
    out = dict(parts[0])
    links = dict(parts[0]["link_types"])
    for p in parts[1:]:
        for name in _COUNTER_NAMES:
            out[name] += p[name]
        for lt, n in p["link_types"].items():
            links[lt] = links.get(lt, 0) + n
    out["link_types"] = links
    out["bytes_read"] = parts[len(parts) - 1]["bytes_read"]
    return out


cdef class SetReader(NativeReader):
    """The files of a rotated set read one after the other as one capture, as ``mergecap -a``
    of them would be: frame numbers go on from file to file. Each file is read by its own
    NativeReader under its own name, so damage is reported against the file that holds it, with
    that file's frame number and byte offset; damage ends that file's reading and the next file
    is read. A file that cannot be opened is a problem of the set, not the end of it. Notes are
    prefixed with the file's name. A NativeReader for the observer (fill is overridden)."""

    cdef list _paths  # files to open, in capture order
    cdef list _names  # their names in messages
    cdef Py_ssize_t _next_file
    cdef NativeReader _cur
    cdef str _cur_name
    cdef int64_t _frames_before  # frames of the files already read
    cdef list _parts  # stats values of the files read to their end

    def __init__(self, paths, names=None, *, bint check_ip_checksums=False):
        self._paths = list(paths)
        self._names = list(names) if names is not None else list(self._paths)
        if len(self._names) != len(self._paths) or not self._paths:
            raise ValueError("a set needs its files, and one name per file")
        self.path = self._names[0]
        self.problems = []
        self.notes = []
        self._check_ip = check_ip_checksums
        self._parts = []
        self._link_order = []
        self._iface_units = []

    @property
    def stats(self):
        """The set's counters so far (a ReadStats), or None before any file opened."""
        parts = list(self._parts)
        if self._cur is not None:
            parts.append(self._cur.stats.values())
        merged = merge_stat_values(parts)
        return None if merged is None else ReadStats(**merged)

    def close(self):
        if self._cur is not None:
            self._cur.close()
            self._cur = None
        self._next_file = len(self._paths)

    cdef bint _open_next(self) except -1:
        """Open the next file that opens; False when none is left."""
        while self._next_file < len(self._paths):
            path = self._paths[self._next_file]
            name = self._names[self._next_file]
            self._next_file += 1
            try:
                self._cur = open_native(path, check_ip_checksums=self._check_ip, name=name)
            except UnreadableCapture as exc:
                self.problems.append(exc)
                continue
            self._cur_name = name
            return True
        return False

    cdef int _end_file(self) except -1:
        cdef NativeReader r = self._cur
        self._cur = None
        values = r.stats.values()
        self._parts.append(values)
        self._frames_before += values["frames"]
        self.problems.extend(r.problems)
        self.notes.extend(f"{self._cur_name}: {n}" for n in r.notes)
        return 0

    cdef Py_ssize_t fill(self, Seg* out, Py_ssize_t cap) except -1:
        cdef Py_ssize_t got, i
        while True:
            if self._cur is None and not self._open_next():
                return 0
            got = self._cur.fill(out, cap)  # (0 only at the end of that file: see fill)
            if got:
                for i in range(got):
                    out[i].frame += self._frames_before
                return got
            self._end_file()


# --- the header walk (where a pcap file can be cut; its first and last packet times) --------

def walk_pcap(str path, int64_t target=1 << 62):
    """Walk a pcap file's record headers, reading no packet bytes: a dict with ``frames``,
    ``stop`` (offset where the walk stopped: the end of the file, a truncated record, or a
    record length over the reader's bound), ``cuts`` (record offsets about ``target`` bytes
    apart, the first at the first record, each with the frames before it), and ``first`` and
    ``last`` packet times (None without a record), computed as the reader computes them."""
    cdef bytes head, block
    cdef const uint8_t* d
    cdef Py_ssize_t n, rel
    cdef int64_t pos = PCAP_HEADER_LEN, frames = 0, last_cut = 0, base
    cdef uint32_t caplen, limit, snaplen
    cdef uint32_t s0 = 0, f0 = 0, s1 = 0, f1 = 0
    cdef bint little, bad = False
    cuts = []
    with open(path, "rb") as f:
        head = f.read(PCAP_HEADER_LEN)
        if len(head) < PCAP_HEADER_LEN or head[:4] not in PCAP_MAGICS:
            raise ValueError(f"{path}: not an uncompressed pcap file")
        little = head[:4] in PCAP_LITTLE
        nanos = head[:4] in PCAP_NANOS
        snaplen = int.from_bytes(head[16:20], "little" if little else "big")
        limit = max(PCAP_MAX_CAPLEN, min(snaplen, 16 * PCAP_MAX_CAPLEN))  # as NativeReader
        while not bad:
            f.seek(pos)
            block = f.read(max(BLOCK_SIZE, 2 * (PCAP_RECORD_LEN + <Py_ssize_t>limit)))
            d = <const uint8_t*>PyBytes_AS_STRING(block)
            n = PyBytes_GET_SIZE(block)
            base = pos
            while True:
                rel = pos - base
                if rel + PCAP_RECORD_LEN > n:
                    break
                caplen = u32(d + rel + 8, little)
                if caplen > limit:
                    bad = True
                    break
                if rel + PCAP_RECORD_LEN + caplen > n:
                    break
                if frames == 0 or pos - last_cut >= target:
                    cuts.append((pos, frames))
                    last_cut = pos
                s1 = u32(d + rel, little)
                f1 = u32(d + rel + 4, little)
                if frames == 0:
                    s0, f0 = s1, f1
                frames += 1
                pos += PCAP_RECORD_LEN + caplen
            if n < max(BLOCK_SIZE, 2 * (PCAP_RECORD_LEN + <Py_ssize_t>limit)):
                break  # the end of the file is in this block
    div = 1e9 if nanos else 1e6
    return {"header": head, "linktype": int.from_bytes(head[20:24], "little" if little
                                                        else "big") & LT_MASK,
            "frames": frames, "stop": pos, "cuts": cuts,
            "first": s0 + f0 / div if frames else None,
            "last": s1 + f1 / div if frames else None}
