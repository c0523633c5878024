"""The everyday resets beyond the documents (issue 14): a listener closed under its queue, a
receiver that stopped reading, a middlebox that forgot an idle connection.

The middlebox scenarios build a path of their own: the scenario's namespace holds the client,
a router namespace forwards with conntrack and nftables (tcp_loose off, a short established
timeout), a server namespace holds the listener. The capture is taken on the client's veth,
where an observer next to the client sits. The two added namespaces are removed by the runner
after the capture stopped (``lab.cleanups``).
"""

from __future__ import annotations

import errno
import socket

from analyzer.lab.context import Lab
from analyzer.lab.model import scenario
from analyzer.lab.netns import NetNs, run
from analyzer.lab.scenarios.common import TCP_USER_TIMEOUT

NFT = {"needs": ("root", "netns", "nft", "tracefs")}
SLOW = {"slow": True, **NFT}


@scenario("listener_closed", "the listener closes while connections wait in its queue", """
    The server listens and never accepts. Three clients connect (their handshakes complete in
    the accept queue); two of them send a request, the third nothing. Then the server closes
    its listening socket (a restart): its kernel resets every queued connection, and a fourth
    client that connects afterwards is refused. The labelled client is the one that sent
    nothing (with data, one connection alone is indistinguishable from unread_data_reset).""",
          **NFT)
def listener_closed(lab: Lab) -> None:
    lst = lab.listener(backlog=8)
    first = lab.client(side="client_a")
    lab.connect("client_a", first)
    other = lab.client(side="client_b")
    lab.connect("client_b", other)
    cli = lab.client()
    lab.connect("client", cli)
    lab.send("client_a", first, b"GET /a\r\n")
    lab.send("client_b", other, b"GET /b\r\n")
    lab.sleep(0.05)
    lab.close("server", lst)
    lab.sleep(0.05)
    for side, s in (("client_a", first), ("client_b", other), ("client", cli)):
        lab.recv(side, s)
    # a port of its own: the reset clients' ports are free again and bind(0) would reuse one
    late = lab.sock()
    late.bind((lab.host, lab.port + 9))
    lab.endpoints["client_late"] = (lab.host, lab.port + 9)
    lab.connect("client_late", late)


@scenario("zero_window_stall", "the receiver stops reading until the sender's user timeout", """
    The server's receive buffer is small and it never reads; the client writes until its
    window is closed and its send buffer full, with TCP_USER_TIMEOUT 3 s. The server's kernel
    keeps answering the zero-window probes with window 0; the client's kernel gives up.""",
          slow=True)
def zero_window_stall(lab: Lab) -> None:
    lst = lab.sock()
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    lst.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    lst.bind(lab.server_addr)
    lst.listen(8)
    lab.endpoints["server"] = lab.server_addr
    cli = lab.client(timeout=10.0)
    cli.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    cli.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 3000)
    lab.connect("client", cli)
    srv = lab.accept("server", lst)
    if srv is None:
        raise RuntimeError("accept failed")
    chunk, total = b"x" * 4096, 0
    for _ in range(400):  # bounded: the window closes after a few tens of KB
        try:
            total += cli.send(chunk, socket.MSG_NOSIGNAL)
        except OSError as exc:
            lab.log("client", "send", f"ok:{total}", note="bytes accepted before the error")
            lab.log("client", "send", errno.errorcode.get(exc.errno or 0, str(exc)))
            break
    else:
        lab.log("client", "send", f"ok:{total}", note="never blocked")
    lab.note("The server never calls recv(); SO_RCVBUF 4096 on its listener, SO_SNDBUF 4096 "
             "and TCP_USER_TIMEOUT 3000 ms on the client.")


# ------------------------------------------------------------------ a path through a router

V4 = {"client": "10.99.1.1", "router_c": "10.99.1.254", "router_s": "10.99.2.254",
      "server": "10.99.2.1", "plen": "24"}
V6 = {"client": "fd00:99:1::1", "router_c": "fd00:99:1::fe", "router_s": "fd00:99:2::fe",
      "server": "fd00:99:2::1", "plen": "64"}
ESTABLISHED_TIMEOUT = 2  # seconds: the router's conntrack forgets an idle connection after it
IDLE = 4.0  # the connection's idle gap, longer than the router's timeout


