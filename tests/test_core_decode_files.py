"""The compiled reader's containers against truth: the same records in gzip, pcapng (either
byte order), big-endian and nanosecond pcap read alike; pcapng interfaces, resolutions and
offsets against exact fractions; every truncation's outcome worked out from the record
boundaries; damaged blocks, records and gzip streams, each one line with its byte offset and
frame. Helpers and the frame builders: tests/test_core_decode.py."""

from __future__ import annotations

import gzip
import math
import struct
from fractions import Fraction
from pathlib import Path

import pytest
from analyzer.core.decode import (
    idb_interface,
    open_native,
)

from analyzer import fuzz
from analyzer.errors import DamagedCapture, DamagedFrames, UnreadableCapture
from tests.capture_helpers import (
    BE,
    LE,
    ng_block,
    ng_epb,
    ng_idb,
    ng_option,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_bytes,
    write,
)
from tests.test_core_decode import (
    CAPTURES,
    FATES,
    ORACLE_TRACES,
    assert_one_line,
    check_invariants,
    ether,
    ip4_tcp,
    ip6_tcp,
    read,
)

# --- the same records in another container ------------------------------------------------------

def _conversion_seeds() -> list[Path]:
    small = [p for p in ORACLE_TRACES if p.stat().st_size < 400_000]
    return CAPTURES[::4] + small[::3]


def _rewritten(data: bytes, endian: str, nanos: bool) -> bytes | None:
    lay = fuzz.pcap_layout(data)
    if lay is None:
        return None
    recs = fuzz.pcap_records(data, lay)
    if nanos and not lay.nanos:
        recs = [(s, f * 1000, fr) for s, f, fr in recs]
    return fuzz.pcap_file(recs, lay.linktype, nanos or lay.nanos, endian, lay.snaplen)


