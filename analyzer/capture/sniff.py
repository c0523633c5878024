"""Live sources: frames from a network interface as (ts, linktype, frame bytes), or None when idle.

Two backends, both yielding the same tuples so the live loop (``analyzer.live``) decodes them with
the project's own link and IP decoders and can write them to a pcap:

* ``scapy`` (default): scapy opens one Linux packet socket (``conf.L2listen``) and compiles the
  BPF filter; frames are then read straight from the socket with ``recvmsg`` (kernel timestamps
  via SO_TIMESTAMPNS), far faster than dissecting them with scapy. On a loopback interface every
  packet is seen twice (outgoing and incoming): outgoing copies (``sll_pkttype`` 4) are dropped,
  as libpcap does.
* ``pyshark``: runs ``tshark -w - -F pcap`` and reads the pcap stream with the compiled reader
  (``decode.open_stream``: its record walk, frames handed over as they arrive). tshark runs
  under a small root shell that kills it when this process closes the shell's stdin (or dies),
  so it can be stopped after this process gave up root.

scapy is imported lazily, only here; nothing else in the project sniffs.
"""

from __future__ import annotations

import logging
import os
import queue
import shlex
import socket
import struct
import subprocess
import threading
import time
from collections.abc import Iterator

from analyzer.capture.formats import (
    LINKTYPE_ETHERNET,
    LINKTYPE_RAW,
    PCAP_HEADER_LEN,
    pcap_header,
)
from analyzer.errors import PrivilegeError, UnreadableCapture, UsageError

Frame = tuple[float, int, bytes]  # (timestamp, linktype, frame bytes)

TICK = 0.2  # seconds a source waits for a frame before yielding None (idle tick)
SNAPLEN = 262144
SETTLE = 0.5  # seconds tshark needs after its pcap header before it sees packets
DEFAULT_BPF = "tcp or icmp or icmp6"

SOL_PACKET = 263
PACKET_STATISTICS = 6
PACKET_OUTGOING = 4
SO_TIMESTAMPNS = 35
ARPHRD_LOOPBACK = 772
# interface hardware type -> pcap link type of its frames
_HATYPE_LINK = {1: LINKTYPE_ETHERNET, ARPHRD_LOOPBACK: LINKTYPE_ETHERNET,
                65534: LINKTYPE_RAW, 768: LINKTYPE_RAW, 769: LINKTYPE_RAW, 776: LINKTYPE_RAW}

PRIVILEGE_HINT = ("live capture needs CAP_NET_RAW: run it with sudo, or grant the capability "
                  "once with `sudo setcap cap_net_raw,cap_net_admin=eip "
                  "$(readlink -f .venv/bin/python)`")


def check_privileges() -> None:
    """Raise PrivilegeError (one line: why and how) if packet sockets cannot be opened."""
    try:
        s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, 0)
    except PermissionError:
        raise PrivilegeError(PRIVILEGE_HINT) from None
    except (OSError, AttributeError) as exc:
        raise PrivilegeError(f"cannot open a packet socket ({exc}); live capture needs "
                             "Linux") from None
    s.close()


