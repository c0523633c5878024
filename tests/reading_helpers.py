"""What two ways of reading the same capture must agree on (the fast reader against the
segment-by-segment path, shares against one process)."""

from __future__ import annotations

from pathlib import Path

from analyzer.capture.fastreader import fast_eligible

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path("/work/shared/zeek-oracle/traces")


def fast_corpus() -> list[Path]:
    """The bundled captures and Zeek's traces that the fast reader takes (uncompressed pcap)."""
    files = sorted((ROOT / "captures").glob("*.pcap"))
    if ORACLE.is_dir():
        files += sorted(p for p in ORACLE.rglob("*") if p.is_file())
    return [f for f in files if fast_eligible(str(f))]


def assert_same_reading(path, got: list[dict], got_report, want: list[dict], want_report) -> None:
    """The same records in the same order, statistics, damage and notes."""
    assert len(got) == len(want), path
    for a, b in zip(got, want, strict=True):
        assert a == b, (path, {k: (a[k], b[k]) for k in a if a[k] != b[k]})
    assert got_report.stats == want_report.stats, path
    assert [str(p) for p in got_report.problems] == [str(p) for p in want_report.problems], path
    assert got_report.notes == want_report.notes, path
