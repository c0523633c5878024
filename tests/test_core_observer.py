"""The observer as `analyze` drives it (analyzer.pipeline over the compiled core): the JSON Lines
the core writes in C against the records built in Python from the same connections, its
filters, the reading report (damage, peak connections), state events, and feeding segment by
segment against feeding a native reader. The records' content is held to truth elsewhere: lab
labels (tests/test_captures.py), Zeek's baselines (tests/test_zeek_conformance.py), the
generator's labels (tests/test_synth.py, tests/test_core_conn.py) and the timeout rules
(tests/test_tracker.py)."""

from __future__ import annotations

import json
import struct

import pytest
from analyzer.core.decode import open_native
from analyzer.core.observer import Observer

from analyzer import cases, synth
from analyzer.errors import UnreadableCapture
from analyzer.pipeline import FileReport, Timeouts, iter_json, make_record
from analyzer.report.export import json_line
from analyzer.segment import ACK, RST, SYN
from tests.core_helpers import bundled_captures, oracle_traces, pcap, read, tcp_frame

SHORT = Timeouts(idle=2.0, closed=0.5, sweep_every=0.25, max_active=50)


def _json_lines(path, timeouts=None, **kw):
    rep = FileReport(str(path))
    return b"".join(iter_json(str(path), rep, timeouts, **kw)).decode().splitlines(), rep


def _same_report(got: FileReport, want: FileReport, path) -> None:
    assert got.stats == want.stats, path
    assert [str(p) for p in got.problems] == [str(p) for p in want.problems], path
    assert got.notes == want.notes, path
    assert got.peak_connections == want.peak_connections, path


