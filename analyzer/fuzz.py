"""Fuzzing the capture reader and the whole `rstscope analyze` path with hostile input.

Every input is derived deterministically from ``(seed, index)``: a real capture (``captures/*.pcap``
and the Zeek oracle traces) mutated by one structure-aware mutator, or a synthetic capture of
random TCP segments. Each is analyzed in-process with ``analyzer.cli.main(["analyze", "--json",
path])`` and checked:

* no exception escapes ``main`` and no traceback is printed; the exit code is 0, 1 or 2;
* every standard error line names the file; exit 0 has no error line, exit 2 exactly one, with
  its byte offset; exit 1 one or two: where reading stopped (byte offset, frame), and one line
  for the damaged frames skipped on the way (the first one's frame and what was wrong, and how
  many);
* the damaged frames reported are exactly those found by walking the file with this module's own
  parsers (frames whose IP/TCP header lengths lie, packet blocks naming an undescribed
  interface): same count, same first frame, and for pcap the same record offset;
* never lose what was read: on exit 1 with damage at byte D, the JSON records equal those of the
  undamaged prefix ``file[:D]``, its damaged frames zeroed (which must itself analyze with exit
  0); with damaged frames only, those of the whole file with its damaged frames zeroed;
* the reader's counters add up (every frame counted once) and it reports at most one problem of
  each kind;
* mutator-specific expectations: the exit code, the damage offset (a cut inside record k must be
  reported at record k's offset), equal records where the mutation must not change them
  (pcap converted to pcapng, unknown pcapng blocks inserted).

A sample also runs through ``python -m analyzer analyze --json`` as a subprocess (end to end: no
traceback, same exit and records as in-process). Usage::

    python -m analyzer.fuzz --inputs 100000 --workers 2 --seconds 600
    python -m analyzer.fuzz --replay 1234 --keep /tmp/x.pcap    # rebuild and check one input
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import gzip
import hashlib
import io
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter, OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CAPTURES = ROOT / "captures"
ORACLE_TRACES = Path("/work/shared/zeek-oracle/traces")
MAX_SEED_SIZE = 128 * 1024  # bigger traces take too long per input
PER_INPUT_SECONDS = 30  # an input taking longer is a failure (a hang)

PCAP_MAGIC_LE = b"\xd4\xc3\xb2\xa1"
PCAP_MAGICS = {b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4", b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"}
NG_SHB = 0x0A0D0D0A
NG_MAGIC = b"\x0a\x0d\x0d\x0a"
NG_IDB, NG_PB, NG_SPB, NG_EPB = 1, 2, 3, 6
NG_BOM_LE = b"\x4d\x3c\x2b\x1a"
MAX_PCAP_CAPLEN = 256 * 1024  # the reader's bound (pcap.MAX_CAPLEN), restated on purpose
MAX_NG_BLOCK = 16 * 1024 * 1024  # the reader's bound (pcapng.MAX_BLOCK)

_LOC = re.compile(r" \((?:frame (\d+)(?:, byte (\d+))?|byte (\d+))\): ")
_SKIPPED = re.compile(r" \(frame skipped(?:, and (\d+) more damaged frames? after it)?; "
                      r"the rest was analyzed\)$")


class InputTimeout(BaseException):
    """Raised by the per-input alarm; a BaseException so that ``main`` does not swallow it."""


# --- capture layout (own parsers, independent of the reader) ---------------------------------

@dataclass
class PcapLayout:
    little: bool
    nanos: bool
    snaplen: int
    linktype: int
    records: list[tuple[int, int]]  # (offset of the 16-byte record header, caplen)
    end: int  # offset after the last complete record


def pcap_layout(data: bytes) -> PcapLayout | None:
    if len(data) < 24 or data[:4] not in PCAP_MAGICS:
        return None
    little = data[:4] in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1")
    e = "<" if little else ">"
    snaplen, linkfield = struct.unpack_from(e + "II", data, 16)
    recs = []
    pos = 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from(e + "I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        recs.append((pos, caplen))
        pos += 16 + caplen
    return PcapLayout(little, data[:4] in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"), snaplen,
                      linkfield & 0xFFFF, recs, pos)


@dataclass
class Block:
    offset: int
    btype: int
    length: int
    little: bool


def ng_layout(data: bytes) -> list[Block]:
    blocks = []
    pos = 0
    little = True
    while pos + 12 <= len(data):
        if data[pos:pos + 4] == NG_MAGIC:
            little = data[pos + 8:pos + 12] == NG_BOM_LE
        e = "<" if little else ">"
        btype, blen = struct.unpack_from(e + "II", data, pos)
        if blen < 12 or blen % 4 or pos + blen > len(data):
            break
        blocks.append(Block(pos, btype, blen, little))
        pos += blen
    return blocks


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(btype: int, body: bytes, e: str = "<") -> bytes:
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(e + "II", btype, total) + body + struct.pack(e + "I", total)


def ng_shb(e: str = "<", major: int = 1, minor: int = 0) -> bytes:
    return ng_block(NG_SHB, struct.pack(e + "IHHq", 0x1A2B3C4D, major, minor, -1), e)


def ng_idb(linktype: int, snaplen: int = 0, tsresol: int | None = None, e: str = "<") -> bytes:
    body = struct.pack(e + "HHI", linktype, 0, snaplen)
    if tsresol is not None:
        body += struct.pack(e + "HH", 9, 1) + bytes([tsresol, 0, 0, 0]) + struct.pack(e + "HH",
                                                                                     0, 0)
    return ng_block(NG_IDB, body, e)


def ng_epb(iface: int, ticks: int, frame: bytes, e: str = "<", origlen: int | None = None
           ) -> bytes:
    return ng_block(NG_EPB, struct.pack(e + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF,
                                        len(frame), len(frame) if origlen is None else origlen)
                    + frame, e)


def pcap_file(records: list[tuple[int, int, bytes]], linktype: int = 1, nanos: bool = False,
              e: str = "<", snaplen: int = 65535) -> bytes:
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(e + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for sec, frac, frame in records:
        out.append(struct.pack(e + "IIII", sec, frac, len(frame), len(frame)))
        out.append(frame)
    return b"".join(out)


def pcap_records(data: bytes, lay: PcapLayout) -> list[tuple[int, int, bytes]]:
    e = "<" if lay.little else ">"
    out = []
    for off, caplen in lay.records:
        sec, frac = struct.unpack_from(e + "II", data, off)
        out.append((sec, frac, data[off + 16:off + 16 + caplen]))
    return out


def pcap_to_pcapng(data: bytes, big_endian: bool = False) -> bytes | None:
    """The same packets (same timestamps, same frame numbers) as a pcapng file."""
    lay = pcap_layout(data)
    if lay is None:
        return None
    e = ">" if big_endian else "<"
    units = 10**9 if lay.nanos else 10**6
    parts = [ng_shb(e), ng_idb(lay.linktype, lay.snaplen, 9 if lay.nanos else None, e)]
    for sec, frac, frame in pcap_records(data, lay):
        parts.append(ng_epb(0, sec * units + frac, frame, e))
    return b"".join(parts)


# --- synthetic packets -----------------------------------------------------------------------

def _csum(b: bytes) -> int:
    if len(b) % 2:
        b += b"\0"
    s = sum(struct.unpack(f"!{len(b) // 2}H", b))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return ~s & 0xFFFF


def tcp_packet(src: bytes, dst: bytes, sport: int, dport: int, seq: int, ack: int, flags: int,
               window: int = 65535, payload: bytes = b"", options: bytes = b"") -> bytes:
    """An IPv4 (4-byte addresses) or IPv6 (16-byte) packet carrying one TCP segment, checksums
    right."""
    options = _pad4(options)
    hlen = 20 + len(options)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF,
                      (hlen // 4) << 4, flags & 0xFF, window, 0, 0) + options + payload
    if len(src) == 4:
        pseudo = src + dst + struct.pack("!BBH", 0, 6, len(tcp))
    else:
        pseudo = src + dst + struct.pack("!IxxxB", len(tcp), 6)
    tcp = tcp[:16] + struct.pack("!H", _csum(pseudo + tcp)) + tcp[18:]
    if len(src) == 4:
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), 1, 0x4000, 64, 6, 0, src, dst)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        return ip + tcp
    return struct.pack("!IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst) + tcp


def icmp_error(router: bytes, dst: bytes, quoted: bytes, kind: int = 3, code: int = 3) -> bytes:
    """An ICMPv4 (or ICMPv6, for 16-byte addresses) error quoting ``quoted``."""
    if len(router) == 4:
        body = struct.pack("!BBHI", kind, code, 0, 0) + quoted[:28]
        body = body[:2] + struct.pack("!H", _csum(body)) + body[4:]
        ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(body), 1, 0, 64, 1, 0, router, dst)
        ip = ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:]
        return ip + body
    body = struct.pack("!BBHI", kind, code, 0, 0) + quoted[:48]
    return struct.pack("!IHBB16s16s", 0x60000000, len(body), 58, 64, router, dst) + body


def ethernet(ip: bytes) -> bytes:
    etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return b"\x02\0\0\0\0\x01\x02\0\0\0\0\x02" + struct.pack("!H", etype) + ip


FLAG_CHOICES = [0x02, 0x12, 0x10, 0x18, 0x11, 0x04, 0x14, 0x01, 0x19, 0x03, 0x06, 0x3F, 0x00,
                0x16, 0xC2]  # S SA A PA FA R RA F FPA SF SR all none SRA S+ECE/CWR


@dataclass
class SegSpec:
    """One synthetic packet: endpoint pair, direction, flags, sequence deltas, payload, gap."""

    pair: int  # which of a few endpoint pairs (0..3)
    reverse: bool  # sent by the server side
    flags: int
    seq_delta: int  # added to the sender's running sequence number before sending
    ack_delta: int
    payload: int  # payload length
    gap: float  # seconds after the previous packet (may be negative: clock step)
    icmp: bool = False  # an ICMP error quoting this segment instead of the segment


_ENDPOINTS = [
    (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40000, 80),
    (bytes([10, 0, 0, 1]), bytes([10, 0, 0, 2]), 40001, 80),
    (bytes(15) + b"\x01", bytes(15) + b"\x02", 50000, 443),
    (bytes([192, 168, 0, 9]), bytes([192, 168, 0, 9]), 5555, 5555),  # same host and port
]


def synth_capture(specs: list[SegSpec], fmt: str = "pcap", isn: int = 0xFFFFFF00) -> bytes:
    """A pcap (or pcapng) of synthetic segments; sequence numbers start near wrap-around."""
    nxt: dict[tuple[int, bool], int] = {}
    t = 1_700_000_000.0
    recs = []
    for s in specs:
        src, dst, sport, dport = _ENDPOINTS[s.pair % len(_ENDPOINTS)]
        if s.reverse:
            src, dst, sport, dport = dst, src, dport, sport
        seq = nxt.get((s.pair, s.reverse), isn + 1000 * s.pair + (7 if s.reverse else 0))
        seq = (seq + s.seq_delta) & 0xFFFFFFFF
        peer = nxt.get((s.pair, not s.reverse), 0)
        ack = (peer + s.ack_delta) & 0xFFFFFFFF
        pkt = tcp_packet(src, dst, sport, dport, seq, ack, s.flags, payload=b"x" * s.payload)
        if s.icmp:
            router = bytes([10, 9, 9, 9]) if len(src) == 4 else bytes(15) + b"\x09"
            pkt = icmp_error(router, src, pkt)
        nxt[(s.pair, s.reverse)] = (seq + s.payload + bool(s.flags & 0x02)
                                    + bool(s.flags & 0x01)) & 0xFFFFFFFF
        t = max(0.0, t + s.gap)
        usec = round(t * 1e6)
        recs.append((usec // 10**6, usec % 10**6, ethernet(pkt)))
    blob = pcap_file(recs)
    return pcap_to_pcapng(blob) if fmt == "pcapng" else blob


def random_specs(rng: random.Random, n: int) -> list[SegSpec]:
    out = []
    for _ in range(n):
        out.append(SegSpec(
            pair=rng.randrange(4), reverse=rng.random() < 0.45,
            flags=rng.choice(FLAG_CHOICES) if rng.random() < 0.9 else rng.randrange(256),
            seq_delta=rng.choice([0, 0, 0, 1, -1, 1000, -1000, 2**31, rng.randrange(2**32)]),
            ack_delta=rng.choice([0, 0, 0, 1, -1, 2**31, rng.randrange(2**32)]),
            payload=rng.choice([0, 0, 0, 1, 10, 1400]),
            gap=rng.choice([0.0, 0.001, 0.2, 1.0, 3.0, 6.0, 61.0, 400.0, 7300.0, -5.0]),
            icmp=rng.random() < 0.05))
    return out


# --- mutants ---------------------------------------------------------------------------------

@dataclass
class Mutant:
    category: str
    data: bytes  # the file analyzed
    detail: str = ""
    plain: bytes | None = None  # uncompressed bytes (prefix references are cut from these)
    exits: frozenset[int] = frozenset((0, 1, 2))  # allowed exit codes
    damage_at: int | None = None  # expected byte offset of the damage (exit 1)
    same_as: bytes | None = None  # a file whose records these must equal (exit 0 expected)
    args: tuple[str, ...] = ("--json",)  # options of `rstscope analyze` (the reference's too)


@dataclass
class Seed:
    name: str
    data: bytes  # as stored (pcap or pcapng)
    pcap: bytes | None  # pcap form (None for pcapng seeds)
    ng: bytes  # pcapng form

    @functools.cached_property
    def pcap_lay(self) -> PcapLayout | None:
        return pcap_layout(self.pcap) if self.pcap else None

    @functools.cached_property
    def ng_blocks(self) -> list[Block]:
        return ng_layout(self.ng)


def load_seeds(max_size: int = MAX_SEED_SIZE) -> list[Seed]:
    paths = sorted(CAPTURES.glob("*.pcap"))
    if ORACLE_TRACES.is_dir():
        paths += sorted(p for p in ORACLE_TRACES.rglob("*") if p.is_file())
    seeds = []
    for p in paths:
        data = p.read_bytes()
        if not data or len(data) > max_size:
            continue
        if data[:4] in PCAP_MAGICS:
            ng = pcap_to_pcapng(data)
            seeds.append(Seed(str(p), data, data, ng))
        elif data[:4] == NG_MAGIC:
            seeds.append(Seed(str(p), data, None, data))
    return seeds


def _either(seed: Seed, rng: random.Random) -> tuple[bytes, str]:
    if seed.pcap is not None and rng.random() < 0.6:
        return seed.pcap, "pcap"
    return seed.ng, "pcapng"


def _boundaries(data: bytes, fmt: str) -> list[int]:
    if fmt == "pcap":
        lay = pcap_layout(data)
        return [24] + [off + 16 + caplen for off, caplen in lay.records]
    return [b.offset + b.length for b in ng_layout(data)]


def m_truncate_boundary(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    cut = rng.choice(_boundaries(data, fmt))
    return Mutant("truncate-boundary", data[:cut], f"{fmt} cut at {cut}", exits=frozenset((0,)))


def truncate_inside(data: bytes, fmt: str, cut: int) -> Mutant:
    """``data`` cut at ``cut``: the expected exit and damage offset (cut inside the file header:
    exit 2; inside record k: exit 1, damage at record k, unless cut is a boundary: exit 0)."""
    m = Mutant("truncate-inside", data[:cut], f"{fmt} cut at {cut}")
    bounds = _boundaries(data, fmt)
    header_end = bounds[0]
    if cut in bounds:
        m.exits = frozenset((0,))
    elif cut < header_end:
        m.exits = frozenset((2,))
    else:
        m.exits = frozenset((1,))
        m.damage_at = max(b for b in bounds if b < cut)
    return m


def m_truncate_inside(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    return truncate_inside(data, fmt, rng.randrange(0, len(data)))


def m_flip(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    b = bytearray(data)
    spots = []
    for _ in range(rng.choice([1, 1, 2, 3, 8])):
        i = rng.randrange(len(b))
        b[i] = rng.randrange(256) if rng.random() < 0.5 else b[i] ^ (1 << rng.randrange(8))
        spots.append(i)
    return Mutant("flip", bytes(b), f"{fmt} bytes {spots}")


def _header_spots(data: bytes, fmt: str) -> list[int]:
    if fmt == "pcap":
        spots = list(range(24))
        for off, _ in pcap_layout(data).records:
            spots += range(off, off + 16)
        return spots
    spots = []
    for blk in ng_layout(data):
        spots += range(blk.offset, blk.offset + min(blk.length, 28))
        spots += range(blk.offset + blk.length - 4, blk.offset + blk.length)
    return spots


def m_flip_header(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    spots = _header_spots(data, fmt)
    b = bytearray(data)
    hit = []
    for _ in range(rng.choice([1, 1, 2, 4])):
        i = rng.choice(spots)
        b[i] = rng.randrange(256)
        hit.append(i)
    return Mutant("flip-header", bytes(b), f"{fmt} bytes {hit}")


def m_caplen(seed: Seed, rng: random.Random) -> Mutant:
    """An absurd or lying captured length in one record (pcap) or packet block (pcapng)."""
    if seed.pcap is not None and rng.random() < 0.6:
        lay = seed.pcap_lay
        if not lay.records:
            return m_flip(seed, rng)
        k = rng.randrange(len(lay.records))
        off, caplen = lay.records[k]
        limit = max(MAX_PCAP_CAPLEN, min(lay.snaplen, 16 * MAX_PCAP_CAPLEN))
        value = rng.choice([0, 1, max(caplen - 1, 0), caplen + 1, caplen + 100, limit, limit + 1,
                            2**31, 0xFFFFFFFF, rng.randrange(2**32)])
        b = bytearray(seed.pcap)
        struct.pack_into("<I" if lay.little else ">I", b, off + 8, value)
        m = Mutant("caplen", bytes(b), f"pcap record {k + 1} caplen {caplen} -> {value}")
        if value > limit:
            m.exits, m.damage_at = frozenset((1,)), off
        elif off + 16 + value > len(b):
            m.exits, m.damage_at = frozenset((1,)), off  # runs past the end: truncated
        return m
    blocks = [blk for blk in seed.ng_blocks if blk.btype in (NG_EPB, NG_PB)]
    if not blocks:
        return m_flip(seed, rng)
    blk = rng.choice(blocks)
    e = "<" if blk.little else ">"
    room = blk.length - 32
    value = rng.choice([0, room, room + 1, room + 4, 2**31, 0xFFFFFFFF, rng.randrange(2**32)])
    b = bytearray(seed.ng)
    struct.pack_into(e + "I", b, blk.offset + 20, value)
    m = Mutant("caplen", bytes(b), f"pcapng block at {blk.offset} caplen -> {value}")
    if value > room:
        m.exits, m.damage_at = frozenset((1,)), blk.offset
    return m


def m_block_length(seed: Seed, rng: random.Random) -> Mutant:
    """A pcapng block whose leading or trailing length lies."""
    blocks = seed.ng_blocks
    blk = rng.choice(blocks[1:] or blocks)
    e = "<" if blk.little else ">"
    b = bytearray(seed.ng)
    trailing = rng.random() < 0.4
    value = rng.choice([0, 4, 8, 11, 12, 13, blk.length - 4, blk.length + 4, blk.length + 1,
                        MAX_NG_BLOCK + 4, 2**31, 0xFFFFFFFF, rng.randrange(2**32)])
    if value == blk.length:
        value += 8
    at = blk.offset + (blk.length - 4 if trailing else 4)
    struct.pack_into(e + "I", b, at, value)
    which = "trailing" if trailing else "leading"
    m = Mutant("block-length", bytes(b), f"block at {blk.offset} {which} {blk.length} -> {value}")
    if blk.offset > 0 and (trailing or value < 12 or value % 4 or value > MAX_NG_BLOCK
                           or blk.offset + value > len(b)):
        m.exits, m.damage_at = frozenset((1,)), blk.offset
    return m


def m_empty(seed: Seed, rng: random.Random) -> Mutant:
    return Mutant("empty", b"", exits=frozenset((2,)))


def m_magic(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    while True:
        head = rng.choice([
            bytes(rng.randrange(256) for _ in range(4)),
            data[:4][::-1] if fmt == "pcap" else b"\x0a\x0d\x0d\x0b",
            b"\x1f\x8b\x08\x00",  # gzip header with nothing valid behind it
            NG_MAGIC,  # pcapng magic on pcap contents: bad byte-order magic
        ])
        if head not in PCAP_MAGICS and head != data[:4]:
            break
    m = Mutant("magic", head + data[4:], f"{fmt} magic -> {head.hex()}", exits=frozenset((2,)))
    if head == NG_MAGIC and len(data) >= 12 and data[8:12] in (NG_BOM_LE, NG_BOM_LE[::-1]):
        m.exits = frozenset((0, 1, 2))
    return m


def m_ng_structure(seed: Seed, rng: random.Random) -> Mutant:
    """pcapng oddities: IDB missing, EPB naming a nonexistent interface, unknown SHB version,
    unknown blocks inserted (must change nothing), a second section, endianness."""
    blocks = seed.ng_blocks
    data = seed.ng
    kind = rng.choice(["no-idb", "bad-iface", "shb-version", "unknown-block", "big-endian",
                       "second-section"])
    if kind == "no-idb":
        kept = b"".join(data[b.offset:b.offset + b.length] for b in blocks if b.btype != NG_IDB)
        return Mutant("ng-structure", kept, kind)
    if kind == "bad-iface":
        b = bytearray(data)
        epbs = [blk for blk in blocks if blk.btype == NG_EPB]
        for blk in rng.sample(epbs, min(len(epbs), rng.choice([1, 1, 3]))):
            value = rng.choice([1, 2, 255, 0xFFFFFFFF, rng.randrange(2**32)])
            struct.pack_into("<I" if blk.little else ">I", b, blk.offset + 8, value)
        return Mutant("ng-structure", bytes(b), kind)
    if kind == "shb-version":
        b = bytearray(data)
        major, minor = rng.choice([(0, 0), (2, 0), (1, 7), (0xFFFF, 0xFFFF), (1, 2)])
        shbs = [blk for blk in blocks if blk.btype == NG_SHB]
        blk = rng.choice(shbs)
        struct.pack_into("<HH" if blk.little else ">HH", b, blk.offset + 12, major, minor)
        return Mutant("ng-structure", bytes(b), f"{kind} {major}.{minor} at {blk.offset}")
    if kind == "unknown-block":
        at = rng.choice([blk.offset + blk.length for blk in blocks[1:]] or [len(data)])
        e = "<" if blocks[0].little else ">"
        btype = rng.choice([0x0BAD, 0x80000001, 0x40000BAD, 4, 5, 7, 9, 0x0A0D0D0B])
        body = bytes(rng.randrange(256) for _ in range(rng.choice([0, 3, 8, 64])))
        out = data[:at] + ng_block(btype, body, e) + data[at:]
        return Mutant("ng-structure", out, f"{kind} 0x{btype:x} at {at}", same_as=data)
    if kind == "big-endian" and seed.pcap is not None:
        return Mutant("ng-structure", pcap_to_pcapng(seed.pcap, big_endian=True), kind,
                      same_as=seed.pcap)
    # a second section (interfaces forgotten) made of the same packets again
    cut = blocks[-1].offset + blocks[-1].length
    return Mutant("ng-structure", data[:cut] + data[:cut], "second-section")


def _epb_fields(data: bytes, blk: Block) -> tuple[int, int, bytes]:
    """(interface, ticks, frame bytes) of an EPB."""
    e = "<" if blk.little else ">"
    iface, hi, lo, caplen, _orig = struct.unpack_from(e + "IIIII", data, blk.offset + 8)
    return iface, (hi << 32) | lo, data[blk.offset + 28:blk.offset + 28 + caplen]


def m_ng_packets(seed: Seed, rng: random.Random) -> Mutant:
    """The same packets as simple or obsolete packet blocks, under an IDB with odd options
    (timestamp resolution and offset, snaplen); mixed with EPBs."""
    blocks = seed.ng_blocks
    if not blocks[0].little:
        return m_ng_structure(seed, rng)
    data = seed.ng
    tsresol = rng.choice([None, 0, 3, 6, 9, 19, 127, 0x80, 0x80 | 30, 0x80 | 127, 255])
    tsoffset = rng.choice([None, 0, -1, 2**31, -(2**63), 2**63 - 1])
    snaplen = rng.choice([0, 0, 1, 20, 54, 65535, 2**32 - 1])
    idb = struct.pack("<HHI", 1, 0, snaplen)
    linktypes = [struct.unpack_from("<H", data, b.offset + 8)[0] for b in blocks
                 if b.btype == NG_IDB]
    if linktypes:
        idb = struct.pack("<HHI", linktypes[0], 0, snaplen)
    if tsresol is not None:
        idb += struct.pack("<HH", 9, 1) + bytes([tsresol, 0, 0, 0])
    if tsoffset is not None:
        idb += struct.pack("<HHq", 14, 8, tsoffset)
    out = [data[:blocks[0].length], ng_block(NG_IDB, idb)]
    kinds = Counter()
    for blk in blocks[1:]:
        if blk.btype != NG_EPB:
            continue
        _iface, ticks, frame = _epb_fields(data, blk)
        kind = rng.choice(["spb", "pb", "epb"])
        kinds[kind] += 1
        if kind == "spb":
            out.append(ng_block(NG_SPB, struct.pack("<I", len(frame)) + frame))
        elif kind == "pb":
            out.append(ng_block(NG_PB, struct.pack("<HHIIII", 0, 0, ticks >> 32, ticks & 0xFFFFFFFF,
                                                   len(frame), len(frame)) + frame))
        else:
            ticks = rng.choice([ticks, 0, 2**64 - 1, ticks * 1000])
            out.append(ng_epb(0, ticks, frame))
    return Mutant("ng-packets", b"".join(out),
                  f"tsresol {tsresol} tsoffset {tsoffset} snaplen {snaplen} {dict(kinds)}",
                  exits=frozenset((0,)))


def m_timestamps(seed: Seed, rng: random.Random) -> Mutant:
    """Absurd, repeated or backward timestamps in a few pcap records."""
    if seed.pcap is None or not seed.pcap_lay.records:
        return m_ng_packets(seed, rng)
    lay = seed.pcap_lay
    b = bytearray(seed.pcap)
    e = "<" if lay.little else ">"
    for _ in range(rng.choice([1, 2, 5])):
        off, _ = rng.choice(lay.records)
        sec = rng.choice([0, 1, 2**31 - 1, 2**31, 2**32 - 1, rng.randrange(2**32)])
        frac = rng.choice([0, 999_999, 10**6, 10**9, 2**32 - 1])
        struct.pack_into(e + "II", b, off, sec, frac)
    return Mutant("timestamps", bytes(b), "pcap", exits=frozenset((0,)))


def m_convert(seed: Seed, rng: random.Random) -> Mutant:
    if seed.pcap is None:
        return m_ng_structure(seed, rng)
    return Mutant("convert", seed.ng, "pcap as pcapng", exits=frozenset((0,)),
                  same_as=seed.pcap)


def _ip_offset(frame: bytes, linktype: int) -> int:
    from analyzer.core.decode import ip_offset

    return ip_offset(frame, linktype)


def _fix_ip4_checksum(f: bytearray, off: int) -> None:
    ihl = (f[off] & 15) * 4
    if ihl >= 20 and off + ihl <= len(f):
        f[off + 10:off + 12] = b"\0\0"
        f[off + 10:off + 12] = struct.pack("!H", _csum(bytes(f[off:off + ihl])))


def lie(frame: bytes, off: int, rng: random.Random) -> tuple[bytes, str]:
    """One IP or TCP header field of the packet at ``frame[off:]`` made to lie."""
    f = bytearray(frame)
    if off + 20 > len(f):
        return frame, "short"
    version = f[off] >> 4
    if version == 4:
        ihl = (f[off] & 15) * 4
        total = struct.unpack_from("!H", f, off + 2)[0]
        t = off + ihl
        kind = rng.choice(["ihl<5", "ihl>total", "ihl=15", "total<ihl", "total<tcp", "total>cap",
                           "total=0", "doff<5", "doff>end", "doff=15", "proto"])
        if kind == "ihl<5":
            f[off] = 0x40 | rng.randrange(5)
        elif kind == "ihl>total":
            f[off] = 0x40 | max(5, min(15, total // 4 + 1))
        elif kind == "ihl=15":
            f[off] = 0x4F
        elif kind == "total<ihl":
            struct.pack_into("!H", f, off + 2, rng.randrange(1, max(ihl, 2)))
        elif kind == "total<tcp":
            struct.pack_into("!H", f, off + 2, ihl + rng.randrange(20))
        elif kind == "total>cap":
            struct.pack_into("!H", f, off + 2, rng.choice([65535, len(f) - off + 1,
                                                          len(f) - off + 100]) & 0xFFFF)
        elif kind == "total=0":
            struct.pack_into("!H", f, off + 2, 0)
        elif kind == "proto":
            f[off + 9] = rng.choice([1, 6, 17, 58, 255])
        elif t + 13 <= len(f):
            doff = (rng.randrange(5) if kind == "doff<5" else 15 if kind == "doff=15"
                    else min(15, max(0, (total - ihl) // 4 + 1)))
            f[t + 12] = (doff << 4) | (f[t + 12] & 15)
        if rng.random() < 0.7:
            _fix_ip4_checksum(f, off)
        return bytes(f), f"v4 {kind}"
    if version == 6 and off + 40 <= len(f):
        plen = struct.unpack_from("!H", f, off + 4)[0]
        t = off + 40
        kind = rng.choice(["plen<tcp", "plen>cap", "plen=0", "doff<5", "doff>end", "next"])
        if kind == "plen<tcp":
            struct.pack_into("!H", f, off + 4, rng.randrange(20))
        elif kind == "plen>cap":
            struct.pack_into("!H", f, off + 4, min(65535, len(f) - t + rng.choice([1, 9, 999])))
        elif kind == "plen=0":
            struct.pack_into("!H", f, off + 4, 0)
        elif kind == "next":
            f[off + 6] = rng.choice([0, 43, 44, 51, 60, 58, 59])
        elif t + 13 <= len(f):
            doff = rng.randrange(5) if kind == "doff<5" else min(15, plen // 4 + 1)
            f[t + 12] = (doff << 4) | (f[t + 12] & 15)
        return bytes(f), f"v6 {kind}"
    f[off] = rng.randrange(256)
    return bytes(f), "version"


def m_header_lie(seed: Seed, rng: random.Random) -> Mutant:
    """IP / TCP header lengths that lie in 1..3 packets (pcap seeds; sometimes as pcapng)."""
    if seed.pcap is None:
        return m_flip(seed, rng)
    lay = seed.pcap_lay
    recs = pcap_records(seed.pcap, lay)
    if not recs:
        return m_flip(seed, rng)
    what = []
    for _ in range(rng.choice([1, 1, 2, 3])):
        k = rng.randrange(len(recs))
        sec, frac, frame = recs[k]
        off = _ip_offset(frame, lay.linktype)
        if off < 0:
            continue
        frame, kind = lie(frame, off, rng)
        recs[k] = (sec, frac, frame)
        what.append(f"frame {k + 1} {kind}")
    blob = pcap_file(recs, lay.linktype, lay.nanos, "<" if lay.little else ">", lay.snaplen)
    if rng.random() < 0.3:
        blob = pcap_to_pcapng(blob)
    return Mutant("header-lie", blob, ", ".join(what), exits=frozenset((0, 1)))


def m_splice(seed: Seed, rng: random.Random, seeds: list[Seed] | None = None) -> Mutant:
    """Records reordered, duplicated or mixed with another capture's (same link type)."""
    if seed.pcap is None:
        return m_flip(seed, rng)
    lay = seed.pcap_lay
    recs = pcap_records(seed.pcap, lay)
    kind = rng.choice(["shuffle", "duplicate", "reverse", "mix"])
    if kind == "shuffle":
        rng.shuffle(recs)
    elif kind == "duplicate" and recs:
        for _ in range(rng.randrange(1, 4)):
            recs.insert(rng.randrange(len(recs) + 1), rng.choice(recs))
    elif kind == "reverse":
        recs.reverse()
    elif seeds:
        other = rng.choice(seeds)
        if other.pcap is not None and other.pcap_lay.linktype == lay.linktype:
            recs += pcap_records(other.pcap, other.pcap_lay)
            rng.shuffle(recs)
    blob = pcap_file(recs, lay.linktype, lay.nanos, "<" if lay.little else ">", lay.snaplen)
    return Mutant("splice", blob, kind, exits=frozenset((0,)))


