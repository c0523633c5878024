"""Shared by the scale-out tests: reading everything a capture gives, one process or many."""

from __future__ import annotations

import dataclasses

from analyzer.pipeline import iter_records
from analyzer.report.export import json_line
from analyzer.scale.inputs import expand
from analyzer.scale.run import Runner
from analyzer.scale.worker import Options


def report_view(r) -> tuple:
    stats = dataclasses.asdict(r.stats) if r.stats is not None else None
    return (r.path, stats, [str(p) for p in r.problems], list(r.notes), r.peak_connections)


def one_process(path: str, **kw) -> tuple[list[str], list[tuple]]:
    """JSON lines and reports of the ordinary pipeline."""
    reports: list = []
    lines = [json_line(rec) for rec, _ in iter_records([path], reports, **kw)]
    return lines, [report_view(r) for r in reports]


def scaled(args: list[str], workers, chunk: int, opts: Options | None = None,
           said: list | None = None) -> tuple[list[str], list[tuple], Runner]:
    """JSON lines and reports through the scale-out runner (``workers`` None: one process)."""
    units = expand(args)
    runner = Runner(units, opts or Options(), workers, chunk_bytes=chunk,
                    say=(said.append if said is not None else None))
    reports: list = []
    lines = [json_line(rec) for i in range(len(units)) for rec, _ in runner.records(i, reports)]
    return lines, [report_view(r) for r in reports], runner
