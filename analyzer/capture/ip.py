"""IPv4 / IPv6 / TCP / ICMP decoding: from the IP header offset in a frame to a `Segment`.

``decode(data, off, frame, ts, stats)`` returns a Segment or None; every frame it refuses is
counted in exactly one ``stats`` counter (non_tcp, truncated_frames, malformed, bad_ip_checksums).

Checksums use the fact that a ones-complement sum of 16-bit words is congruent to the big-endian
integer of those bytes modulo 0xFFFF (because 2**16 == 1 mod 0xFFFF): one ``int.from_bytes`` and
one ``%`` per packet instead of a Python loop. A correct checksum makes the total sum 0 mod 0xFFFF.
"""

from __future__ import annotations

import socket
import struct

from analyzer.segment import (
    ICMP_ADMIN_PROHIBITED,
    ICMP_FRAG_NEEDED,
    ICMP_HOST_UNREACH,
    ICMP_NET_UNREACH,
    ICMP_OTHER_UNREACH,
    ICMP_PORT_UNREACH,
    ICMP_PROTO_UNREACH,
    ICMP_TIME_EXCEEDED,
    Segment,
)

# IP protocol numbers / IPv6 next-header values.
IPPROTO_HOPOPTS = 0  # IPv6 hop-by-hop options
IPPROTO_ICMP = 1  # ICMPv4
IPPROTO_TCP = 6  # TCP
IPPROTO_ROUTING = 43  # IPv6 routing header
IPPROTO_FRAGMENT = 44  # IPv6 fragment header
IPPROTO_ESP = 50  # encrypted: nothing more to decode
IPPROTO_AH = 51  # authentication header (length in 4-byte units, minus 2)
IPPROTO_ICMPV6 = 58  # ICMPv6
IPPROTO_NONE = 59  # IPv6 no next header
IPPROTO_DSTOPTS = 60  # IPv6 destination options

ICMP_UNREACH = 3  # ICMPv4 destination unreachable
ICMP_TIMXCEED = 11  # ICMPv4 time exceeded
ICMP6_DST_UNREACH = 1  # ICMPv6 destination unreachable
ICMP6_PACKET_TOO_BIG = 2  # ICMPv6 packet too big
ICMP6_TIME_EXCEEDED = 3  # ICMPv6 time exceeded

TCPOPT_EOL = 0  # end of option list
TCPOPT_NOP = 1  # padding
TCPOPT_TIMESTAMP = 8  # kind 8, length 10: tsval, tsecr

MAX_EXT_HEADERS = 16  # bound on the IPv6 extension header chain
RT_TYPE0 = 0  # IPv6 routing header type 0 (deprecated): list of addresses, final one last
RT_TYPE2 = 2  # mobile IPv6 type 2: one home address
RT_SRH = 4  # segment routing header: segment list[0] is the final segment

_IP4 = struct.Struct("!BBHHHBBH4s4s")  # ver/ihl tos len id frag ttl proto csum src dst
_IP6 = struct.Struct("!IHBB16s16s")  # ver/class/flow plen nxt hlim src dst
_TCP = struct.Struct("!HHIIBBHHH")  # sport dport seq ack off flags win csum urp
_TCP8 = struct.Struct("!HHI")  # first 8 bytes: sport dport seq
_TSOPT = struct.Struct("!II")  # timestamp option value and echo reply
_NOP_NOP_TS = bytes((TCPOPT_NOP, TCPOPT_NOP, TCPOPT_TIMESTAMP, 10))
_MSS4 = bytes((2, 4))  # MSS option, length 4
_SACKOK_TS = bytes((4, 2, TCPOPT_TIMESTAMP, 10))  # SACK permitted (length 2), then timestamp

