"""Network namespaces, nftables, tc and sysctls, each bounded and each undone.

Every scenario runs in a fresh network namespace of its own: its loopback, its sysctls, its
nftables ruleset and its qdiscs vanish with it, so nothing the lab does can touch the host's
traffic or settings. The nft table still gets its own name (``rstscope_lab_<pid>``) and is
deleted explicitly, so a crash between the two steps leaves nothing ambiguous.
"""

from __future__ import annotations

import ctypes
import os
import subprocess
from pathlib import Path

CLONE_NEWNET = 0x40000000
CMD_TIMEOUT = 5.0

_libc = ctypes.CDLL(None, use_errno=True)


def run(cmd: list[str], *, timeout: float = CMD_TIMEOUT, input: str | None = None,
        check: bool = True) -> subprocess.CompletedProcess:
    """Run a helper command with a timeout; raise with its stderr when it fails."""
    proc = subprocess.run(cmd, input=input, capture_output=True, text=True, timeout=timeout)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)}: {proc.stderr.strip() or proc.returncode}")
    return proc


def _setns(fd: int) -> None:
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        err = ctypes.get_errno()
        raise OSError(err, os.strerror(err))


def list_netns() -> list[str]:
    out = run(["ip", "netns", "list"], check=False).stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


class NetNs:
    """A named namespace with loopback up; ``enter()``/``leave()`` move the calling thread.

    Only the calling thread changes namespace (setns on a net namespace is per thread), and
    sockets keep the namespace they were created in, so the lab creates every socket between
    ``enter`` and ``leave``.
    """

    def __init__(self, name: str):
        self.name = name
        self.nft_table = f"rstscope_lab_{os.getpid()}"
        self._home: int | None = None
        self._nft_loaded = False

    # -- life cycle ---------------------------------------------------------------------------

    def create(self) -> None:
        run(["ip", "netns", "add", self.name])
        run(["ip", "-n", self.name, "link", "set", "lo", "up"])

    def destroy(self) -> None:
        self.leave()
        if self._nft_loaded:
            run(self.exec_prefix() + ["nft", "delete", "table", "inet", self.nft_table],
                check=False)
            self._nft_loaded = False
        if self.name in list_netns():
            run(["ip", "netns", "delete", self.name], check=False)

    def enter(self) -> None:
        if self._home is not None:
            return
        self._home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        fd = os.open(f"/var/run/netns/{self.name}", os.O_RDONLY)
        try:
            _setns(fd)
        finally:
            os.close(fd)

    def leave(self) -> None:
        if self._home is None:
            return
        try:
            _setns(self._home)
        finally:
            os.close(self._home)
            self._home = None

    # -- configuration -----------------------------------------------------------------------

    def exec_prefix(self) -> list[str]:
        return ["ip", "netns", "exec", self.name]

    def sysctl_set(self, key: str, value: str) -> None:
        # Written through /proc inside the namespace: the host's value is never touched.
        run(self.exec_prefix() + ["sysctl", "-q", "-w", f"{key}={value}"])

    def sysctl_get(self, key: str) -> str | None:
        proc = run(self.exec_prefix() + ["sysctl", "-n", key], check=False)
        return proc.stdout.strip() if proc.returncode == 0 else None

    def nft(self, chains: dict[str, list[str]]) -> None:
        """(Re)load our table: ``chains`` maps a hook (input/output) to its rule lines."""
        lines = [f"table inet {self.nft_table} {{"]
        for hook, rules in chains.items():
            lines.append(f"  chain {hook}_chain {{")
            lines.append(f"    type filter hook {hook} priority 0; policy accept;")
            lines.extend(f"    {rule}" for rule in rules)
            lines.append("  }")
        lines.append("}")
        if self._nft_loaded:
            run(self.exec_prefix() + ["nft", "delete", "table", "inet", self.nft_table])
        run(self.exec_prefix() + ["nft", "-f", "-"], input="\n".join(lines) + "\n")
        self._nft_loaded = True

    def nft_clear(self) -> None:
        if self._nft_loaded:
            run(self.exec_prefix() + ["nft", "delete", "table", "inet", self.nft_table])
            self._nft_loaded = False

    def tc(self, args: list[str]) -> None:
        run(["tc", "-n", self.name] + args)


def netns_exists(name: str) -> bool:
    return Path(f"/var/run/netns/{name}").exists()
