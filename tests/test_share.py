"""A file read in shares by several processes (analyzer.scale.share) gives exactly the answer of
one process: the same records in the same order, statistics, damage, notes, peak."""

from __future__ import annotations

import random
import socket

import pytest

from analyzer import synth
from analyzer.capture.fastreader import SHARE_BUCKETS, bucket_of
from analyzer.cli import main
from analyzer.errors import UnreadableCapture
from analyzer.pipeline import FileReport, iter_connections, make_record, without_gc
from analyzer.scale import share as share_mod
from analyzer.scale.merge import Fallback
from analyzer.scale.share import share_records
from analyzer.scale.worker import Options
from analyzer.segment import Segment
from analyzer.tracker import Timeouts
from tests.reading_helpers import assert_same_reading, fast_corpus


def _one(path, timeouts=None):
    rep = FileReport(str(path))
    recs = [make_record(c, v, str(path))
            for c, v in iter_connections(str(path), rep, timeouts, engine="fast")]
    return recs, rep


def _shared(path, n, timeouts=None):
    rep = FileReport(str(path))
    opts = Options(timeouts=timeouts or Timeouts())
    return list(without_gc(share_records(str(path), str(path), rep, opts, n))), rep


def _same(path, n=2, timeouts=None):
    one, orep = _one(path, timeouts)
    many, mrep = _shared(path, n, timeouts)
    assert_same_reading(path, many, mrep, one, orep)
    assert mrep.peak_connections == orep.peak_connections, path
    assert mrep.engine == f"fast, {n} processes"
    return many, mrep


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("share") / "teardowns-100k.pcap"
    synth.generate(str(path), packets=100_000, seed=7, mix="teardowns")
    return path


