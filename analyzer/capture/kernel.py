"""The kernel's own account of this host's connections, from a private tracefs instance (--kernel).

Events read: ``tcp:tcp_send_reset`` (with its reason, Linux >= 6.10), ``sock:inet_sock_set_state``
and ``sock:inet_sk_error_report`` (the errno an application gets). They are kept per unordered
4-tuple (bounded) until the live loop attaches them to the connection they concern.
"""

from __future__ import annotations

import errno as errno_mod
import os
import re
import select
import shutil
import subprocess
from collections import OrderedDict
from pathlib import Path

TRACEFS = Path("/sys/kernel/tracing")
EVENTS = ("tcp/tcp_send_reset", "sock/inet_sock_set_state", "sock/inet_sk_error_report")
MAX_TUPLES = 4096  # tuples remembered at once (oldest forgotten first)
MAX_EVENTS_PER_TUPLE = 32

_LINE = re.compile(r"^\s*(?P<task>.+?)-(?P<pid>\d+)\s+\[\d+\]\s+\S+\s+(?P<ts>\d+\.\d+):\s+"
                   r"(?P<event>\w+):\s+(?P<rest>.*)$")
_KV = re.compile(r"(\w+)=(\S+)")
_ADDR_PORT = re.compile(r"^\[?(?P<addr>[^\]]*?)\]?:(?P<port>\d+)$")

# the reasons the kernel gives for the RST each case is made of; other reasons disagree
EXPECTED_RESET_REASONS: dict[str, set[str]] = {
    "refused": {"NO_SOCKET"},
    "peer_state_lost": {"NO_SOCKET"},
    "write_after_close": {"TCP_ABORT_ON_DATA", "NO_SOCKET", "TCP_TIMEWAIT_SOCKET"},
    "unread_data_reset": {"TCP_ABORT_ON_CLOSE"},
    "abortive_close": {"TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_CLOSE", "TCP_STATE",
                       "TCP_DISCONNECT_WITH_DATA"},
    "aborted_before_accept": {"TCP_ABORT_ON_LINGER", "TCP_ABORT_ON_CLOSE", "TCP_STATE",
                              "TCP_DISCONNECT_WITH_DATA"},
    "keepalive_timeout": {"TCP_KEEPALIVE_TIMEOUT"},
    "close_wait_stall": {"TCP_ABORT_ON_CLOSE", "TCP_ABORT_ON_DATA", "TCP_ABORT_ON_LINGER"},
    "ignored_reset": {"NO_SOCKET", "TCP_ABORT_ON_DATA", "TCP_ABORT_ON_CLOSE"},
}
NO_RESET_CASES = {"graceful", "half_close", "simultaneous_close", "simultaneous_open"}


def parse_line(line: str) -> dict | None:
    """One trace_pipe line -> {"event", "ts", "saddr", "sport", "daddr", "dport", ...}."""
    m = _LINE.match(line)
    if not m:
        return None
    rec: dict = {"event": m["event"], "ts": float(m["ts"])}
    fields = dict(_KV.findall(m["rest"]))
    if m["event"] == "tcp_send_reset":
        for key, side in (("src", "s"), ("dest", "d")):
            am = _ADDR_PORT.match(fields.get(key, ""))
            if not am:
                return None
            rec[f"{side}addr"] = am["addr"]
            rec[f"{side}port"] = int(am["port"])
        rec["state"] = fields.get("state")
        rec["reason"] = fields.get("reason")
        return rec
    v6 = fields.get("family") == "AF_INET6"
    try:
        rec["saddr"] = fields["saddrv6" if v6 else "saddr"]
        rec["daddr"] = fields["daddrv6" if v6 else "daddr"]
        rec["sport"] = int(fields["sport"])
        rec["dport"] = int(fields["dport"])
    except (KeyError, ValueError):
        return None
    if m["event"] == "inet_sock_set_state":
        rec["oldstate"] = fields.get("oldstate")
        rec["newstate"] = fields.get("newstate")
    elif m["event"] == "inet_sk_error_report":
        err = abs(int(fields.get("error", "0")))
        rec["errno"] = err
        rec["errname"] = errno_mod.errorcode.get(err, str(err))
    return rec


def _norm(addr: str) -> str:
    return addr[7:] if addr.startswith("::ffff:") and "." in addr else addr


def tuple_key(a: str, pa: int, b: str, pb: int) -> tuple:
    x, y = (_norm(a), pa), (_norm(b), pb)
    return (x, y) if x <= y else (y, x)


