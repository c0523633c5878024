"""The record writer's numbers and addresses (analyzer/core/records.pyx) and the decoder's
checksum sums.

The writer prints start and end as ``repr(round(x, 9))`` and the duration as ``repr(round(x, 6))``
without dtoa where exact integer arithmetic can prove the text; these tests hold that text to
Python's own on the values captures give (pcap micro- and nanoseconds since the epoch, their
differences) and on the awkward ones (every bit pattern, exact ties, powers of two and their
neighbours, the edges of positional notation). Addresses are written without inet_ntop and held to
it (glibc's: "::" for the first longest zero run, ::a.b.c.d and ::ffff:a.b.c.d). The TCP checksum, summed 16 bytes at a time, is
held to RFC 1071's word-by-word sum at every length and alignment.
"""

from __future__ import annotations

import math
import random
import socket
import struct

import pytest
from analyzer.core.decode import decode_frame
from analyzer.core.records import address_text, duration_text, integer_text, time_text


def _from_bits(bits: int) -> float:
    return struct.unpack("<d", struct.pack("<Q", bits & (2**64 - 1)))[0]


def _next_to(x: float, steps: int) -> float:
    return _from_bits(struct.unpack("<Q", struct.pack("<d", x))[0] + steps)


def _values(rng: random.Random, n: int):
    for i in range(n):
        kind = i % 8
        if kind == 0:  # the reader's sec + usec / 1e6
            yield float(rng.randrange(2**32)) + float(rng.randrange(10**6)) / 1e6
        elif kind == 1:  # nanosecond pcap
            yield float(rng.randrange(2**32)) + float(rng.randrange(10**9)) / 1e9
        elif kind == 2:  # small clocks (relative times, synthetic captures)
            yield float(rng.randrange(10 ** rng.randrange(1, 7))) + rng.randrange(10**6) / 1e6
        elif kind == 3:  # durations: end - start
            start = float(rng.randrange(2**31)) + float(rng.randrange(10**6)) / 1e6
            end = start + rng.choice((rng.random() * 10.0 ** rng.randrange(-8, 5),
                                      rng.randrange(10**7) / 1e6))
            yield end - start
        elif kind == 4:  # any bit pattern: both signs, nan, infinities, subnormals, huge
            yield _from_bits(rng.getrandbits(64))
        elif kind == 5:  # any mantissa at any scale the arithmetic handles
            yield rng.random() * 2.0 ** rng.randrange(-70, 60)
        elif kind == 6:  # exact binary ties of the rounding, and short decimals +- 1 ulp
            if rng.random() < 0.5:
                yield rng.randrange(1, 2**24) / 2.0 ** rng.randrange(1, 44)
            else:
                x = rng.randrange(1, 10**9) / 10.0 ** rng.randrange(0, 14)
                yield _next_to(x, rng.choice((-1, 0, 1)))
        else:  # powers of two and their neighbours; half-way decimals
            x = 2.0 ** rng.randrange(-40, 60)
            yield _next_to(x, rng.choice((-1, 0, 1))) if rng.random() < 0.5 else (
                (rng.randrange(10**8) + 0.5) / 10.0 ** rng.randrange(5, 10))


EDGES = [0.0, -0.0, 1.0, -1.0, 0.1, 0.5, 1e-4, 1e-5, 9.9999e-5, 0.0001000001, 5e-7, 4.9999e-7,
         1.5e-6, 2.5e-6, 1e15, 9999999999999998.0, 1e16, 2.0**52, 2.0**52 - 0.5, 2.0**53,
         1700000000.0, 1700000000.000001, 1700000000.999999, 1700000000.123456789,
         math.inf, -math.inf, math.nan, 5e-324, 2.2250738585072014e-308, 1.7976931348623157e308]


@pytest.mark.parametrize("x", EDGES)
def test_times_and_durations_print_as_python_at_the_edges(x):
    assert time_text(x) == repr(round(x, 9))
    assert duration_text(x) == repr(round(x, 6))


def test_times_and_durations_print_as_python_on_random_values():
    rng = random.Random(13)
    wrong = [(x, time_text(x), duration_text(x)) for x in _values(rng, 200_000)
             if time_text(x) != repr(round(x, 9)) or duration_text(x) != repr(round(x, 6))]
    assert wrong == []


def test_integers_print_as_str():
    rng = random.Random(3)
    values = [0, 1, -1, 9, 10, 99, 100, 101, 999, 1000, 2**63 - 1, -2**63, -(2**63 - 1)]
    values += [10**k + d for k in range(19) for d in (-1, 0, 1) if 10**k + d < 2**63]
    values += [rng.randrange(-2**63, 2**63) >> rng.randrange(64) for _ in range(20_000)]
    assert [integer_text(v) for v in values] == [str(v) for v in values]


