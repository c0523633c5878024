# cython: language_level=3, boundscheck=False, wraparound=False
"""Conversion between ``analyzer.segment.Segment`` and the core's ``Seg`` (seg.pxd).

Used by tests, which hand-build Segments, and by readers that are not native yet."""

import socket

from libc.string cimport memcpy, memset

from analyzer.segment import ICMP_KINDS, Segment

_KIND_INDEX = {k: i for i, k in enumerate(ICMP_KINDS)}

# Seg.tunnel.kind (seg.pxd's TUN_*) -> the name records give it (Zeek's Tunnel::Type, lowercase)
TUNNEL_KINDS = (None, "ip", "gre", "teredo", "ayiya", "vxlan", "geneve", "gtpv1")
assert len(TUNNEL_KINDS) == TUN_GTPV1 + 1 and TUNNEL_KINDS[TUN_TEREDO] == "teredo"


cdef int addr_parse(str text, Addr* out) except -1:
    cdef bytes raw
    memset(out, 0, sizeof(Addr))
    if ":" in text:
        raw = socket.inet_pton(socket.AF_INET6, text)
    else:
        raw = socket.inet_pton(socket.AF_INET, text)
    memcpy(out.b, <const char*>raw, len(raw))
    return 0


cdef object addr_text(const Addr* a, int ip_version):
    if ip_version == 6:
        return socket.inet_ntop(socket.AF_INET6, (<const char*>a.b)[:16])
    return socket.inet_ntop(socket.AF_INET, (<const char*>a.b)[:4])


cdef int seg_from_py(object seg, Seg* out) except -1:
    memset(out, 0, sizeof(Seg))
    out.frame = seg.frame
    out.ts = seg.ts
    addr_parse(seg.src, &out.src)
    addr_parse(seg.dst, &out.dst)
    out.sport = seg.sport
    out.dport = seg.dport
    out.seq = seg.seq & 0xFFFFFFFF
    out.ack = seg.ack & 0xFFFFFFFF
    out.flags = seg.flags & 0xFF
    out.ip_version = seg.ip_version
    out.ttl = seg.ttl
    out.has_options = 1 if seg.has_options else 0
    out.window = seg.window
    out.ip_id = seg.ip_id
    out.payload_len = seg.payload_len
    captured = getattr(seg, "payload_captured", None)
    out.payload_captured = -1 if captured is None else captured
    if seg.tsval is not None:
        out.has_tsopt = 1
        out.tsval = seg.tsval
        out.tsecr = seg.tsecr or 0
    out.checksum = CSUM_UNKNOWN if seg.checksum_ok is None else (
        CSUM_OK if seg.checksum_ok else CSUM_BAD)
    out.icmp_kind = _KIND_INDEX[seg.icmp_kind]
    out.icmp_type = -1 if seg.icmp_type is None else seg.icmp_type
    out.icmp_code = -1 if seg.icmp_code is None else seg.icmp_code
    if seg.icmp_from is not None:
        addr_parse(seg.icmp_from, &out.icmp_from)
    return 0


cdef object seg_to_py(const Seg* s):
    v = s.ip_version
    icmp = s.icmp_kind != ICMP_NONE
    return Segment(
        s.frame, s.ts, addr_text(&s.src, v), s.sport, addr_text(&s.dst, v), s.dport, s.seq,
        s.ack, s.flags, s.window, s.payload_len, v, s.ttl, s.ip_id, bool(s.has_options),
        s.tsval if s.has_tsopt else None, s.tsecr if s.has_tsopt else None,
        None if s.checksum == CSUM_UNKNOWN else s.checksum == CSUM_OK,
        ICMP_KINDS[s.icmp_kind], s.icmp_type if icmp else None, s.icmp_code if icmp else None,
        addr_text(&s.icmp_from, v) if icmp else None)


def roundtrip(seg):
    """Segment -> Seg -> Segment (tests hold the conversion to the identity)."""
    cdef Seg s
    seg_from_py(seg, &s)
    return seg_to_py(&s)