_V4_UNREACH_KIND = {
    0: ICMP_NET_UNREACH, 6: ICMP_NET_UNREACH, 11: ICMP_NET_UNREACH,
    1: ICMP_HOST_UNREACH, 7: ICMP_HOST_UNREACH, 12: ICMP_HOST_UNREACH,
    2: ICMP_PROTO_UNREACH,
    3: ICMP_PORT_UNREACH,
    4: ICMP_FRAG_NEEDED,
    9: ICMP_ADMIN_PROHIBITED, 10: ICMP_ADMIN_PROHIBITED, 13: ICMP_ADMIN_PROHIBITED,
}
_V6_UNREACH_KIND = {
    0: ICMP_NET_UNREACH,
    3: ICMP_HOST_UNREACH,
    4: ICMP_PORT_UNREACH,
    1: ICMP_ADMIN_PROHIBITED, 5: ICMP_ADMIN_PROHIBITED, 6: ICMP_ADMIN_PROHIBITED,
}

_ntop = socket.inet_ntop
_AF_INET6 = socket.AF_INET6
_from_bytes = int.from_bytes


def icmp_kind(version: int, icmp_type: int, code: int) -> str | None:
    """The Segment ICMP kind for an error type/code, or None if it is not a handled error."""
    if version == 4:
        if icmp_type == ICMP_UNREACH:
            return _V4_UNREACH_KIND.get(code, ICMP_OTHER_UNREACH)
        if icmp_type == ICMP_TIMXCEED:
            return ICMP_TIME_EXCEEDED
        return None
    if icmp_type == ICMP6_DST_UNREACH:
        return _V6_UNREACH_KIND.get(code, ICMP_OTHER_UNREACH)
    if icmp_type == ICMP6_PACKET_TOO_BIG:
        return ICMP_FRAG_NEEDED
    if icmp_type == ICMP6_TIME_EXCEEDED:
        return ICMP_TIME_EXCEEDED
    return None


# dotted decimal, as f"{b[0]}.{b[1]}.{b[2]}.{b[3]}" gives it, in C (two per packet)
_ip4_text = socket.inet_ntoa


def tcp_timestamps(data: bytes, start: int, end: int) -> tuple[int, int] | None:
    """(tsval, tsecr) from the TCP options in data[start:end], or None."""
    # the layout Linux sends on every segment after the handshake: NOP, NOP, timestamp
    if data[start:start + 4] == _NOP_NOP_TS and start + 12 <= end:
        return _TSOPT.unpack_from(data, start + 4)
    # ... and on its SYNs: MSS, SACK permitted, timestamp (then NOP, window scale)
    if data[start:start + 2] == _MSS4 and data[start + 4:start + 8] == _SACKOK_TS \
            and start + 16 <= end:
        return _TSOPT.unpack_from(data, start + 8)
    i = start
    while i < end:
        kind = data[i]
        if kind == TCPOPT_EOL:
            return None
        if kind == TCPOPT_NOP:
            i += 1
            continue
        if i + 1 >= end:
            return None
        length = data[i + 1]
        if length < 2 or i + length > end:
            return None
        if kind == TCPOPT_TIMESTAMP and length == 10:
            return _TSOPT.unpack_from(data, i + 2)
        i += length
    return None


def _ip6_upper(data: bytes, nxt: int, p: int, end: int) -> tuple[int, int, bool, bytes | None]:
    """Walk IPv6 extension headers from ``p``: (protocol, offset, fragmented, final_dst).

    protocol is -1 when the chain stops (ESP, no-next-header, non-first fragment, too short).
    final_dst is the final destination named by a routing header with segments left (it replaces
    the IPv6 destination in the TCP pseudo-header), else None.
    """
    fragmented = False
    final_dst = None
    for _ in range(MAX_EXT_HEADERS):
        if nxt == IPPROTO_TCP or nxt == IPPROTO_ICMPV6:
            return nxt, p, fragmented, final_dst
        if nxt == IPPROTO_HOPOPTS or nxt == IPPROTO_ROUTING or nxt == IPPROTO_DSTOPTS:
            if p + 8 > end:
                return -1, p, fragmented, final_dst
            if nxt == IPPROTO_ROUTING and data[p + 3]:  # segments left
                final_dst = _routing_final(data, p, end)
            nxt, size = data[p], (data[p + 1] + 1) * 8
        elif nxt == IPPROTO_FRAGMENT:
            if p + 8 > end:
                return -1, p, fragmented, final_dst
            frag = (data[p + 2] << 8) | data[p + 3]
            if frag & 0xFFF8:  # non-first fragment: no TCP header here
                return -1, p, True, final_dst
            fragmented = fragmented or bool(frag & 1)
            nxt, size = data[p], 8
        elif nxt == IPPROTO_AH:
            if p + 8 > end:
                return -1, p, fragmented, final_dst
            nxt, size = data[p], (data[p + 1] + 2) * 4
        else:  # ESP, no next header, UDP, anything else
            return -1, p, fragmented, final_dst
        p += size
    return -1, p, fragmented, final_dst