def test_kernel_and_python_agree_on_every_connections_share():
    from analyzer.capture import columns

    rnd = random.Random(1)
    seen = set()
    for _ in range(2000):
        v6 = rnd.random() < 0.5
        fam = socket.AF_INET6 if v6 else socket.AF_INET
        raw = [rnd.randbytes(16 if v6 else 4) for _ in range(2)]
        a, b = (socket.inet_ntop(fam, r) for r in raw)
        pa, pb = rnd.randrange(65536), rnd.randrange(65536)
        words = []
        for r in raw:  # as the kernel reads them: big-endian 64-bit words, IPv4 in the low one
            if v6:
                words += [int.from_bytes(r[:8], "big", signed=True),
                          int.from_bytes(r[8:], "big", signed=True)]
            else:
                words += [0, int.from_bytes(r, "big")]
        k = columns._bucket(*words, pa, pb)
        there = Segment(1, 0.0, a, pa, b, pb, 0, 0, 0x10)
        back = Segment(1, 0.0, b, pb, a, pa, 0, 0, 0x10)
        assert bucket_of(there) == bucket_of(back) == k
        seen.add(k * 10 // SHARE_BUCKETS)
    assert seen == set(range(10))  # buckets spread over the whole range


@pytest.mark.parametrize("n", [1, 2, 3, 4])
def test_share_ranges_cover_every_bucket_once_and_the_parent_takes_less(n):
    ranges = share_mod.share_ranges(n)
    assert ranges[0][0] == 0 and ranges[-1][1] == SHARE_BUCKETS
    assert all(a[1] == b[0] for a, b in zip(ranges[:-1], ranges[1:], strict=True))
    sizes = [hi - lo for lo, hi in ranges]
    assert all(s > 0 for s in sizes) and (n == 1 or sizes[0] < min(sizes[1:]))


def test_same_answer_on_every_bundled_capture_and_zeek_trace():
    checked = 0
    for f in fast_corpus():
        try:
            for n in (2, 3):
                _same(f, n)
        except UnreadableCapture:
            continue
        checked += 1
    assert checked >= 40


@pytest.mark.parametrize("n", [2, 3])
def test_same_answer_on_100k_synthetic_and_the_work_is_shared(synthetic, n, monkeypatch):
    counts = []
    real = share_mod.share_events

    def counted(reader, name, opts, report):
        for event in real(reader, name, opts, report):
            counts.append(event[1])
            yield event

    monkeypatch.setattr(share_mod, "share_events", counted)  # (this process's share only)
    recs, rep = _same(synthetic, n)
    assert len(recs) > 500 and {r["ip_version"] for r in recs} == {4, 6}
    mine = counts.count(share_mod.DONE)
    lo, hi = share_mod.share_ranges(n)[0]
    part = (hi - lo) / SHARE_BUCKETS
    assert 0.7 * part * len(recs) < mine < 1.3 * part * len(recs)  # this process's share only


def test_same_answer_with_short_timeouts(synthetic):
    # sweeps every quarter second, connections handed on in the middle of the file by sweeps
    # and by new connections on the same ports: the merge's keys order them all
    _same(synthetic, 2, Timeouts(idle=3.0, closed=0.5, sweep_every=0.25))


@pytest.mark.parametrize("mix", ["syn_flood", "rst_storm"])
def test_same_answer_on_adversarial_mixes(tmp_path, mix):
    path = tmp_path / f"{mix}.pcap"
    synth.generate(str(path), packets=30_000, seed=3, mix=mix)
    _same(path, 2)


def test_too_many_open_connections_falls_back_after_what_it_could_vouch_for(synthetic):
    t = Timeouts(max_active=40)
    one, _ = _one(synthetic, t)
    rep = FileReport(str(synthetic))
    given = []
    with pytest.raises(Fallback, match="more than 40 connections"):
        for rec in share_records(str(synthetic), str(synthetic), rep, Options(timeouts=t), 2):
            given.append(rec)
    assert given == one[:len(given)]  # what was given before is what one process gives


def test_cli_reads_again_in_one_process_when_a_share_fails(synthetic, monkeypatch, capsys):
    assert main(["analyze", "--json", "--jobs", "1", str(synthetic)]) == 0
    one = capsys.readouterr().out
    real = share_mod.share_reader

    def broken(path, share, opts, progress=None):
        if share[0] != 0:  # in the forked process
            raise RuntimeError("simulated crash")
        return real(path, share, opts, progress)

    monkeypatch.setattr(share_mod, "share_reader", broken)
    assert main(["analyze", "--json", "--jobs", "2", str(synthetic)]) == 0
    out, err = capsys.readouterr()
    assert out == one
    assert "read again in one process" in err and "simulated crash" in err


@pytest.mark.parametrize("jobs", ["2", "3"])
def test_cli_jobs_prints_the_same_json_and_summary(synthetic, capsys, jobs):
    assert main(["analyze", "--json", "--jobs", "1", str(synthetic)]) == 0
    one = capsys.readouterr().out
    assert main(["analyze", "--json", "--jobs", jobs, str(synthetic)]) == 0
    assert capsys.readouterr().out == one
    assert main(["analyze", "--all", "--jobs", "1", str(synthetic)]) == 0
    one = capsys.readouterr().out
    assert main(["analyze", "--all", "--jobs", jobs, str(synthetic)]) == 0
    assert capsys.readouterr().out == one


def test_damaged_middle_and_the_python_tail_are_shared_too(synthetic, tmp_path):
    # an absurd record length at ~3 MB: the Python reader takes the rest of the file from there,
    # and its segments are shared out as well (fastreader.share_of)
    data = bytearray(synthetic.read_bytes()[:6_000_000])
    big = data[:4] == b"\xa1\xb2\xc3\xd4"
    pos = 24
    while pos < 3_000_000:
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12], "big" if big else "little")
    data[pos + 8:pos + 12] = (10**8).to_bytes(4, "big" if big else "little")
    path = tmp_path / "absurd.pcap"
    path.write_bytes(bytes(data))
    recs, rep = _same(path, 2)
    assert rep.problems and len(recs) > 50


def test_a_file_that_grows_while_it_is_read_is_caught(synthetic, tmp_path, monkeypatch):
    # the forked process sees more of the file than this one (tcpdump still writing it)
    short = tmp_path / "short.pcap"
    data = synthetic.read_bytes()
    pos = 24
    while pos < len(data) // 2:  # cut at a record boundary
        pos += 16 + int.from_bytes(data[pos + 8:pos + 12],
                                   "big" if data[:4] == b"\xa1\xb2\xc3\xd4" else "little")
    short.write_bytes(data[:pos])
    real = share_mod.share_reader

    def grown(path, share, opts, progress=None):
        return real(str(synthetic) if share[0] != 0 else path, share, opts, progress)

    monkeypatch.setattr(share_mod, "share_reader", grown)
    rep = FileReport(str(short))
    with pytest.raises(Fallback, match="changed while it was read"):
        list(share_records(str(short), str(short), rep, Options(), 2))
