"""Classic libpcap files: 24-byte global header, then 16-byte record headers + packet bytes.

https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from analyzer.capture.links import LINKTYPE_MASK

MAGIC_USEC_LE = b"\xd4\xc3\xb2\xa1"  # a1b2c3d4 written little-endian: microsecond stamps
MAGIC_USEC_BE = b"\xa1\xb2\xc3\xd4"  # a1b2c3d4 written big-endian
MAGIC_NSEC_LE = b"\x4d\x3c\xb2\xa1"  # a1b23c4d little-endian: nanosecond stamps
MAGIC_NSEC_BE = b"\xa1\xb2\x3c\x4d"  # a1b23c4d big-endian
MAGICS = frozenset((MAGIC_USEC_LE, MAGIC_USEC_BE, MAGIC_NSEC_LE, MAGIC_NSEC_BE))

HEADER_LEN = 24  # global header
RECORD_LEN = 16  # per-record header: ts_sec ts_frac caplen origlen
MAX_CAPLEN = 256 * 1024  # larger record lengths are taken as corruption (libpcap's own bound)


@dataclass(slots=True)
class PcapHeader:
    little_endian: bool  # byte order of every field
    nanoseconds: bool  # ts_frac counts nanoseconds (else microseconds)
    version: tuple[int, int]  # major, minor (2, 4)
    snaplen: int  # maximum captured length per packet
    linktype: int  # link-layer header type (low 16 bits of the field)
    fcs_bits: int  # upper bits of the linktype field (FCS presence/length), informational


def parse_header(raw: bytes) -> PcapHeader | None:
    """The global header from its 24 bytes, or None if the magic is not a pcap one."""
    magic = raw[:4]
    if magic not in MAGICS or len(raw) < HEADER_LEN:
        return None
    little = magic in (MAGIC_USEC_LE, MAGIC_NSEC_LE)
    major, minor, _zone, _sigfigs, snaplen, linkfield = struct.unpack_from(
        "<HHiIII" if little else ">HHiIII", raw, 4)
    return PcapHeader(little, magic in (MAGIC_NSEC_LE, MAGIC_NSEC_BE), (major, minor), snaplen,
                      linkfield & LINKTYPE_MASK, linkfield >> 16)


def record_limit(hdr: PcapHeader) -> int:
    """Record lengths above this are taken as damage (the fast reader's kernel uses it too)."""
    return max(MAX_CAPLEN, min(hdr.snaplen, 16 * MAX_CAPLEN))


def records(f, hdr: PcapHeader, ctx,
            pos: int = HEADER_LEN) -> Iterator[tuple[float, int, bytes]]:
    """Yield (ts, linktype, frame bytes) per record; damage goes to ``ctx.problems``.

    ``ctx`` is the CaptureReader: path, stats (frames counts records already yielded), problems.
    ``pos``: the file offset ``f`` is at (a record boundary), to continue a partial read.
    """
    unpack = struct.Struct("<IIII" if hdr.little_endian else ">IIII").unpack
    div = 1e9 if hdr.nanoseconds else 1e6
    limit = record_limit(hdr)
    linktype = hdr.linktype
    read = f.read
    stats = ctx.stats
    stats.bytes_read = pos
    while True:
        head = read(RECORD_LEN)
        if len(head) < RECORD_LEN:
            if head:
                ctx.damage(f"truncated record header ({len(head)} of {RECORD_LEN} bytes)",
                           pos, stats.frames + 1)
            return
        sec, frac, caplen, _wirelen = unpack(head)
        if caplen > limit:
            ctx.damage(f"record length {caplen} is absurd (snaplen {hdr.snaplen})",
                       pos, stats.frames + 1)
            return
        data = read(caplen)
        if len(data) < caplen:
            ctx.damage(f"truncated record: {len(data)} of {caplen} bytes present",
                       pos, stats.frames + 1)
            return
        pos += RECORD_LEN + caplen
        stats.bytes_read = pos
        yield sec + frac / div, linktype, data