@pytest.mark.parametrize("path", _conversion_seeds(), ids=lambda p: p.name)
def test_conversions(tmp_path, path):
    """gzip, pcapng (both byte orders), big-endian and nanosecond pcap, and gzip of pcapng, of
    real captures, read the same segments (timestamps included) and counters as the original;
    gzip cut short reads a prefix of them, then one line of damage."""
    data = path.read_bytes()
    try:
        want, ref = read(str(path))
    except UnreadableCapture:
        pytest.skip("the original does not open")
    counts = {f: getattr(ref.stats, f) for f in (*FATES, "frames", "link_types",
                                                 "bad_tcp_checksums", "offloaded_checksums")}
    variants = {"gz": gzip.compress(data)}
    if data[:4] in fuzz.PCAP_MAGICS and not ref.problems:
        variants["ng"] = fuzz.pcap_to_pcapng(data)
        variants["ng-be"] = fuzz.pcap_to_pcapng(data, big_endian=True)
        variants["ng-gz"] = gzip.compress(variants["ng"])
        variants["be"] = _rewritten(data, BE, False)
        variants["be-ns"] = _rewritten(data, BE, True)
        variants["le-ns"] = _rewritten(data, LE, True)
    for name, blob in variants.items():
        segs, reader = read(write(tmp_path / f"{name}.bin", blob))
        assert segs == want, name
        assert {f: getattr(reader.stats, f) for f in counts} == counts, name
        assert reader.stats.compressed == name.endswith("gz")
        assert reader.stats.format == ("pcapng" if name.startswith("ng") else ref.stats.format)
        assert [type(p) for p in reader.problems] == [type(p) for p in ref.problems], name
    z = variants["gz"]
    for cut in (len(z) - 1, len(z) - 8, len(z) * 2 // 3, len(z) // 3, 30, 11):
        p = write(tmp_path / "cut.gz", z[:max(cut, 2)])
        try:
            segs, reader = read(p)
        except UnreadableCapture as exc:
            assert_one_line(exc, p)
            continue
        assert segs == want[:len(segs)], cut
        assert reader.problems and isinstance(reader.problems[-1], DamagedCapture), cut
        for problem in reader.problems:
            assert_one_line(problem, p)


# --- pcapng and pcap structure ------------------------------------------------------------------

def syn(seq: int, **kw) -> bytes:
    return ether(ip4_tcp(seq=seq, flags="S", **kw))


def _exact_ts(ticks: int, units: int, offset: int = 0) -> Fraction:
    return Fraction(ticks, units) + offset


def _close(ts: float, exact: Fraction) -> bool:
    """``ts`` is ``exact`` to within the rounding of a double (a few ulps)."""
    return abs(Fraction(ts) - exact) <= 4 * Fraction(math.ulp(float(exact)))


def test_pcapng_interfaces_resolutions_and_blocks(tmp_path):
    """Interfaces with every kind of if_tsresol (powers of 10 and of 2, up to 10**127 and
    2**60 ticks a second), if_tsoffset positive and negative, simple and obsolete packet
    blocks, unknown blocks skipped, a packet of an interface never described."""
    a, c, d, e = syn(1), syn(3), syn(4), syn(5)
    b = ip6_tcp(seq=2, flags="S")
    tsopt = ng_option(14, struct.pack("<q", -1_000_000_000))
    idb_neg = ng_block(1, struct.pack("<HHI", 1, 0, 0) + ng_option(9, b"\x80\x14") + tsopt
                       + ng_option(0, b""))
    # interfaces 0..10: (link type, ticks per second, seconds added)
    ifaces = [(1, 10**6, 0), (101, 10**9, 1000), (1, 2**20, 0), (1, 10**19, 0), (1, 2**60, 0),
              (1, 1, 0), (1, 10**16, 0), (1, 10**127, 0),
              (1, 1, -1_000_000_000),  # (if_tsresol's first byte 0x80: 2**0)
              (1, 10**6, 0)]
    packets = [(0, 1_500_000_250_000, a), (1, 7_000_000_001, b), (2, 3 * 2**20 + 2**19, d),
               (3, 2**64 - 1, a), (4, 2**64 - 12345, a), (5, 1_700_000_000, a),
               (6, 2**63 + 2**40 + 77, a), (7, 2**64 - 3, a), (8, 123_456_789, a),
               (9, 5, a), (3, 98_765_432_123_456_789, a), (1, 2**53 + 1, b)]
    blob = b"".join([
        ng_shb(), ng_idb(1), ng_idb(101, tsresol=9, tsoffset=1000), ng_idb(1, tsresol=0x80 | 20),
        ng_idb(1, tsresol=19), ng_idb(1, tsresol=0x80 | 60), ng_idb(1, tsresol=0),
        ng_idb(1, tsresol=16), ng_idb(1, tsresol=127), idb_neg, ng_idb(1, snaplen=40),
        ng_epb(*packets[0]), ng_block(0x0BAD0BAD, b"custom"),
        ng_epb(*packets[1]), ng_block(5, b"\0" * 8), ng_spb(c),
        ng_epb(*packets[2]), ng_pb(0, 2_000_000, e),
        *[ng_epb(*p) for p in packets[3:]],
        ng_epb(11, 5, a), ng_spb(a),
    ])
    path = write(tmp_path / "f.pcapng", blob)
    segs, reader = read(path)
    # frames: 1 a, 2 b, 3 spb c, 4 d, 5 pb e, 6..14 the rest, 15 interface 11, 16 spb a
    assert [s.frame for s in segs] == [1, 2, 3, 4, 5, *range(6, 15), 16]
    assert [s.seq for s in segs] == [1, 2, 3, 4, 5, *[p[2] == a and 1 or 2
                                                      for p in packets[3:]], 1]
    exact = {}
    for frame, (iface, ticks, _) in zip([1, 2, 4, *range(6, 15)],
                                        [packets[0], packets[1], *packets[2:]], strict=True):
        _, units, offset = ifaces[iface]
        exact[frame] = _exact_ts(ticks, units, offset)
    exact[5] = _exact_ts(2_000_000, 10**6)
    by_frame = {s.frame: s for s in segs}
    for frame, ts in exact.items():
        assert _close(by_frame[frame].ts, ts), (frame, by_frame[frame].ts, float(ts))
    assert by_frame[3].ts == by_frame[2].ts  # a simple packet block: the last time seen
    assert by_frame[16].ts == by_frame[14].ts  # (the undescribed interface's frame has none)
    assert reader.stats.skipped_blocks == 2 and reader.notes == []
    assert reader.stats.link_types == {1: 13, 101: 2, -1: 1}
    [p] = reader.problems  # interface 11 was never described: a damaged frame, reading goes on
    assert isinstance(p, DamagedFrames) and (p.frame, p.count, p.offset) == (15, 1, None)
    assert "undescribed interface" in p.message


def test_pcapng_sections_byte_orders_and_snaplen(tmp_path):
    """A big-endian section with a snaplen (it cuts the simple packet block, not the others),
    a little-endian one at millisecond resolution, a third one whose packets come before its
    interfaces, an unsupported link type."""
    v4 = ip4_tcp(seq=10)
    blob = b"".join([
        ng_shb(BE), ng_idb(1, endian=BE, snaplen=50), ng_epb(0, 1_000_000, syn(9), endian=BE),
        ng_spb(syn(11), endian=BE), ng_pb(0, 5, syn(12), endian=BE),
        ng_shb(LE), ng_idb(228, tsresol=3), ng_epb(0, 2500, v4), ng_epb(1, 1, v4),
        ng_shb(LE), ng_spb(syn(13)), ng_epb(0, 7, syn(14)), ng_idb(105), ng_epb(0, 8, v4),
        ng_idb(1), ng_epb(1, 9, syn(15)),
    ])
    segs, reader = read(write(tmp_path / "s.pcapng", blob))
    assert [(s.frame, s.seq, s.ts) for s in segs] == [(1, 9, 1.0), (3, 12, 5e-6), (4, 10, 2.5),
                                                      (9, 15, 9e-6)]
    st = reader.stats
    assert (st.frames, st.truncated_frames, st.non_tcp) == (9, 1, 4)
    assert st.link_types == {1: 4, 228: 1, -1: 3, 105: 1}
    [p] = reader.problems  # frames 5 (interface 1 of two), 6 and 7 (before any interface)
    assert isinstance(p, DamagedFrames) and (p.frame, p.count) == (5, 3)
    [note] = reader.notes
    assert "link type 105" in note and "frame 8" in note


def test_idb_interface():
    """An IDB body as the reader takes it: link type (low 16 bits), snaplen, if_tsresol and
    if_tsoffset (the first of each), in either byte order."""
    for endian, little in ((LE, True), (BE, False)):
        block = ng_idb(113, snaplen=96, tsresol=0x80 | 10, tsoffset=-7, endian=endian)
        body = block[8:-4]
        assert idb_interface(body, little) == (113, 96, 1024, -7)
        assert idb_interface(ng_idb(1, endian=endian)[8:-4], little) == (1, 0, 10**6, 0)
    with pytest.raises(ValueError):
        idb_interface(b"\1\0\0", True)


def _shb_raw(endian: str, major: int = 1, minor: int = 0, extra: bytes = b"") -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, major, minor, -1) + extra
    return ng_block(0x0A0D0D0A, body, endian)


