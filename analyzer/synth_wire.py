"""Byte-level encoding for the synthetic capture generator (``analyzer.synth``).

Classic pcap, written big-endian so that one precompiled ``struct`` packs the record header, the
Ethernet, IPv4 or IPv6 and TCP headers of a frame in a single call. Checksums are computed with
arithmetic modulo 0xFFFF (2**16 = 1 mod 0xFFFF, so a 32-bit field adds like its two 16-bit words):
each direction keeps the constant part of its sums, a payload's sum is precomputed per length.
"""

from __future__ import annotations

import random
import struct

PCAP_HEADER = struct.pack(">IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)  # Ethernet, usec

# record header | eth+ver/ihl+tos | totlen id | frag ttl proto | csum | addrs+ports | tcp
_V4 = struct.Struct(">IIII16sHH4sH12sIIHHHxx")
_V4TS = struct.Struct(">IIII16sHH4sH12sIIHHHxx4sII")
# record header | eth+ver/class/flow | payload length | nh hlim addrs ports | tcp
_V6 = struct.Struct(">IIII18sH38sIIHHHxx")
_V6TS = struct.Struct(">IIII18sH38sIIHHHxx4sII")
_TSOPT = b"\x01\x01\x08\x0a"  # NOP NOP kind 8 len 10
_TSW = 0x0101 + 0x080A
MAXPAY = 1460
M32 = 0xFFFFFFFF


class Payloads:
    """Deterministic payload bytes (prefixes of one pool) and their checksum sums per length."""

    def __init__(self, seed: int):
        pool = random.Random(seed ^ 0x5EED).getrandbits(8 * (MAXPAY + 1)).to_bytes(MAXPAY + 1,
                                                                                     "big")
        self.data = [pool[:n] for n in range(MAXPAY + 1)]
        self.sums = [int.from_bytes(pool[:n] + b"\0" * (n & 1), "big") % 0xFFFF
                     for n in range(MAXPAY + 1)]


class Side:
    """One direction of a connection: its constant header bytes and checksum parts."""

    __slots__ = ("v6", "pre", "mid", "tail", "ipbase", "tbase", "ipid", "ttl")

    def __init__(self, v6: bool, smac: bytes, dmac: bytes, src: bytes, dst: bytes, sport: int,
                 dport: int, ttl: int, ipid: int):
        ports = struct.pack(">HH", sport, dport)
        asum = int.from_bytes(src + dst, "big") % 0xFFFF
        self.v6, self.ttl, self.ipid = v6, ttl, ipid
        self.tbase = asum + 6 + int.from_bytes(ports, "big")  # pseudo header (no length) + ports
        if v6:
            self.pre = dmac + smac + b"\x86\xdd\x60\x00\x00\x00"
            self.tail = bytes((6, ttl)) + src + dst + ports
            self.mid, self.ipbase = b"", 0
        else:
            self.pre = dmac + smac + b"\x08\x00\x45\x00"
            self.mid = bytes((0x40, 0, ttl, 6))  # DF, TTL, TCP
            self.tail = src + dst + ports
            self.ipbase = 0x4500 + 0x4000 + (ttl << 8 | 6) + asum

    def forged(self, ttl: int) -> Side:
        """The same direction as an attacker on another path would claim it."""
        s = object.__new__(Side)
        s.v6, s.pre, s.tail, s.tbase, s.ttl = self.v6, self.pre, self.tail, self.tbase, ttl
        s.ipid = (self.ipid * 7 + 12345) & 0xFFFF
        if self.v6:
            s.tail = bytes((6, ttl)) + self.tail[2:]
            s.mid, s.ipbase = b"", 0
        else:
            s.mid = bytes((0x40, 0, ttl, 6))
            s.ipbase = self.ipbase - (self.ttl << 8) + (ttl << 8)
        return s


def syn_options(mss: int, tsval: int | None, tsecr: int) -> bytes:
    """Linux's SYN options: MSS, SACK permitted, timestamps (if on), window scale 7."""
    if tsval is None:
        return struct.pack(">BBHBBBBBBBB", 2, 4, mss, 1, 1, 4, 2, 1, 3, 3, 7)
    return struct.pack(">BBHBBBBIIBBBB", 2, 4, mss, 4, 2, 8, 10, tsval, tsecr, 1, 3, 3, 7)


def frame(pay: Payloads, side: Side, t: int, flags: int, seq: int, ack: int, win: int,
          plen: int, tsval: int | None, tsecr: int, opts: bytes | None = None) -> bytes:
    """One pcap record (header + frame) at ``t`` microseconds. ``tsval`` None: no timestamps
    option; ``opts`` (SYNs) replaces the options entirely."""
    if tsval is None or opts is not None:
        return _generic(pay, side, t, flags, seq, ack, win, plen, opts or b"")
    tl = 32 + plen
    of = 0x8000 | flags
    tc = 0xFFFF - (side.tbase + tl + seq + ack + of + win + _TSW + tsval + tsecr
                   + pay.sums[plen]) % 0xFFFF
    if side.v6:
        n = 54 + tl
        h = _V6TS.pack(t // 1000000, t % 1000000, n, n, side.pre, tl, side.tail, seq, ack, of,
                       win, tc, _TSOPT, tsval, tsecr)
    else:
        tot = 20 + tl
        side.ipid = i = (side.ipid + 1) & 0xFFFF
        n = 14 + tot
        h = _V4TS.pack(t // 1000000, t % 1000000, n, n, side.pre, tot, i, side.mid,
                       0xFFFF - (side.ipbase + tot + i) % 0xFFFF, side.tail, seq, ack, of, win,
                       tc, _TSOPT, tsval, tsecr)
    return h + pay.data[plen] if plen else h


def _generic(pay: Payloads, side: Side, t: int, flags: int, seq: int, ack: int, win: int,
             plen: int, opts: bytes) -> bytes:
    hl = 20 + len(opts)
    tl = hl + plen
    of = (hl << 10) | flags
    osum = int.from_bytes(opts, "big") % 0xFFFF if opts else 0
    tc = 0xFFFF - (side.tbase + tl + seq + ack + of + win + osum + pay.sums[plen]) % 0xFFFF
    if side.v6:
        n = 54 + tl
        h = _V6.pack(t // 1000000, t % 1000000, n, n, side.pre, tl, side.tail, seq, ack, of, win,
                     tc)
    else:
        tot = 20 + tl
        side.ipid = i = (side.ipid + 1) & 0xFFFF
        n = 14 + tot
        h = _V4.pack(t // 1000000, t % 1000000, n, n, side.pre, tot, i, side.mid,
                     0xFFFF - (side.ipbase + tot + i) % 0xFFFF, side.tail, seq, ack, of, win, tc)
    if opts:
        return h + opts + pay.data[plen]
    return h + pay.data[plen] if plen else h
