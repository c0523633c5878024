"""Variants that change only what the wire hides (issue 14, "certain means certain"): the order
of request and answer, payloads smaller and larger than the window-scale granularity, on a fresh
connection and on one whose receive window has settled (the delays are in delays.py). Each is
labelled with its catalog case by the kernel's own account; none may get a verdict that is
wrong yet certain.

The namespace's loopback gets a 1500-byte MTU, so segments and windows have the sizes of a real
path (the loopback's 64 KB MSS would round every window change away).
"""

from __future__ import annotations

from analyzer.lab import verify
from analyzer.lab.context import Lab
from analyzer.lab.model import scenario
from analyzer.lab.netns import run
from analyzer.lab.scenarios.common import pair

# below and above the window scale's unit (1024 B at the wscale 10 this kernel offers)
SMALL, LARGE = 13, 3000


def _real_mtu(lab: Lab) -> None:
    run(["ip", "-n", lab.ns.name, "link", "set", "lo", "mtu", "1500"])
    lab.note("Loopback MTU 1500 in the namespace.")


def _answer_unread(lab: Lab, size: int) -> None:
    """The request arrives, the server answers without reading it, then closes (as a process
    killed after writing): tcp_close() finds the request unread and resets."""
    _real_mtu(lab)
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"G" * size)
    lab.sleep(0.05)  # the request is in the server's receive queue, ACKed
    lab.send("server", srv, b"200 OK\r\n")
    lab.sleep(0.05)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.recv("client", cli)


@scenario("unread_answered_small", "the server answers a small request it never read, then "
          "closes", """
    A 13-byte request arrives and is ACKed; the server writes its answer without reading it,
    then closes: RST/ACK (unread data). The answer comes after the request on the wire, as
    after a complete exchange; the window does not show 13 bytes.""",
          case="unread_data_reset", variant=True)
def unread_answered_small(lab: Lab) -> None:
    _answer_unread(lab, SMALL)


@scenario("unread_answered_large", "the server answers a large request it never read, then "
          "closes", """
    As unread_answered_small with a 3000-byte request. Measured on 6.18: the server's
    advertised window grew (receive autotuning) exactly as when the request is read, so the
    3000 unread bytes do not show on a fresh connection.""", case="unread_data_reset", variant=True)
def unread_answered_large(lab: Lab) -> None:
    _answer_unread(lab, LARGE)


@scenario("abortive_read_large", "SO_LINGER 0 after reading a large request and answering", """
    A 3000-byte request, read in full by the server, which answers and closes with
    SO_LINGER {1, 0}: RST/ACK with nothing unread; on the wire the same windows as
    unread_answered_large.""",
          case="abortive_close", variant=True)
def abortive_read_large(lab: Lab) -> None:
    _real_mtu(lab)
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"G" * LARGE)
    got = 0
    for _ in range(20):  # bounded: the request arrives in a few segments
        data = lab.recv("server", srv)
        got += len(data or b"")
        if not data or got >= LARGE:
            break
    lab.send("server", srv, b"200 OK\r\n")
    lab.recv("client", cli)
    lab.sleep(0.05)
    lab.linger0(srv)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)


def _settled(lab: Lab, rounds: int = 40):
    """A pair whose server has read `rounds` 3000-byte requests and answered each: receive
    autotuning has had its round trips, so the server's window no longer grows per segment."""
    _real_mtu(lab)
    _, cli, srv = pair(lab)
    for _ in range(rounds):
        cli.sendall(b"g" * LARGE)
        got = 0
        for _ in range(20):  # bounded: the request arrives in a few segments
            data = srv.recv(65536)
            got += len(data)
            if not data or got >= LARGE:
                break
        srv.sendall(b"ok\r\n")
        cli.recv(64)
        lab.sleep(0.005)  # one request per round trip: no corking, no burst for autotuning
    lab.log("both", f"{rounds} round trips of {LARGE} B read and answered", "ok")
    lab.sleep(0.25)  # past the delayed ACKs: the last window the server advertised stands
    return cli, srv


