"""The `rstscope` command: a thin layer over the library.

``main(argv) -> int`` parses arguments, runs one subcommand, and is the one place where
exceptions become messages and exit codes: 0 success, 1 input read but partly bad (a partial
result was still written), 2 usage error or unreadable input, 130 interrupted.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import traceback
from pathlib import Path

from analyzer import __version__, cases
from analyzer.errors import CaptureError, RstscopeError, UnreadableCapture, UsageError

EXIT_OK, EXIT_PARTIAL, EXIT_USAGE, EXIT_INTERRUPTED = 0, 1, 2, 130
TEXT_LIMIT = 10  # connections listed per case in the text view unless --limit or --all


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="rstscope",
        description="Why did my TCP connection get reset? Reads captures, rebuilds both "
                    "endpoints' TCP states, and names how each connection ended.")
    p.add_argument("--version", action="version", version=f"rstscope {__version__}")
    p.add_argument("--debug", action="store_true", help="show tracebacks of internal errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    a = sub.add_parser("analyze", help="analyze pcap/pcapng captures ('-' reads stdin)")
    a.add_argument("files", nargs="+", metavar="FILE",
                   help="capture files, directories or quoted globs; rotated sets (tcpdump "
                        "-C/-G/-W) found in a directory or glob are read as one capture")
    a.add_argument("--all", action="store_true", help="list every connection, not only "
                                                      "abnormal endings, and all of each case")
    a.add_argument("--limit", type=int, metavar="N",
                   help=f"list at most N connections of each case (default {TEXT_LIMIT}; "
                        "the summary and the top endpoints always count them all)")
    a.add_argument("--summary-json", action="store_true",
                   help="print the summary by case and the top endpoints of each abnormal case "
                        "as one JSON object instead of the text view")
    a.add_argument("--json", action="store_true", help="JSON Lines on stdout, one object per "
                                                       "connection (in the order they end)")
    a.add_argument("--csv", metavar="FILE", help="write the connections table as CSV")
    a.add_argument("--parquet", metavar="FILE", help="write the connections table as Parquet")
    a.add_argument("--case", action="append", metavar="ID", help="only this case (repeatable)")
    a.add_argument("--port", type=int, action="append", metavar="N",
                   help="only connections with this port on either side (repeatable)")
    a.add_argument("--force", action="store_true", help="overwrite existing output files")
    a.add_argument("--zeek-boundaries", action="store_true",
                   help="split connections where Zeek would (5 s attempt and close delays), "
                        "to compare rows one to one with a Zeek conn.log")
    a.add_argument("--zeek-ignore-checksums", action="store_true",
                   help="zeek_state/zeek_history as Zeek run with -C gives them: segments with a "
                        "bad TCP checksum (or in a tunnel whose UDP checksum is bad) count as "
                        "good ones, where by default they leave only a C")
    a.add_argument("--zeek-bare-mode", action="store_true",
                   help="zeek_history as Zeek run with -b gives it: fewer ports count as likely "
                        "servers, so fewer connections are flipped (^)")
    a.add_argument("--max-open", type=int, metavar="N",
                   help="at most N connections open at once (100000): past it the least "
                        "recently active one is finished early; raise it for floods (about "
                        "0.9 KB per open connection)")
    a.add_argument("--check-ip-checksums", action="store_true",
                   help="drop packets whose IPv4 header checksum is wrong (off by default: "
                        "checksum offload leaves them wrong in local captures)")
    a.add_argument("--rotated", action="store_true",
                   help="group the files named one by one into rotated sets too")
    a.add_argument("--jobs", "-j", type=int, metavar="N",
                   help="read the captures with N local processes, one capture (a file or a "
                        "rotated set) per process; the output is the same as with one. One "
                        "capture is always read by one process: this pays only with several "
                        "large captures and idle cores")
    a.add_argument("--dask", metavar="ADDRESS",
                   help="read on a Dask cluster (tcp://host:8786), one capture per task, or "
                        "'local' for a local one with --jobs workers")

    c = sub.add_parser("cases", help="print the case catalog")
    c.add_argument("--json", action="store_true")

    from analyzer import live_cli
    from analyzer.report import commands as report_commands

    live_cli.add_parser(sub)
    report_commands.add_parsers(sub)

    lab = sub.add_parser("lab", help="reproduce catalog cases with real sockets (root)")
    labsub = lab.add_subparsers(dest="lab_command", metavar="ACTION")
    labsub.add_parser("list", help="list the lab's scenarios")
    run = labsub.add_parser("run", help="run scenarios, capture them, analyze the captures")
    run.add_argument("case_ids", nargs="+", metavar="CASE", help="case ids, or 'all'")
    run.add_argument("-o", "--output", default="lab-out", metavar="DIR")
    run.add_argument("--force", action="store_true",
                     help="overwrite captures and labels already in DIR")
    fam = run.add_mutually_exclusive_group()
    fam.add_argument("--ipv6", action="store_true", help="IPv6 only")
    fam.add_argument("--both", action="store_true", help="IPv4 and IPv6")
    return p


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as e:  # argparse exits 2 on usage errors, 0 on --help
        return int(e.code or 0)
    if args.command is None:
        parser.print_help(sys.stderr)
        return EXIT_USAGE
    try:
        if args.command == "analyze":
            return cmd_analyze(args)
        if args.command == "cases":
            return cmd_cases(args)
        if args.command == "lab":
            return cmd_lab(args, parser)
        if args.command == "live":
            from analyzer import live_cli

            return live_cli.run(args)
        if args.command in ("plot", "report"):
            from analyzer.report import commands as report_commands

            return report_commands.run(args)
    except KeyboardInterrupt:
        print("rstscope: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except RstscopeError as e:
        print(f"rstscope: {e}", file=sys.stderr)
        return e.exit_code
    except BrokenPipeError:
        return EXIT_OK  # `rstscope ... | head` is fine
    except Exception as e:  # a bug: one line unless asked for more
        if args.debug:
            traceback.print_exc()
        print(f"rstscope: internal error: {type(e).__name__}: {e} (run with --debug for "
              "details)", file=sys.stderr)
        return EXIT_USAGE
    parser.print_help(sys.stderr)
    return EXIT_USAGE


def _write_bytes(stream, data: bytes) -> None:
    """UTF-8 lines onto a text stream: its buffer when it has one (after what is queued)."""
    buffer = getattr(stream, "buffer", None)
    if buffer is None:
        stream.write(data.decode("utf-8", "surrogateescape"))
        return
    stream.flush()
    buffer.write(data)


def cmd_analyze(args) -> int:
    from analyzer.pipeline import FileReport
    from analyzer.report import export, text

    if args.case:
        unknown = [c for c in args.case if c not in cases.BY_ID]
        if unknown:
            raise UsageError(f"unknown case id(s): {', '.join(unknown)} (see `rstscope cases`)")
    export.check_distinct(args.csv, args.parquet)
    if args.parquet == "-":
        raise UsageError("--parquet needs a file name, not -")
    for out in (args.csv, args.parquet):
        if out:
            export.check_writable(out, args.force)
    if args.json and args.summary_json:
        raise UsageError("--json and --summary-json both write to standard output: pick one")
    if args.limit is not None and args.limit < 0:
        raise UsageError("--limit must be 0 or more")
    limit = args.limit if args.limit is not None else None if args.all else TEXT_LIMIT

    def one_line(text: str) -> str:  # a file name may hold newlines or terminal escapes
        return "".join(ch if ch.isprintable() else repr(ch)[1:-1] for ch in text)

    from analyzer.report.progress import Progress

    reports: list[FileReport] = []
    need_all = bool(args.csv or args.parquet)
    bars: list[Progress] = []

    def progress(path: str) -> Progress:
        try:
            total = os.path.getsize(path) if path != "-" and os.path.isfile(path) else None
        except OSError:
            total = None
        bars.append(Progress(path, total))
        return bars[-1]

    from analyzer import scale
    from analyzer.scale.run import Columns, Json

    # --json alone: the core writes the lines itself, no Python object per connection; else
    # the core's columns batches (with its JSON Lines too for --json), filtered by the core
    fast_json = bool(args.json and not need_all)
    case_ids = [i for i, c in enumerate(cases.CATALOG) if c.id in args.case] \
        if args.case else None
    ports = list(args.port) if args.port else None
    want = Json(case_ids, ports) if fast_json else Columns(case_ids, ports, json=bool(args.json))
    units, runner = scale.prepare(args, progress, want=want)

    batches: list = []  # every columns batch, for --csv / --parquet
    view = text.View(limit, everything=args.all) if not args.json else None
    unreadable = 0
    interrupted = False
    stdout = sys.stdout
    try:
        for index in range(len(units)):
            try:
                if fast_json:
                    for chunk in runner.json(index, reports):
                        _write_bytes(stdout, chunk)
                    continue
                for item in runner.batches(index, reports):
                    if isinstance(item, bytes):  # (--json: the core's lines)
                        _write_bytes(stdout, item)
                        continue
                    if need_all:
                        batches.append(item)
                    if view is not None:
                        view.add_batch(item)
            except UnreadableCapture as e:
                unreadable += 1
                print(f"rstscope: {one_line(str(e))}", file=sys.stderr)
    except KeyboardInterrupt:
        interrupted = True
    finally:
        runner.close()
        for bar in bars:
            bar.close()
    problems: list[CaptureError] = [p for r in reports for p in r.problems]
    for p in problems:
        print(f"rstscope: {one_line(str(p))}", file=sys.stderr)
    for r in reports:
        for note in r.notes:
            print(f"rstscope: {one_line(r.path)}: {note}", file=sys.stderr)
    if need_all:
        from analyzer.core.batch import concat

        df = concat(batches).frame(flat=True)
        del batches[:]
        if args.csv:
            export.write_csv(df, args.csv, args.force, flat=True)
        if args.parquet:
            export.write_parquet(df, args.parquet, args.force, flat=True)
    if view is not None and args.summary_json:
        from analyzer.report import aggregate

        obj = aggregate.summary_object(view.frame(), len(units))
        stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    elif view is not None:
        stdout.write(view.render(len(units), [r for r in reports if r.stats is not None]))
    stdout.flush()
    if interrupted:
        return EXIT_INTERRUPTED
    if unreadable == len(units):
        return EXIT_USAGE
    if problems or unreadable:
        return EXIT_PARTIAL
    return EXIT_OK


def cmd_cases(args) -> int:
    if args.json:
        for case in cases.CATALOG:
            print(json.dumps(case.as_dict(), ensure_ascii=False))
        return EXIT_OK
    for case in cases.CATALOG:
        kind = "abnormal" if case.abnormal else "ordinary"
        print(f"{case.id}  ({kind}, precedence {case.precedence})")
        print(f"    {case.title}")
        print(f"    documents: {case.documents}")
        print(f"    wire:      {case.wire}")
        print(f"    sees:      {case.sees}")
        if case.linux_note:
            print(f"    Linux:     {case.linux_note}")
        print(f"    advice:    {case.advice}")
    return EXIT_OK


def cmd_lab(args, parser) -> int:
    from analyzer import lab

    if args.lab_command == "list":
        for info in lab.list_scenarios():
            print(f"{info.id:<24} {'/'.join('IPv' + f for f in info.families):<10} "
                  f"{info.title}")
        return EXIT_OK
    if args.lab_command != "run":
        parser.parse_args(["lab", "--help"])
        return EXIT_USAGE
    ids = [s.id for s in lab.list_scenarios()] if args.case_ids == ["all"] else args.case_ids
    unknown = [c for c in ids if c not in {s.id for s in lab.list_scenarios()}]
    if unknown:
        raise UsageError(f"no lab scenario for: {', '.join(unknown)} (see `rstscope lab list`)")
    families = ("6",) if args.ipv6 else ("4", "6") if args.both else ("4",)
    out = Path(args.output)
    clash = [f"{c}{'' if f == '4' else '_v6'}.pcap" for c in ids for f in families
             if (out / f"{c}{'' if f == '4' else '_v6'}.pcap").exists()]
    if clash and not args.force:
        raise UsageError(f"{out}: already holds {', '.join(clash[:3])}"
                         f"{' ...' if len(clash) > 3 else ''} (use --force to overwrite)")
    out.mkdir(parents=True, exist_ok=True)
    results = lab.run_scenarios(ids, out, families, log=lambda m: print(m, file=sys.stderr))
    from analyzer.api import analyze
    from analyzer.report import text

    bad = 0
    for res in results:
        pcap = getattr(res, "pcap", None)
        if pcap is None or not Path(pcap).exists():
            continue
        got = analyze(str(pcap))
        for rec in got.records():
            print(text.connection_block(rec))
        expected = getattr(res, "case", None)
        if expected and expected not in set(got.connections["case"]):
            bad += 1
            print(f"rstscope: {pcap}: expected case {expected}, got "
                  f"{sorted(set(got.connections['case']))}", file=sys.stderr)
    return EXIT_PARTIAL if bad else EXIT_OK


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