def m_gzip(seed: Seed, rng: random.Random) -> Mutant:
    data, fmt = _either(seed, rng)
    z = gzip.compress(data, mtime=0)
    cut = rng.choice([len(z), rng.randrange(2, len(z)), len(z) - rng.randrange(1, 9)])
    return Mutant("gzip", z[:cut], f"{fmt} gzip cut at {cut}/{len(z)}", plain=data,
                  exits=frozenset((0,)) if cut == len(z) else frozenset((0, 1, 2)))


def m_generated(seed: Seed, rng: random.Random) -> Mutant:
    specs = random_specs(rng, rng.choice([2, 5, 10, 30, 80]))
    fmt = rng.choice(["pcap", "pcapng"])
    return Mutant("generated", synth_capture(specs, fmt, isn=rng.randrange(2**32)),
                  f"{fmt} {len(specs)} segments", exits=frozenset((0,)))


# --- tunnelled captures: the generated segments inside the encapsulations Zeek decodes -------

_OUTER4 = (bytes([192, 0, 2, 1]), bytes([198, 51, 100, 7]))


def _outer_ip4(proto: int, payload: bytes, reverse: bool) -> bytes:
    src, dst = _OUTER4[::-1] if reverse else _OUTER4
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(payload), 1, 0x4000, 64, proto, 0,
                     src, dst)
    return ip[:10] + struct.pack("!H", _csum(ip)) + ip[12:] + payload


