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
        files += sorted(p for p in ORACLE.rglob("*") if p.is_file())
    return files


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
    for f in sorted(p for p in ORACLE.rglob("*") if p.is_file()):
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
