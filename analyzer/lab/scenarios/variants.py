"""Variants that change only what the wire hides (issue 14, "certain means certain"): the order
of request and answer, payloads smaller and larger than the window-scale granularity. Each is
labelled with its catalog case by the kernel's own account; none may get a verdict that is
wrong yet certain.

The namespace's loopback gets a 1500-byte MTU, so segments and windows have the sizes of a real
path (the loopback's 64 KB MSS would round every window change away).
"""

from __future__ import annotations

from analyzer.lab.context import Lab
from analyzer.lab.model import scenario
from analyzer.lab.netns import run
from analyzer.lab.scenarios.common import pair

SMALL, LARGE = 13, 3000  # below and above the window scale's unit (128 B at wscale 7)


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