def _udp(port: int, payload: bytes, reverse: bool) -> bytes:
    sport, dport = (port, 50000) if reverse else (50000, port)
    return struct.pack("!HHHH", sport, dport, 8 + len(payload), 0) + payload  # no checksum


TUNNELS: dict[str, Callable[[bytes, bool], bytes]] = {  # kind -> (inner IP, reverse) -> IPv4
    "ipip": lambda p, r: _outer_ip4(4 if p[0] >> 4 == 4 else 41, p, r),
    "gre": lambda p, r: _outer_ip4(47, struct.pack("!HH", 0, 0x0800 if p[0] >> 4 == 4
                                                   else 0x86DD) + p, r),
    "erspan2": lambda p, r: _outer_ip4(47, struct.pack("!HHI", 0x1000, 0x88BE, 1)
                                       + bytes(8) + ethernet(p), r),
    "vxlan": lambda p, r: _outer_ip4(17, _udp(4789, struct.pack("!II", 0x08000000, 42 << 8)
                                              + ethernet(p), r), r),
    "geneve": lambda p, r: _outer_ip4(17, _udp(6081, struct.pack("!BBHI", 0, 0, 0x6558, 0)
                                               + ethernet(p), r), r),
    "gtpu": lambda p, r: _outer_ip4(17, _udp(2152, struct.pack("!BBHI", 0x30, 255, len(p), 7)
                                             + p, r), r),
    "teredo": lambda p, r: _outer_ip4(17, _udp(3544, p, r), r),  # (IPv6 inside only)
}