def _pcapng_damages() -> dict[str, tuple[bytes, list[int], str | None]]:
    """name -> (file, sequence numbers read, what the one damage line says; None: none). The
    damage is in the block after the first packet: byte len(head), frame 2."""
    head = ng_shb() + ng_idb(1) + ng_epb(0, 1, syn(1))
    good = ng_epb(0, 2, syn(2))
    out = {}

    def mutate(name, fn, needle, tail=True):
        bad = bytearray(good)
        fn(bad)
        out[name] = (head + bytes(bad) + (ng_epb(0, 3, syn(3)) if tail else b""), [1], needle)

    n = len(good)
    mutate("trailer", lambda b: struct.pack_into("<I", b, n - 4, n + 4),
           f"trailing length {n + 4} differs from leading length {n}")
    mutate("len-not-4", lambda b: struct.pack_into("<I", b, 4, n + 2), f"impossible length {n + 2}")
    mutate("len-small", lambda b: struct.pack_into("<I", b, 4, 8), "impossible length 8")
    mutate("len-huge", lambda b: struct.pack_into("<I", b, 4, 17 * 1024 * 1024),
           f"impossible length {17 * 1024 * 1024}")
    mutate("len-past-end", lambda b: struct.pack_into("<I", b, 4, 4096),
           f"truncated block of type 0x00000006: {n} of 4096 bytes present", tail=False)
    mutate("caplen-past-block", lambda b: struct.pack_into("<I", b, 20, 5000),
           "captured length 5000 exceeds the block")
    out["epb-short"] = (head + ng_block(6, b"\0" * 16), [1], "enhanced packet block too short")
    out["pb-short"] = (head + ng_block(2, b"\0" * 12), [1], "packet block too short")
    out["pb-caplen"] = (head + ng_block(2, struct.pack("<HHIIII", 0, 0, 0, 0, 99, 99)), [1],
                        "packet block: captured length 99 exceeds the block")
    out["spb-short"] = (head + ng_block(3, b""), [1], "simple packet block too short")
    out["idb-short"] = (head + ng_block(1, b"\1\0\0\0"), [1],
                        "interface description block too short")
    out["shb-bad-bom"] = (head + ng_block(0x0A0D0D0A, b"ABCD" + b"\0" * 12), [1],
                          "bad byte-order magic 41 42 43 44")
    out["shb-version"] = (head + _shb_raw(LE, major=2, minor=3), [1],
                          "unsupported pcapng version 2.3")
    out["shb-short"] = (head + struct.pack("<II", 0x0A0D0D0A, 20) + b"\x4d\x3c\x2b\x1a"
                        + b"\0" * 4 + struct.pack("<I", 20), [1],
                        "section header block too short (20 bytes)")
    out["shb-cut-bom"] = (head + b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c", [1],
                          "truncated section header block")
    out["header-cut"] = (head + b"\x06\0\0\0\x20", [1], "truncated block header (5 of 8 bytes)")
    out["first-shb-long"] = (_shb_raw(BE, extra=ng_option(2, b"hardware", BE)
                                      + ng_option(0, b"", BE))
                             + ng_idb(1, endian=BE) + ng_epb(0, 1, syn(1), endian=BE), [1], None)
    out["idb-options-odd"] = (ng_shb() + ng_block(1, struct.pack("<HHI", 1, 0, 0)
                                                  + struct.pack("<HH", 9, 0)
                                                  + struct.pack("<HH", 9, 1) + b"\x03\0\0\0"
                                                  + struct.pack("<HH", 14, 4) + b"\1\2\3\4"
                                                  + struct.pack("<HH", 77, 200))
                              + ng_epb(0, 12345, syn(4)), [4], None)
    return out


