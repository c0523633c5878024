"""Abnormal endings where a RST arrives promptly (no timer involved)."""

from __future__ import annotations

import socket

from analyzer.lab.context import Lab
from analyzer.lab.inject import Sniffer
from analyzer.lab.model import scenario
from analyzer.lab.scenarios.common import TCP_REPAIR, exchange, pair


@scenario("refused", "connect to a port nobody listens on", """
    The client connects to a port of the namespace's loopback where no socket listens; the
    kernel answers the SYN with a RST/ACK and connect() fails.""")
def refused(lab: Lab) -> None:
    lab.endpoints["server"] = lab.server_addr
    cli = lab.client()
    lab.connect("client", cli)


@scenario("write_after_close", "the peer writes after the other side closed", """
    The client sends a request and closes its socket without waiting for the answer (FIN). The
    server reads the request, reads EOF, then writes its reply anyway: the client's kernel has
    no socket for it any more and answers with a bare RST; the server's next write fails.""")
def write_after_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /report\r\n")
    lab.recv("server", srv)
    lab.close("client", cli)
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.send("server", srv, b"200 OK, here is the report\r\n")
    lab.sleep(0.05)  # the RST comes back at once; give it time to be processed
    lab.send("server", srv, b"more of the report\r\n")
    lab.recv("server", srv)


@scenario("unread_data_reset", "close() with unread data in the receive buffer", """
    Document 003's experiment: the server writes one byte as soon as it accepts; the client
    never reads it and calls close(). tcp_close() finds unread data and sends RST/ACK instead of
    a FIN. The server then reads, writes and reads again.""")
def unread_data_reset(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("server", srv, b"1")
    lab.sleep(0.05)  # the byte is in the client's receive queue (and ACKed)
    lab.close("client", cli)
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.send("server", srv, b"2")
    lab.recv("server", srv)


@scenario("abortive_close", "SO_LINGER {1, 0} then close() after a complete exchange", """
    A complete request/response, both sides having read everything; then the server, which
    answered last, sets SO_LINGER {on, 0 s} and closes (as servers do to skip TIME_WAIT):
    RST/ACK, no FIN. The client's next read fails. (A client aborting the same way after reading
    the answer looks, on the wire, exactly like a close with unread data: only the kernel's
    reset reason differs, so the catalog's distinguishing mark is the order of the data.)""")
def abortive_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.linger0(srv)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.send("client", cli, b"late")


@scenario("aborted_before_accept", "the client aborts while the connection waits in the backlog", """
    The handshake completes into the listener's accept queue; before the server calls accept()
    the client closes with SO_LINGER {1, 0} (RST/ACK). Then the server accepts, asks for the
    peer's name and reads.""")
def aborted_before_accept(lab: Lab) -> None:
    lst = lab.listener()
    cli = lab.client()
    lab.connect("client", cli)
    lab.sleep(0.02)
    lab.linger0(cli)
    lab.close("client", cli)
    lab.sleep(0.05)
    srv = lab.accept("server", lst)
    if srv is not None:
        lab.call("server", "getpeername", srv.getpeername)
        lab.recv("server", srv)
        lab.recv("server", srv)


@scenario("peer_state_lost", "the server forgets the connection silently, the client writes", """
    After a complete exchange the server's connection state vanishes without a packet: the
    listener is closed and the accepted socket is put in TCP_REPAIR mode before close(), which
    makes tcp_close() drop the socket without FIN or RST (what a crash and reboot, or an expired
    NAT/firewall entry, look like). The client then writes: the server's kernel answers with a
    bare RST; the client's read fails, then its write.""")
def peer_state_lost(lab: Lab) -> None:
    lst, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.close("server", lst)
    srv.setsockopt(socket.IPPROTO_TCP, TCP_REPAIR, 1)
    lab.log("server", "setsockopt(TCP_REPAIR)", "ok")
    lab.close("server", srv)
    lab.sleep(0.1)
    lab.send("client", cli, b"ping\r\n")
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.send("client", cli, b"ping again\r\n")
    lab.note("Server state removed with TCP_REPAIR + close() (tcp_close's repair branch sends "
             "nothing).")


def _forge(lab: Lab, *, exact: bool) -> tuple[socket.socket, socket.socket, bool]:
    """Connected pair with some traffic; then a RST that claims to come from the server."""
    sniff = Sniffer()
    try:
        _, cli, srv = pair(lab)
        exchange(lab, cli, srv)
        lab.sleep(0.05)
        client, server = lab.endpoints["client"], lab.endpoints["server"]
        seqs = sniff.next_seq(server, client)
        if seqs is None:
            lab.note("could not learn the sequence numbers from the sniffer")
            return cli, srv, False
        srv_next, cli_next = seqs
        seq = srv_next if exact else (srv_next + 1000) & 0xFFFFFFFF
        sniff.send_rst(server, client, seq, cli_next)
        lab.log("forger", "inject RST/ACK", "ok", seq=seq, expected=srv_next,
                ttl=37)
        return cli, srv, True
    finally:
        sniff.close()


@scenario("injected_reset", "a forged RST with the exact sequence number", """
    After a complete exchange a third party (the lab, through a packet socket) injects a RST/ACK
    that claims to come from the server, with exactly the sequence number the client expects
    and TTL 37 instead of loopback's 64. The client's read fails; the genuine server, knowing
    nothing, keeps sending and draws bare RSTs from the client's kernel.""")
def injected_reset(lab: Lab) -> None:
    cli, srv, ok = _forge(lab, exact=True)
    if not ok:
        return
    lab.recv("client", cli)
    lab.send("server", srv, b"more data\r\n")
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.send("server", srv, b"even more\r\n")


@scenario("ignored_reset", "a forged RST inside the window but not exact", """
    Like injected_reset, but the forged RST's sequence number is 1000 bytes past the expected
    one, still inside the client's receive window: RFC 5961 makes the client answer with a
    challenge ACK and ignore it. The connection goes on and closes gracefully.""")
def ignored_reset(lab: Lab) -> None:
    cli, srv, ok = _forge(lab, exact=False)
    if not ok:
        return
    lab.send("server", srv, b"still here\r\n")
    lab.recv("client", cli)
    lab.close("client", cli)
    lab.recv("server", srv)
    lab.close("server", srv)
    lab.sleep(0.05)