def test_addresses_print_as_inet_ntop():
    rng = random.Random(5)
    packed = [rng.randbytes(4) for _ in range(3000)] + [rng.randbytes(16) for _ in range(3000)]
    words = (0, 1, 0xA, 0x1234, 0xFFFF)
    for mask in range(256):  # every pattern of zero words, with several values in the others
        packed += [b"".join((v if mask >> j & 1 else 0).to_bytes(2, "big") for j in range(8))
                   for v in words[1:]]
    for _ in range(3000):  # IPv4-compatible and IPv4-mapped forms and their near misses
        head = [0] * 5 + [rng.choice((0, 0xFFFF, 1))]
        packed.append(b"".join(w.to_bytes(2, "big") for w in head) + rng.randbytes(4))
    packed += [bytes([v, 255 - v, v, 0]) for v in (0, 1, 9, 10, 99, 100, 199, 200, 255)]
    wrong = [(p.hex(), address_text(p)) for p in packed
             if address_text(p) != socket.inet_ntop(
                 socket.AF_INET6 if len(p) == 16 else socket.AF_INET, p)]
    assert wrong == []


def _rfc1071(data: bytes) -> int:
    """The one's-complement sum of 16-bit big-endian words, folded (RFC 1071), word by word."""
    if len(data) % 2:
        data += b"\0"
    total = 0
    for i in range(0, len(data), 2):
        total += (data[i] << 8) | data[i + 1]
        total = (total & 0xFFFF) + (total >> 16)
    return total


def _tcp_frame(rng: random.Random, version: int, payload: bytes, options: bytes) -> bytes:
    """An Ethernet frame holding TCP over IPv4 or IPv6 with a correct TCP checksum (and IPv4
    header checksum)."""
    hlen = 20 + len(options)
    tcp = bytearray(struct.pack(">HHIIBBHHH", rng.randrange(1, 65536), rng.randrange(1, 65536),
                                rng.getrandbits(32), rng.getrandbits(32), (hlen // 4) << 4,
                                0x18, rng.randrange(65536), 0, 0) + options + payload)
    if version == 4:
        src, dst = rng.randbytes(4), rng.randbytes(4)
        pseudo = src + dst + struct.pack(">BBH", 0, 6, len(tcp))
    else:
        src, dst = rng.randbytes(16), rng.randbytes(16)
        pseudo = src + dst + struct.pack(">IxxxB", len(tcp), 6)
    struct.pack_into(">H", tcp, 16, 0xFFFF - _rfc1071(pseudo + bytes(tcp)))
    if version == 4:
        ip = bytearray(struct.pack(">BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), rng.randrange(65536),
                                   0x4000, 64, 6, 0, src, dst))
        struct.pack_into(">H", ip, 10, 0xFFFF - _rfc1071(bytes(ip)))
        return b"\2" * 6 + b"\4" * 6 + b"\x08\x00" + bytes(ip) + bytes(tcp)
    ip = struct.pack(">IHBB16s16s", 0x60000000, len(tcp), 6, 64, src, dst)
    return b"\2" * 6 + b"\4" * 6 + b"\x86\xdd" + ip + bytes(tcp)


def test_tcp_checksums_at_every_length_and_alignment():
    rng = random.Random(7)
    lengths = [*range(0, 80), *rng.sample(range(80, 9000), 60), 1460, 8960]
    checked = 0
    for n in lengths:
        for version in (4, 6):
            options = rng.choice((b"", b"\1\1\1\0", b"\1" * 12))  # odd and even word counts
            frame = _tcp_frame(rng, version, rng.randbytes(n), options)
            pad = rng.randrange(8)  # the frame at any address alignment
            buf = bytearray(pad + len(frame))
            buf[pad:] = frame
            view = memoryview(buf)[pad:]
            seg, counts = decode_frame(view, 1)
            assert seg is not None and seg.checksum_ok is True, (n, version)
            assert "bad_tcp_checksums" not in counts and "bad_ip_checksums" not in counts
            hit = 14 + (20 if version == 4 else 40) + rng.randrange(20 + len(options) + n)
            if hit - 14 - (20 if version == 4 else 40) in (16, 17):
                continue  # the checksum field itself: could read as an offloaded one
            broken = bytearray(frame)
            broken[hit] ^= 1 << rng.randrange(8)
            seg, counts = decode_frame(bytes(broken), 1)
            if seg is not None:  # (a flipped header bit may drop the segment instead)
                assert seg.checksum_ok is False and counts.get("bad_tcp_checksums") == 1, (n, hit)
                checked += 1
    assert checked > 150