def m_tunnelled(seed: Seed, rng: random.Random) -> Mutant:
    """Generated segments inside a tunnel, maybe inside a second one, maybe cut short."""
    specs = random_specs(rng, rng.choice([2, 5, 10, 30]))
    kinds = [rng.choice(list(TUNNELS)) for _ in range(rng.choice([1, 1, 2]))]
    blob = synth_capture(specs, "pcap", isn=rng.randrange(2**32))
    lay = pcap_layout(blob)
    recs = []
    for sec, frac, frame in pcap_records(blob, lay):
        ip = frame[14:]
        for kind in kinds:
            if kind == "teredo" and ip[0] >> 4 != 6:
                kind = "gtpu"
            ip = TUNNELS[kind](ip, rng.random() < 0.5)
        frame = ethernet(ip)
        if rng.random() < 0.1:
            frame = frame[:rng.randrange(14, len(frame) + 1)]
        recs.append((sec, frac, frame))
    fmt = rng.choice(["pcap", "pcapng"])
    data = pcap_file(recs)
    return Mutant("tunnelled", pcap_to_pcapng(data) if fmt == "pcapng" else data,
                  f"{fmt} {len(specs)} segments in {'/'.join(kinds)}", exits=frozenset((0, 1)))


MUTATORS: dict[str, tuple[Callable, int]] = {  # category -> (mutator, weight)
    "truncate-boundary": (m_truncate_boundary, 6),
    "truncate-inside": (m_truncate_inside, 12),
    "flip": (m_flip, 16),
    "flip-header": (m_flip_header, 12),
    "caplen": (m_caplen, 8),
    "block-length": (m_block_length, 8),
    "empty": (m_empty, 1),
    "magic": (m_magic, 2),
    "ng-structure": (m_ng_structure, 8),
    "convert": (m_convert, 3),
    "header-lie": (m_header_lie, 12),
    "ng-packets": (m_ng_packets, 4),
    "timestamps": (m_timestamps, 4),
    "splice": (m_splice, 4),
    "gzip": (m_gzip, 3),
    "generated": (m_generated, 5),
    "tunnelled": (m_tunnelled, 3),
}


