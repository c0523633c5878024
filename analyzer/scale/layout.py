"""Where a capture file can be cut: a walk over its record (pcap) or block (pcapng) headers.

``layout(path, target)`` reads no packet bytes, only the headers that chain the records, and
returns a ``Layout``: the file's format, its first and last packet times, how many frames it has
and ``cuts``, record boundaries about ``target`` bytes apart with the number of frames before
each. A worker can then start reading at a cut and know the frame numbers it is reading.

The walk is compiled (numba): a 5 GB capture has ten million records, and this runs before any
worker can start. It stops at the first header that looks wrong (too long, truncated, trailing
length that differs): nothing is cut after that point, so the part that holds the damage is read
by one reader from a good boundary on and reports it exactly as a reading of the whole file would.
pcapng files are cut only before an enhanced packet block of a described interface: a simple
packet block takes its time from the packet before it, which a reader starting there would lack.
"""

from __future__ import annotations

import gzip
import os
from dataclasses import dataclass, field

import numpy as np
from numba import njit

from analyzer.capture import pcap, pcapng

# pcapng block types, as the walk meets them
_SHB, _IDB, _PB, _SPB, _EPB = 0x0A0D0D0A, 1, 2, 3, 6
_BOM = 0x1A2B3C4D
BLOCK = 16 << 20  # bytes read at a time by the pcap walk


@dataclass
class Layout:
    """One capture file as the splitter sees it."""

    path: str
    format: str  # "pcap", "pcapng", or "gzip" (compressed: read whole, never cut)
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

    def chunks(self) -> list[tuple[int, int, int, int, int]]:
        """(start, end, frames before, section offset, interfaces) per chunk, covering the
        file from its first record to its end (the last chunk takes whatever follows the last
        cut, damage included)."""
        out = []
        for i, (off, frames, shb, nidb) in enumerate(self.cuts):
            end = self.cuts[i + 1][0] if i + 1 < len(self.cuts) else self.size
            out.append((off, end, frames, shb, nidb))
        return out


def _u32(buf, pos, little):
    if little:
        return (np.int64(buf[pos]) | (np.int64(buf[pos + 1]) << 8)
                | (np.int64(buf[pos + 2]) << 16) | (np.int64(buf[pos + 3]) << 24))
    return ((np.int64(buf[pos]) << 24) | (np.int64(buf[pos + 1]) << 16)
            | (np.int64(buf[pos + 2]) << 8) | np.int64(buf[pos + 3]))


_u32 = njit(cache=True, inline="always")(_u32)


@njit(cache=True)
def _walk_pcap(buf, base, pos, little, limit, target, state, cuts, stamps):
    """Walk the records in ``buf`` (the file's bytes from offset ``base``) from ``pos`` on;
    returns where it stopped: a record that does not fit in ``buf`` (read more), or one whose
    length is impossible (``state[2]`` set). ``state``: frames so far, offset of the last cut,
    stopped, cuts so far; ``cuts``: (offset, frames before) rows; ``stamps``: first and last
    record's (seconds, fraction)."""
    n = buf.shape[0]
    frames = state[0]
    k = state[3]
    while pos - base + 16 <= n:
        rel = pos - base
        caplen = _u32(buf, rel + 8, little)
        if caplen > limit:
            state[2] = 1
            break
        if rel + 16 + caplen > n:
            break
        if frames == 0 or pos - state[1] >= target:
            cuts[k, 0] = pos
            cuts[k, 1] = frames
            k += 1
            state[1] = pos
        stamps[1, 0] = _u32(buf, rel, little)
        stamps[1, 1] = _u32(buf, rel + 4, little)
        if frames == 0:
            stamps[0, 0] = stamps[1, 0]
            stamps[0, 1] = stamps[1, 1]
        frames += 1
        pos += 16 + caplen
    state[0] = frames
    state[3] = k
    return pos


@njit(cache=True)
def _offsets(buf, base, pos, little, out, k):
    """Record offsets into ``out`` from ``k`` on, while whole headers are in ``buf``."""
    n = buf.shape[0]
    while pos - base + 16 <= n and k < out.shape[0]:
        out[k] = pos
        k += 1
        pos += 16 + _u32(buf, pos - base + 8, little)
    return pos, k


