"""The compiled reader's opening, standard input, live streams and hostile input: refusals in
one line; a pipe reads as the same bytes in a file; frames handed over as they arrive; the
invariants of any input (analyzer.fuzz's mutants, random flips); the statistics type."""

from __future__ import annotations

import gzip
import io
import os
import pickle
import random
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from analyzer.core.decode import (
    count_segments,
    open_native,
    open_stream,
)

from analyzer import fuzz
from analyzer.capture.stats import ReadStats
from analyzer.errors import UnreadableCapture
from tests.capture_helpers import (
    BE,
    LE,
    pcap_bytes,
    write,
)
from tests.test_core_decode import (
    CAPTURES,
    FUZZ_INPUTS,
    FUZZ_SEED,
    REPO,
    assert_one_line,
    check_invariants,
    ether,
    ip4_tcp,
)
from tests.test_core_decode_files import SMALL, _shb_raw, syn

# --- opening --------------------------------------------------------------------------------------

def test_unreadable(tmp_path):
    """Nothing can be read: one line naming the file (or the name given), what is wrong, and
    byte 0 where a byte is meant."""
    cases = {
        write(tmp_path / "empty.pcap", b""): "empty file",
        str(tmp_path / "missing.pcap"): "no such file",
        str(tmp_path): "is a directory",
        write(tmp_path / "short.pcap", b"\xd4\xc3"): "file is too short to be a capture (2 bytes)",
        write(tmp_path / "junk.gz", gzip.compress(b"hello world")): "(starts with 68 65 6c 6c)",
        write(tmp_path / "empty.gz", gzip.compress(b"")): "empty file (after gzip",
        write(tmp_path / "short.gz", gzip.compress(b"ab")): "gzip-compressed data is too short",
        write(tmp_path / "badgz.gz", b"\x1f\x8b\x08\x00garbage-not-deflate"):
            "gzip data cannot be decompressed",
        write(tmp_path / "badbom.pcapng", b"\x0a\x0d\x0d\x0a\x1c\0\0\0XXXX"):
            "no valid byte-order magic (found 58 58 58 58)",
        write(tmp_path / "nobom.pcapng", b"\x0a\x0d\x0d\x0a\x1c\0"): "(found nothing)",
        write(tmp_path / "html", b"<html><body>not a capture</body></html>"):
            "not a pcap or pcapng file (starts with 3c 68 74 6d)",
        write(tmp_path / "hdr.pcap", pcap_bytes([])[:20]): "pcap file header is truncated",
        write(tmp_path / "shb-len.pcapng", _shb_raw(LE)[:4] + b"\x0d\0\0\0" + _shb_raw(LE)[8:]):
            "impossible length 13",
        write(tmp_path / "shb-cut.pcapng", _shb_raw(LE)[:20]): "truncated (20 of 28 bytes",
        write(tmp_path / "shb-trailer.pcapng", _shb_raw(LE)[:-4] + b"\0\0\0\0"):
            "trailing length 0 differs from leading length 28",
        write(tmp_path / "shb-version.pcapng", _shb_raw(BE, major=3, minor=1)):
            "unsupported pcapng version 3.1",
    }
    for path, needle in cases.items():
        for name in (None, "shown-name"):
            with pytest.raises(UnreadableCapture) as ei:
                open_native(path, name=name)
            assert needle in ei.value.message, (path, ei.value.message)
            assert ei.value.path == (name or path)
            assert_one_line(ei.value, name or path)
            if "no such" not in needle and "directory" not in needle:
                assert ei.value.offset is not None


STDIN_CODE = """
import sys
from analyzer.core.decode import open_native
r = open_native("-") if sys.argv[1] == "-" else open_native(sys.argv[1], name="-")
segs = list(r)
print(repr((segs, r.stats.values(), [str(p) for p in r.problems], r.notes)))
"""


def _outcome_via(which: str, blob: bytes, path: str) -> str:
    out = subprocess.run([sys.executable, "-c", STDIN_CODE, which], input=blob,
                         capture_output=True, cwd=REPO, timeout=120, check=True)
    return out.stdout.decode()


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_stdin(tmp_path, kind, compress):
    """Standard input (a pipe) reads as the same bytes in a file do: segments, counters,
    damage (the file cut short) and notes."""
    blob = SMALL[kind][0]
    blob = gzip.compress(blob) if compress else blob
    for data in (blob, blob[:-3]):
        path = write(tmp_path / "f.bin", data)
        via_pipe = _outcome_via("-", data, path)
        assert "Segment(" in via_pipe and f"'compressed': {compress}" in via_pipe
        assert via_pipe == _outcome_via(path, b"", path)