PCAPNG_DAMAGES = _pcapng_damages()


@pytest.mark.parametrize("name", list(PCAPNG_DAMAGES))
def test_pcapng_damage(tmp_path, name):
    """Each kind of broken block: the packets before it are read, then one line naming the
    file, the frame and the block's byte offset says what is wrong."""
    blob, seqs, needle = PCAPNG_DAMAGES[name]
    path = write(tmp_path / f"{name}.pcapng", blob)
    segs, reader = read(path)
    assert [s.seq for s in segs] == seqs
    if needle is None:
        assert reader.problems == []
        return
    [p] = reader.problems
    head = len(ng_shb() + ng_idb(1) + ng_epb(0, 1, syn(1)))
    assert isinstance(p, DamagedCapture) and (p.offset, p.frame) == (head, 2), str(p)
    assert needle in p.message, p.message
    assert_one_line(p, path)


def test_idb_options_odd_resolution(tmp_path):
    """The first if_tsresol counts even when empty (then the default), a later one does not;
    an if_tsoffset of 4 bytes is ignored; an option running past the block ends the list."""
    blob = PCAPNG_DAMAGES["idb-options-odd"][0]
    [seg], _ = read(write(tmp_path / "o.pcapng", blob))
    assert seg.ts == pytest.approx(12345 / 10**6, abs=1e-15)