@pytest.fixture(scope="module", params=synth.MIXES)
def mix(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("core") / f"{request.param}.pcap"
    synth.generate(str(path), packets=40_000, seed=11, mix=request.param)
    return path


# ------------------------------------------------------------------ JSON written in C


def test_json_lines_written_by_the_core_equal_the_records():
    checked = 0
    for f in bundled_captures() + oracle_traces():
        try:
            recs, _events, rep = read(f)
        except UnreadableCapture as e:
            with pytest.raises(UnreadableCapture) as got:
                _json_lines(f)
            assert str(got.value) == str(e)
            continue
        got, got_rep = _json_lines(f)
        assert got == [json_line(r) for r in recs], f
        assert [json.loads(line) for line in got] == recs, f
        _same_report(got_rep, rep, f)
        checked += len(recs)
    assert checked > 150


def test_json_lines_of_a_synthetic_mix_and_their_filters(mix):
    recs, _events, _rep = read(mix)
    got, _ = _json_lines(mix)
    assert got == [json_line(r) for r in recs]
    assert len(got) > 100
    ids = ["refused", "graceful", "syn_timeout"]
    index = [i for i, c in enumerate(cases.CATALOG) if c.id in ids]
    want = [json_line(r) for r in recs if r["case"] in ids and any(
        r[side].endswith(port) for side in ("client", "server") for port in (":80", ":443"))]
    got, _ = _json_lines(mix, case_ids=index, ports=[80, 443])
    assert got == want and 0 < len(want) < len(recs)


def test_json_lines_with_short_timeouts_and_eviction(mix):
    recs, _events, rep = read(mix, SHORT)
    got, got_rep = _json_lines(mix, SHORT)
    assert got == [json_line(r) for r in recs]
    _same_report(got_rep, rep, mix)
    assert rep.peak_connections == SHORT.max_active


# ------------------------------------------------------------------ one segment at a time


def test_segments_fed_one_by_one_give_what_the_reader_gives(mix):
    """The Python API and live mode feed one segment at a time; analyze feeds the reader's
    batches: the same connections, verdicts and order, with short timeouts too."""
    for timeouts in (None, SHORT):
        want, _events, _rep = read(mix, timeouts)
        obs = Observer(timeouts or Timeouts())
        with open_native(str(mix)) as reader:
            for seg in reader.segments():
                obs.feed_segment(seg)
        obs.close()
        got = [make_record(c, v, str(mix)) for c, v in obs.done]
        assert got == want


# ------------------------------------------------------------------ state events


def test_state_events_retell_each_timeline():
    for f in bundled_captures():
        recs, events, _rep = read(f)
        by_conn = {}
        for e in events:
            by_conn.setdefault((e["conn"], e["role"]), []).append(e)
        for r in recs:
            for role in ("client", "server"):
                rows = by_conn.get((r["conn"], role), [])
                assert [[e["state"], e["frame"]] for e in rows] == r[f"{role}_states"]
                assert [e["from_state"] for e in rows] == \
                    ["UNKNOWN"][:len(rows)] + [e["state"] for e in rows[:-1]]
                for e in rows:
                    assert (e["ts"] is None) == (e["frame"] == 0)
                    if e["ts"] is not None:
                        assert r["start"] - 1e-6 <= e["ts"] <= r["end"] + 1e-6


# ------------------------------------------------------------------ the reading report


C, S = "10.0.0.1", "10.0.0.2"


def _refusals(n: int, t0: float, port0: int) -> list[tuple[float, bytes]]:
    """n SYNs on distinct ports (all open at once), then n RST/ACK refusals."""
    frames = [(t0 + 0.001 * i, tcp_frame(C, port0 + i, S, 80, 1000, 0, SYN)) for i in range(n)]
    frames += [(t0 + 0.1 + 0.001 * i, tcp_frame(S, 80, C, port0 + i, 0, 1001, RST | ACK))
               for i in range(n)]
    return frames


def test_peak_connections_counts_those_open_at_once(tmp_path):
    # 7 attempts open together, then 3 more 20 s later, together: the sweep that finishes the
    # first seven (the closed timeout is long past) runs at the first segment after the gap,
    # once that segment is taken in (the capture's clock moves with its segments): 7 + 1
    path = tmp_path / "peak.pcap"
    path.write_bytes(pcap(_refusals(7, 100.0, 30000) + _refusals(3, 120.0, 31000)))
    recs, _events, rep = read(path)
    assert [r["case"] for r in recs] == ["refused"] * 10
    assert rep.peak_connections == 8
    assert rep.problems == [] and rep.stats.frames == 20


def test_a_capture_cut_mid_record_keeps_what_came_before(tmp_path):
    """Truncated in the middle of its last record: the records are those of the capture cut
    cleanly before that record, and one problem names the file."""
    frames = _refusals(5, 100.0, 30000) + _refusals(4, 100.5, 32000)
    whole = pcap(frames)
    clean = pcap(frames[:-1])
    cut = whole[:len(clean) + 16 + 20]  # the last record's header and 20 of its bytes
    (tmp_path / "clean.pcap").write_bytes(clean)
    (tmp_path / "cut.pcap").write_bytes(cut)
    want, _e, want_rep = read(tmp_path / "clean.pcap")
    got, _e, got_rep = read(tmp_path / "cut.pcap")
    for r in want + got:
        r.pop("file")
    assert got == want and len(got) == 9
    assert [r["case"] for r in got].count("refused") == 8  # the last one lost its RST
    assert want_rep.problems == []
    (problem,) = got_rep.problems
    assert "cut.pcap" in str(problem) and "\n" not in str(problem)


def test_a_file_that_is_no_capture_is_unreadable_with_its_name(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_bytes(b"this is not a capture\n" * 10)
    with pytest.raises(UnreadableCapture) as err:
        read(path)
    assert "notes.txt" in str(err.value) and "\n" not in str(err.value)


def test_a_record_longer_than_the_file_says_is_damage_not_a_crash(tmp_path):
    frames = _refusals(3, 100.0, 30000)
    blob = bytearray(pcap(frames))
    # the second record claims 60,000 captured bytes: past the end of the file
    off = 24 + 16 + len(frames[0][1])
    struct.pack_into("<I", blob, off + 8, 60_000)
    path = tmp_path / "liar.pcap"
    path.write_bytes(bytes(blob))
    recs, _e, rep = read(path)
    assert len(recs) == 1 and recs[0]["case"] == "syn_timeout"  # only the first frame read
    assert len(rep.problems) == 1 and "liar.pcap" in str(rep.problems[0])
