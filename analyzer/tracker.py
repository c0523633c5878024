"""Connection tracking: which connection does each segment belong to, and when is one over.

Connections are keyed by their unordered 4-tuple plus a generation: a SYN on a tuple whose
connection has closed (FIN or RST seen), or a SYN with a new ISN while the old attempt is still
unanswered, starts a new connection (port reuse). Idle connections are evicted after timeouts
taken from the capture's own clock, so memory is bounded by the connections open at once, not by
the file. Finished connections are handed to ``on_finish`` as soon as they are known to be over.
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from itertools import islice

from analyzer.connection import Connection
from analyzer.segment import ACK, RST, SYN, Segment
from analyzer.zeek import ZeekView, starts_new_connection


@dataclass(slots=True)
class Timeouts:
    """Eviction timeouts, in capture seconds (Zeek's defaults, which suit an observer too)."""

    idle: float = 300.0  # a connection silent this long is over (tcp_inactivity_timeout)
    closed: float = 5.0  # a closed connection lingers this long for its last ACKs / RSTs
    sweep_every: float = 1.0  # look for idle connections at most once per capture second
    # at most this many connections open at once: past it, the least recently active one is
    # finished early (a SYN flood's spoofed attempts go first, being the oldest), so memory has
    # a ceiling whatever the capture holds
    max_active: int = 100_000


Key = tuple[tuple[str, int], tuple[str, int]]


def _key(seg: Segment) -> Key:
    return _pair_key((seg.src, seg.sport), (seg.dst, seg.dport))


def _pair_key(a: tuple[str, int], b: tuple[str, int]) -> Key:
    return (a, b) if a <= b else (b, a)


def _guess_roles(seg: Segment, key: Key) -> tuple[tuple[str, int], tuple[str, int]]:
    """(client, server) for the first segment seen of a connection (the key's own tuples)."""
    src, dst = key if key[0] == (seg.src, seg.sport) else (key[1], key[0])
    flags = seg.flags
    if flags & SYN and not flags & ACK:
        return src, dst
    if flags & SYN:  # a SYN/ACK comes from the server
        return dst, src
    if seg.is_icmp:  # the quoted segment was sent by whoever gets the error; assume the client
        return src, dst
    if flags & RST and not flags & ACK:
        return dst, src  # a bare RST usually answers a client's stray segment
    # mid-stream: the well-known (or lower) port is the server's
    if (seg.sport < 1024) != (seg.dport < 1024):
        return (dst, src) if seg.sport < 1024 else (src, dst)
    return (dst, src) if seg.sport < seg.dport else (src, dst)


class Tracker:
    """Feeds segments to connections; calls ``on_finish(conn)`` once per finished connection."""

    def __init__(self, on_finish: Callable[[Connection], None],
                 timeouts: Timeouts | None = None,
                 on_end: Callable[[Connection], None] | None = None,
                 zeek_options: dict | None = None):
        self.on_finish = on_finish
        opts = dict(zeek_options or {})
        # split connections where Zeek would (attempt timeout, close delay, ...), so rows can be
        # compared one to one with a Zeek conn.log; off by default: those splits are Zeek's
        # bookkeeping, not TCP's (a FIN, seven quiet seconds, then the peer's FIN is one close)
        self.zeek_boundaries = bool(opts.pop("boundaries", False))
        self.zeek_options = opts  # ZeekView keywords: bare_mode, ignore_checksums
        # called once, at the segment that ends a connection (live mode prints it at once);
        # the connection still collects its last ACKs until on_finish
        self.on_end = on_end
        self.ended_ids: set[int] = set()
        self.timeouts = timeouts or Timeouts()
        self.active: OrderedDict[Key, Connection] = OrderedDict()  # least recently used first
        self.next_id = 0
        self.last_sweep = None
        self.peak_active = 0
        self.evicted_early = 0  # connections finished early because max_active was reached
        # the connections a sweep found neither expired nor ended, untouched since (conn id ->
        # its place in the LRU order): they are the first len(quiet) of ``active`` (a touch
        # moves a connection to the end); by_end holds them by last packet, to find the ones
        # idle past the timeout without walking the others (see sweep)
        self.quiet: dict[int, int] = {}
        self.by_end: list[tuple] = []  # heap of (end, place, key); stale entries skipped
        self.places = 0

    def feed(self, seg: Segment) -> None:
        key = _key(seg)
        conn = self.active.get(key)
        if conn is not None and self._starts_new(conn, seg):
            self._finish(key, conn)
            conn = None
        if conn is None:
            client, server = _guess_roles(seg, key)
            conn = Connection(self.next_id, seg, client, server)
            self.next_id += 1
            conn.zeek = ZeekView(**self.zeek_options)
            self.active[key] = conn
            if len(self.active) > self.timeouts.max_active:
                oldest = next(iter(self.active))
                self.evicted_early += 1
                self._finish(oldest, self.active[oldest])
            self.peak_active = max(self.peak_active, len(self.active))
        else:
            self.active.move_to_end(key)
            self.quiet.pop(conn.conn_id, None)
        if seg.is_icmp:
            conn.observe_icmp(seg)
        else:
            conn.observe(seg)
            conn.zeek.observe(seg)
        if self.on_end is not None and conn.conn_id not in self.ended_ids and conn.ended:
            self.ended_ids.add(conn.conn_id)
            self.on_end(conn)
        self.tick(seg.ts)

    def tick(self, ts: float) -> None:
        """The capture clock reached ``ts``: sweep at most once per ``sweep_every``."""
        if self.last_sweep is None:
            self.last_sweep = ts
        elif ts - self.last_sweep >= self.timeouts.sweep_every:
            self.sweep(ts)

    def _starts_new(self, conn: Connection, seg: Segment) -> bool:
        if self.zeek_boundaries and not seg.is_icmp \
                and starts_new_connection(conn.zeek, seg, conn.end):
            return True
        idle = seg.ts - conn.end
        if idle > self.timeouts.idle:
            return True
        if seg.is_icmp:
            return False
        if conn.ended and idle > self.timeouts.closed:
            return True
        flags = seg.flags
        if not flags & SYN or flags & (ACK | RST):
            return False
        if conn.any_closed:
            return True
        # a SYN from the same side with another ISN: a new attempt on the same ports
        role = conn.role_of(seg)
        isn = conn.sent[role].isn
        return role == "client" and isn is not None and isn != seg.seq \
            and not conn.sent["server"].packets

    def sweep(self, now: float) -> None:
        """Finish connections idle past their timeout (oldest activity first).

        The connections walked are those before the first one active less than ``closed`` ago;
        those finished are the ones idle past ``idle`` or ended. A connection left open by a
        sweep stays as it was until touched (its idle time only grows, its ``ended`` does not
        change), so the next sweeps skip these quiet ones at the head, taking from them only
        those now idle past the timeout (by_end), in their LRU order: a capture with many idle
        open connections is not walked again at every sweep."""
        self.last_sweep = now
        t = self.timeouts
        quiet, by_end = self.quiet, self.by_end
        active = self.active
        if len(by_end) > 2 * len(quiet) + 4096:  # mostly stale (touched, evicted): rebuild
            by_end[:] = [(c.end, quiet[c.conn_id], k) for k, c in islice(active.items(),
                                                                          len(quiet))]
            heapq.heapify(by_end)
        gone = []  # quiet ones idle past the timeout now: (place, key, conn)
        while by_end and now - by_end[0][0] > t.idle:
            _end, place, key = heapq.heappop(by_end)
            conn = active.get(key)
            if conn is not None and quiet.get(conn.conn_id) == place:
                gone.append((place, key, conn))
        gone.sort(key=lambda g: g[0])
        expired = [(key, conn) for _place, key, conn in gone]
        for key, conn in islice(active.items(), len(quiet), None):
            end = conn.end
            idle = now - end
            if idle < t.closed:
                break  # ordered by last activity: everything after is younger
            if idle > t.idle or conn.ended:
                expired.append((key, conn))
            else:
                self.places += 1
                quiet[conn.conn_id] = self.places
                heapq.heappush(by_end, (end, self.places, key))
        for key, conn in expired:
            self._finish(key, conn)

    def _finish(self, key: Key, conn: Connection) -> None:
        del self.active[key]
        self.quiet.pop(conn.conn_id, None)
        self.ended_ids.discard(conn.conn_id)
        self.on_finish(conn)

    def close(self) -> None:
        """End of input: every connection still open is finished, in order of first frame."""
        rest = sorted(self.active.values(), key=lambda c: c.conn_id)
        self.active.clear()
        self.quiet.clear()
        self.by_end.clear()
        self.ended_ids.clear()
        for conn in rest:
            self.on_finish(conn)