def _small_files() -> dict[str, tuple[bytes, list[int], list[int]]]:
    """kind -> (file, start offset of each packet record or block, sequence number each holds;
    the other blocks, before the first packet, only describe)."""
    frames = [syn(1), syn(2, payload=b"abc"), ether(ip6_tcp(seq=3, payload=b"defgh")),
              syn(4, options=[("Timestamp", (1, 2))])]
    seqs = [1, 2, 3, 4]
    out = {}
    for kind, endian, nanos in (("pcap", LE, False), ("pcap-be", BE, True)):
        blob = pcap_bytes([(1, 5, f) for f in frames], endian=endian, nanos=nanos)
        starts = [24]
        for f in frames[:-1]:
            starts.append(starts[-1] + 16 + len(f))
        out[kind] = (blob, starts, seqs)
    blocks = [ng_shb(), ng_idb(1, tsresol=9), ng_block(0x0BAD, b"x" * 5), ng_epb(0, 0, frames[0]),
              ng_epb(0, 1, frames[1]), ng_spb(frames[2]), ng_pb(0, 9, frames[3])]
    starts = [sum(len(b) for b in blocks[:i]) for i in range(3, len(blocks))]
    out["pcapng"] = (b"".join(blocks), starts, seqs)
    return out


SMALL = _small_files()


def _expected_cut(kind: str, cut: int):
    """What reading the first ``cut`` bytes must give, from the record boundaries: "unreadable"
    inside the file header (pcapng: the first section header block), else (sequence numbers,
    (offset, frame) of the one damage line, or None on a boundary)."""
    blob, starts, seqs = SMALL[kind]
    ends = starts[1:] + [len(blob)]
    header_end = 24 if kind.startswith("pcap") and kind != "pcapng" else len(ng_shb())
    if cut < header_end:
        return "unreadable"
    whole = [i for i, end in enumerate(ends) if end <= cut]
    got = [seqs[i] for i in whole]
    boundaries = {header_end, *ends, *([] if kind != "pcapng" else
                                       [len(ng_shb()) + len(ng_idb(1, tsresol=9)),
                                        starts[0]])}
    if cut in boundaries:
        return got, None
    if kind == "pcapng" and cut < starts[0]:  # inside the IDB or the unknown block
        prev = max(b for b in boundaries if b < cut)
        return got, (prev, 1)
    return got, (starts[len(whole)], len(whole) + 1)


@pytest.mark.parametrize("kind", list(SMALL))
def test_every_truncation(tmp_path, kind):
    """A small file cut at every byte: the records wholly present are read; a cut inside a
    record is one line of damage at that record's byte offset, naming its frame; a cut inside
    the file header cannot be read. The same cut gzip-compressed reads the same."""
    blob = SMALL[kind][0]
    for cut in range(len(blob) + 1):
        want = _expected_cut(kind, cut)
        for compress in (False, True):
            data = gzip.compress(blob[:cut], mtime=0) if compress else blob[:cut]
            path = write(tmp_path / ("t.gz" if compress else "t.bin"), data)
            if want == "unreadable":
                with pytest.raises(UnreadableCapture) as ei:
                    open_native(path)
                assert_one_line(ei.value, path)
                continue
            segs, reader = read(path)
            assert [s.seq for s in segs] == want[0], (cut, compress)
            if want[1] is None:
                assert reader.problems == [], (cut, compress)
                continue
            [p] = reader.problems
            assert isinstance(p, DamagedCapture) and "truncated" in p.message
            assert (p.offset, p.frame) == want[1], (cut, compress, str(p))
            assert_one_line(p, path)
    z = gzip.compress(blob, mtime=0)
    want = [s.seq for s in read(write(tmp_path / "whole", blob))[0]]
    for cut in range(len(z)):  # the compressed stream cut short: a prefix, then damage
        path = write(tmp_path / "z.gz", z[:cut])
        try:
            segs, reader = read(path)
        except UnreadableCapture as exc:
            assert_one_line(exc, path)
            continue
        assert [s.seq for s in segs] == want[:len(segs)]
        assert len(reader.problems) == 1 and isinstance(reader.problems[0], DamagedCapture)
        assert_one_line(reader.problems[0], path)


