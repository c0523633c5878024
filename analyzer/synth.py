"""Deterministic synthetic captures: a seed gives the same bytes, always.

``generate(path, packets=N, seed=S, mix=M)`` writes a classic pcap (Ethernet; IPv4 and IPv6; TCP
with correct checksums, timestamps option on most connections) of many interleaved connections,
each scripted (``analyzer.synth_cases``) to end as one case of the catalog. Mixes:

- ``teardowns``: every case of the catalog the scripts cover, plus bulk downloads whose data
  segments dominate the packet count;
- ``syn_flood``: SYNs from distinct spoofed 4-tuples (about 70 % of the packets), half of them
  answered by RST/ACK (``refused``), the rest never (``syn_timeout``), over teardown traffic;
- ``rst_storm``: blind reset attacks over teardown traffic: storms of RSTs spread across the
  receive window of established connections, and sequence-number sweeps (a RST at every offset
  around a small window, below it, or past the exact number): ``ignored_reset``, or
  ``injected_reset`` when one hits.
- ``short``: the shape where resets live, about 13 packets a connection: HTTP/1.0-like exchanges
  closed by the server, refusals, resets of unread data, linger-0 aborts, SYNs to silent hosts
  retried with backoff, writes after the peer's close; 20 % IPv6 by default, documentation
  addresses (198.51.100.0/24 and 2001:db8:c::/64 clients, 203.0.113.0/24 and 2001:db8:5::/64
  servers).

The file is streamed: segments wait in a buffer only until no connection yet to start can precede
them, so memory follows the connections open at once, not the file. It holds at least
``packets`` packets: connections already started are finished after the count is reached.

    python -m analyzer.synth OUT.pcap --packets N [--seed S] [--mix M] [--ipv6-share F] [--force]
    python -m analyzer.synth OUT.pcap --packets N --mix short
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import queue
import random
import sys
import threading
import time
from bisect import bisect_left
from collections import Counter
from operator import itemgetter

from analyzer.segment import ACK, RST, SYN
from analyzer.synth_cases import SCRIPTS, SHORT_SCRIPTS, Conn, storm, sweep
from analyzer.synth_wire import PCAP_HEADER, Payloads, Side, frame, syn_options

MIXES = ("teardowns", "syn_flood", "rst_storm", "short")
T0 = 1_700_000_000 * 1_000_000  # capture start, microseconds since the epoch
CLIENTS = 4096  # client hosts; connection i uses host i % CLIENTS, port 32768 + i // CLIENTS
SERVERS = 48
PORTS = (443, 80, 8080, 5432, 6379, 3306, 22, 9999)
FLUSH_AT = 1 << 14  # buffered segments before a flush is tried
_KEY = itemgetter(1)


def _v4(net: int, i: int) -> bytes:
    return (net + i).to_bytes(4, "big")


def _v6(net: int, i: int) -> bytes:
    return (net + i).to_bytes(16, "big")


V4_CLIENT, V4_SERVER, V4_DARK = (int(ipaddress.ip_address(a)) for a in
                                 ("10.1.0.1", "192.0.2.1", "198.51.100.1"))
V4_SPOOF = int(ipaddress.ip_address("100.64.0.1"))
V6_CLIENT, V6_SERVER, V6_DARK, V6_SPOOF = (int(ipaddress.ip_address(a)) for a in (
    "2001:db8:1::1", "2001:db8:2::1", "2001:db8:3::1", "2001:db8:f::1"))


# The short mix's hosts (its own, so that the other mixes' bytes never change): clients, listening
# servers, and hosts that answer nothing (SYN timeouts), each family in its documentation range.
SHORT_CLIENTS = {False: (int(ipaddress.ip_address("198.51.100.1")), 254),
                 True: (int(ipaddress.ip_address("2001:db8:c::1")), 1024)}
SHORT_SERVERS = {False: int(ipaddress.ip_address("203.0.113.10")),
                 True: int(ipaddress.ip_address("2001:db8:5::10"))}
SHORT_DARK = {False: int(ipaddress.ip_address("203.0.113.200")),
              True: int(ipaddress.ip_address("2001:db8:5::dead:0"))}
SHORT_NSERVERS = SHORT_NDARK = 32
SHORT_PORTS = (80, 80, 80, 8080, 8000)  # where the servers listen
SHORT_CLOSED = (81, 3000, 8081, 9000)  # where nothing does (refusals)
EPHEMERAL, EPHEMERAL_SPAN = 32768, 61000 - 32768  # Linux's ip_local_port_range
# about a short-mix connection's mean lifetime (SYN timeouts last seconds, most others tens of
# ms): the mean gap between starts is this over ``concurrency``
SHORT_LIFE = 400_000


def endpoint_text(addr: bytes, port: int) -> str:
    """As ``analyzer.pipeline.endpoint_text`` prints a client."""
    a = ipaddress.ip_address(addr)
    return f"[{a.compressed}]:{port}" if a.version == 6 else f"{a}:{port}"


class _Gen:
    def __init__(self, f, seed: int, mix: str, ipv6_share: float, bulk: tuple[int, int],
                 storm_rsts: int, truth: bool):
        self.f, self.mix, self.ipv6_share = f, mix, ipv6_share
        self.rng = random.Random(seed)
        self.rnd = self.rng.random
        self.pay = Payloads(seed)
        self.bulk, self.storm = bulk, storm_rsts
        self.buf: list[tuple[int, bytes]] = []
        self.generated = self.written = self.conns = self.flood = 0
        self.cases: Counter[str] = Counter()
        self.truth: dict[str, str] | None = {} if truth else None
        self.deck: list[tuple] = []
        self.macs = [bytes((2, 0, 0, 0, i >> 8, i & 255)) for i in range(256)]
        self.next_port: dict[bool, list[int]] = {}  # short mix: each client's next port

    def push(self, t: int, rec: bytes) -> None:
        self.buf.append((t, rec))
        self.generated += 1

    def flush(self, before: int | None) -> None:
        """Write the buffered records older than ``before`` (all if None), in time order."""
        buf = self.buf
        buf.sort()
        cut = len(buf) if before is None else bisect_left(buf, (before,))
        if cut:
            self.f.put(b"".join(map(_KEY, buf[:cut])))
            self.written += cut
            del buf[:cut]

    def _draw(self):
        if not self.deck:
            self.deck = [(fn, case) for fn, case, w in SCRIPTS for _ in range(w)]
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def _sides(self, v6: bool, cip: bytes, sip: bytes, cport: int, sport: int, hop: int):
        rnd = self.rnd
        cmac, smac = self.macs[hop], self.macs[255 - hop]
        ct = (64 if rnd() < 0.8 else 128) - (hop & 7)  # hops from the client to the observer
        st = 64 - 2 - hop % 13
        return (Side(v6, cmac, smac, cip, sip, cport, sport, ct, int(rnd() * 65536)),
                Side(v6, smac, cmac, sip, cip, sport, cport, st, int(rnd() * 65536)))

    def connection(self, t: int, script, case: str | None) -> None:
        i = self.conns
        self.conns += 1
        rnd = self.rnd
        v6 = rnd() < self.ipv6_share
        host, cport = i % CLIENTS, 32768 + (i // CLIENTS) % 28000
        k = int(rnd() * SERVERS)
        dark = script.__name__ == "syn_timeout"
        if v6:
            cip, sip = _v6(V6_CLIENT, host), _v6(V6_DARK if dark else V6_SERVER, k)
        else:
            cip, sip = _v4(V4_CLIENT, host), _v4(V4_DARK if dark else V4_SERVER, k)
        sport = PORTS[k % len(PORTS)] + (1 if script.__name__ == "refused" else 0)
        conn = Conn(self, t, self._sides(v6, cip, sip, cport, sport, host & 255),
                    rnd() < 0.8, rnd)
        got = script(conn)
        case = got or case
        self.cases[case] += 1
        if self.truth is not None:
            self.truth[endpoint_text(cip, cport)] = case

    def _draw_short(self):
        if not self.deck:
            self.deck = [(fn, case) for fn, case, w in SHORT_SCRIPTS for _ in range(w)]
            self.rng.shuffle(self.deck)
        return self.deck.pop()

    def short_connection(self, t: int) -> None:
        """One connection of the short mix. Each client host takes its ports in turn from a
        random start, as connect() does, so no client endpoint repeats within a file until a
        host has made 28,232 connections (the labels are keyed by client endpoint)."""
        script, case = self._draw_short()
        rnd = self.rnd
        v6 = rnd() < self.ipv6_share
        base, hosts = SHORT_CLIENTS[v6]
        ports = self.next_port[v6]
        host = int(rnd() * hosts)
        cport = EPHEMERAL + ports[host] % EPHEMERAL_SPAN
        ports[host] += 1
        k = int(rnd() * SHORT_NSERVERS)
        name = script.__name__
        if name == "syn_backoff":
            sip, sport = SHORT_DARK[v6] + int(rnd() * SHORT_NDARK), SHORT_PORTS[k % 5]
        elif name == "refused":
            sip, sport = SHORT_SERVERS[v6] + k, SHORT_CLOSED[int(rnd() * 4)]
        else:
            sip, sport = SHORT_SERVERS[v6] + k, SHORT_PORTS[k % 5]
        size = 16 if v6 else 4
        cip, sip_b = (base + host).to_bytes(size, "big"), sip.to_bytes(size, "big")
        conn = Conn(self, t, self._sides(v6, cip, sip_b, cport, sport, host & 255),
                    rnd() < 0.8, rnd)
        script(conn)
        self.conns += 1
        self.cases[case] += 1
        if self.truth is not None:
            self.truth[endpoint_text(cip, cport)] = case

    def run_short(self, packets: int, concurrency: int) -> None:
        rng = self.rng
        for v6 in (False, True):
            self.next_port[v6] = [int(rng.random() * EPHEMERAL_SPAN)
                                  for _ in range(SHORT_CLIENTS[v6][1])]
        gap = SHORT_LIFE / max(1, concurrency)
        t = T0
        while self.generated < packets:
            t += 1 + int(rng.expovariate(1.0 / gap))  # arrivals as a Poisson process
            self.short_connection(t)
            if len(self.buf) >= FLUSH_AT:
                self.flush(t)
        self.flush(None)

    def flood_syn(self, t: int) -> None:
        """One spoofed SYN (its own 4-tuple), answered by RST/ACK one time in two."""
        i = self.flood
        self.flood += 1
        rnd = self.rnd
        v6 = rnd() < self.ipv6_share
        cport = 1024 + int(rnd() * 64000)
        if v6:
            cip, sip = _v6(V6_SPOOF, i), _v6(V6_SERVER, 0)
        else:
            cip, sip = _v4(V4_SPOOF, i), _v4(V4_SERVER, 0)
        cs, sc = self._sides(v6, cip, sip, cport, 80, i & 255)
        isn = int(rnd() * 0xFFFFFFFF)
        self.push(t, frame(self.pay, cs, t, SYN, isn, 0, 65535, 0, None, 0,
                           syn_options(1460, None, 0)))
        case = "syn_timeout"
        if rnd() < 0.5:
            case = "refused"
            self.push(t + 300, frame(self.pay, sc, t + 300, RST | ACK, 0, (isn + 1) & 0xFFFFFFFF,
                                     0, 0, None, 0))
        self.cases[case] += 1
        if self.truth is not None:
            self.truth[endpoint_text(cip, cport)] = case

    def run(self, packets: int, concurrency: int) -> None:
        self.f.put(PCAP_HEADER)
        if self.mix == "short":
            self.run_short(packets, concurrency)
            return
        rnd = self.rnd
        t = T0
        gap = max(1, 2_000_000 // max(1, concurrency))  # connections last ~2 s on average
        while self.generated < packets:
            if self.mix == "syn_flood" and self.flood * 10 < self.generated * 5:
                t += 1 + int(rnd() * 40)
                self.flood_syn(t)
            else:
                t += 1 + int(rnd() * 2 * gap)
                attack = rnd() if self.mix == "rst_storm" else 1.0
                if attack < 0.4:  # storms and sweeps, one in five connections each
                    self.connection(t, storm if attack < 0.2 else sweep, None)
                else:
                    fn, case = self._draw()
                    self.connection(t, fn, case)
            if len(self.buf) >= FLUSH_AT:
                self.flush(t)
        self.flush(None)


def _write_all(f, chunks: queue.Queue, errors: list) -> None:
    while (blob := chunks.get()) is not None:
        if not errors:  # after a failure keep draining, so the producer never blocks
            try:
                f.write(blob)
            except OSError as e:
                errors.append(e)


def generate(path: str, *, packets: int, seed: int = 0, mix: str = "teardowns",
             ipv6_share: float | None = None, truth: bool = False,
             bulk: tuple[int, int] = (100, 2000),
             storm_rsts: int = 256, concurrency: int = 300) -> dict:
    """Write a synthetic capture of at least ``packets`` packets to ``path``.

    Returns {"packets": written, "connections": n, "cases": {case: connections}} and, with
    ``truth``, "truth": {client endpoint text (as rstscope prints it): intended case}.
    ``bulk``: range of data segments of a bulk download; ``storm_rsts``: RSTs per reset storm;
    ``concurrency``: about how many connections are open at once. ``ipv6_share``: by default
    0.2 for the short mix, 0.3 for the others.
    """
    if mix not in MIXES:
        raise ValueError(f"mix must be one of {', '.join(MIXES)}")
    if ipv6_share is None:
        ipv6_share = 0.2 if mix == "short" else 0.3
    with open(path, "wb", buffering=0) as f:
        # a writer thread: the kernel's copy of each chunk overlaps the encoding of the next
        chunks: queue.Queue[bytes | None] = queue.Queue(maxsize=2)
        errors: list[OSError] = []
        writer = threading.Thread(target=_write_all, args=(f, chunks, errors), daemon=True)
        writer.start()
        g = _Gen(chunks, seed, mix, ipv6_share, bulk, storm_rsts, truth)
        try:
            g.run(packets, concurrency)
        finally:
            chunks.put(None)
            writer.join()
        if errors:
            raise errors[0]
    out = {"packets": g.written, "connections": g.conns + g.flood,
           "cases": dict(sorted(g.cases.items()))}
    if truth:
        out["truth"] = g.truth
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m analyzer.synth", description=__doc__.split(
        "\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("out", help="pcap file to write")
    ap.add_argument("--packets", type=int, required=True)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--mix", choices=MIXES, default="teardowns")
    ap.add_argument("--ipv6-share", type=float, default=None,
                    help="share of IPv6 connections (default 0.2 for short, else 0.3)")
    ap.add_argument("--truth", metavar="JSON", help="also write {client: intended case} here")
    ap.add_argument("--force", action="store_true", help="overwrite OUT and JSON if they exist")
    a = ap.parse_args(argv)
    from analyzer.errors import RstscopeError
    from analyzer.report import export

    if a.packets <= 0:
        ap.error("--packets must be positive")
    res: dict = {}

    def write_capture(tmp: str) -> None:
        res.update(generate(tmp, packets=a.packets, seed=a.seed, mix=a.mix,
                            ipv6_share=a.ipv6_share, truth=bool(a.truth)))

    def write_truth(tmp: str) -> None:
        with open(tmp, "w") as f:
            json.dump(res.pop("truth"), f, indent=0, sort_keys=True)

    t = time.perf_counter()
    try:
        export.check_distinct(a.out, a.truth)
        for out in (a.out, a.truth):
            if out:  # refused before minutes of generating; publishing is what guarantees it
                export.check_writable(out, a.force)
        # written beside and published whole: never over an existing file without --force
        export.write_new(a.out, a.force, write_capture, suffix=".pcap")
        dt = time.perf_counter() - t
        if a.truth:
            export.write_new(a.truth, a.force, write_truth, suffix=".json")
    except RstscopeError as e:
        print(f"{ap.prog}: {e}", file=sys.stderr)
        return e.exit_code
    except OSError as e:
        print(f"{ap.prog}: {a.out}: cannot write: {e.strerror or e}", file=sys.stderr)
        return 2
    res["seconds"] = round(dt, 2)
    res["packets_per_s"] = round(res["packets"] / dt) if dt else None
    json.dump(res, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
