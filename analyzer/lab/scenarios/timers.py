"""Abnormal endings driven by a timer or by the path: silence, ICMP, a full listen queue.

"The peer is silent" is made with an nft rule in the namespace's *output* hook on the peer's
port: its segments are dropped before the loopback tap, so the capture shows what a real
observer on the path would see (nothing from the peer), while the peer's socket stays alive.
A SYN nobody answers is dropped in the *input* hook instead, after tcpdump has seen it.
"""

from __future__ import annotations

import errno
import socket

from analyzer.lab.context import Lab
from analyzer.lab.model import scenario
from analyzer.lab.scenarios.common import TCP_SYNCNT, TCP_USER_TIMEOUT, exchange, pair

SLOW = {"slow": True, "needs": ("root", "netns", "nft", "tracefs")}


@scenario("retransmission_timeout", "data never acknowledged until TCP_USER_TIMEOUT", """
    After a complete exchange every segment the server sends is dropped (nft, output hook of
    the namespace). The client, with TCP_USER_TIMEOUT 2 s, sends a request and waits for the
    answer: its data is retransmitted with growing gaps, then the kernel gives up.""", **SLOW)
def retransmission_timeout(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    cli.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 2000)
    lab.nft(output=[f"tcp sport {lab.port} drop"])
    cli.settimeout(6.0)
    lab.send("client", cli, b"GET /slow\r\n")
    lab.recv("client", cli)
    lab.send("client", cli, b"again\r\n")


@scenario("syn_timeout", "SYNs never answered", """
    Every SYN to the server port is dropped (nft, input hook, after the capture saw it). The
    client has TCP_SYNCNT 2. The SYN timeout is a time budget (1 + 2 + 4 s for two retries),
    and with tcp_syn_linear_timeouts=4 the first retransmissions come every second, so this
    kernel sends 6 SYNs in ~7 s before connect() fails.""", **SLOW)
def syn_timeout(lab: Lab) -> None:
    lab.listener()
    lab.nft(input=[f"tcp dport {lab.port} tcp flags & (syn | ack) == syn drop"])
    cli = lab.client(timeout=10.0)
    cli.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 2)
    lab.connect("client", cli)


@scenario("unreachable", "connect() answered by ICMP destination unreachable", """
    An nft rule in the namespace rejects the SYNs to the server port with an ICMP error:
    host-unreachable (IPv4) or administratively prohibited (ICMPv6). The kernel turns the
    ICMP into connect()'s errno.""", needs=("root", "netns", "nft", "tracefs"))
def unreachable(lab: Lab) -> None:
    lab.listener()
    if lab.family == 4:
        rule = (f"meta nfproto ipv4 tcp dport {lab.port} "
                "reject with icmp type host-unreachable")
        lab.note("ICMP type 3 code 1 (host unreachable).")
    else:
        rule = (f"meta nfproto ipv6 tcp dport {lab.port} "
                "reject with icmpv6 type admin-prohibited")
        lab.note("ICMPv6 type 1 code 1 (administratively prohibited).")
    lab.nft(input=[rule])
    cli = lab.client(timeout=6.0)
    lab.connect("client", cli)


@scenario("backlog_overflow", "the listener never accepts and its queue is full", """
    The server listens with backlog 0 (room for one connection) and does not call accept().
    A first client connects into the queue; a second client, with TCP_SYNCNT 1, finds the
    queue full: its SYNs are dropped and retransmitted until connect() fails. Then the server
    finally accepts the first connection.""", **SLOW)
def backlog_overflow(lab: Lab) -> None:
    lst = lab.listener(backlog=0)
    first = lab.client(side="client_queued")
    lab.connect("client_queued", first)
    cli = lab.client(timeout=10.0)
    cli.setsockopt(socket.IPPROTO_TCP, TCP_SYNCNT, 1)
    lab.connect("client", cli)
    srv = lab.accept("server", lst)
    if srv is not None:
        lab.send("client_queued", first, b"hello\r\n")
        lab.recv("server", srv)


@scenario("keepalive_timeout", "keepalive probes unanswered", """
    After a complete exchange the server's segments are dropped (nft, output hook). The client
    has SO_KEEPALIVE with TCP_KEEPIDLE 1 s, TCP_KEEPINTVL 1 s, TCP_KEEPCNT 2 and waits in
    recv(): two probes go unanswered and the kernel drops the connection.""", **SLOW)
def keepalive_timeout(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPIDLE, 1)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPINTVL, 1)
    cli.setsockopt(socket.IPPROTO_TCP, socket.TCP_KEEPCNT, 2)
    lab.nft(output=[f"tcp sport {lab.port} drop"])
    cli.settimeout(8.0)
    lab.recv("client", cli)
    lab.send("client", cli, b"anyone there?\r\n")


@scenario("backlog_overflow_recovers", "a full accept queue drops the final ACK, then drains", """
    The server listens with backlog 0 (room for one connection) and does not accept() for a
    while. Two clients connect at once through a delay line, so both SYNs are answered before
    either final ACK arrives: the first ACK fills the queue, the second client's ACK is
    dropped. That client believes it is connected and sends its request, which is dropped too;
    the server retransmits its SYN/ACK. After 2.5 s the server accepts the first connection,
    the second completes, gets its answer and both sides close normally.""",
          case="backlog_overflow", **SLOW)
def backlog_overflow_recovers(lab: Lab) -> None:
    from analyzer.lab.scenarios.common import delay_line, remove_delay_line

    lst = lab.listener(backlog=0)
    first = lab.client(side="client_queued")
    cli = lab.client(timeout=10.0)
    first.setblocking(False)
    delay_line(lab)
    lab.call("client_queued", "connect", first.connect_ex, lab.server_addr,
             ok=lambda r: "ok" if r == 0 else errno.errorcode.get(r, str(r)))
    lab.connect("client", cli)
    lab.sleep(0.3)  # both final ACKs leave the delay line (deleting it would drop them)
    remove_delay_line(lab)
    lab.send("client", cli, b"GET /slow\r\n")
    lab.sleep(2.5)  # no accept(): the queue stays full
    lst.settimeout(8.0)  # the second completes at the client's next retransmission
    queued = lab.accept("server_queued", lst)
    srv = lab.accept("server", lst)
    if srv is None:
        return
    srv.settimeout(6.0)
    lab.recv("server", srv)
    lab.send("server", srv, b"200 OK\r\n")
    lab.recv("client", cli)
    lab.close("client", cli)
    lab.recv("server", srv)
    lab.close("server", srv)
    if queued is not None:
        queued.close()
    lab.sleep(0.1)