def record_offsets(path: str, start: int, count: int, little: bool) -> np.ndarray:
    """Offsets of the first ``count`` records from ``start`` (a record boundary) of a pcap."""
    out = np.empty(count, np.int64)
    k, pos = 0, start
    with open(path, "rb") as f:
        while k < count:
            f.seek(pos)
            block = np.frombuffer(f.read(BLOCK), dtype=np.uint8)
            if len(block) < 16:
                break
            pos, k = _offsets(block, pos, pos, little, out, k)
    return out[:k]


@njit(cache=True)
def _walk_pcapng(buf, target, max_block):
    """Cuts, frames, where the walk stopped, IDB offsets with their section, and the
    (section, interface, high, low) of the first and last enhanced packet blocks."""
    n = buf.shape[0]
    cap = n // max(target, 1) + 2
    cuts = np.empty((cap, 4), np.int64)
    k = 0
    idbs = np.empty((n // 20 + 1, 2), np.int64)
    m = 0
    stamps = np.full((2, 4), -1, np.int64)
    pos = 0
    little = True
    frames = 0
    last_cut = 0
    shb = 0
    nidb = 0
    while pos + 12 <= n:
        if _u32(buf, pos, True) == _SHB:
            bom_le = _u32(buf, pos + 8, True)
            if bom_le == _BOM:
                little = True
            elif _u32(buf, pos + 8, False) == _BOM:
                little = False
            else:
                break
        btype = _u32(buf, pos, little)
        blen = _u32(buf, pos + 4, little)
        if blen < 12 or blen % 4 != 0 or blen > max_block or pos + blen > n:
            break
        if _u32(buf, pos + blen - 4, little) != blen:
            break
        if btype == _SHB:
            if blen < 28:
                break
            major = (buf[pos + 12] | (np.int64(buf[pos + 13]) << 8)) if little else \
                ((np.int64(buf[pos + 12]) << 8) | buf[pos + 13])
            if major != 1:
                break
            shb = pos
            nidb = 0
        elif btype == _IDB:
            if blen < 20:
                break
            idbs[m, 0] = pos
            idbs[m, 1] = shb
            m += 1
            nidb += 1
        elif btype == _EPB or btype == _PB:
            if blen < 32 or _u32(buf, pos + 20, little) > blen - 32:
                break
            iface = _u32(buf, pos + 8, little)
            if btype == _PB:
                iface = iface & 0xFFFF if little else iface >> 16
            if btype == _EPB and iface < nidb and (frames == 0 or pos - last_cut >= target):
                cuts[k, 0] = pos
                cuts[k, 1] = frames
                cuts[k, 2] = shb
                cuts[k, 3] = nidb
                k += 1
                last_cut = pos
            row = 0 if stamps[0, 0] < 0 else 1
            stamps[row, 0] = shb
            stamps[row, 1] = iface
            stamps[row, 2] = _u32(buf, pos + 12, little)
            stamps[row, 3] = _u32(buf, pos + 16, little)
            frames += 1
        elif btype == _SPB:
            if blen < 16:
                break
            frames += 1
        pos += blen
    return cuts[:k], frames, pos, idbs[:m], stamps


def _magic(path: str) -> bytes:
    with open(path, "rb") as f:
        return f.read(4)


def layout(path: str, target: int) -> Layout:
    """Walk ``path`` (already known to open as a capture) and place cuts ``target`` bytes apart.
    A gzip-compressed file is not walked: its first packet time is read, nothing else."""
    size = os.path.getsize(path)
    head = _magic(path)
    if head[:2] == b"\x1f\x8b":
        return Layout(path, "gzip", size, first_ts=_gzip_first_ts(path))
    if head in pcap.MAGICS:
        return _pcap_layout(path, size, max(target, 1))
    buf = np.memmap(path, dtype=np.uint8, mode="r") if size else np.zeros(0, np.uint8)
    return _pcapng_layout(path, size, buf, target)


def _pcap_layout(path: str, size: int, target: int) -> Layout:
    # read in blocks, not mapped: a mapping of the whole file would count in this process's
    # memory as the walk touches it (5 GB for the 10M-packet benchmark)
    with open(path, "rb") as f:
        head = f.read(pcap.HEADER_LEN)
        hdr = pcap.parse_header(head)
        limit = pcap.record_limit(hdr)
        state = np.zeros(4, np.int64)
        cuts = np.empty((size // target + 2, 2), np.int64)
        stamps = np.full((2, 2), -1, np.int64)
        pos = pcap.HEADER_LEN
        while True:
            f.seek(pos)
            block = np.frombuffer(f.read(max(BLOCK, 2 * (16 + limit))), dtype=np.uint8)
            stop = _walk_pcap(block, pos, pos, hdr.little_endian, limit, target, state, cuts,
                              stamps)
            at_end = pos + len(block) >= size
            pos = stop
            if state[2] or at_end:  # (a block holds two records of the largest size at least)
                break
    frames, k = int(state[0]), int(state[3])
    div = 1e9 if hdr.nanoseconds else 1e6
    out = Layout(path, "pcap", size, head, hdr.linktype,
                 [(int(o), int(n), 0, 0) for o, n in cuts[:k]], frames=frames,
                 clean=pos == size)
    if not out.cuts:  # no complete record: one chunk from the first record offset
        out.cuts = [(pcap.HEADER_LEN, 0, 0, 0)]
    if frames:  # the same arithmetic as the reader, so that times compare exactly
        out.first_ts = int(stamps[0, 0]) + int(stamps[0, 1]) / div
        out.last_ts = int(stamps[1, 0]) + int(stamps[1, 1]) / div
    return out


def _pcapng_layout(path: str, size: int, buf, target: int) -> Layout:
    cuts, frames, stop, idbs, stamps = _walk_pcapng(buf, max(target, 1), pcapng.MAX_BLOCK)
    out = Layout(path, "pcapng", size, frames=int(frames), clean=int(stop) == size)
    for off, shb in idbs:
        out.idbs.setdefault(int(shb), []).append(int(off))
    # the first chunk starts right after the file's section header: its interface blocks are
    # then read from the file itself, as a whole-file read would
    out.cuts = [(_block_len(buf, 0), 0, 0, 0)] + [
        (int(a), int(b), int(c), int(d)) for a, b, c, d in cuts if b != 0]
    first_idb = out.idbs.get(0, [])
    if first_idb:
        out.linktype = _interface(buf, first_idb[0], _little(buf, 0)).linktype
    for row, attr in ((0, "first_ts"), (1, "last_ts")):
        shb, iface, hi, lo = (int(x) for x in stamps[row])
        if row == 1 and shb < 0:
            shb, iface, hi, lo = (int(x) for x in stamps[0])
        offs = out.idbs.get(shb, [])
        if shb >= 0 and iface < len(offs):
            ifc = _interface(buf, offs[iface], _little(buf, shb))
            q, r = divmod((hi << 32) | lo, ifc.units)  # as pcapng.records computes it
            setattr(out, attr, q + r / ifc.units + ifc.offset)
    return out


def _little(buf, shb: int) -> bool:
    """Byte order of the section whose header block starts at ``shb``."""
    return bytes(buf[shb + 8:shb + 12]) == pcapng.BOM_LE


def _block_len(buf, pos: int) -> int:
    order = "little" if _little(buf, pos) else "big"
    return int.from_bytes(bytes(buf[pos + 4:pos + 8]), order)


def _interface(buf, off: int, little: bool) -> pcapng.Interface:
    blen = int.from_bytes(bytes(buf[off + 4:off + 8]), "little" if little else "big")
    return pcapng.interface_from_idb(bytes(buf[off + 8:off + blen - 4]), little)


def _gzip_first_ts(path: str) -> float | None:
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(pcap.HEADER_LEN + pcap.RECORD_LEN)
    except (OSError, EOFError):
        return None
    hdr = pcap.parse_header(head[:pcap.HEADER_LEN])
    if hdr is None or len(head) < pcap.HEADER_LEN + pcap.RECORD_LEN:
        return None
    order = "little" if hdr.little_endian else "big"
    sec = int.from_bytes(head[24:28], order)
    frac = int.from_bytes(head[28:32], order)
    return sec + frac / (1e9 if hdr.nanoseconds else 1e6)
