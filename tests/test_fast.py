"""The fast reader (compiled kernel + runs of plain segments) gives exactly the answer of the
straightforward segment-by-segment path: records, reader statistics, damage and notes."""

from __future__ import annotations

import io
import json

import pytest

from analyzer import synth
from analyzer.cli import main
from analyzer.errors import UnreadableCapture
from analyzer.pipeline import FileReport, iter_connections, make_record
from analyzer.report.progress import Progress
from analyzer.tracker import Timeouts
from tests.reading_helpers import assert_same_reading, fast_corpus


def _run(path, engine, timeouts=None):
    rep = FileReport(str(path))
    recs = [make_record(c, v, str(path))
            for c, v in iter_connections(str(path), rep, timeouts, engine=engine)]
    return recs, rep


def _same(path, timeouts=None):
    fast, frep = _run(path, "fast", timeouts)
    slow, srep = _run(path, "python", timeouts)
    assert frep.engine.startswith("fast") and srep.engine == "python"
    assert_same_reading(path, fast, frep, slow, srep)
    return fast, frep


@pytest.fixture(scope="module")
def synthetic(tmp_path_factory):
    path = tmp_path_factory.mktemp("fast") / "teardowns-100k.pcap"
    synth.generate(str(path), packets=100_000, seed=5, mix="teardowns")
    return path


def test_same_answer_on_every_bundled_capture_and_zeek_trace():
    checked = 0
    for f in fast_corpus():  # (pcapng or compressed: the fast reader does not take them)
        try:
            _same(f)
        except UnreadableCapture:
            continue
        checked += 1
    assert checked >= 40


def test_same_answer_on_100k_synthetic_and_runs_do_most_of_the_work(synthetic):
    recs, rep = _same(synthetic)
    assert len(recs) > 500
    assert {r["ip_version"] for r in recs} == {4, 6}
    # the comparison is not vacuous: most segments went through accepted runs
    assert rep.run_segments > 0.8 * rep.stats.tcp_segments


def test_same_answer_with_short_timeouts(synthetic):
    # sweeps every quarter second and a 3 s idle timeout: runs get cut by the idle bound and
    # sweeps land inside runs
    _, rep = _same(synthetic, Timeouts(idle=3.0, closed=0.5, sweep_every=0.25))
    assert rep.run_segments > 0


def test_lru_pressure_refuses_runs_that_could_see_an_eviction(synthetic):
    # 40 connections at most: eviction is frequent, and no run may be pending when it happens
    recs, rep = _same(synthetic, Timeouts(max_active=40))
    assert rep.engine == "fast" and len(recs) > 500


def test_run_order_lost_replays_segment_by_segment(synthetic, monkeypatch):
    # the safety net: were a run pending at an eviction, the file is replayed one segment at a
    # time and the connections already given are not given twice
    from analyzer.segment import SegmentRun

    monkeypatch.setattr(SegmentRun, "span", property(lambda self: 0, lambda self, v: None))
    recs, rep = _same(synthetic, Timeouts(max_active=40))
    assert rep.engine == "fast, replayed" and len(recs) > 500


@pytest.mark.parametrize("mix", ["syn_flood", "rst_storm"])
def test_same_answer_on_adversarial_mixes(tmp_path, mix):
    path = tmp_path / f"{mix}.pcap"
    synth.generate(str(path), packets=30_000, seed=3, mix=mix)
    _same(path)


@pytest.mark.parametrize("cut", ["mid_record", "absurd_length", "half_header"])
def test_same_answer_on_damaged_files(synthetic, tmp_path, cut):
    data = bytearray(synthetic.read_bytes()[:6_000_000])
    # find a record boundary near 5 MB by walking the record headers
    pos = 24
    while pos < 5_000_000:
        caplen = int.from_bytes(data[pos + 8:pos + 12], "big" if data[:4] == b"\xa1\xb2\xc3\xd4"
                                else "little")
        pos += 16 + caplen
    if cut == "mid_record":
        data = data[:pos + 30]
    elif cut == "half_header":
        data = data[:pos + 9]
    else:
        big = data[:4] == b"\xa1\xb2\xc3\xd4"
        data[pos + 8:pos + 12] = (10**8).to_bytes(4, "big" if big else "little")
    path = tmp_path / f"{cut}.pcap"
    path.write_bytes(bytes(data))
    recs, rep = _same(path)
    assert rep.problems and recs


def test_cli_engines_print_the_same_json(synthetic, capsys):
    assert main(["analyze", "--json", "--engine", "fast", str(synthetic)]) == 0
    fast = capsys.readouterr().out
    assert main(["analyze", "--json", "--engine", "python", str(synthetic)]) == 0
    slow = capsys.readouterr().out
    assert fast == slow
    assert len(fast.splitlines()) > 500
    json.loads(fast.splitlines()[0])


class _Clock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_progress_bar_waits_a_second_then_throttles_and_clears():
    out, clock = io.StringIO(), _Clock()
    bar = Progress("/x/big.pcap", 1000, out, clock=clock, force=True)
    bar(100)
    clock.now = 0.5
    bar(200)
    assert out.getvalue() == ""  # quick reads print nothing
    clock.now = 1.2
    bar(600)
    assert "big.pcap" in out.getvalue() and " 60.0%" in out.getvalue()
    drawn = out.getvalue()
    clock.now = 1.25
    bar(700)  # within 0.1 s of the last draw
    assert out.getvalue() == drawn
    clock.now = 1.4
    bar(1000)
    assert "100.0%" in out.getvalue()
    bar.close()
    assert out.getvalue().endswith("\r\x1b[K")


def test_progress_bar_silent_when_not_a_terminal():
    out, clock = io.StringIO(), _Clock()  # StringIO.isatty() is False
    bar = Progress("big.pcap", 1000, out, clock=clock)
    clock.now = 5.0
    bar(500)
    bar.close()
    assert out.getvalue() == ""


def test_same_answer_with_lying_header_lengths_inside(synthetic, tmp_path):
    data = bytearray(synthetic.read_bytes()[:8_000_000])
    big = data[:4] == b"\xa1\xb2\xc3\xd4"
    pos, k, spoiled = 24, 0, 0
    while pos + 16 <= len(data):
        caplen = int.from_bytes(data[pos + 8:pos + 12], "big" if big else "little")
        if pos + 16 + caplen > len(data):
            break
        k += 1
        f = pos + 16
        if k % 997 == 0 and data[f + 12:f + 14] == b"\x08\x00":  # IPv4 over Ethernet
            ihl = (data[f + 14] & 15) * 4
            data[f + 14 + ihl + 12] = 0xF0  # TCP data offset 60: past a short packet's end
            spoiled += 1
        pos += 16 + caplen
    path = tmp_path / "lying.pcap"
    path.write_bytes(bytes(data[:pos]))
    recs, rep = _same(path)
    assert spoiled > 5 and rep.stats.malformed > 0 and rep.problems
