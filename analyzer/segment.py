"""The value that flows from the capture readers into connection tracking.

A `Segment` is one TCP segment as the observer saw it, or one ICMP / ICMPv6 error that quotes a
TCP header. Readers (``analyzer.capture``) produce them; nothing downstream ever looks at raw
bytes again. The core is sans-IO: the timestamp comes from the capture, never from the clock.
"""

from __future__ import annotations

from dataclasses import dataclass

# TCP flag bits, as in the header's 13th byte.
FIN = 0x01  # sender has finished sending
SYN = 0x02  # synchronise sequence numbers
RST = 0x04  # reset the connection
PSH = 0x08  # push
ACK = 0x10  # acknowledgment field is significant
URG = 0x20  # urgent pointer is significant
ECE = 0x40  # ECN echo
CWR = 0x80  # congestion window reduced

# ICMP "kinds" a Segment can carry (independent of v4/v6 numbering).
ICMP_NET_UNREACH = "net_unreachable"  # v4 type 3 code 0/6/11, v6 type 1 code 0
ICMP_HOST_UNREACH = "host_unreachable"  # v4 type 3 code 1/7/12, v6 type 1 code 3
ICMP_PORT_UNREACH = "port_unreachable"  # v4 type 3 code 3, v6 type 1 code 4
ICMP_PROTO_UNREACH = "protocol_unreachable"  # v4 type 3 code 2
ICMP_ADMIN_PROHIBITED = "admin_prohibited"  # v4 type 3 code 9/10/13, v6 type 1 code 1/5/6
ICMP_FRAG_NEEDED = "fragmentation_needed"  # v4 type 3 code 4, v6 type 2 (packet too big)
ICMP_OTHER_UNREACH = "other_unreachable"  # any other destination-unreachable code
ICMP_TIME_EXCEEDED = "time_exceeded"  # v4 type 11, v6 type 3
# the kinds in the compiled core's numbering (analyzer/core/seg.pxd): index 0 is "not ICMP"
ICMP_KINDS = (None, ICMP_NET_UNREACH, ICMP_HOST_UNREACH, ICMP_PORT_UNREACH, ICMP_PROTO_UNREACH,
              ICMP_ADMIN_PROHIBITED, ICMP_FRAG_NEEDED, ICMP_OTHER_UNREACH, ICMP_TIME_EXCEEDED)


@dataclass(slots=True)
class Segment:
    """One observed TCP segment (or an ICMP error quoting one).

    For an ICMP error (``icmp_kind`` is not None) the addresses, ports, seq and flags are those of
    the *quoted* TCP header, i.e. of the segment that provoked the error, so the segment maps onto
    the connection it concerns in its original direction; ``icmp_from`` is the address of the
    router or host that sent the ICMP message.
    """

    frame: int  # 1-based position in the input file, as Wireshark counts
    ts: float  # capture timestamp, seconds since the epoch
    src: str  # source address, textual (IPv6 compressed, no brackets)
    sport: int  # source port
    dst: str  # destination address
    dport: int  # destination port
    seq: int  # sequence number
    ack: int  # acknowledgment number (meaningful only with the ACK flag)
    flags: int  # TCP flag bits (FIN SYN RST PSH ACK URG ECE CWR)
    window: int = 0  # raw advertised window (not scaled)
    payload_len: int = 0  # TCP payload bytes, from the IP length (not the captured length)
    ip_version: int = 4  # 4 or 6
    ttl: int = 0  # IPv4 TTL or IPv6 hop limit
    ip_id: int = 0  # IPv4 identification (0 for IPv6)
    has_options: bool = False  # the TCP header carries options (data offset > 5)
    tsval: int | None = None  # TCP timestamp option value, if present
    tsecr: int | None = None  # TCP timestamp echo reply, if present
    checksum_ok: bool | None = None  # TCP checksum verdict; None when it could not be checked
    icmp_kind: str | None = None  # one of the ICMP_* kinds above, for ICMP errors only
    icmp_type: int | None = None  # raw ICMP type (v4 or v6 numbering)
    icmp_code: int | None = None  # raw ICMP code
    icmp_from: str | None = None  # address that sent the ICMP error

    @property
    def is_icmp(self) -> bool:
        return self.icmp_kind is not None

    def has(self, flag: int) -> bool:
        return bool(self.flags & flag)

    @property
    def seq_space(self) -> int:
        """Sequence numbers this segment occupies (payload, plus one each for SYN and FIN)."""
        return self.payload_len + (1 if self.flags & SYN else 0) + (1 if self.flags & FIN else 0)

    def flag_text(self) -> str:
        """tcpdump-style flag letters: S F R P . (ACK) U E W."""
        out = []
        for bit, letter in ((SYN, "S"), (FIN, "F"), (RST, "R"), (PSH, "P"), (URG, "U"),
                            (ECE, "E"), (CWR, "W")):
            if self.flags & bit:
                out.append(letter)
        if self.flags & ACK:
            out.append(".")
        return "".join(out) or "none"
