"""Chunks read by workers and merged give the one-process answer, record for record; where they
could not, the run falls back to one process and says so."""

from __future__ import annotations

import random
import re
import struct
from pathlib import Path

import numpy as np
import pytest

from analyzer import classify as classify_module
from analyzer.scale.merge import Merger
from analyzer.scale.run import Workers
from analyzer.scale.worker import Options, expired
from analyzer.synth import generate
from analyzer.tracker import Timeouts, Tracker
from tests.scale_helpers import one_process, scaled
from tests.segments import Flow, handshake

CAPTURES = Path(__file__).resolve().parents[1] / "captures"
ZEEK = Path("/work/shared/zeek-oracle/traces")


@pytest.fixture(scope="module")
def workers():
    pool = Workers(jobs=2)
    yield pool
    pool.close()


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("synth") / "teardowns.pcap"
    generate(str(path), packets=30_000, seed=7, mix="teardowns")
    return str(path)


def corpus() -> list[str]:
    files = sorted(map(str, CAPTURES.glob("*.pcap")))
    if ZEEK.exists():
        files += sorted(str(p) for p in ZEEK.rglob("*") if p.suffix in (".pcap", ".pcapng"))
    return files


def test_tiny_chunks_over_the_corpora(workers):
    """A chunk every few packets: connections cross cuts everywhere, and the merge mends them."""
    replayed = fallbacks = 0
    for path in corpus():
        expected = one_process(path)
        said: list[str] = []
        lines, reports, runner = scaled([path], workers, chunk=400, said=said)
        assert (lines, reports) == expected, path
        replayed += runner.last_merger.replayed
        fallbacks += runner.fallbacks
    assert replayed > 500  # the stitching was exercised, not bypassed
    assert fallbacks <= 3  # (the traces whose packet times go backwards)


def test_a_synthetic_capture_in_chunks(workers, synth):
    expected = one_process(synth)
    for chunk in (64 << 10, 1 << 20):
        lines, reports, runner = scaled([synth], workers, chunk=chunk)
        assert (lines, reports) == expected
        assert runner.fallbacks == 0 and runner.last_merger.replayed > 0


def test_zeek_boundaries_in_chunks(workers, synth):
    opts = Options(zeek_options={"boundaries": True})
    expected = one_process(synth, zeek_options={"boundaries": True})
    lines, reports, runner = scaled([synth], workers, chunk=128 << 10, opts=opts)
    assert (lines, reports) == expected and runner.fallbacks == 0


def test_packet_times_going_backwards_fall_back(workers, synth, tmp_path):
    blob = bytearray(Path(synth).read_bytes())
    # move the 2000th record's time one minute back (big-endian pcap from the generator)
    pos = 24
    for _ in range(1999):
        pos += 16 + struct.unpack_from(">I", blob, pos + 8)[0]
    struct.pack_into(">I", blob, pos, struct.unpack_from(">I", blob, pos)[0] - 60)
    odd = tmp_path / "odd.pcap"
    odd.write_bytes(bytes(blob))
    said: list[str] = []
    lines, reports, runner = scaled([str(odd)], workers, chunk=256 << 10, said=said)
    assert (lines, reports) == one_process(str(odd))
    assert runner.fallbacks == 1
    assert said == [f"{odd}: read again in one process: packet times go backwards, so the "
                    "result depends on when the tracker swept"]


@pytest.mark.parametrize("chunk,limit", [(4 << 20, 40), (16 << 10, None)])
def test_reaching_max_active_falls_back(workers, synth, chunk, limit):
    """With 40, a 4 MB chunk alone has too many open (its worker stops early); at one below the
    capture's peak, only the merge's count over the whole capture, in 16 kB chunks, sees it."""
    peak = one_process(synth)[1][0][4]
    limit = limit or peak - 1
    expected = one_process(synth, timeouts=Timeouts(max_active=limit))
    said: list[str] = []
    lines, reports, runner = scaled([synth], workers, chunk=chunk,
                                    opts=Options(timeouts=Timeouts(max_active=limit)), said=said)
    assert (lines, reports) == expected
    assert runner.fallbacks == 1
    assert f"more than {limit} connections open at once" in said[0]
    # the peak itself is no reason to fall back
    lines, reports, runner = scaled([synth], workers, chunk=chunk,
                                    opts=Options(timeouts=Timeouts(max_active=peak)))
    assert (lines, reports) == one_process(synth) and runner.fallbacks == 0