def _routing_final(data: bytes, p: int, end: int) -> bytes | None:
    """Final destination in the routing header at ``p`` (types 0 and 2: last address listed;
    type 4, segment routing: segment list[0]); None for other types or when not captured."""
    rtype = data[p + 2]
    hdr_end = p + (data[p + 1] + 1) * 8
    if rtype == RT_TYPE0 or rtype == RT_TYPE2:
        a = hdr_end - 16
    elif rtype == RT_SRH:
        a = p + 8
    else:
        return None
    if a < p + 8 or a + 16 > end or a + 16 > hdr_end:
        return None
    return data[a:a + 16]


def decode(data: bytes, off: int, frame: int, ts: float, stats,
           check_ip: bool = True) -> Segment | None:
    """Decode the IP packet at ``data[off:]``; count refusals in ``stats``.

    A wrong IPv4 header checksum is counted in ``stats.bad_ip_checksums``; the packet is dropped
    unless ``check_ip`` is False (Zeek's ``-C``).
    """
    n = len(data)
    if n < off + 20:
        stats.truncated_frames += 1
        return None
    version = data[off] >> 4
    if version == 4:
        vihl, _tos, total, ip_id, frag, ttl, proto, _csum, src_b, dst_b = _IP4.unpack_from(
            data, off)
        ihl = (vihl & 15) << 2
        if ihl < 20:
            stats.malformed += 1
            return None
        if n < off + ihl:
            stats.truncated_frames += 1
            return None
        if _from_bytes(data[off:off + ihl], "big") % 0xFFFF:
            stats.bad_ip_checksums += 1
            if check_ip:
                return None
        if frag & 0x1FFF:  # non-first fragment
            stats.non_tcp += 1
            return None
        if total == 0:  # TSO/GSO capture: length left to the NIC; trust what was captured
            total = n - off
        elif total < ihl:
            stats.malformed += 1
            return None
        t = off + ihl
        end = off + total  # end of the IP packet (may lie beyond the captured bytes)
        if proto == IPPROTO_TCP:
            fragmented = bool(frag & 0x2000)
            addr_sum = _from_bytes(src_b + dst_b, "big")
            src = _ip4_text(src_b)
            dst = _ip4_text(dst_b)
        elif proto == IPPROTO_ICMP:
            return _icmp(data, t, end, 4, frame, ts, _ip4_text(src_b), ttl, stats)
        else:
            stats.non_tcp += 1
            return None
    elif version == 6:
        if n < off + 40:
            stats.truncated_frames += 1
            return None
        _vcf, plen, nxt, ttl, src_b, dst_b = _IP6.unpack_from(data, off)
        ip_id = 0
        if plen == 0:  # jumbogram or GSO: trust the captured length
            plen = n - off - 40
        end = off + 40 + plen
        proto, t, fragmented, final_dst = _ip6_upper(data, nxt, off + 40, min(n, end))
        if proto == IPPROTO_TCP:
            addr_sum = _from_bytes(src_b + (final_dst or dst_b), "big")
            src = _ntop(_AF_INET6, src_b)
            dst = _ntop(_AF_INET6, dst_b)
        elif proto == IPPROTO_ICMPV6:
            return _icmp(data, t, end, 6, frame, ts, _ntop(_AF_INET6, src_b), ttl, stats)
        elif t > n:
            stats.truncated_frames += 1
            return None
        else:
            stats.non_tcp += 1
            return None
    else:
        stats.non_tcp += 1
        return None

    # TCP header at t, IP packet ends at end.
    if n < t + 20:
        stats.truncated_frames += 1
        return None
    sport, dport, seq, ack, doff, flags, window, csum, _urp = _TCP.unpack_from(data, t)
    hlen = (doff >> 4) << 2
    if hlen < 20 or t + hlen > end:
        stats.malformed += 1
        return None
    tsval = tsecr = None
    if hlen > 20:
        if n < t + hlen:
            stats.truncated_frames += 1
            return None
        opts = tcp_timestamps(data, t + 20, t + hlen)
        if opts is not None:
            tsval, tsecr = opts
    tcp_len = end - t
    checksum_ok = None
    if n >= end and not fragmented:
        total_sum = _from_bytes(data[t:end], "big")
        if tcp_len & 1:
            total_sum <<= 8
        pseudo = (addr_sum + IPPROTO_TCP + tcp_len) % 0xFFFF
        if (total_sum + pseudo) % 0xFFFF == 0:
            checksum_ok = True
        elif csum % 0xFFFF == pseudo or (0xFFFF - csum) % 0xFFFF == pseudo:
            stats.offloaded_checksums += 1  # partial checksum: offloaded to the NIC
        else:
            checksum_ok = False
            stats.bad_tcp_checksums += 1
    stats.tcp_segments += 1
    return Segment(frame, ts, src, sport, dst, dport, seq, ack, flags, window,
                   tcp_len - hlen, version, ttl, ip_id, hlen > 20, tsval, tsecr, checksum_ok)


