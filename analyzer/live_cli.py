"""CLI glue for ``rstscope live``: ``add_parser(subparsers)`` and ``run(args) -> int``."""

from __future__ import annotations

import os
import sys

from analyzer import cases
from analyzer.errors import UsageError
from analyzer.timeouts import Timeouts


def add_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "live", help="sniff an interface and print each connection's verdict as it ends (root)")
    p.add_argument("-i", "--interface", dest="iface", default="lo", metavar="IFACE",
                   help="interface to sniff (default: lo)")
    p.add_argument("--bpf", metavar="EXPR",
                   help="capture filter (BPF, as tcpdump; default: tcp or icmp or icmp6)")
    p.add_argument("--backend", choices=("scapy", "pyshark"), default="scapy",
                   help="scapy: packet socket (default); pyshark: tshark writing pcap to a pipe")
    p.add_argument("--duration", type=float, metavar="S", help="stop after S seconds")
    p.add_argument("--count", type=int, metavar="N", help="stop after N packets")
    p.add_argument("-w", "--write", metavar="FILE",
                   help="also save the packets seen to FILE (pcap, nanosecond timestamps)")
    p.add_argument("--json", action="store_true",
                   help="JSON Lines on stdout, one object per connection (summary on stderr)")
    p.add_argument("--case", action="append", metavar="ID", help="only this case (repeatable)")
    p.add_argument("--port", type=int, action="append", metavar="N",
                   help="only connections with this port on either side (repeatable)")
    p.add_argument("--kernel", action="store_true",
                   help="join the kernel's reset reasons and socket errors (tracefs, Linux >= "
                        "6.10; keeps root)")
    p.add_argument("--force", action="store_true", help="overwrite an existing -w file")
    p.add_argument("--idle-timeout", type=float, default=300.0, metavar="S",
                   help=argparse_help("connections silent this long are finished", 300))
    p.add_argument("--closed-timeout", type=float, default=5.0, metavar="S",
                   help=argparse_help("closed connections linger this long for their last "
                                      "packets", 5))


def argparse_help(text: str, default: float) -> str:
    return f"{text} (default {default:g} s)"


def drop_privileges(keep_files=()) -> int | None:
    """As ``tcpdump -Z``: when run by sudo as root, become the invoking user. Returns the new
    uid, or None when nothing was dropped. Files in ``keep_files`` are given to that user."""
    if os.geteuid() != 0:
        return None
    try:
        uid, gid = int(os.environ["SUDO_UID"]), int(os.environ["SUDO_GID"])
    except (KeyError, ValueError):
        return None
    if uid == 0:
        return None
    for f in keep_files:
        try:
            os.fchown(f.fileno(), uid, gid)
        except (OSError, AttributeError, ValueError):
            pass
    os.setgroups([])
    os.setgid(gid)
    os.setuid(uid)
    return uid


def run(args) -> int:
    from analyzer.capture import sniff
    from analyzer.live import LiveSession, Options
    from analyzer.report import export

    if args.case:
        unknown = [c for c in args.case if c not in cases.BY_ID]
        if unknown:
            raise UsageError(f"unknown case id(s): {', '.join(unknown)} (see `rstscope cases`)")
    for name, v in (("--duration", args.duration), ("--count", args.count)):
        if v is not None and v <= 0:
            raise UsageError(f"{name} must be positive")
    if args.write == "-":
        raise UsageError("-w - is not supported: standard output carries the verdicts")
    if args.write:
        export.check_writable(args.write, args.force)
    source = sniff.open_source(args.backend, args.iface, args.bpf)
    wfile = kernel = None
    try:
        if args.write:
            # created beside and linked into place: no clobbering between the check above and
            # now (with --force, an atomic replace); the packets stream into it from the start
            try:
                wfile = export.create_new(args.write, args.force)
            except OSError as exc:
                raise UsageError(f"{args.write}: cannot write: {exc.strerror or exc}") from None
        if args.kernel:
            from analyzer.capture.kernel import KernelTrace

            kernel = KernelTrace(f"rstscope_live_{os.getpid()}")
            if not kernel.active:
                print(f"rstscope: {kernel.problem}", file=sys.stderr)
                kernel.close()
                kernel = None
        if kernel is None:
            drop_privileges([wfile] if wfile is not None else [])
        print(f"rstscope: listening on {args.iface} ({source.name} backend, uid {os.geteuid()}"
              f"{', kernel events on' if kernel else ''})", file=sys.stderr, flush=True)
        opts = Options(json=args.json, cases=args.case, ports=args.port,
                       duration=args.duration, count=args.count,
                       timeouts=Timeouts(idle=args.idle_timeout, closed=args.closed_timeout),
                       label=f"live:{args.iface}")
        session = LiveSession(source, opts, writer_file=wfile, kernel=kernel)
        return session.run()
    finally:
        source.close()
        if kernel is not None:
            kernel.close()
        if wfile is not None:
            wfile.close()


def main(argv: list[str] | None = None) -> int:
    """``python -m analyzer.live_cli ...``: the live subcommand alone (tests; before wiring)."""
    import argparse

    from analyzer.errors import RstscopeError

    p = argparse.ArgumentParser(prog="rstscope")
    add_parser(p.add_subparsers(dest="command", required=True))
    try:
        args = p.parse_args(argv)
    except SystemExit as e:
        return int(e.code or 0)
    try:
        return run(args)
    except RstscopeError as e:
        print(f"rstscope: {e}", file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
