"""Ordinary endings (not faults), plus close_wait_stall, which is one only by neglect."""

from __future__ import annotations

import select
import socket
import time

from analyzer.lab.context import Lab, errno_name
from analyzer.lab.model import scenario
from analyzer.lab.scenarios.common import delay_line, exchange, pair, remove_delay_line


@scenario("graceful", "request, response, FIN both ways", """
    A complete request/response; the client closes first (FIN), the server reads EOF and
    closes too. The client ends in TIME_WAIT.""")
def graceful(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.close("client", cli)
    lab.recv("server", srv)
    lab.close("server", srv)
    lab.sleep(0.05)


@scenario("half_close", "shutdown(SHUT_WR), the peer keeps sending", """
    The client sends its request and shuts down its sending side (FIN). The server reads the
    request and EOF, then sends its answer in three pieces, which the client still receives
    and ACKs, then closes; the client reads EOF and closes.""")
def half_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"PUT /upload\r\n")
    lab.shutdown("client", cli, socket.SHUT_WR)
    lab.recv("server", srv)
    lab.recv("server", srv)
    for i in range(3):
        lab.send("server", srv, f"part {i}\r\n".encode())
        lab.sleep(0.02)
        lab.recv("client", cli)
    lab.close("server", srv)
    lab.recv("client", cli)
    lab.close("client", cli)
    lab.sleep(0.05)


@scenario("simultaneous_close", "both sides send FIN before receiving the other's", """
    After a complete exchange both sides call shutdown(SHUT_WR) while a delay line (tbf on the
    namespace's loopback) holds the segments, so each FIN is sent before the other one
    arrives: both sockets pass FIN_WAIT1 -> CLOSING -> TIME_WAIT. Then both read EOF and
    close.""")
def simultaneous_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.sleep(0.05)  # let the last ACK out before the delay line starts
    delay_line(lab)
    lab.shutdown("client", cli, socket.SHUT_WR)
    lab.shutdown("server", srv, socket.SHUT_WR)
    lab.sleep(0.3)
    lab.recv("client", cli)
    lab.recv("server", srv)
    lab.close("client", cli)
    lab.close("server", srv)
    lab.sleep(0.05)


@scenario("simultaneous_open", "two sockets connect() to each other", """
    Two sockets bound to fixed ports of the namespace's loopback connect() to each other, no
    listener anywhere. A delay line (tbf) holds the SYNs so they cross: each side receives the
    other's SYN while in SYN_SENT, both answer SYN/ACK and both connect() calls succeed. Then
    a short exchange and a graceful close.""")
def simultaneous_open(lab: Lab) -> None:
    a_addr, b_addr = (lab.host, lab.port), (lab.host, lab.port + 1)
    lab.endpoints["client"], lab.endpoints["server"] = a_addr, b_addr
    a, b = lab.sock(), lab.sock()
    for s, addr in ((a, a_addr), (b, b_addr)):
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(addr)
        s.setblocking(False)
    delay_line(lab)
    codes = {"client": a.connect_ex(b_addr), "server": b.connect_ex(a_addr)}
    lab.log("client", "connect(nonblocking)", errno_name(OSError(codes["client"], "")))
    lab.log("server", "connect(nonblocking)", errno_name(OSError(codes["server"], "")))
    pending = {"client": a, "server": b}
    deadline = time.monotonic() + 3.0
    while pending and time.monotonic() < deadline:
        _, ready, _ = select.select([], list(pending.values()), [], 0.2)
        for side, s in list(pending.items()):
            if s in ready:
                err = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                lab.log(side, "connect", "ok" if err == 0 else errno_name(OSError(err, "")))
                del pending[side]
    for side in pending:
        lab.log(side, "connect", "TIMEOUT")
    remove_delay_line(lab)
    for s in (a, b):
        s.settimeout(2.0)
    lab.send("client", a, b"hello from A\r\n")
    lab.recv("server", b)
    lab.close("client", a)
    lab.recv("server", b)
    lab.close("server", b)
    lab.sleep(0.05)


@scenario("close_wait_stall", "the peer never closes after EOF", """
    After a complete exchange the client closes (FIN); the server's kernel ACKs it and the
    server's recv() returns EOF, but the server never closes: it sits in CLOSE_WAIT until the
    capture stops (the lab closes it only afterwards).""")
def close_wait_stall(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.close("client", cli)
    lab.recv("server", srv)
    lab.sleep(0.3)


@scenario("open", "still established when the capture stops", """
    A connection is opened and a request/response exchanged; the capture stops while both
    sockets are still open (the lab closes them only afterwards).""")
def open_(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.sleep(0.1)


@scenario("partial", "the capture starts after the handshake", """
    The connection is opened before tcpdump starts; then a request/response is captured and the
    capture stops while both sockets are still open: no SYN in the file, and no ending that
    another case explains (a captured graceful close would be `graceful`, which precedes
    `partial` in the catalog).""", capture_late=True)
def partial(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.sleep(0.05)
    lab.start_capture()
    exchange(lab, cli, srv)
    lab.sleep(0.1)