def _icmp(data: bytes, t: int, end: int, version: int, frame: int, ts: float, icmp_from: str,
          ttl: int, stats) -> Segment | None:
    """An ICMP(v6) error at ``t`` quoting a TCP header, as a Segment of the quoted packet."""
    n = min(len(data), end)
    if n < t + 8:
        stats.non_tcp += 1
        return None
    icmp_type = data[t]
    code = data[t + 1]
    kind = icmp_kind(version, icmp_type, code)
    if kind is None:
        stats.non_tcp += 1
        return None
    q = t + 8  # quoted IP header
    if n < q + 20:
        stats.non_tcp += 1
        return None
    qversion = data[q] >> 4
    if qversion == 4:
        vihl, _tos, qtotal, ip_id, frag, _ttl, proto, _c, src_b, dst_b = _IP4.unpack_from(data, q)
        ihl = (vihl & 15) << 2
        if ihl < 20 or proto != IPPROTO_TCP or frag & 0x1FFF:
            stats.non_tcp += 1
            return None
        src = _ip4_text(src_b)
        dst = _ip4_text(dst_b)
        qt = q + ihl
        qpayload = qtotal - ihl
    elif qversion == 6:
        if n < q + 40:
            stats.non_tcp += 1
            return None
        _vcf, plen, nxt, _hl, src_b, dst_b = _IP6.unpack_from(data, q)
        ip_id = 0
        proto, qt, _frag, _final = _ip6_upper(data, nxt, q + 40, n)
        if proto != IPPROTO_TCP:
            stats.non_tcp += 1
            return None
        src = _ntop(_AF_INET6, src_b)
        dst = _ntop(_AF_INET6, dst_b)
        qpayload = q + 40 + plen - qt
    else:
        stats.non_tcp += 1
        return None
    if n < qt + 8:
        stats.non_tcp += 1
        return None
    sport, dport, seq = _TCP8.unpack_from(data, qt)
    ack = flags = window = payload_len = 0
    has_options = False
    have = n - qt
    if have >= 12:
        ack = _from_bytes(data[qt + 8:qt + 12], "big")
    if have >= 14:
        hlen = (data[qt + 12] >> 4) << 2
        flags = data[qt + 13]
        has_options = hlen > 20
        if hlen >= 20 and qpayload >= hlen:
            payload_len = qpayload - hlen
    if have >= 16:
        window = (data[qt + 14] << 8) | data[qt + 15]
    stats.icmp_errors += 1
    return Segment(frame, ts, src, sport, dst, dport, seq, ack, flags, window, payload_len,
                   qversion, ttl, ip_id, has_options, None, None, None, kind, data[t], code,
                   icmp_from)
