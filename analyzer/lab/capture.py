"""tcpdump as a bounded child process: started before the traffic, stopped with SIGINT.

tcpdump prints "listening on ..." on stderr once its packet socket is open; the lab waits for
that line (bounded) so no packet of the scenario is missed. ``-U --immediate-mode`` makes every
packet reach the file as it arrives, ``-Z root`` keeps tcpdump able to write into any output
directory (it would otherwise drop to the ``tcpdump`` user).
"""

from __future__ import annotations

import os
import selectors
import shutil
import signal
import subprocess
import time
from pathlib import Path

READY_TIMEOUT = 5.0
STOP_TIMEOUT = 3.0
SETTLE = 0.15  # let the last packets of the scenario reach tcpdump before stopping it


def tcpdump_path() -> str | None:
    return shutil.which("tcpdump")


class Tcpdump:
    def __init__(self, path: Path, bpf: str, *, iface: str = "lo", prefix: list[str] | None = None):
        self.path = path
        self.cmd = (prefix or []) + [
            tcpdump_path() or "tcpdump", "-i", iface, "-U", "--immediate-mode", "-s", "0",
            "-Z", "root", "-w", str(path), bpf,
        ]
        self.proc: subprocess.Popen | None = None
        self.stderr = ""

    def start(self, iface: str | None = None) -> None:
        if iface is not None:  # a scenario's own interface (a veth it created), not lo
            self.cmd[self.cmd.index("-i") + 1] = iface
        self.path.unlink(missing_ok=True)
        self.proc = subprocess.Popen(self.cmd, stdin=subprocess.DEVNULL,
                                     stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + READY_TIMEOUT
        sel = selectors.DefaultSelector()
        sel.register(self.proc.stderr, selectors.EVENT_READ)
        try:
            while time.monotonic() < deadline:
                if not sel.select(timeout=max(0.0, deadline - time.monotonic())):
                    continue
                chunk = os.read(self.proc.stderr.fileno(), 4096).decode(errors="replace")
                if not chunk:  # tcpdump exited
                    break
                self.stderr += chunk
                if "listening on" in self.stderr:
                    return
        finally:
            sel.close()
        self.stop()
        raise RuntimeError(f"tcpdump did not start: {self.stderr.strip()[-300:]}")

    def stop(self) -> None:
        proc, self.proc = self.proc, None
        if proc is None:
            return
        if proc.poll() is None:
            time.sleep(SETTLE)
            proc.send_signal(signal.SIGINT)
            try:
                proc.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=STOP_TIMEOUT)
        try:
            self.stderr += proc.stderr.read().decode(errors="replace")
        finally:
            proc.stderr.close()
