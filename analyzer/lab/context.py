"""What a scenario function gets: sockets in the scenario's namespace and a call log.

Every socket call a scenario makes goes through ``Lab.call`` (or the helpers built on it), which
stores the time since the scenario started, the side, the call and its result: "ok", "ok:N"
(bytes), "EOF" (recv returned 0), or the errno name ("ECONNRESET", ...). "TIMEOUT" means the
lab's own safety timeout expired, never a kernel ETIMEDOUT.
"""

from __future__ import annotations

import errno
import socket
import time
from collections.abc import Callable

from analyzer.lab.netns import NetNs

SOCK_TIMEOUT = 2.0


def errno_name(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError) and getattr(exc, "errno", None) is None:
        return "TIMEOUT"
    if isinstance(exc, OSError) and exc.errno is not None:
        return errno.errorcode.get(exc.errno, str(exc.errno))
    return type(exc).__name__


def fmt_addr(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


class Lab:
    def __init__(self, family: int, port: int, ns: NetNs):
        self.family = family
        self.af = socket.AF_INET if family == 4 else socket.AF_INET6
        self.host = "127.0.0.1" if family == 4 else "::1"
        self.port = port
        self.ns = ns
        self.t0 = time.monotonic()
        self.calls: list[dict] = []
        self.notes: list[str] = []
        self.endpoints: dict[str, tuple[str, int]] = {}
        self.sysctls: dict[str, str] = {}
        self.hand_crafted = False
        self.start_capture: Callable[..., None] = lambda iface=None: None
        # undone by the runner after the capture stopped (namespaces a scenario added)
        self.cleanups: list[Callable[[], None]] = []
        self._socks: list[socket.socket] = []

    # -- sockets ------------------------------------------------------------------------------

    def sock(self, timeout: float = SOCK_TIMEOUT) -> socket.socket:
        s = socket.socket(self.af, socket.SOCK_STREAM)
        s.settimeout(timeout)
        self._socks.append(s)
        return s

    def client(self, timeout: float = SOCK_TIMEOUT, *, side: str = "client") -> socket.socket:
        """A socket bound to an ephemeral port now, so its port is known even if connect fails."""
        s = self.sock(timeout)
        s.bind((self.host, 0))
        self.endpoints.setdefault(side, (self.host, s.getsockname()[1]))
        return s

    def listener(self, backlog: int = 8, port: int | None = None) -> socket.socket:
        s = self.sock()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind((self.host, port or self.port))
        s.listen(backlog)
        self.endpoints.setdefault("server", (self.host, port or self.port))
        return s

    def close_all(self) -> None:
        for s in self._socks:
            try:
                s.close()
            except OSError:
                pass

    @property
    def server_addr(self) -> tuple[str, int]:
        return (self.host, self.port)

    # -- the call log -------------------------------------------------------------------------

    def now(self) -> float:
        return round(time.monotonic() - self.t0, 6)

    def log(self, side: str, call: str, result: str, **extra) -> None:
        self.calls.append({"t": self.now(), "side": side, "call": call, "result": result, **extra})

    def call(self, side: str, name: str, fn: Callable, *args, ok: Callable = lambda r: "ok"):
        """Run ``fn(*args)``; log its result or errno. Returns the value, or None on error."""
        try:
            value = fn(*args)
        except OSError as exc:
            self.log(side, name, errno_name(exc))
            return None
        self.log(side, name, ok(value))
        return value

    def connect(self, side: str, s: socket.socket, addr: tuple | None = None) -> bool:
        self.call(side, "connect", s.connect, addr or self.server_addr)
        return self.calls[-1]["result"] == "ok"

    def accept(self, side: str, lst: socket.socket) -> socket.socket | None:
        res = self.call(side, "accept", lst.accept)
        if res is None:
            return None
        conn, _ = res
        conn.settimeout(SOCK_TIMEOUT)
        self._socks.append(conn)
        return conn

    def send(self, side: str, s: socket.socket, data: bytes) -> int | None:
        return self.call(side, "send", s.send, data, socket.MSG_NOSIGNAL, ok=lambda n: f"ok:{n}")

    def recv(self, side: str, s: socket.socket, n: int = 65536) -> bytes | None:
        return self.call(side, "recv", s.recv, n,
                         ok=lambda b: f"ok:{len(b)}" if b else "EOF")

    def shutdown(self, side: str, s: socket.socket, how: int = socket.SHUT_WR) -> None:
        self.call(side, "shutdown", s.shutdown, how)

    def close(self, side: str, s: socket.socket) -> None:
        self.call(side, "close", s.close)

    def linger0(self, s: socket.socket) -> None:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\x01\x00\x00\x00\x00\x00\x00\x00")

    # -- environment --------------------------------------------------------------------------

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)

    def sysctl(self, key: str, value: str) -> None:
        self.ns.sysctl_set(key, value)
        self.sysctls[key] = value

    def nft(self, **chains: list[str]) -> None:
        self.ns.nft(chains)

    def note(self, text: str) -> None:
        self.notes.append(text)
