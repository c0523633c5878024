"""pcapng files: a sequence of blocks (type, total length, body, total length again).

https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html
Only what is needed to get packets with their link type and timestamp is decoded: section
headers (byte order; a new section forgets its interfaces), interface descriptions (link type,
snaplen, ``if_tsresol``, ``if_tsoffset``) and the three packet blocks. Other blocks are skipped.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from analyzer.capture.links import LINKTYPE_MASK

BT_SHB = 0x0A0D0D0A  # section header block (palindrome: same in both byte orders)
BT_IDB = 0x00000001  # interface description block
BT_PB = 0x00000002  # packet block (obsolete)
BT_SPB = 0x00000003  # simple packet block: interface 0, no timestamp
BT_EPB = 0x00000006  # enhanced packet block

SHB_MAGIC = b"\x0a\x0d\x0d\x0a"  # first 4 bytes of a pcapng file
BOM_LE = b"\x4d\x3c\x2b\x1a"  # byte-order magic 0x1a2b3c4d, little-endian
BOM_BE = b"\x1a\x2b\x3c\x4d"  # byte-order magic, big-endian

OPT_ENDOFOPT = 0  # end of options
OPT_IF_TSRESOL = 9  # 1 byte: 10**-v seconds, or 2**-(v & 0x7f) if the top bit is set
OPT_IF_TSOFFSET = 14  # 8 bytes signed: seconds added to every timestamp

MIN_BLOCK = 12  # type + two lengths
MIN_SHB = 28  # section header: type, length, byte-order magic, version, section length, length
VERSION_MAJOR = 1  # another major version is an incompatible format (minor ones are compatible)
MAX_BLOCK = 16 * 1024 * 1024  # larger block lengths are taken as corruption
DEFAULT_UNITS = 1_000_000  # default if_tsresol: microseconds


@dataclass(slots=True)
class Interface:
    linktype: int  # link-layer header type
    snaplen: int  # 0 means unlimited
    units: int  # timestamp ticks per second
    offset: int  # if_tsoffset, seconds


def parse_options(body: bytes, start: int, end: int, little: bool) -> dict[int, bytes]:
    """Option code -> value (first occurrence) from body[start:end]."""
    out: dict[int, bytes] = {}
    order = "little" if little else "big"
    i = start
    while i + 4 <= end:
        code = int.from_bytes(body[i:i + 2], order)
        length = int.from_bytes(body[i + 2:i + 4], order)
        if code == OPT_ENDOFOPT:
            break
        if i + 4 + length > end:
            break
        out.setdefault(code, body[i + 4:i + 4 + length])
        i += 4 + ((length + 3) & ~3)
    return out


def interface_from_idb(body: bytes, little: bool) -> Interface:
    """An Interface from an IDB body (the bytes after type and length, trailer excluded)."""
    linktype, _reserved, snaplen = struct.unpack_from("<HHI" if little else ">HHI", body, 0)
    opts = parse_options(body, 8, len(body), little)
    units = DEFAULT_UNITS
    resol = opts.get(OPT_IF_TSRESOL)
    if resol:
        v = resol[0]
        units = 2 ** (v & 0x7F) if v & 0x80 else 10 ** v
    offset = 0
    tsoff = opts.get(OPT_IF_TSOFFSET)
    if tsoff is not None and len(tsoff) == 8:
        offset = int.from_bytes(tsoff, "little" if little else "big", signed=True)
    return Interface(linktype & LINKTYPE_MASK, snaplen, units, offset)


def shb_problem(blen: int, body: bytes, little: bool) -> str | None:
    """What is wrong with a section header block of ``blen`` bytes whose bytes after the
    byte-order magic are ``body``, or None."""
    if blen < MIN_SHB:
        return f"section header block too short ({blen} bytes)"
    major, minor = struct.unpack_from("<HH" if little else ">HH", body, 0)
    if major != VERSION_MAJOR:
        return f"section header with unsupported pcapng version {major}.{minor}"
    return None


def records(f, head: bytes, ctx) -> Iterator[tuple[float, int, bytes]]:
    """Yield (ts, linktype, frame bytes) per packet block; linktype -1: undescribed interface.

    ``head`` holds bytes already read from the start of the file (the first 12 bytes, or the
    whole first section header block, as ``open_capture`` checked it).
    Damage goes to ``ctx.damage(message, offset, frame)``; ``ctx.stats`` counts skipped blocks.
    """
    read = f.read
    stats = ctx.stats
    pending = head
    pos = 0  # offset of the current block
    little = True
    u32 = struct.Struct("<I").unpack_from
    epb = struct.Struct("<IIIII").unpack_from
    interfaces: list[Interface] = []
    last_ts = 0.0
    while True:
        top = pending[:8]
        if len(top) < 8:
            top += read(8 - len(top))
        extra = pending[8:]  # the section header's byte-order magic, when already read
        pending = b""
        if len(top) < 8:
            if top:
                ctx.damage(f"truncated block header ({len(top)} of 8 bytes)", pos,
                           stats.frames + 1)
            return
        if top[:4] == SHB_MAGIC:
            bom = extra + read(4 - len(extra)) if len(extra) < 4 else extra[:4]
            if len(bom) < 4:
                ctx.damage("truncated section header block", pos, stats.frames + 1)
                return
            if bom == BOM_LE:
                little = True
            elif bom == BOM_BE:
                little = False
            else:
                ctx.damage(f"section header with bad byte-order magic {bom.hex(' ')}", pos,
                           stats.frames + 1)
                return
            u32 = struct.Struct("<I" if little else ">I").unpack_from
            epb = struct.Struct("<IIIII" if little else ">IIIII").unpack_from
            interfaces = []
            top += bom
        btype = u32(top, 0)[0]
        blen = u32(top, 4)[0]
        if blen < MIN_BLOCK or blen % 4 or blen > MAX_BLOCK or blen < len(top) + 4:
            ctx.damage(f"block of type 0x{btype:08x} has impossible length {blen}", pos,
                       stats.frames + 1)
            return
        rest = extra[4:]  # the rest of the first section header, when already read
        rest += read(blen - len(top) - len(rest))
        if len(rest) < blen - len(top):
            ctx.damage(f"truncated block of type 0x{btype:08x}: {len(top) + len(rest)} of "
                       f"{blen} bytes present", pos, stats.frames + 1)
            return
        if u32(rest, len(rest) - 4)[0] != blen:
            ctx.damage(f"block of type 0x{btype:08x}: trailing length "
                       f"{u32(rest, len(rest) - 4)[0]} differs from leading length {blen}",
                       pos, stats.frames + 1)
            return
        if btype == BT_SHB:
            problem = shb_problem(blen, rest, little)
            if problem:
                ctx.damage(problem, pos, stats.frames + 1)
                return
        block_at = pos
        pos += blen
        stats.bytes_read = pos
        body_len = len(rest) - 4  # body after the 8-byte header, trailer excluded
        if btype == BT_EPB:
            if body_len < 20:
                ctx.damage("enhanced packet block too short", block_at, stats.frames + 1)
                return
            iface, hi, lo, caplen, _origlen = epb(rest, 0)
            if caplen > body_len - 20:
                ctx.damage(f"enhanced packet block: captured length {caplen} exceeds the "
                           "block", block_at, stats.frames + 1)
                return
            data = rest[20:20 + caplen]
        elif btype == BT_SPB:
            if body_len < 4 or not interfaces:
                if body_len < 4:
                    ctx.damage("simple packet block too short", block_at, stats.frames + 1)
                    return
                yield last_ts, -1, rest[4:body_len]
                continue
            origlen = u32(rest, 0)[0]
            caplen = min(origlen, body_len - 4)
            if interfaces[0].snaplen:
                caplen = min(caplen, interfaces[0].snaplen)
            yield last_ts, interfaces[0].linktype, rest[4:4 + caplen]
            continue
        elif btype == BT_PB:
            if body_len < 20:
                ctx.damage("packet block too short", block_at, stats.frames + 1)
                return
            fmt = "<HHIIII" if little else ">HHIIII"
            iface, _drops, hi, lo, caplen, _origlen = struct.unpack_from(fmt, rest, 0)
            if caplen > body_len - 20:
                ctx.damage(f"packet block: captured length {caplen} exceeds the block",
                           block_at, stats.frames + 1)
                return
            data = rest[20:20 + caplen]
        elif btype == BT_IDB:
            if body_len < 8:
                ctx.damage("interface description block too short", block_at,
                           stats.frames + 1)
                return
            interfaces.append(interface_from_idb(rest[:body_len], little))
            continue
        else:
            if btype != BT_SHB:
                stats.skipped_blocks += 1
            continue
        # EPB or PB: timestamp in the interface's units.
        if iface >= len(interfaces):
            yield last_ts, -1, data
            continue
        ifc = interfaces[iface]
        q, r = divmod((hi << 32) | lo, ifc.units)
        last_ts = q + r / ifc.units + ifc.offset
        yield last_ts, ifc.linktype, data