class KernelTrace:
    """A private tracefs instance with the three events on; ``poll()`` files new events."""

    def __init__(self, name: str):
        self.path: Path | None = None
        self.events: OrderedDict[tuple, list[dict]] = OrderedDict()
        self.problem = self._setup(name)
        self._buf = b""

    def _setup(self, name: str) -> str | None:
        if not (TRACEFS / "instances").is_dir() and shutil.which("mount"):
            try:
                subprocess.run(["mount", "-t", "tracefs", "nodev", str(TRACEFS)],
                               capture_output=True, timeout=5, check=False)
            except (OSError, subprocess.TimeoutExpired):
                pass
        if not (TRACEFS / "instances").is_dir():
            return f"tracefs is not available at {TRACEFS}; showing packet verdicts only"
        fmt = TRACEFS / "events" / "tcp" / "tcp_send_reset" / "format"
        if not all((TRACEFS / "events" / e).is_dir() for e in EVENTS) or \
                "reason" not in fmt.read_text(errors="replace"):
            return ("this kernel's tracepoints lack tcp_send_reset reasons (Linux >= 6.10 "
                    "needed); showing packet verdicts only")
        path = TRACEFS / "instances" / name
        try:
            path.mkdir()
            self.path = path
            for e in EVENTS:
                (path / "events" / e / "enable").write_text("1")
            self.fd = os.open(path / "trace_pipe", os.O_RDONLY | os.O_NONBLOCK)
        except OSError as exc:
            self.close()
            return f"cannot set up tracing in {path}: {exc.strerror or exc}; packet verdicts only"
        return None

    @property
    def active(self) -> bool:
        return self.path is not None and self.problem is None

    def poll(self, limit: int = 10000) -> int:
        """Read what the kernel logged since the last call; returns the events filed."""
        if not self.active:
            return 0
        n = 0
        for _ in range(64):  # bounded: at most 64 reads of 64 KiB per call
            try:
                r, _, _ = select.select([self.fd], [], [], 0)
                if not r:
                    break
                chunk = os.read(self.fd, 65536)
            except (BlockingIOError, InterruptedError):
                break
            except OSError:
                break
            if not chunk:
                break
            self._buf += chunk
            *lines, self._buf = self._buf.split(b"\n")
            for raw in lines:
                rec = parse_line(raw.decode(errors="replace"))
                if rec is not None:
                    self._file(rec)
                    n += 1
            if n >= limit:
                break
        return n

    def _file(self, rec: dict) -> None:
        key = tuple_key(rec["saddr"], rec["sport"], rec["daddr"], rec["dport"])
        lst = self.events.get(key)
        if lst is None:
            lst = self.events[key] = []
            while len(self.events) > MAX_TUPLES:
                self.events.popitem(last=False)
        else:
            self.events.move_to_end(key)
        if len(lst) < MAX_EVENTS_PER_TUPLE:
            lst.append(rec)

    def take(self, a: str, pa: int, b: str, pb: int) -> list[dict]:
        """The events of one 4-tuple, forgotten once taken (the next use of the ports is new)."""
        return self.events.pop(tuple_key(a, pa, b, pb), [])

    def close(self) -> None:
        fd = getattr(self, "fd", None)
        if fd is not None:
            os.close(fd)
            self.fd = None
        if self.path is not None:
            for e in EVENTS:
                try:
                    (self.path / "events" / e / "enable").write_text("0")
                except OSError:
                    pass
            try:
                self.path.rmdir()
            except OSError:
                pass
            self.path = None


def summarize(events: list[dict], client: tuple[str, int], case: str) -> dict:
    """The kernel's view of one connection and whether it agrees with the packet verdict."""
    resets, errors, states = [], [], []
    for ev in events:
        who = "client" if (_norm(ev["saddr"]), ev["sport"]) == (_norm(client[0]), client[1]) \
            else "server"
        if ev["event"] == "tcp_send_reset":
            resets.append({"by": who, "state": ev["state"], "reason": ev["reason"]})
        elif ev["event"] == "inet_sk_error_report":
            errors.append({"side": who, "errno": ev["errname"]})
        elif ev["event"] == "inet_sock_set_state":
            states.append({"side": who, "from": ev["oldstate"], "to": ev["newstate"]})
    disagree = None
    reasons = [r["reason"] for r in resets]
    expected = EXPECTED_RESET_REASONS.get(case)
    if expected is not None and reasons and not set(reasons) & expected:
        disagree = f"kernel reset reason {'/'.join(reasons)} does not fit {case}"
    elif case in NO_RESET_CASES and reasons:
        disagree = f"kernel sent a reset ({'/'.join(reasons)}) but the packets say {case}"
    return {"resets": resets, "errors": errors, "states": states, "disagreement": disagree}


def describe(view: dict) -> str:
    """One line for the text output."""
    parts = [f"RST by {r['by']} ({r['reason']}, in {r['state']})" for r in view["resets"]]
    parts += [f"{e['side']} got {e['errno']}" for e in view["errors"]]
    if not parts:
        parts = ["no reset, no socket error" if view["states"] else "no events"]
    line = "      kernel: " + "; ".join(parts)
    if view["disagreement"]:
        line += f"  [DISAGREES: {view['disagreement']}]"
    return line
