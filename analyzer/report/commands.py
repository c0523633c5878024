"""The ``plot`` and ``report`` subcommands: argument parsing and glue over plot.py and html.py.

    add_parsers(subparsers)   adds ``plot`` and ``report`` to the ``rstscope`` parser
    run(args) -> int          runs either (0 ok, 1 the capture was damaged: partial result)

``rstscope plot FILE --conn N -o OUT.{png,svg,pdf}``: one connection's ladder diagram.
``rstscope plot FILE --overview -o OUT.{png,svg,pdf}``: endings over time by case, and the
longest-lived connections (all of a small capture).
``rstscope report FILE... -o OUT.html``: the self-contained HTML report.
Existing outputs are never overwritten without ``--force``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from analyzer.errors import OutputExists, UsageError

IMAGE_FORMATS = ("png", "svg", "pdf")


def add_parsers(subparsers) -> None:
    p = subparsers.add_parser("plot", help="draw one connection's ladder diagram, or an overview")
    p.add_argument("file", metavar="FILE", help="pcap/pcapng capture")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--conn", type=int, metavar="N", help="connection number (rstscope "
                                                            "analyze --all lists them)")
    what.add_argument("--overview", action="store_true", help="all connections over time")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="image file: .png, .svg or .pdf")
    p.add_argument("--max-segments", type=int, default=40, metavar="N",
                   help="collapse the middle of longer connections (default 40)")
    p.add_argument("--dpi", type=int, default=100, help="resolution of PNG output (default 100)")
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.set_defaults(report_command="plot")

    r = subparsers.add_parser("report", help="write a self-contained HTML report")
    r.add_argument("files", nargs="+", metavar="FILE", help="pcap/pcapng captures")
    r.add_argument("-o", "--output", required=True, metavar="OUT.html")
    r.add_argument("--per-case", type=int, default=2, metavar="N",
                   help="draw the first N connections to end of each abnormal case (default 2)")
    r.add_argument("--max-timelines", type=int, default=200, metavar="N",
                   help="draw at most N connections in all (default 200)")
    r.add_argument("--title", help="page title")
    r.add_argument("--force", action="store_true", help="overwrite OUT.html if it exists")
    r.set_defaults(report_command="report")


def _check_output(path: str, force: bool, suffixes: tuple[str, ...]) -> None:
    p = Path(path)
    if p.suffix.lower().lstrip(".") not in suffixes:
        raise UsageError(f"{path}: output must end in " + ", ".join("." + s for s in suffixes))
    if p.exists() and not force:
        raise OutputExists(f"{path}: already exists (use --force to overwrite)")
    if p.is_dir():
        raise UsageError(f"{path}: is a directory")
    if not p.parent.exists():
        raise UsageError(f"{path}: directory {p.parent} does not exist")


def _gather(files: list[str], per_case: int):
    """The report's table, streamed from the pipeline: the records themselves are not kept
    (a million of them would take gigabytes), only their columns and a few to draw."""
    from analyzer.pipeline import FileReport, iter_batches
    from analyzer.report import html, table

    reports: list = []
    collector = table.Collector(per_case)
    for path in files:  # (the core's columns: no record made but for the samples)
        reports.append(FileReport(path))
        for batch in iter_batches(path, reports[-1]):
            collector.add_batch(batch)
    frame = collector.frame()
    _give_back_memory()
    return html.ReportInput(frame, collector.samples, files,
                            [str(p) for r in reports for p in r.problems])


def _give_back_memory() -> None:
    """Return the reading's freed memory to the system before the page is built, so that the
    two peaks do not add up (glibc keeps freed heap otherwise); a no-op where unavailable."""
    import gc

    gc.collect()
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
    except (OSError, AttributeError):
        pass


def _problems(analysis) -> int:
    return _report_problems(analysis.problems)


def _report_problems(problems) -> int:
    for prob in problems:
        print(f"rstscope: {prob}", file=sys.stderr)
    return 1 if problems else 0


def run(args) -> int:
    from analyzer.api import analyze

    files = [args.file] if args.report_command == "plot" else args.files
    if "-" in files:
        raise UsageError("plot and report read the capture twice: give a file, not '-'")

    if args.report_command == "plot":
        return _plot(args, analyze)
    if args.report_command == "report":
        _check_output(args.output, args.force, ("html", "htm"))
        if args.max_timelines < 0 or args.per_case < 0:
            raise UsageError("--max-timelines and --per-case must be >= 0")
        from analyzer.report import html

        data = _gather(files, args.per_case)
        n = html.write_report(data, args.output, force=args.force, per_case=args.per_case,
                              max_timelines=args.max_timelines, title=args.title)
        print(f"rstscope: wrote {args.output} ({len(data.table):,} connections, "
              f"{n} timelines)", file=sys.stderr)
        return _report_problems(data.problems)
    raise UsageError(f"unknown command {args.report_command}")


def _plot(args, analyze) -> int:
    _check_output(args.output, args.force, IMAGE_FORMATS)
    if args.max_segments < 6:
        raise UsageError("--max-segments must be at least 6")
    from analyzer.report import export, plot

    if args.overview:
        data = _gather([args.file], 0)
        fig = plot.overview_figure(data.table)
        export.write_new(args.output, args.force,
                         lambda tmp: plot.save_figure(fig, tmp, dpi=args.dpi),
                         suffix=Path(args.output).suffix)
        return _report_problems(data.problems)
    analysis = analyze(args.file)
    df = analysis.connections
    if df.empty:
        raise UsageError(f"{args.file}: no TCP connections found")
    if args.conn not in set(df["conn"]):
        raise UsageError(f"{args.file}: no connection {args.conn} (there are "
                         f"{len(df)}: 0..{int(df['conn'].max())}; see rstscope analyze "
                         "--all)")
    fig = plot.ladder_figure(analysis, args.conn, max_segments=args.max_segments)
    # the check above spares the work; this publish is what guarantees no clobbering
    export.write_new(args.output, args.force,
                     lambda tmp: plot.save_figure(fig, tmp, dpi=args.dpi),
                     suffix=Path(args.output).suffix)
    return _problems(analysis)
