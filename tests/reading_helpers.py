"""What two ways of reading the same capture must agree on (the compiled core against the
Python engine it replaced)."""

from __future__ import annotations

from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path("/work/shared/zeek-oracle/traces")


def assert_same_reading(path, got: list[dict], got_report, want: list[dict], want_report) -> None:
    """The same records in the same order, statistics, damage and notes."""
    assert len(got) == len(want), path
    for a, b in zip(got, want, strict=True):
        assert a == b, (path, {k: (a[k], b[k]) for k in a if a[k] != b[k]})
    assert got_report.stats == want_report.stats, path
    assert [str(p) for p in got_report.problems] == [str(p) for p in want_report.problems], path
    assert got_report.notes == want_report.notes, path
