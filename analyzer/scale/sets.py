"""A rotated set read as one capture by the native core: ``decode.SetReader`` hands the files'
segments to the observer in order, frame numbers continuing across files (``mergecap -a``). The
loops are those of ``pipeline._native_read`` (pairs, or JSON written by the core), over the
set's reader instead of one file's (``pipeline.feed_observer``)."""

from __future__ import annotations

from collections.abc import Iterator

from analyzer.capture.stats import ReadStats
from analyzer.pipeline import (
    FileReport,
    column_batches,
    feed_observer,
    json_batches,
    without_gc,
)
from analyzer.timeouts import Timeouts


def set_connections(paths: list[str], names: list[str], report: FileReport,
                    timeouts: Timeouts | None = None, *, check_ip_checksums: bool = False,
                    zeek_options: dict | None = None) -> Iterator[tuple]:
    """(connection, verdict) pairs of the set whose files are ``paths`` (shown as ``names``),
    in the order connections finish; the set's statistics, problems and notes in ``report``."""
    from analyzer.core.observer import Observer

    obs = Observer(timeouts or Timeouts(), zeek_options)
    return without_gc(_read(obs, paths, names, report, check_ip_checksums, obs.done))


def set_json(paths: list[str], names: list[str], report: FileReport,
             timeouts: Timeouts | None = None, *, check_ip_checksums: bool = False,
             zeek_options: dict | None = None, case_ids: list[int] | None = None,
             ports: list[int] | None = None) -> Iterator[bytes]:
    """The set's records as JSON Lines written by the core (``pipeline.iter_json``), ``file``
    the set's name (its first file)."""
    from analyzer.core.observer import Observer

    obs = Observer(timeouts or Timeouts(), zeek_options, json_file=names[0])
    obs.set_filter(case_ids, ports)
    yield from json_batches(obs, _read(obs, paths, names, report, check_ip_checksums, None))


def set_batches(paths: list[str], names: list[str], report: FileReport,
                timeouts: Timeouts | None = None, *, check_ip_checksums: bool = False,
                zeek_options: dict | None = None, case_ids: list[int] | None = None,
                ports: list[int] | None = None, json: bool = False) -> Iterator:
    """The set's records as columns batches (``pipeline.iter_batches``; JSON Lines too with
    ``json``), ``file`` the set's name (its first file)."""
    from analyzer.core.observer import Observer

    obs = Observer(timeouts or Timeouts(), zeek_options, columns_file=names[0],
                   json_file=names[0] if json else None)
    obs.set_filter(case_ids, ports)
    yield from column_batches(obs, _read(obs, paths, names, report, check_ip_checksums, None))


def _read(obs, paths, names, report, check_ip_checksums, done):
    """``pipeline.feed_observer`` over the set's reader."""
    from analyzer.core.decode import SetReader

    reader = SetReader(paths, names, check_ip_checksums=check_ip_checksums)
    report.stats = ReadStats()  # (a set none of whose files opens keeps these)
    yield from feed_observer(obs, reader, report, None, done)
    stats = reader.stats
    if stats is not None:
        report.stats = ReadStats(**{name: getattr(stats, name) for name in stats.__slots__})