def test_damaged_frames_in_several_chunks_are_one_error(workers, synth, tmp_path):
    blob = bytearray(Path(synth).read_bytes())
    pos, n, hit = 24, 0, 0
    while pos < len(blob):
        caplen = struct.unpack_from(">I", blob, pos + 8)[0]
        ip = pos + 16 + 14  # (the generator writes untagged Ethernet)
        v6 = blob[ip] >> 4 == 6
        hlen = 40 if v6 else (blob[ip] & 15) * 4
        tcp_len = struct.unpack_from(">H", blob, ip + 4)[0] if v6 else \
            struct.unpack_from(">H", blob, ip + 2)[0] - hlen
        n += 1
        if n > 3000 * (hit + 1) and tcp_len < 60:  # data offset 15 (60 bytes): it lies
            blob[ip + hlen + 12] = 0xF0 | (blob[ip + hlen + 12] & 0x0F)
            hit += 1
        pos += 16 + caplen
    bad = tmp_path / "lying.pcap"
    bad.write_bytes(bytes(blob))
    expected = one_process(str(bad))
    assert expected[1][0][2], "the capture should hold damaged frames"
    lines, reports, runner = scaled([str(bad)], workers, chunk=512 << 10)
    assert (lines, reports) == expected and runner.fallbacks == 0


# ------------------------------------------------------------------ the merge's own rules


def test_expired_is_the_sweeps_own_test():
    """The merge decides when a sweep hands a connection on with ``expired``: it must agree
    with Tracker.sweep on connections of every kind and age."""
    t = Timeouts(idle=30.0, closed=5.0)
    rng = random.Random(1)
    for _ in range(300):
        done: list = []
        tracker = Tracker(done.append, t)
        f = Flow(ts=100.0)
        handshake(f)
        kind = rng.choice(["open", "fin", "rst"])
        if kind == "fin":
            f("c", "F.", 1001, 5001)
            f("s", "F.", 5001, 1002)
            f("c", ".", 1002, 5002)
        elif kind == "rst":
            f("c", "R.", 1001, 5001)
        for seg in f.segments:
            tracker.feed(seg)
        conn = next(iter(tracker.active.values()))
        now = conn.end + rng.choice([0.0, 4.999, 5.0, 5.001, 29.9, 30.0, 30.001, 60.0])
        tracker.sweep(now)
        assert bool(done) == expired(conn.end, conn.ended, now, t), (kind, now - conn.end)


def test_sweep_times_are_the_trackers(tmp_path):
    """The merge's sweep schedule over a chunked stream of times, against the tracker's."""
    rng = random.Random(2)
    times = sorted(1000.0 + rng.random() * 40 for _ in range(3000))
    swept: list[float] = []

    class Spy(Tracker):
        def sweep(self, now):
            swept.append(now)
            super().sweep(now)

    spy = Spy(lambda c: None)
    for ts in times:
        spy.tick(ts)
    merger = Merger("x", Options(), lambda *a: iter(()))
    got = []
    for lo in range(0, 3000, 700):  # in chunks, as the merge meets them
        part = np.array(times[lo:lo + 700])
        got += [now for _f, now in merger._sweeps(part, np.arange(lo, lo + len(part)))]
    assert got == swept and len(got) > 30


def test_the_classifier_asks_only_what_the_merge_answers():
    """Of the capture-wide context, the classifier reads listener_seen only: the merge answers
    it as of each connection's end (worker.AsOf). Another question needs the merge extended."""
    source = Path(classify_module.__file__).read_text()
    asked = set(re.findall(r"\bctx\.(\w+)", source))
    assert asked == {"listener_seen"}
    fields = set(classify_module.Context.__dataclass_fields__)
    assert fields == {"answered_syns"}


def test_a_worker_that_fails_leaves_the_capture_to_one_process(synth):
    from concurrent.futures import Future

    class Dying:  # a cluster whose every worker dies
        workers = 2

        def submit(self, fn, *args):
            fut: Future = Future()
            fut.set_exception(MemoryError("killed"))
            return fut

        def close(self):
            pass

    said: list[str] = []
    lines, reports, runner = scaled([synth], Dying(), chunk=1 << 20, said=said)
    assert (lines, reports) == one_process(synth)
    assert said == [f"{synth}: read again in one process: a worker failed (MemoryError: "
                    "killed)"]


def test_a_file_that_changes_under_the_merge_falls_back(synth, tmp_path):
    """A replay reads records the worker decoded: if the file was cut meanwhile (being
    rewritten), that is a fallback, not a crash."""
    import dataclasses

    from analyzer.scale import chunk as chunks
    from analyzer.scale.layout import layout
    from analyzer.scale.merge import Fallback
    from analyzer.scale.run import _reread
    from analyzer.scale.worker import analyze_chunk

    spec = chunks.plan(0, synth, [synth], [layout(synth, 1 << 20)])[1]
    res = analyze_chunk(spec, Options())
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(Path(synth).read_bytes()[:spec.start + 5000])
    moved = dataclasses.replace(spec, path=str(cut))
    with pytest.raises(Fallback, match="changed while it was read"):
        for _seg in _reread(moved, res, set(res.firsts), Options()):
            pass