def test_stdin_streams_before_writer_finishes(monkeypatch):
    """Standard input: fill hands over what it decoded rather than wait on the pipe."""
    rfd, wfd = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(rfd, "rb")))
    frames = [syn(1), syn(2), syn(3)]
    blob = pcap_bytes([(1, 0, f) for f in frames])
    first_end = 24 + 16 + len(frames[0])
    os.write(wfd, blob[:first_end])
    got = []

    def consume():
        reader = open_native("-")
        got.append(next(iter(reader)).seq)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(10)
    try:
        assert got == [1]
    finally:
        os.write(wfd, blob[first_end:])
        os.close(wfd)
        t.join(10)


def test_open_stream_frames_as_they_arrive():
    """A capture tool's pcap stream (live capture): frames() hands each record over as it
    arrives, as (time, link type, bytes) from the file's records; damage ends it, named."""
    rfd, wfd = os.pipe()
    frames = [syn(1), bytes(ip4_tcp(seq=2)), syn(3)]
    recs = [(7, 250_000_000, frames[0]), (8, 1, frames[1]), (9, 0, frames[2])]
    blob = pcap_bytes(recs, linktype=1, nanos=True)
    first_end = 24 + 16 + len(frames[0])
    os.write(wfd, blob[:first_end])
    got = []
    done = threading.Event()
    stream = os.fdopen(rfd, "rb")
    reader = open_stream(stream, "tshark -i lo")

    def consume():
        for rec in reader.frames():
            got.append(rec)
            done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        assert done.wait(10) and got == [(7.25, 1, frames[0])]
    finally:
        os.write(wfd, blob[first_end:] + b"\0" * 5)  # then a record header cut short
        os.close(wfd)
        t.join(10)
        stream.close()
    assert got == [(7.25, 1, frames[0]), (8 + 1e-9, 1, frames[1]), (9.0, 1, frames[2])]
    assert reader.stats.frames == 3
    [p] = reader.problems
    assert (p.offset, p.frame) == (len(blob), 4) and str(p).startswith("tshark -i lo")


# --- fill -----------------------------------------------------------------------------------------

def test_fill_in_small_batches_and_count():
    path = str(max(CAPTURES, key=lambda p: p.stat().st_size))
    whole = list(open_native(path).segments())
    for batch in (1, 2, 7, 4096):
        assert list(open_native(path).segments(batch)) == whole
    data = Path(path).read_bytes()
    records = fuzz.pcap_records(data, fuzz.pcap_layout(data))  # (the fuzzer's own walk)
    assert count_segments(path) == (len(whole), len(records))


# --- hostile input --------------------------------------------------------------------------------

def test_fuzz_mutants(tmp_path):
    """analyzer.fuzz's mutators (truncations, flips, lying lengths, broken pcapng structure,
    gzip cuts, generated captures ...) over the captures and traces: every invariant holds,
    with and without IPv4 header checksum checking, and a rewritten file reads as its
    original."""
    seeds = fuzz.load_seeds()
    assert seeds
    path = str(tmp_path / "m.bin")
    failures = []
    categories = set()
    for index in range(FUZZ_INPUTS):
        m, base = fuzz.make_mutant(seeds, FUZZ_SEED, index)
        categories.add(m.category)
        with open(path, "wb") as fh:
            fh.write(m.data)
        for check in (False, True):
            bad = check_invariants(path, check, m.same_as, tmp_path)
            if bad:
                failures.append((index, m.category, m.detail, base, check, bad[:2]))
                break
    assert len(categories) >= 12
    assert failures == []


def test_random_bytes(tmp_path):
    """Random flips and cuts of small pcap / pcapng files (deterministic)."""
    rng = random.Random(7)
    bases = [v[0] for v in SMALL.values()]
    path = str(tmp_path / "r.bin")
    for _ in range(1500):
        blob = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(1, 7)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob = bytes(blob[:rng.randrange(1, len(blob) + 1)])
        if rng.random() < 0.1:
            blob = gzip.compress(blob)
        with open(path, "wb") as fh:
            fh.write(blob)
        assert check_invariants(path, rng.random() < 0.5) == []


# --- statistics -----------------------------------------------------------------------------------

def test_stats_are_live_and_pickle(tmp_path):
    """reader.stats is one live object (the pipeline keeps it before reading), equal to the
    ReadStats of the same values, and it pickles to one."""
    frames = [syn(1), ether(b"\0" * 28, 0x0806), syn(2, payload=b"abc")]
    path = write(tmp_path / "s.pcap", pcap_bytes([(1, 0, f) for f in frames]))
    reader = open_native(path)
    stats = reader.stats
    assert stats.frames == 0 and stats.format == "pcap"
    segs = list(reader)
    want = ReadStats(format="pcap", frames=3, tcp_segments=2, non_tcp=1, link_types={1: 3},
                     bytes_read=os.path.getsize(path))
    assert len(segs) == 2 and stats is reader.stats
    assert stats == want and want == stats
    copy = pickle.loads(pickle.dumps(stats))
    assert isinstance(copy, ReadStats) and copy == want
    stats.frames += 1  # counters may be rebased, as chunked reading does
    assert reader.stats.frames == 4 and stats != want
    with pytest.raises(AttributeError):
        stats.format = "pcapng"