class ScapySource:
    """One packet socket opened by scapy, read with recvmsg. Iterate it (single pass)."""

    name = "scapy"

    def __init__(self, iface: str, bpf: str | None):
        check_privileges()
        if iface == "any":
            raise UsageError("-i any needs --backend pyshark (the scapy backend reads one "
                             "interface)")
        try:
            socket.if_nametoindex(iface)
        except OSError:
            raise UsageError(f"no such interface: {iface}") from None
        try:
            import scapy.arch  # noqa: F401 - lazy; sets conf.L2listen for this platform
            from scapy.config import conf

            log = logging.getLogger("scapy.runtime")
            level = log.level
            log.setLevel(logging.ERROR)  # scapy's layer guess does not matter: we decode
            try:
                self._l2 = conf.L2listen(iface=iface, filter=bpf or DEFAULT_BPF, promisc=False)
            finally:
                log.setLevel(level)
        except PermissionError:
            raise PrivilegeError(PRIVILEGE_HINT) from None
        except Exception as exc:  # scapy reports a bad filter as Scapy_Exception
            raise UsageError(f"cannot capture on {iface} with filter {bpf!r}: {exc}") from None
        self.sock: socket.socket = self._l2.ins
        self.sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        self.sock.settimeout(TICK)
        hatype = self.sock.getsockname()[3]
        self.linktype = _HATYPE_LINK.get(hatype)
        if self.linktype is None:
            self.close()
            raise UsageError(f"{iface}: interface type {hatype} is not supported by the scapy "
                             "backend; try --backend pyshark")
        self.loopback = hatype == ARPHRD_LOOPBACK
        self.iface = iface
        self.duplicates = 0  # outgoing copies dropped on loopback
        self._drops = 0
        self._closed = False

    def __iter__(self) -> Iterator[Frame | None]:
        recvmsg = self.sock.recvmsg
        cmsg_space = socket.CMSG_SPACE(16) + socket.CMSG_SPACE(32)  # timestamp + auxdata
        loopback = self.loopback
        linktype = self.linktype
        while not self._closed:
            try:
                data, anc, _flags, addr = recvmsg(SNAPLEN, cmsg_space)
            except (TimeoutError, BlockingIOError, InterruptedError):
                yield None
                continue
            except OSError:
                if self._closed:
                    return
                raise
            if loopback and addr[2] == PACKET_OUTGOING:
                self.duplicates += 1
                continue
            ts = None
            for level, kind, cdata in anc:
                if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(cdata) >= 16:
                    sec, nsec = struct.unpack_from("qq", cdata)
                    ts = sec + nsec / 1e9
            yield (ts if ts is not None else time.time()), linktype, data

    def drops(self) -> int | None:
        """Packets the kernel dropped so far (socket buffer full)."""
        if self._closed:
            return self._drops
        try:
            raw = self.sock.getsockopt(SOL_PACKET, PACKET_STATISTICS, 8)
        except OSError:
            return self._drops
        _packets, drops = struct.unpack("II", raw)  # the kernel resets them on each read
        self._drops += drops
        return self._drops

    def close(self) -> None:
        if not self._closed:
            self.drops()
            self._closed = True
            try:
                self._l2.close()
            except OSError:
                pass


# tshark in the background; killed when our end of the shell's stdin closes
_WRAPPER = 'tshark "$@" & p=$!; read -r _; kill -TERM "$p" 2>/dev/null; wait "$p"'