ARG_CHOICES = [("--json",), ("--json", "--zeek-boundaries"), ("--json", "--check-ip-checksums"),
               ("--all",)]  # the last one: the text view, records not compared


def make_mutant(seeds: list[Seed], seed: int, index: int) -> tuple[Mutant, str]:
    """Input number ``index`` of the run with this ``seed``; and the seed capture's name."""
    rng = random.Random(f"{seed}:{index}")
    names = list(MUTATORS)
    cat = rng.choices(names, weights=[MUTATORS[n][1] for n in names])[0]
    base = rng.choice(seeds)
    fn = MUTATORS[cat][0]
    m = fn(base, rng, seeds) if fn is m_splice else fn(base, rng)
    m.args = rng.choices(ARG_CHOICES, weights=[80, 7, 7, 6])[0]
    return m, base.name


# --- running and checking ---------------------------------------------------------------------

@dataclass
class Outcome:
    code: int | None
    out: str
    err: str
    exc: str | None = None  # exception that escaped main, with its traceback

    @functools.cached_property
    def records(self) -> list[str]:
        """The JSON records, without the file name, as sorted canonical text."""
        recs = []
        for line in self.out.splitlines():
            rec = json.loads(line)
            rec.pop("file", None)
            recs.append(json.dumps(rec, sort_keys=True))
        return sorted(recs)