def _settled_then(lab: Lab, size: int, read: bool) -> None:
    cli, srv = _settled(lab)
    cli.settimeout(5.0)
    lab.call("client", "sendall", cli.sendall, b"G" * size, ok=lambda _: f"ok:{size}")
    lab.sleep(0.05)
    if read:
        got = 0
        for _ in range(20):
            data = lab.recv("server", srv)
            got += len(data or b"")
            if not data or got >= size:
                break
    lab.send("server", srv, b"200 OK\r\n")
    lab.sleep(0.05)
    if read:
        lab.linger0(srv)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.recv("client", cli)


# Measured on 6.18 (wscale 10, unit 1024 B; IPv4 and IPv6 alike): after the round trips the
# server's window settles at 98 units (100352 B) by the 5th and stays there. A request then
# arrives; the server's ACK of it, its answer 50 ms later, then its RST/ACK (raw window):
#   13 B / 3000 B:  98, 98, 98 whether read or not (the unread bytes fit the headroom between
#                   the window and the buffer's free space: no mark);
#   10000 B:        92, then 92 unread / 98 read;   30000 B: 77, then 77 unread / 98 read;
#   60000 B:        53, then 53 unread / 98 read.
# The RST/ACK is back at 98 either way (tcp_close() frees the queue before the reset). So the
# window shows unread bytes only beyond a few KB, smaller than them (10000 -> 6144 B), and only
# for the moment of the closer's segment that carries it: an application may still read after
# its answer and before a linger-0 close. The same figures in every run (3 sweeps of 3000,
# 10000 and 30000 B read and unread, IPv4 and IPv6, 36 connections, plus these captures).
SETTLED_SHOWS = 30000  # where the mark shows (the ACK's window already 21 units down)


@scenario("settled_unread_small", "after 40 round trips, a small request left unread", """
    40 round trips of 3000-byte requests read and answered (the server's window settles at
    98 x 1024 B), then a 13-byte request that the server answers without reading, and
    close(): RST/ACK (TCP_ABORT_ON_CLOSE). Every server segment advertises 98: no mark.""",
          case="unread_data_reset", variant=True)
def settled_unread_small(lab: Lab) -> None:
    _settled_then(lab, SMALL, read=False)


@scenario("settled_unread_large", "after 40 round trips, a large request left unread", """
    As settled_unread_small with a 3000-byte request: still 98 on the ACK, the answer and the
    RST (on 6.18 the unread 3000 bytes fit the buffer's headroom: no mark).""",
          case="unread_data_reset", variant=True)
def settled_unread_large(lab: Lab) -> None:
    _settled_then(lab, LARGE, read=False)


@scenario("settled_read_large", "after 40 round trips, a large request read, SO_LINGER 0", """
    As settled_unread_large, but the server reads the request before answering and closes with
    SO_LINGER {1, 0}: RST/ACK (TCP_STATE); the same windows (98) as settled_unread_large.""",
          case="abortive_close", variant=True)
def settled_read_large(lab: Lab) -> None:
    _settled_then(lab, LARGE, read=True)


@scenario("settled_unread_30k", "after 40 round trips, a 30000-byte request left unread", """
    As settled_unread_large with a 30000-byte request. Measured on 6.18: the server's ACK of
    it advertises 77 x 1024 B (98 before), its answer still 77 (the request unread), its RST/ACK
    98 again (tcp_close() freed the queue first).""", case="unread_data_reset", variant=True)
def settled_unread_30k(lab: Lab) -> None:
    _settled_then(lab, SETTLED_SHOWS, read=False)


@scenario("settled_read_30k", "after 40 round trips, a 30000-byte request read, SO_LINGER 0", """
    The twin of settled_unread_30k where the server reads the request before answering and
    closes with SO_LINGER {1, 0}. Measured on 6.18: the ACK of the request advertises 77, the
    answer 98 (the read freed the buffer), the RST/ACK 98.""",
          case="abortive_close", variant=True)
def settled_read_30k(lab: Lab) -> None:
    _settled_then(lab, SETTLED_SHOWS, read=True)

def _register_checks() -> None:
    verify.CHECKS["settled_unread_small"] = verify.CHECKS["unread_answered_small"]
    verify.CHECKS["settled_unread_large"] = verify.CHECKS["unread_answered_small"]
    verify.CHECKS["settled_unread_30k"] = verify.CHECKS["unread_answered_small"]
    verify.CHECKS["settled_read_large"] = verify.CHECKS["abortive_read_large"]
    verify.CHECKS["settled_read_30k"] = verify.CHECKS["abortive_read_large"]


_register_checks()