class TsharkSource:
    """tshark writing pcap to a pipe, read by a thread into a queue. Iterate it (single pass)."""

    name = "pyshark"

    def __init__(self, iface: str, bpf: str | None, ready_timeout: float = 15.0):
        cmd = ["-i", iface, "-w", "-", "-F", "pcap", "-q", "-f", bpf or DEFAULT_BPF]
        try:
            self.proc = subprocess.Popen(
                ["sh", "-c", _WRAPPER, "rstscope-tshark", *cmd], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
        except OSError as exc:
            raise UsageError(f"cannot run tshark: {exc}") from None
        self.iface = iface
        self.linktype = None
        self.duplicates = 0  # libpcap already drops loopback's outgoing copies
        self._q: queue.Queue = queue.Queue(maxsize=100000)
        self._err: list[str] = []
        self._ready = threading.Event()
        self._closed = False
        self.problems: list = []  # damage in tshark's pcap stream (it ends the stream)
        threading.Thread(target=self._read_err, daemon=True).start()
        deadline = time.monotonic() + ready_timeout
        while not self._ready.is_set() and time.monotonic() < deadline:
            if self.proc.poll() is not None:
                break
            self._ready.wait(0.05)
        if not self._ready.is_set():
            err = " ".join(line.strip() for line in self._err[-3:])
            self.close()
            if "permission" in err.lower() or "privilege" in err.lower():
                raise PrivilegeError(PRIVILEGE_HINT)
            raise UsageError(f"tshark did not start capturing on {iface}: {err or 'no output'}")
        self._header = threading.Event()
        threading.Thread(target=self._read_out, daemon=True).start()
        # tshark says "Capturing on" a moment before dumpcap really captures: wait for the pcap
        # header, then a little more, so that traffic started right after "listening" is seen
        self._header.wait(max(0.5, deadline - time.monotonic()))
        time.sleep(SETTLE)

    def _read_err(self) -> None:
        for raw in iter(self.proc.stderr.readline, b""):  # ends when tshark exits
            line = raw.decode(errors="replace")
            if len(self._err) < 200:
                self._err.append(line)
            if line.startswith("Capturing on"):
                self._ready.set()

    def _read_out(self) -> None:
        from analyzer.core.decode import open_stream

        reader = None
        try:
            # the link type is known from the file header, before any frame (-w writes it)
            header = pcap_header(self.proc.stdout.peek(PCAP_HEADER_LEN)[:PCAP_HEADER_LEN])
            reader = open_stream(self.proc.stdout, f"tshark -i {self.iface}")
            self.linktype = header[3] if header else None
            self._header.set()
            for rec in reader.frames():
                self.linktype = rec[1]
                self._q.put(rec, timeout=60)
        except (UnreadableCapture, OSError, ValueError, queue.Full):
            pass
        finally:
            if reader is not None:
                self.problems = reader.problems
            self._header.set()
            self._q.put(None)  # end of stream

    def __iter__(self) -> Iterator[Frame | None]:
        while not self._closed:
            try:
                rec = self._q.get(timeout=TICK)
            except queue.Empty:
                yield None
                continue
            if rec is None:
                return
            yield rec

    def drops(self) -> int | None:
        for line in self._err:  # tshark tells only at exit
            words = line.split()
            if len(words) >= 3 and words[1:3] == ["packets", "dropped"]:
                return int(words[0]) if words[0].isdigit() else None
        return None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        try:
            self.proc.stdin.close()  # the wrapper kills tshark
        except OSError:
            pass
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            try:
                self.proc.kill()
            except PermissionError:
                pass
        for f in (self.proc.stdout, self.proc.stderr):
            try:
                f.close()
            except OSError:
                pass

    def __repr__(self) -> str:
        return f"TsharkSource({shlex.quote(self.iface)})"


def open_source(backend: str, iface: str, bpf: str | None):
    if backend == "scapy":
        return ScapySource(iface, bpf)
    if backend == "pyshark":
        check_privileges_tshark()
        return TsharkSource(iface, bpf)
    raise UsageError(f"unknown backend {backend!r} (scapy or pyshark)")


def check_privileges_tshark() -> None:
    """dumpcap may hold capabilities of its own; only refuse early when it cannot."""
    if os.geteuid() == 0:
        return
    try:
        check_privileges()
    except PrivilegeError:
        r = subprocess.run(["getcap", "/usr/bin/dumpcap"], capture_output=True, text=True,
                           timeout=5, check=False) if _which("getcap") else None
        if r is None or "cap_net_raw" not in r.stdout:
            raise


def _which(prog: str) -> bool:
    from shutil import which

    return which(prog) is not None


class PcapWriter:
    """Classic pcap, nanosecond timestamps, written as frames arrive (-w)."""

    def __init__(self, f, linktype: int):
        self.f = f
        f.write(struct.pack("<IHHiIII", 0xA1B23C4D, 2, 4, 0, 0, SNAPLEN, linktype))
        self._rec = struct.Struct("<IIII").pack

    def write(self, ts: float, data: bytes) -> None:
        sec = int(ts)
        nsec = min(int(round((ts - sec) * 1e9)), 999_999_999)
        self.f.write(self._rec(sec, nsec, len(data), len(data)))
        self.f.write(data)

    def flush(self) -> None:
        self.f.flush()
