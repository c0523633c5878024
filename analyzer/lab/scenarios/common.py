"""Building blocks shared by the scenarios: a connected pair, a request/response, a delay line."""

from __future__ import annotations

import socket

from analyzer.lab.context import Lab

TCP_REPAIR = 19
TCP_USER_TIMEOUT = 18
TCP_SYNCNT = 7


def pair(lab: Lab, *, backlog: int = 8):
    """Listener, connected client and the accepted server socket."""
    lst = lab.listener(backlog)
    cli = lab.client()
    if not lab.connect("client", cli):
        raise RuntimeError("connect failed while setting up the pair")
    srv = lab.accept("server", lst)
    if srv is None:
        raise RuntimeError("accept failed while setting up the pair")
    return lst, cli, srv


def exchange(lab: Lab, cli: socket.socket, srv: socket.socket) -> None:
    """A complete request/response, each side reading everything the other sent."""
    lab.send("client", cli, b"GET /status\r\n")
    lab.recv("server", srv)
    lab.send("server", srv, b"200 OK\r\n")
    lab.recv("client", cli)


def delay_line(lab: Lab, rate: str = "16kbit") -> None:
    """Hold the next packets on the namespace's loopback for a few tens of milliseconds each.

    This kernel has neither netem nor the plug qdisc. A token bucket with a tiny bucket is the
    delay line instead: a filler datagram (to a UDP socket that silently takes it, so no ICMP)
    empties the bucket, and every TCP segment sent after it waits its turn (74-byte SYN at
    16 kbit/s: ~37 ms). Packets that are queued together keep their order, so two segments sent
    "at the same time" by the two sides really cross: neither arrives before the other was sent.
    """
    lab.ns.tc(["qdisc", "add", "dev", "lo", "root", "tbf", "rate", rate, "burst", "200",
               "limit", "30000"])
    # Both ends of the filler use fixed low ports (echo -> discard), outside the capture's
    # port range, so the datagram is not in the pcap.
    sink = socket.socket(lab.af, socket.SOCK_DGRAM)
    lab._socks.append(sink)
    sink.bind((lab.host, 9))
    size = 200 - 14 - (28 if lab.family == 4 else 48)  # exactly the bucket: it ends empty
    with socket.socket(lab.af, socket.SOCK_DGRAM) as filler:
        filler.bind((lab.host, 7))
        filler.sendto(b"\0" * size, sink.getsockname()[:2])
    lab.note(f"Delay line: tbf rate {rate} burst 200 on the namespace's lo, emptied by a filler "
             "UDP datagram, so the segments that follow are held and cross.")


def remove_delay_line(lab: Lab) -> None:
    lab.ns.tc(["qdisc", "del", "dev", "lo", "root"])