def run_main(path: str, args: tuple[str, ...] = ("--json",)) -> Outcome:
    """``rstscope analyze ARGS path`` in-process, standard output and error captured."""
    from analyzer import cli

    out, err = io.StringIO(), io.StringIO()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = cli.main(["analyze", *args, path])
    except InputTimeout:
        raise
    except BaseException as exc:  # noqa: BLE001 - that is what is being looked for
        return Outcome(None, out.getvalue(), err.getvalue(),
                       f"{type(exc).__name__}: {exc}\n{traceback.format_exc()}")
    return Outcome(code, out.getvalue(), err.getvalue())


def run_subprocess(path: str, args: tuple[str, ...] = ("--json",), timeout: float = 120
                   ) -> Outcome:
    env = dict(os.environ, PYTHONPATH=str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    try:
        res = subprocess.run([sys.executable, "-m", "analyzer", "analyze", *args, path],
                             capture_output=True, text=True, timeout=timeout, env=env,
                             cwd=str(ROOT))
    except subprocess.TimeoutExpired:
        return Outcome(None, "", "", f"subprocess timed out after {timeout} s")
    return Outcome(res.returncode, res.stdout, res.stderr)


def stderr_lines(path: str, err: str) -> tuple[list[str], list[str], list[str]]:
    """(error lines, note lines, stray lines) of a run on ``path``."""
    errors, notes, stray = [], [], []
    for line in err.splitlines():
        if _LOC.match(line, len(f"rstscope: {path}")) and line.startswith(f"rstscope: {path} ("):
            errors.append(line)
        elif line.startswith(f"rstscope: {path}: "):  # a note: an oddity, not damage
            notes.append(line)
        else:
            stray.append(line)
    return errors, notes, stray


def location(line: str) -> tuple[int | None, int | None]:
    """(frame, byte offset) named by an error line; None where it names none."""
    m = _LOC.search(line)
    frame = int(m.group(1)) if m.group(1) else None
    at = m.group(2) or m.group(3)
    return frame, int(at) if at else None


def damage_offset(line: str) -> int | None:
    return location(line)[1]


def skipped_count(line: str) -> int | None:
    """How many damaged frames a skipped-frames line counts; None for other lines."""
    m = _SKIPPED.search(line)
    if m is None:
        return None
    return 1 + int(m.group(1) or 0)


# --- the frames of a capture, by this module's own walk ------------------------------------------

@dataclass
class FrameRec:
    frame: int  # 1-based, as the reader numbers them
    offset: int  # of the pcap record or pcapng block
    data_at: int  # offset of the frame's bytes
    linktype: int | None  # None: a pcapng packet block naming an undescribed interface
    data: bytes


def frame_records(data: bytes) -> list[FrameRec]:
    """Every packet record a reader can find, walking with ``pcap_layout`` / ``ng_layout`` (which
    stop at the first impossible length; damage the reader sees earlier is cut by the caller)."""
    lay = pcap_layout(data)
    if lay is not None:
        return [FrameRec(k + 1, off, off + 16, lay.linktype, data[off + 16:off + 16 + caplen])
                for k, (off, caplen) in enumerate(lay.records)]
    out: list[FrameRec] = []
    ifaces: list[tuple[int, int]] = []  # (linktype, snaplen) per interface of the section
    for blk in ng_layout(data):
        e = "<" if blk.little else ">"
        body_len = blk.length - 12
        if blk.btype == NG_SHB:
            ifaces = []
        elif blk.btype == NG_IDB and body_len >= 8:
            lt, _, snap = struct.unpack_from(e + "HHI", data, blk.offset + 8)
            ifaces.append((lt, snap))
        elif blk.btype in (NG_EPB, NG_PB) and body_len >= 20:
            fmt = e + ("I" if blk.btype == NG_EPB else "H")
            iface = struct.unpack_from(fmt, data, blk.offset + 8)[0]
            caplen = struct.unpack_from(e + "I", data, blk.offset + 20)[0]
            if caplen > body_len - 20:
                break  # the reader stops here
            lt = ifaces[iface][0] if iface < len(ifaces) else None
            out.append(FrameRec(len(out) + 1, blk.offset, blk.offset + 28, lt,
                                data[blk.offset + 28:blk.offset + 28 + caplen]))
        elif blk.btype == NG_SPB and body_len >= 4:
            at = blk.offset + 12
            if not ifaces:
                out.append(FrameRec(len(out) + 1, blk.offset, at, None,
                                    data[at:blk.offset + 8 + body_len]))
                continue
            caplen = min(struct.unpack_from(e + "I", data, blk.offset + 8)[0], body_len - 4)
            if ifaces[0][1]:
                caplen = min(caplen, ifaces[0][1])
            out.append(FrameRec(len(out) + 1, blk.offset, at, ifaces[0][0],
                                data[at:at + caplen]))
    return out


def damaged_frames(data: bytes, stop_at: int | None, check_ip: bool) -> list[FrameRec]:
    """The frames before byte ``stop_at`` that a reader must skip as damaged: a packet block
    naming an undescribed interface, or IP/TCP header lengths the decoder finds impossible."""
    from analyzer.core.decode import decode_frame

    out = []
    for rec in frame_records(data):
        if stop_at is not None and rec.offset >= stop_at:
            break
        if rec.linktype is None:
            out.append(rec)
            continue
        if decode_frame(rec.data, rec.linktype, check_ip)[1].get("malformed"):
            out.append(rec)  # (the frame alone: where the file puts it is checked against this)
    return out


def zero_frames(data: bytes, frames: list[FrameRec]) -> bytes:
    """``data`` with the bytes of these frames zeroed: no link layer finds IP in zeros, so they
    become frames that are simply not TCP, at the same place, with the same timestamps."""
    b = bytearray(data)
    for rec in frames:
        b[rec.data_at:rec.data_at + len(rec.data)] = bytes(len(rec.data))
    return bytes(b)


class Checker:
    """Runs inputs in one scratch directory and checks them; caches reference analyses."""

    def __init__(self, workdir: str | None = None):
        self.dir = workdir or tempfile.mkdtemp(prefix="rstscope-fuzz-")
        self._cache: OrderedDict[bytes, Outcome] = OrderedDict()

    def write(self, name: str, data: bytes) -> str:
        path = os.path.join(self.dir, name)
        with open(path, "wb") as fh:
            fh.write(data)
        return path

    def reference(self, data: bytes, args: tuple[str, ...] = ("--json",)) -> Outcome:
        key = hashlib.blake2b(data + repr(args).encode(), digest_size=16).digest()
        hit = self._cache.get(key)
        if hit is None:
            hit = run_main(self.write("reference.pcap", data), args)
            self._cache[key] = hit
            if len(self._cache) > 512:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return hit

    def check(self, m: Mutant, subprocess_too: bool = False) -> tuple[Outcome, list[str]]:
        """Analyze the mutant; the list of broken invariants (empty when all hold)."""
        path = self.write("input.pcap", m.data)
        got = run_main(path, m.args)
        problems = self.judge(path, m, got)
        if subprocess_too and got.exc is None:
            sub = run_subprocess(path, m.args)
            problems += [f"subprocess: {p}" for p in self.judge(path, m, sub)]
            if sub.exc is None and not problems:
                if sub.code != got.code:
                    problems.append(f"subprocess exit {sub.code} != in-process {got.code}")
                elif sub.out != got.out and "--json" not in m.args:
                    problems.append("subprocess output differs from in-process output")
                elif "--json" in m.args and sub.records != got.records:
                    problems.append("subprocess records differ from in-process records")
        return got, problems

    def judge(self, path: str, m: Mutant, got: Outcome) -> list[str]:
        if got.exc is not None:
            return [f"exception escaped main: {got.exc}"]
        bad = []
        if "Traceback" in got.err:
            bad.append("traceback on stderr")
        if got.code not in (0, 1, 2):
            bad.append(f"exit {got.code} not in 0/1/2")
        errors, _notes, stray = stderr_lines(path, got.err)
        if stray:
            bad.append(f"stderr line not of the form 'rstscope: FILE (frame/byte): ...': "
                       f"{stray[0]!r}")
        skipped = [e for e in errors if skipped_count(e) is not None]
        stops = [e for e in errors if skipped_count(e) is None]
        if got.code == 0 and errors or got.code == 2 and (len(stops), len(skipped)) != (1, 0) \
                or got.code == 1 and not (errors and len(stops) <= 1 and len(skipped) <= 1):
            bad.append(f"exit {got.code} with {len(errors)} error lines: {errors[:3]}")
        if any(damage_offset(e) is None for e in stops):
            bad.append(f"no byte offset where reading stopped: {stops}")
        if got.code not in m.exits:
            bad.append(f"exit {got.code}, expected {sorted(m.exits)} ({errors[:1]})")
        if got.code not in (0, 1):
            return bad
        base = m.plain if m.plain is not None else m.data
        at = damage_offset(stops[0]) if stops else None
        damaged = damaged_frames(base, at, "--check-ip-checksums" in m.args)
        bad += self.judge_skipped(skipped, damaged, base)
        if "--json" not in m.args:
            return bad + reader_invariants(path)
        try:
            records = got.records
        except ValueError as exc:
            return [*bad, f"stdout is not JSON lines: {exc}"]
        if got.code == 1 and stops and m.damage_at is not None and at != m.damage_at:
            bad.append(f"damage reported at byte {at}, expected {m.damage_at}")
        if got.code == 1 and not bad:
            # what was read is all there: the same records as the undamaged part alone, the
            # damaged frames in it zeroed (an undescribed interface cannot be zeroed: then the
            # reference must report the same skipped frames)
            whole = [f for f in damaged if f.linktype is not None] == damaged
            ref_data = base[:at] if at is not None else base
            ref = self.reference(zero_frames(ref_data, damaged) if whole else ref_data, m.args)
            where = f"before the damage at byte {at}" if at is not None else "around it"
            ref_errors = stderr_lines(os.path.join(self.dir, "reference.pcap"), ref.err)[0]
            if ref.code != (0 if whole else 1) or len(ref_errors) != (0 if whole else 1):
                bad.append(f"the undamaged part ({len(ref_data)} bytes, {len(damaged)} damaged "
                           f"frames {'zeroed' if whole else 'left'}) exits {ref.code}: "
                           f"{ref.err.strip()[:200]}")
            elif ref.records != records:
                bad.append(f"records lost or changed {where}: {len(records)} records vs "
                           f"{len(ref.records)} in the undamaged part")
        if m.same_as is not None and got.code == 0:
            ref = self.reference(m.same_as, m.args)
            if ref.records != records:
                bad.append("records differ from the unmutated capture's")
        if got.code in (0, 1):
            bad += reader_invariants(path)
        return bad


    @staticmethod
    def judge_skipped(lines: list[str], damaged: list[FrameRec], data: bytes) -> list[str]:
        """The skipped-frames line against the damaged frames found by this module's walk."""
        if not damaged:
            return [f"damaged frames reported where the walk finds none: {lines[0]}"] \
                if lines else []
        if not lines:
            return [f"{len(damaged)} damaged frames (first: frame {damaged[0].frame}) not "
                    "reported"]
        frame, at = location(lines[0])
        want_at = damaged[0].offset if data[:4] in PCAP_MAGICS else None
        if (frame, at, skipped_count(lines[0])) != (damaged[0].frame, want_at, len(damaged)):
            return [f"skipped frames reported as {lines[0]!r}, expected frame "
                    f"{damaged[0].frame}, byte {want_at}, {len(damaged)} in all"]
        return []


def reader_invariants(path: str) -> list[str]:
    from analyzer.core.decode import open_native
    from analyzer.errors import UnreadableCapture

    try:
        reader = open_native(path, check_ip_checksums=True)
        segs = sum(1 for _ in reader)
    except UnreadableCapture:
        return ["open_native raised UnreadableCapture on an input the CLI read"]
    st = reader.stats
    bad = []
    total = (st.tcp_segments + st.icmp_errors + st.non_tcp + st.bad_ip_checksums
             + st.truncated_frames + st.malformed)
    if st.frames != total:
        bad.append(f"reader counters do not add up: {st.frames} frames, {total} counted")
    if segs != st.tcp_segments + st.icmp_errors:
        bad.append(f"{segs} segments yielded, counters say {st.tcp_segments + st.icmp_errors}")
    kinds = [type(p).__name__ for p in reader.problems]
    if kinds not in ([], ["DamagedCapture"], ["DamagedFrames"],
                     ["DamagedFrames", "DamagedCapture"]):
        bad.append(f"problems reported for one file: {kinds}")
    return bad


# --- the run ------------------------------------------------------------------------------------

_STATE: dict = {}


def _alarm(signum, frame):
    raise InputTimeout()


def _init_worker(seed: int, deadline: float, keep: str | None, scratch: str) -> None:
    from analyzer import cli

    # one argparse parser per process instead of one per call (building it dominates a call)
    cli._parser = functools.lru_cache(maxsize=None)(cli._parser)
    _STATE.update(seeds=load_seeds(), seed=seed, deadline=deadline, keep=keep,
                  checker=Checker(tempfile.mkdtemp(dir=scratch)))
    signal.signal(signal.SIGALRM, _alarm)
    logs = os.environ.get("RSTSCOPE_SANITIZER_LOGS")
    if logs:  # the sanitizer runtime's reports on standard error: one file per process
        fd = os.open(os.path.join(logs, f"stderr.{os.getpid()}"),
                     os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 2)
        os.close(fd)


@dataclass
class Tally:
    ran: int = 0
    per_category: Counter = field(default_factory=Counter)
    exits: Counter = field(default_factory=Counter)  # (category, exit) -> inputs
    failures: list[dict] = field(default_factory=list)
    failed: int = 0
    subprocess_runs: int = 0

    def add(self, other: Tally) -> None:
        self.ran += other.ran
        self.per_category.update(other.per_category)
        self.exits.update(other.exits)
        self.failures += other.failures[:50 - len(self.failures)] if len(self.failures) < 50 \
            else []
        self.failed += other.failed
        self.subprocess_runs += other.subprocess_runs


def sanitizer_reports(st: dict) -> list[str]:
    """What the sanitizer runtime reported in this process since the last call (make fuzz-asan
    sets RSTSCOPE_SANITIZER_LOGS to the directory of its log_path files, NAME.PID, and has
    reports not abort the process; UBSan ignores log_path next to ASan and writes to standard
    error, which _init_worker sends to stderr.PID there): a failure of the input just run."""
    logs = os.environ.get("RSTSCOPE_SANITIZER_LOGS")
    if not logs:
        return []
    seen = st.setdefault("sanitizer_seen", {})
    out = []
    suffix = f".{os.getpid()}"
    with contextlib.suppress(FileNotFoundError):
        for name in os.listdir(logs):
            if not name.endswith(suffix):
                continue
            path = os.path.join(logs, name)
            with open(path, "rb") as fh:
                fh.seek(seen.get(name, 0))
                text = fh.read()
            seen[name] = seen.get(name, 0) + len(text)
            if text and (not name.startswith("stderr.") or b"runtime error" in text
                         or b"Sanitizer" in text):
                out.append(f"sanitizer report ({path}):\n"
                           + text.decode("utf-8", "replace")[:1800])
    return out


def _run_chunk(task: tuple[int, int, int]) -> Tally:
    start, stop, sub_every = task
    st = _STATE
    tally = Tally()
    checker: Checker = st["checker"]
    for index in range(start, stop):
        if time.time() > st["deadline"]:
            break
        m, base = make_mutant(st["seeds"], st["seed"], index)
        subprocess_too = bool(sub_every) and index % sub_every == 0
        signal.alarm(PER_INPUT_SECONDS * (5 if subprocess_too else 1))
        try:
            got, problems = checker.check(m, subprocess_too)
        except InputTimeout:
            got, problems = Outcome(None, "", ""), [f"took more than {PER_INPUT_SECONDS} s"]
        finally:
            signal.alarm(0)
        problems += sanitizer_reports(st)
        tally.ran += 1
        tally.subprocess_runs += subprocess_too
        tally.per_category[m.category] += 1
        tally.exits[(m.category, got.code)] += 1
        if problems:
            tally.failed += 1
            saved = None
            if st["keep"]:
                os.makedirs(st["keep"], exist_ok=True)
                saved = os.path.join(st["keep"], f"{index}-{m.category}.bin")
                Path(saved).write_bytes(m.data)
            if len(tally.failures) < 50:
                tally.failures.append({"index": index, "category": m.category,
                                       "detail": m.detail, "seed": base, "saved": saved,
                                       "problems": [p[:2000] for p in problems]})
    return tally


def run(inputs: int, workers: int, seconds: float, seed: int, keep: str | None,
        subprocess_sample: int, chunk: int = 250) -> tuple[Tally, float]:
    import multiprocessing

    t0 = time.time()
    deadline = t0 + seconds
    sub_every = max(1, inputs // subprocess_sample) if subprocess_sample else 0
    tasks = [(a, min(a + chunk, inputs), sub_every) for a in range(0, inputs, chunk)]
    total = Tally()
    with tempfile.TemporaryDirectory(prefix="rstscope-fuzz-") as scratch:
        if workers <= 1:
            _init_worker(seed, deadline, keep, scratch)
            for t in tasks:
                total.add(_run_chunk(t))
        else:
            init = (seed, deadline, keep, scratch)
            with multiprocessing.Pool(workers, _init_worker, init) as pool:
                for tally in pool.imap_unordered(_run_chunk, tasks):
                    total.add(tally)
    return total, time.time() - t0


def report(t: Tally, elapsed: float, workers: int, seed: int, inputs: int) -> str:
    lines = [f"rstscope fuzz: {t.ran} of {inputs} inputs in {elapsed:.1f} s "
             f"({workers} workers, seed {seed}, {t.ran / max(elapsed, 1e-9):.0f}/s); "
             f"{t.subprocess_runs} also run as a subprocess",
             f"{'category':<18} {'inputs':>7} {'exit 0':>7} {'exit 1':>7} {'exit 2':>7} "
             f"{'other':>6}"]
    for cat in sorted(t.per_category):
        ex = [t.exits.get((cat, c), 0) for c in (0, 1, 2)]
        other = t.per_category[cat] - sum(ex)
        lines.append(f"{cat:<18} {t.per_category[cat]:>7} {ex[0]:>7} {ex[1]:>7} {ex[2]:>7} "
                     f"{other:>6}")
    ex = [sum(v for (c, code), v in t.exits.items() if code == k) for k in (0, 1, 2)]
    lines.append(f"{'total':<18} {t.ran:>7} {ex[0]:>7} {ex[1]:>7} {ex[2]:>7} "
                 f"{t.ran - sum(ex):>6}")
    lines.append(f"failures: {t.failed}")
    for f in t.failures[:20]:
        lines.append(f"  #{f['index']} {f['category']} ({f['detail']}) seed {f['seed']}"
                     + (f" saved {f['saved']}" if f["saved"] else ""))
        for p in f["problems"]:
            lines.append("      " + p.replace("\n", "\n      "))
    if t.failed:
        lines.append("replay one with: python -m analyzer.fuzz --seed SEED --replay INDEX")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analyzer.fuzz", description=__doc__.split("\n")[0])
    p.add_argument("--inputs", type=int, default=100_000, help="inputs to try (default 100000)")
    p.add_argument("--workers", type=int, default=2, help="processes (default 2)")
    p.add_argument("--seconds", type=float, default=600, help="stop after this long (600)")
    p.add_argument("--seed", type=int, default=1, help="run seed: same seed, same inputs")
    p.add_argument("--subprocess", type=int, default=200, metavar="N",
                   help="also run about N inputs through `python -m analyzer` (default 200)")
    p.add_argument("--keep", metavar="DIR", help="save failing inputs in DIR")
    p.add_argument("--replay", type=int, metavar="INDEX", help="rebuild and check one input")
    p.add_argument("--write", metavar="FILE", help="with --replay: write the input to FILE")
    args = p.parse_args(argv)
    if args.replay is not None:
        m, base = make_mutant(load_seeds(), args.seed, args.replay)
        print(f"#{args.replay} {m.category} ({m.detail}) from {base}, {len(m.data)} bytes")
        if args.write:
            Path(args.write).write_bytes(m.data)
        with tempfile.TemporaryDirectory(prefix="rstscope-fuzz-") as scratch:
            got, problems = Checker(scratch).check(m, subprocess_too=True)
        print(f"exit {got.code}\n{got.err}", end="")
        for prob in problems:
            print("FAIL:", prob)
        return 1 if problems else 0
    tally, elapsed = run(args.inputs, args.workers, args.seconds, args.seed, args.keep,
                         args.subprocess)
    print(report(tally, elapsed, args.workers, args.seed, args.inputs))
    return 1 if tally.failed or tally.ran == 0 else 0


if __name__ == "__main__":
    sys.exit(main())