def _path(lab: Lab, *, reject: bool) -> tuple[NetNs, dict]:
    """client ns (the scenario's) -- router ns (conntrack, nftables) -- server ns."""
    a = V4 if lab.family == 4 else V6
    router, server = NetNs(lab.ns.name + "_r"), NetNs(lab.ns.name + "_s")
    for ns in (router, server):
        ns.create()
        lab.cleanups.append(ns.destroy)
    ip = "ip" if lab.family == 4 else "ip -6"
    extra = "" if lab.family == 4 else " nodad"
    cmds = [
        f"ip -n {lab.ns.name} link add a0 type veth peer name r0 netns {router.name}",
        f"ip -n {router.name} link add r1 type veth peer name s0 netns {server.name}",
        f"{ip} -n {lab.ns.name} addr add {a['client']}/{a['plen']} dev a0{extra}",
        f"{ip} -n {router.name} addr add {a['router_c']}/{a['plen']} dev r0{extra}",
        f"{ip} -n {router.name} addr add {a['router_s']}/{a['plen']} dev r1{extra}",
        f"{ip} -n {server.name} addr add {a['server']}/{a['plen']} dev s0{extra}",
        f"ip -n {lab.ns.name} link set a0 up",
        f"ip -n {router.name} link set r0 up",
        f"ip -n {router.name} link set r1 up",
        f"ip -n {server.name} link set s0 up",
        f"{ip} -n {lab.ns.name} route add default via {a['router_c']}",
        f"{ip} -n {server.name} route add default via {a['router_s']}",
    ]
    for cmd in cmds:
        run(cmd.split())
    router.sysctl_set("net.ipv4.ip_forward", "1")
    router.sysctl_set("net.ipv6.conf.all.forwarding", "1")
    verdict = "reject with tcp reset" if reject else "drop"
    router.nft({"forward": [f"tcp dport {lab.port} ct state invalid {verdict}",
                            f"tcp sport {lab.port} ct state invalid {verdict}"]})
    # conntrack's sysctls exist in a namespace once the rules above loaded it
    router.sysctl_set("net.netfilter.nf_conntrack_tcp_loose", "0")
    router.sysctl_set("net.netfilter.nf_conntrack_tcp_timeout_established",
                      str(ESTABLISHED_TIMEOUT))
    lab.sysctls["router:nf_conntrack_tcp_timeout_established"] = str(ESTABLISHED_TIMEOUT)
    lab.sysctls["router:nf_conntrack_tcp_loose"] = "0"
    lab.note(f"Path: client ns -- router ns (forwarding; nftables forward chain: ct state "
             f"invalid {verdict}; conntrack tcp_loose 0, established timeout "
             f"{ESTABLISHED_TIMEOUT} s) -- server ns. Captured on the client's veth.")
    return server, a


def _idle_then_send(lab: Lab, *, reject: bool) -> None:
    server, a = _path(lab, reject=reject)
    # Resolve the neighbours on both links before the capture (IPv6 took a second, and the
    # handshake's SYN was lost to it): two datagrams to the server's discard port.
    with socket.socket(lab.af, socket.SOCK_DGRAM) as warm:
        for _ in range(2):
            warm.sendto(b"warm-up", (a["server"], 9))
            lab.sleep(0.8)
    lab.start_capture("a0")
    server.enter()
    try:
        lst = lab.sock()
        lst.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        lst.bind((a["server"], lab.port))
        lst.listen(8)
    finally:
        server.leave()
    lab.endpoints["server"] = (a["server"], lab.port)
    lab.host = a["client"]
    cli = lab.client(timeout=12.0)
    if not reject:
        cli.setsockopt(socket.IPPROTO_TCP, TCP_USER_TIMEOUT, 3000)
    if not lab.connect("client", cli, (a["server"], lab.port)):
        raise RuntimeError("connect through the router failed")
    srv = lab.accept("server", lst)
    if srv is None:
        raise RuntimeError("accept failed")
    lab.send("client", cli, b"GET /status\r\n")
    lab.recv("server", srv)
    lab.send("server", srv, b"200 OK\r\n")
    lab.recv("client", cli)
    lab.sleep(IDLE)  # the router forgets the connection meanwhile
    lab.send("client", cli, b"GET /status\r\n")
    lab.recv("client", cli)
    lab.send("client", cli, b"again\r\n")


@scenario("middlebox_idle_timeout", "a router's conntrack forgets an idle connection (reset)", """
    Client and server talk through a router namespace whose conntrack forgets established
    connections after 2 s and whose nftables reject invalid segments with a TCP reset. After a
    complete exchange the connection stays idle 4 s; the client's next request is answered by
    the router's RST, which the server never sends nor learns about.""", **SLOW)
def middlebox_idle_timeout(lab: Lab) -> None:
    _idle_then_send(lab, reject=True)


@scenario("middlebox_idle_timeout_drop", "a router's conntrack forgets an idle connection (drop)",
          """
    As middlebox_idle_timeout, but the router drops invalid segments: after the idle gap the
    client's request is retransmitted until its TCP_USER_TIMEOUT (3 s) expires; the server
    never hears of it.""", case="middlebox_idle_timeout", **SLOW)
def middlebox_idle_timeout_drop(lab: Lab) -> None:
    _idle_then_send(lab, reject=False)
