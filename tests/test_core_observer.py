"""The compiled observer (analyzer.core) against the Python engine it replaces, kept as a frozen
reference while the port goes on: the same records, state changes, statistics, damage and notes
on every bundled capture, Zeek's traces (with and without Zeek's boundaries and run options), the
synthetic mixes and short timeouts."""

from __future__ import annotations

from pathlib import Path

import pytest

from analyzer import synth
from analyzer.errors import UnreadableCapture
from analyzer.pipeline import FileReport, iter_connections, make_record, state_events
from analyzer.tracker import Timeouts
from tests.reading_helpers import ORACLE, ROOT, assert_same_reading


def _read(path, engine, timeouts=None, zeek_options=None):
    rep = FileReport(str(path))
    recs, events = [], []
    for conn, verdict in iter_connections(str(path), rep, timeouts, engine=engine,
                                          zeek_options=zeek_options):
        recs.append(make_record(conn, verdict, str(path)))
        events.extend(state_events(conn, str(path)))
    return recs, events, rep


def _same(path, timeouts=None, zeek_options=None):
    try:
        want, want_events, want_rep = _read(path, "python", timeouts, zeek_options)
    except UnreadableCapture as e:
        with pytest.raises(UnreadableCapture) as got:
            _read(path, "native", timeouts, zeek_options)
        assert str(got.value) == str(e)
        return []
    got, got_events, got_rep = _read(path, "native", timeouts, zeek_options)
    assert got_rep.engine == "native"
    assert_same_reading(path, got, got_rep, want, want_rep)
    assert got_events == want_events, path
    assert got_rep.peak_connections == want_rep.peak_connections, path
    return got


def _corpus() -> list[Path]:
    files = sorted(p for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng"))
    if ORACLE.is_dir():
        files += _oracle_files()
    return files


def _oracle_files() -> list[Path]:
    # the Python engine decodes no tunnel: tests/test_tunnels.py covers tunnels/
    return sorted(p for p in ORACLE.rglob("*") if p.is_file() and "tunnels" not in p.parts)


def test_every_bundled_capture_and_zeek_trace():
    files = _corpus()
    assert len(files) >= 40
    for f in files:
        _same(f)


@pytest.mark.parametrize("options", [{"boundaries": True},
                                     {"boundaries": True, "bare_mode": True},
                                     {"boundaries": True, "ignore_checksums": True}])
def test_zeek_traces_with_zeek_options(options):
    if not ORACLE.is_dir():
        pytest.skip("no Zeek oracle here")
    for f in _oracle_files():
        _same(f, zeek_options=options)


@pytest.fixture(scope="module", params=synth.MIXES)
def mix(request, tmp_path_factory):
    path = tmp_path_factory.mktemp("core") / f"{request.param}.pcap"
    synth.generate(str(path), packets=60_000, seed=11, mix=request.param)
    return path


def test_synthetic_mixes(mix):
    recs = _same(mix)
    assert len(recs) > 300


def test_synthetic_mix_with_short_timeouts_and_eviction(mix):
    _same(mix, Timeouts(idle=2.0, closed=0.5, sweep_every=0.25, max_active=50))


@pytest.mark.parametrize("timeouts", [Timeouts(idle=3.0, closed=0.5, sweep_every=0.25),
                                      Timeouts(idle=3.0, closed=0.5, sweep_every=0.25,
                                               max_active=2000)])
def test_synthetic_mix_with_quiet_connections(mix, timeouts):
    # connections a sweep leaves open are not walked again: the ones later idle past the
    # timeout are taken from them by last activity, in LRU order (and evicted from their head)
    _same(mix, timeouts)


def _json_lines(path, **kw):
    from analyzer.pipeline import iter_json

    rep = FileReport(str(path))
    return b"".join(iter_json(str(path), rep, **kw)).decode().splitlines(), rep


def _reference_lines(path, keep=lambda rec: True):
    from analyzer.report.export import json_line

    want, _events, rep = _read(path, "python")
    return [json_line(r) for r in want if keep(r)], rep


def test_json_lines_written_by_the_core_equal_the_records():
    checked = 0
    for f in _corpus():
        try:
            want, want_rep = _reference_lines(f)
        except UnreadableCapture:
            continue
        got, got_rep = _json_lines(f)
        assert got == want, f
        assert_same_reading(f, [], got_rep, [], want_rep)
        checked += len(want)
    assert checked > 100


def test_json_lines_of_a_synthetic_mix_and_their_filters(mix):
    from analyzer import cases

    want, _ = _reference_lines(mix)
    got, _ = _json_lines(mix)
    assert got == want
    ids = ["refused", "graceful", "syn_timeout"]
    index = [i for i, c in enumerate(cases.CATALOG) if c.id in ids]
    want, _ = _reference_lines(mix, lambda r: r["case"] in ids and (
        r["client"].endswith(":80") or r["server"].endswith(":80")
        or r["client"].endswith(":443") or r["server"].endswith(":443")))
    got, _ = _json_lines(mix, case_ids=index, ports=[80, 443])
    assert got == want
