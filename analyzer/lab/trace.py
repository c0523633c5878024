"""The kernel's own account of a scenario, from a private tracefs instance.

A trace instance (``instances/rstscope_<pid>``) has its own buffer and event switches, so the
lab never disturbs anybody else's tracing. Its clock is set to ``mono`` so event times compare
directly with ``time.monotonic()`` in the scenario's call log.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

from analyzer.capture.kernel import parse_line as parse_kernel_line
from analyzer.lab.netns import run

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("tcp/tcp_send_reset", "sock/inet_sock_set_state", "sock/inet_sk_error_report",
          "tcp/tcp_receive_reset")

# "  python3-4358  [001] ..s1.   230.225440: tcp_send_reset: skbaddr=... src=127.0.0.1:1 ..."


def tracefs_available() -> bool:
    if not (TRACEFS / "instances").is_dir():
        # tracefs is often not mounted in containers; mounting it changes nothing else
        try:
            run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)], check=False)
        except (OSError, subprocess.TimeoutExpired):
            return False
    return all((TRACEFS / "events" / e).is_dir() for e in EVENTS[:3])


def parse_line(line: str) -> dict | None:
    """One trace line -> {"event", "ts", fields...}: the live mode's parser, with the labels'
    key for an error report (``error``, the errno number)."""
    rec = parse_kernel_line(line)
    if rec is not None and "errno" in rec:
        rec["error"] = rec.pop("errno")
        rec.pop("errname", None)
    return rec


class TraceSession:
    """Create the instance, enable the events; ``clear``/``collect`` around each scenario."""

    def __init__(self, port_lo: int, port_hi: int):
        self.dir = TRACEFS / "instances" / f"rstscope_{os.getpid()}"
        self.port_lo, self.port_hi = port_lo, port_hi
        self.enabled: list[str] = []

    def __enter__(self) -> TraceSession:
        self.dir.mkdir(exist_ok=True)
        (self.dir / "trace_clock").write_text("mono")
        # Kernel-side filter on the lab's port range keeps the host's own traffic out of the
        # buffer (tcp_send_reset has no port fields: it is filtered after parsing).
        ports = (f"(sport >= {self.port_lo} && sport <= {self.port_hi}) || "
                 f"(dport >= {self.port_lo} && dport <= {self.port_hi})")
        for ev in EVENTS:
            evdir = self.dir / "events" / ev
            if not evdir.is_dir():
                continue
            if ev != "tcp/tcp_send_reset":
                (evdir / "filter").write_text(ports)
            (evdir / "enable").write_text("1")
            self.enabled.append(ev)
        return self

    def __exit__(self, *exc) -> None:
        for ev in self.enabled:
            try:
                (self.dir / "events" / ev / "enable").write_text("0")
            except OSError:
                pass
        # rmdir can fail with EBUSY for a moment while a reader is still open: retry briefly.
        for _ in range(20):
            try:
                self.dir.rmdir()
                return
            except FileNotFoundError:
                return
            except OSError:
                time.sleep(0.05)

    def clear(self) -> None:
        (self.dir / "trace").write_text("")

    def collect(self) -> list[dict]:
        out = []
        for line in (self.dir / "trace").read_text(errors="replace").splitlines():
            if line.startswith("#"):
                continue
            rec = parse_line(line)
            if rec is not None:
                out.append(rec)
        return out