def test_damaged_gzip_streams(tmp_path):
    """Corrupted deflate data (zlib throws away what its failing call decompressed: the reader
    walks the file again a record at a time), a wrong CRC, trailing garbage: the records
    before the damage, then one line of damage; two members and zero padding: everything."""
    recs = [(1, i, syn(i, payload=(f"GET /item/{i} HTTP/1.1\r\nHost: x{i % 7}\r\n\r\n"
                                   * 8).encode())) for i in range(1500)]
    big = pcap_bytes(recs)
    z = gzip.compress(big, mtime=0)
    whole = list(range(1500))
    blobs = {"crc": z[:-8] + b"\0\0\0\0" + z[-4:], "garbage": z + b"garbage!"}
    for at in [*range(50, 2000, 97), *range(2000, len(z) - 20, len(z) // 10)]:
        bad = bytearray(z)
        bad[at] ^= 0xFF
        blobs[f"flip{at}"] = bytes(bad)
    zlib_errors = 0
    for name, blob in blobs.items():
        path = write(tmp_path / f"{name}.gz", blob)
        try:
            segs, reader = read(path)
        except UnreadableCapture as exc:  # (damage in the first deflate block)
            assert_one_line(exc, path)
            continue
        assert check_invariants(path, False) == [], name
        p = reader.problems[-1]  # (a flip zlib does not notice may also damage frames first)
        assert isinstance(p, DamagedCapture), name
        if not name.startswith("flip"):
            assert [s.seq for s in segs] == whole[:len(segs)] and p.frame == len(segs) + 1
        zlib_errors += ": read error: Error -3 while decompressing" in str(p)
        # what zlib gives before the error, fed a little at a time, is read in full
        out = _inflate_before_error(blob)
        if out is not None and len(reader.problems) == 1 and "Error -3" in str(p):
            # never more records than zlib gives before its error (and at most the records of
            # one read of the gzip module fewer: what the failing call decompressed is lost)
            assert _whole_records(out) - 40 <= reader.stats.frames <= _whole_records(out), name
    assert zlib_errors >= 3  # where the walk again is needed
    # two members, and zeros after the member (padding gzip allows): all of it, no damage
    for name, blob in (("members", gzip.compress(big[:5000]) + gzip.compress(big[5000:])),
                       ("zeros", z + b"\0" * 16)):
        segs, reader = read(write(tmp_path / f"{name}.gz", blob))
        assert [s.seq for s in segs] == whole and reader.problems == [], name


def _inflate_before_error(blob: bytes) -> bytes | None:
    """The gzip member's data zlib decompresses before an error, fed 64 bytes at a time
    (None: no zlib error)."""
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = []
    try:
        for i in range(0, len(blob), 64):
            out.append(d.decompress(blob[i:i + 64]))
    except zlib.error:
        return b"".join(out)
    return None


def _whole_records(data: bytes) -> int:
    lay = fuzz.pcap_layout(data + bytes(16))
    if lay is None:
        return 0
    n, pos = 0, 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        n, pos = n + 1, pos + 16 + caplen
    return n


def test_pcap_damage(tmp_path):
    """A record length over the bound (libpcap's 256 KiB, raised by a larger snaplen), a record
    cut by the end of the file, an original length that lies (ignored)."""
    frames = [syn(1), syn(2, payload=b"abc"), syn(3, payload=b"defgh")]
    blob = pcap_bytes([(1, 0, f) for f in frames])
    third = 24 + (16 + len(frames[0])) + (16 + len(frames[1]))
    absurd = bytearray(blob)
    struct.pack_into("<I", absurd, third + 8, 50_000_000)
    big_snap = bytearray(pcap_bytes([(1, 0, f) for f in frames], snaplen=1 << 22))
    struct.pack_into("<I", big_snap, third + 8, 300_000)
    cases = {
        "absurd": (bytes(absurd), "record length 50000000 is absurd (snaplen 65535)"),
        "snaplen-raises-limit": (bytes(big_snap), "truncated record: "
                                 f"{len(frames[2])} of 300000 bytes present"),
    }
    for name, (data, message) in cases.items():
        path = write(tmp_path / f"{name}.pcap", data)
        segs, reader = read(path)
        assert [s.seq for s in segs] == [1, 2]
        [p] = reader.problems
        assert (p.offset, p.frame, p.message) == (third, 3, message), name
        assert_one_line(p, path)
    segs, reader = read(write(tmp_path / "w.pcap", pcap_bytes([(1, 0, f, 3) for f in frames])))
    assert [s.payload_len for s in segs] == [0, 3, 5] and reader.problems == []


def test_damaged_frame_ipv6_and_ipv4_total_zero(tmp_path):
    """An IPv6 TCP header longer than its packet is a damaged frame (named, skipped); an IPv4
    total length of 0 (segmentation offload) means the captured length."""
    v6 = bytearray(ether(ip6_tcp(seq=3)))
    v6[14 + 40 + 12] = 0xF0
    tso = bytearray(syn(9, payload=b"zz"))
    struct.pack_into("!H", tso, 16, 0)
    path = write(tmp_path / "l.pcap", pcap_bytes([(1, 0, bytes(v6)), (2, 0, syn(1)),
                                                  (3, 0, bytes(tso))]))
    segs, reader = read(path)
    assert [(s.frame, s.seq, s.payload_len) for s in segs] == [(2, 1, 0), (3, 9, 2)]
    [p] = reader.problems
    assert (p.frame, p.count, p.offset) == (1, 1, 24)
    assert p.problem == "TCP header length 60 exceeds the 20 bytes left in the IP packet"


def test_large_records_grow_the_buffer(tmp_path):
    """Records larger than the read buffer (pcap up to 4 MiB with a large snaplen, pcapng blocks
    up to 16 MiB), jumbo IPv6 segments whose length is the captured one."""
    def jumbo(n: int, seq: int) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", 1, 2, seq, 0, 0x50, 0x18, 512, 0, 0) + b"j" * n
        # payload length 0: the length is the captured one
        return struct.pack("!IHBB16s16s", 0x60000000, 0, 6, 64, bytes(15) + b"\1",
                           bytes(15) + b"\2") + tcp

    big = jumbo(4 * 1024 * 1024 - 100, 1)
    path = write(tmp_path / "big.pcap", pcap_bytes([(1, 0, ip4_tcp(seq=0)),
                                                    (2, 0, big), (3, 0, jumbo(70000, 2))],
                                                   linktype=101, snaplen=1 << 22))
    segs, reader = read(path)
    assert [(s.seq, s.payload_len) for s in segs] == [(0, 0), (1, 4 * 1024 * 1024 - 100),
                                                      (2, 70000)]
    assert reader.problems == []
    blob = ng_shb() + ng_idb(101) + ng_epb(0, 1, jumbo(6 * 1024 * 1024, 3)) + ng_epb(0, 2, big)
    for name, data in (("big.pcapng", blob), ("big.gz", gzip.compress(blob))):
        segs, reader = read(write(tmp_path / name, data))
        assert [(s.seq, s.payload_len) for s in segs] == [(3, 6 * 1024 * 1024),
                                                          (1, 4 * 1024 * 1024 - 100)]
        assert reader.problems == []
