"""A capture file's record (pcap) or block (pcapng) headers, walked without decoding packets.

``walk(path, target)`` returns a ``Layout``: the format, the link-layer header, the first and
last packet times (what tells whether files form a rotated set, ``inputs``), how many frames,
and ``cuts``, record boundaries about ``target`` bytes apart (where ``split`` cuts a file).

The pcap walk is compiled (``analyzer.core.decode.walk_pcap``): a set of 5 GB holds ten million
records, walked before anything is read. pcapng is walked here block by block (tcpdump's rotated
sets are pcap). Both stop at the first header that looks wrong; nothing is cut after it.
pcapng files are cut only before an enhanced packet block of a described interface: a simple
packet block takes its time from the packet before it.
"""

from __future__ import annotations

import gzip
import mmap
import os
import struct
from dataclasses import dataclass, field

from analyzer.capture.formats import (
    BOM_LE,
    NG_MAX_BLOCK,
    PCAP_HEADER_LEN,
    PCAP_MAGICS,
    PCAP_RECORD_LEN,
    SHB_MAGIC,
    pcap_header,
)
from analyzer.core.decode import idb_interface, walk_pcap

# pcapng block types, as the walk meets them
_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6


@dataclass
class Layout:
    """One capture file as the walk sees it."""

    path: str
    format: str  # "pcap", "pcapng", or "gzip" (compressed: not walked)
    size: int  # bytes on disk
    header: bytes = b""  # pcap: the 24-byte file header (identical in a rotated set)
    linktype: int | None = None  # pcap: the link type (pcapng: of its first interface)
    # (offset, frames before it, section header offset, interface blocks of that section before
    # it) per cut, the first at the first record; pcap cuts carry 0 for the last two
    cuts: list[tuple[int, int, int, int]] = field(default_factory=list)
    idbs: dict[int, list[int]] = field(default_factory=dict)  # pcapng: section -> IDB offsets
    frames: int | None = None  # frames in the file; None when not known without reading it
    clean: bool = False  # the walk reached the end of the file on a record boundary
    first_ts: float | None = None  # first and last packet times (None: no packet, or unknown)
    last_ts: float | None = None


def walk(path: str, target: int = 1 << 62) -> Layout:
    """Walk ``path`` (known to open as a capture), with cuts ``target`` bytes apart. A
    gzip-compressed file is not walked: its first packet time is read, nothing else."""
    size = os.path.getsize(path)
    with open(path, "rb") as f:
        head = f.read(4)
    if head[:2] == b"\x1f\x8b":
        return Layout(path, "gzip", size, first_ts=_gzip_first_ts(path))
    if head in PCAP_MAGICS:
        w = walk_pcap(path, max(target, 1))
        return Layout(path, "pcap", size, w["header"], w["linktype"],
                      [(o, n, 0, 0) for o, n in w["cuts"]] or [(PCAP_HEADER_LEN, 0, 0, 0)],
                      frames=w["frames"], clean=w["stop"] == size, first_ts=w["first"],
                      last_ts=w["last"])
    if not size:
        raise ValueError(f"{path}: empty file")
    with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
        return _pcapng(path, size, buf, max(target, 1))


def _pcapng(path: str, size: int, buf, target: int) -> Layout:
    out = Layout(path, "pcapng", size)
    u32 = struct.Struct("<I").unpack_from
    pos = frames = last_cut = shb = nidb = 0
    order = "<"
    first = last = None  # (section, interface, ticks)
    while pos + 12 <= size:
        if buf[pos:pos + 4] == SHB_MAGIC:
            bom = buf[pos + 8:pos + 12]
            if bom not in (BOM_LE, BOM_LE[::-1]):
                break
            order = "<" if bom == BOM_LE else ">"
            u32 = struct.Struct(order + "I").unpack_from
        btype, blen = u32(buf, pos)[0], u32(buf, pos + 4)[0]
        if blen < 12 or blen % 4 or blen > NG_MAX_BLOCK or pos + blen > size \
                or u32(buf, pos + blen - 4)[0] != blen:
            break
        if btype == _SHB:
            if blen < 28 or struct.unpack_from(order + "H", buf, pos + 12)[0] != 1:
                break
            shb, nidb = pos, 0
        elif btype == _IDB:
            if blen < 20:
                break
            out.idbs.setdefault(shb, []).append(pos)
            nidb += 1
        elif btype in (_EPB, _PB):
            if blen < 32 or u32(buf, pos + 20)[0] > blen - 32:
                break
            iface = u32(buf, pos + 8)[0]
            if btype == _PB:
                iface = iface & 0xFFFF if order == "<" else iface >> 16
            if btype == _EPB and iface < nidb and (not frames or pos - last_cut >= target):
                if frames:  # (the first piece starts at the file's start: below)
                    out.cuts.append((pos, frames, shb, nidb))
                last_cut = pos
            stamp = (shb, iface, (u32(buf, pos + 12)[0] << 32) | u32(buf, pos + 16)[0])
            first = first or stamp
            last = stamp
            frames += 1
        elif btype == _SPB:
            if blen < 16:
                break
            frames += 1
        pos += blen
    out.frames, out.clean = frames, pos == size
    # the first piece starts right after the file's section header: its interface blocks are
    # then read from the file itself
    out.cuts.insert(0, (_block_len(buf, 0), 0, 0, 0))
    if out.idbs.get(0):
        out.linktype = _interface(buf, out.idbs[0][0], 0)[0]
    for attr, stamp in (("first_ts", first), ("last_ts", last)):
        if stamp is not None and stamp[1] < len(out.idbs.get(stamp[0], [])):
            _, _, units, offset = _interface(buf, out.idbs[stamp[0]][stamp[1]], stamp[0])
            q, r = divmod(stamp[2], units)  # as the reader computes it
            setattr(out, attr, q + r / units + offset)
    return out


def _order(buf, shb: int) -> str:
    """Byte order of the section whose header block starts at ``shb``."""
    return "little" if buf[shb + 8:shb + 12] == BOM_LE else "big"


def _block_len(buf, pos: int) -> int:
    return int.from_bytes(buf[pos + 4:pos + 8], _order(buf, pos))


def _interface(buf, off: int, shb: int) -> tuple[int, int, int, int]:
    """(link type, snaplen, ticks per second, seconds added) of the IDB at ``off``."""
    little = _order(buf, shb) == "little"
    blen = int.from_bytes(buf[off + 4:off + 8], "little" if little else "big")
    return idb_interface(bytes(buf[off + 8:off + blen - 4]), little)


def read_block(f, off: int, shb: int) -> bytes:
    """The pcapng block at ``off``, in the section whose header block is at ``shb``."""
    f.seek(shb + 8)
    order = "little" if f.read(4) == BOM_LE else "big"
    f.seek(off + 4)
    length = int.from_bytes(f.read(4), order)
    f.seek(off)
    return f.read(length)


def _gzip_first_ts(path: str) -> float | None:
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(PCAP_HEADER_LEN + PCAP_RECORD_LEN)
    except (OSError, EOFError):
        return None
    hdr = pcap_header(head[:PCAP_HEADER_LEN])
    if hdr is None or len(head) < PCAP_HEADER_LEN + PCAP_RECORD_LEN:
        return None
    little, nanos = hdr[0], hdr[1]
    order = "little" if little else "big"
    sec = int.from_bytes(head[24:28], order)
    frac = int.from_bytes(head[28:32], order)
    return sec + frac / (1e9 if nanos else 1e6)
