"""The client's side: chunk results, in capture order, become the sequential pipeline's records.

What one process would have done, and how the merge gets the same answer:

- **Connections across a cut.** For every 4-tuple still open before a chunk, the worker's first
  packet of it is offered to the open connection with the tracker's own test
  (``Tracker._starts_new``). If it starts a new connection, the worker's connections of that
  4-tuple stand as they are. If it continues the open one, that 4-tuple is *replayed*: the chunk
  is read again on the client, and its packets of those 4-tuples are fed to the open connections
  until the replay starts a new connection at a packet where the worker started one too (from
  there the worker's connections are the same), or the 4-tuple's packets in the chunk run out.
  Connections are short next to chunks, so a replay reads the first seconds of a chunk.
- **When each connection is handed on** (the order of the records, and the frame as of which it
  is classified): at the packet that starts the next connection of its 4-tuple, or at the first
  sweep that finds it idle past its timeout, whichever comes first. Sweep times come from the
  capture's own packet times, as the tracker computes them, across chunks. A sweep hands on the
  idle connections in least-recently-used order (by last packet).
- **What the classifier knows of other connections**: the frame of each server's first SYN/ACK
  over the whole capture, which picks between the worker's two records when it made two.
- **Connections open at once** are counted at each new connection; reaching ``max_active`` (where
  the tracker would evict) is beyond the merge: ``Fallback``.

``Fallback`` is raised whenever the parallel answer could differ (that, packet times going
backwards, a packet on a connection idle past its timeout, a sweep whose LRU order the merge
cannot vouch for); the caller then reads the capture in one process, as before.
"""

from __future__ import annotations

import pickle
from bisect import bisect_left
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from itertools import pairwise

import numpy as np

from analyzer.classify import classify
from analyzer.pipeline import make_record
from analyzer.scale.chunk import ChunkSpec
from analyzer.scale.worker import (
    INF,
    AsOf,
    ChunkResult,
    ChunkTracker,
    ConnOut,
    Options,
    expired,
    seg_key,
)
from analyzer.tracker import Tracker

RESTART, CREATE, SWEEP, CLOSE = 0, 1, 2, 3  # order of events at one packet (Tracker.feed)


class Fallback(Exception):
    """The parallel answer could differ from one process's: the reason, for the user."""


@dataclass(slots=True)
class Pending:
    """A connection of the merged capture that has not been handed on yet."""

    key: tuple
    first_frame: int
    last_feed: int
    last_feed_ts: float
    end: float
    ended: bool
    server: tuple
    rec: dict | None = None  # the worker's record(s), when the worker saw all its packets
    alt: dict | None = None
    blob: bytes | None = None  # open at its chunk's end: the connection as the worker left it
    obj: object = None  # the connection itself, when the merge continued it
    continued: bool = False  # obj holds packets the worker's record lacks
    gid: int = -1  # connection number in the capture
    restart: int | None = None  # frame of the next connection of its 4-tuple
    finish: tuple | None = None  # (frame, event, order)

    @classmethod
    def of(cls, o: ConnOut) -> Pending:
        return cls(o.key, o.first_frame, o.last_feed, o.last_feed_ts, o.end, o.ended, o.server,
                   o.rec, o.alt, o.blob)

    def connection(self):
        if self.obj is None:
            self.obj = pickle.loads(self.blob)
        return self.obj


class Merger:
    """Feed ``add`` the chunk results of one capture in order, then call ``close``; both
    return the records handed on meanwhile, in the sequential pipeline's order."""

    def __init__(self, name: str, opts: Options,
                 reread: Callable[[ChunkSpec, ChunkResult, set], Iterator]):
        self.name = name
        self.opts = opts
        self.t = opts.timeouts
        self.reread = reread  # a chunk's segments of some 4-tuples again, in capture order
        self.probe = Tracker(lambda c: None, self.t, zeek_options=opts.zeek_options)
        self.last_sweep: float | None = None
        self.last_ts: float | None = None
        self.synack: dict = {}  # server -> frame of its first SYN/ACK in the capture
        self.open: dict[tuple, Pending] = {}  # the latest, not handed on, connection per key
        self.next_gid = 0
        self.count = 0  # connections open at once in the sequential run
        self.peak = 0
        self.emitted = 0
        self.replayed = 0  # 4-tuples continued across a cut by a replay (for the tests)

    # ------------------------------------------------------------------ per chunk
    def add(self, spec: ChunkSpec, res: ChunkResult) -> list[dict]:
        if res.unsafe:
            raise Fallback(res.unsafe)
        if res.peak > self.t.max_active:  # (no need to count: the chunk alone reaches it)
            raise Fallback(self._crowded())
        times = res.times
        if not res.monotonic or (times.size and self.last_ts is not None
                                 and times[0] < self.last_ts):
            raise Fallback("packet times go backwards, so the result depends on when the "
                           "tracker swept")
        if times.size:
            self.last_ts = float(times[-1])
        for server, frame in res.synack.items():
            self.synack.setdefault(server, frame)
        sweeps = self._sweeps(times, res.frame_of)
        for p in self.open.values():
            p.finish = self._swept(p, sweeps)
        carried, replay = self._at_the_cut(res)
        done = []  # handed on by a sweep before their 4-tuple came back, or without it
        for key in [k for k, p in self.open.items() if p.finish is not None and k not in carried]:
            done.append(self.open.pop(key))
        by_key: dict[tuple, list[ConnOut]] = {}
        for o in sorted(res.conns, key=lambda o: o.first_frame):
            by_key.setdefault(o.key, []).append(o)
        chains = {k: [Pending.of(o) for o in outs] for k, outs in by_key.items()}
        if replay:
            self._replay(spec, res, replay, by_key, chains)
        new = sorted((p for chain in chains.values() for p in chain),
                     key=lambda p: p.first_frame)
        for p in new:
            p.gid = self.next_gid
            self.next_gid += 1
        for key, chain in chains.items():
            if key in carried:
                chain.insert(0, carried[key])
            for a, b in pairwise(chain):
                a.restart = b.first_frame
            for p in chain:
                if p is not carried.get(key):  # (a carried one's sweep is known already,
                    p.finish = self._swept(p, sweeps)  # unless its replay moved it on)
                elif p.continued:
                    p.finish = self._swept(p, sweeps)
                if p.restart is not None and (p.finish is None or p.restart <= p.finish[0]):
                    p.finish = (p.restart, RESTART, 0)
            last = chain[-1]
            if last.finish is None:
                self.open[key] = last
            else:
                self.open.pop(key, None)
            done.extend(p for p in chain if p.finish is not None)
        self._count(new, done)
        done.sort(key=lambda p: p.finish)
        return [self._record(p, p.finish[0]) for p in done]

    def close(self) -> list[dict]:
        """End of the capture: what is still open is handed on in order of connection number."""
        rest = sorted(self.open.values(), key=lambda p: p.gid)
        self.open.clear()
        return [self._record(p, INF) for p in rest]

    # ------------------------------------------------------------------ the cut
    def _at_the_cut(self, res: ChunkResult) -> tuple[dict, dict]:
        """Decide, for each 4-tuple open before the chunk and met again in it, whether its first
        packet here starts a new connection. Returns (carried into a chain, to replay)."""
        carried, replay = {}, {}
        t = self.t
        for key, seg in res.firsts.items():
            p = self.open.get(key)
            if p is None or (p.finish is not None and p.finish[0] < seg.frame):
                continue  # nothing open, or swept before: the worker's connections stand
            p.finish = None
            carried[key] = p
            if p.blob is None and p.obj is None:
                # its worker swept it (idle past its timeout): does this packet start anew?
                idle = seg.ts - p.end
                if idle <= t.idle and (seg.is_icmp or idle == t.closed):
                    raise Fallback(f"frame {seg.frame}: a packet reaches a 4-tuple idle past its "
                                   "timeout, so the result depends on when the tracker swept")
                continue
            if not self.probe._starts_new(p.connection(), seg):
                replay[key] = p
        return carried, replay

    def _replay(self, spec: ChunkSpec, res: ChunkResult, replay: dict, by_key: dict,
                chains: dict) -> None:
        """Continue the connections in ``replay`` with their 4-tuples' packets of the chunk."""
        self.replayed += len(replay)
        starts = {k: {o.first_frame for o in by_key.get(k, ())} for k in replay}
        last = {k: max((o.last_feed for o in by_key.get(k, ())), default=0) for k in replay}
        got: list = []
        rt = ChunkTracker(self.t, self.opts.zeek_options, got.append)
        rt.next_id = 1 << 62  # new connections' ids, apart from the carried ones' numbers
        for key, p in replay.items():
            conn = p.connection()
            conn.conn_id = p.gid
            rt.active[key] = conn
            rt.last_feed[p.gid] = (p.last_feed, p.last_feed_ts)
            p.continued = True
        remaining = set(replay)
        converged: dict = {}
        for seg in self.reread(spec, res, remaining.copy()):
            key = seg_key(seg)
            if key not in remaining:
                continue
            before = rt.active.get(key)
            rt.feed(seg)
            now = rt.active.get(key)
            if now is not before and now is not None and seg.frame in starts[key]:
                converged[key] = seg.frame  # the worker's connections from here on stand
                del rt.active[key]
                del rt.last_feed[now.conn_id]
                remaining.discard(key)
            elif seg.frame >= last[key]:
                remaining.discard(key)
            if not remaining:
                break
        if rt.unsafe:
            raise Fallback(rt.unsafe)
        mine = {id(p.obj): p for p in replay.values()}
        made: dict[tuple, list[Pending]] = {}
        finished = [(c, rt_last) for c, rt_last in zip(got, _last_feeds(got, rt), strict=True)]
        still = [(c, rt.last_feed[c.conn_id]) for c in rt.active.values()]
        for conn, (frame, ts) in finished + still:
            p = mine.get(id(conn))
            if p is None:
                key = seg_key_of(conn)
                p = Pending(key, conn.first_frame, frame, ts, conn.end, conn.ended, conn.server,
                            obj=conn, continued=True)
                made.setdefault(key, []).append(p)
            else:
                p.last_feed, p.last_feed_ts, p.end, p.ended = frame, ts, conn.end, conn.ended
        for key in replay:
            q = converged.get(key)
            kept = [p for p in chains.get(key, []) if q is not None and p.first_frame >= q]
            chains[key] = sorted(made.get(key, []), key=lambda p: p.first_frame) + kept

    # ------------------------------------------------------------------ sweeps and counts
    def _sweeps(self, times: np.ndarray, frames: np.ndarray) -> list[tuple[int, float]]:
        """(frame, time) of each sweep in this stretch of packets, as ``Tracker.tick`` runs
        them: the first packet sets the clock, then a sweep at every packet at least
        ``sweep_every`` after the previous sweep."""
        out: list[tuple[int, float]] = []
        n = len(times)
        i = 0
        if n and self.last_sweep is None:
            self.last_sweep = float(times[0])
            i = 1
        every = self.t.sweep_every
        while i < n:
            last = self.last_sweep
            j = max(i, int(np.searchsorted(times, last + every, side="left")))
            while j > i and times[j - 1] - last >= every:  # the tracker's own float test
                j -= 1
            while j < n and not times[j] - last >= every:
                j += 1
            if j >= n:
                break
            self.last_sweep = float(times[j])
            out.append((int(frames[j]), self.last_sweep))
            i = j + 1
        return out

    def _swept(self, p: Pending, sweeps: list) -> tuple | None:
        """The first of ``sweeps`` that hands ``p`` on, as (frame, SWEEP, last packet)."""
        k = bisect_left(sweeps, p.last_feed, key=lambda s: s[0])
        k = bisect_left(sweeps, True, lo=k,
                        key=lambda s: expired(p.end, p.ended, s[1], self.t))
        if k == len(sweeps):
            return None
        frame, now = sweeps[k]
        if p.last_feed_ts > now - self.t.closed:
            # its last packet was a capture duplicate, moments after its last counted one: a
            # younger connection may stand before it in the LRU order and stop the sweep
            raise Fallback(f"frame {frame}: a sweep's order depends on connections the merge "
                           "does not see")
        return (frame, SWEEP, p.last_feed)

    def _count(self, new: list[Pending], done: list[Pending]) -> None:
        events = [(p.first_frame, CREATE, 1) for p in new]
        events += [(p.finish[0], p.finish[1], -1) for p in done]
        limit = self.t.max_active
        for _frame, what, d in sorted(events):
            self.count += d
            if what == CREATE:
                if self.count > limit:
                    raise Fallback(self._crowded())
                self.peak = max(self.peak, self.count)

    def _crowded(self) -> str:
        return (f"more than {self.t.max_active} connections open at once: the tracker "
                "finishes the least recently active early")

    # ------------------------------------------------------------------ records
    def _record(self, p: Pending, until: float) -> dict:
        self.emitted += 1
        if p.continued:
            conn = p.obj
            conn.conn_id = p.gid
            return make_record(conn, classify(conn, AsOf(self.synack, until)), self.name)
        rec = p.rec
        first = self.synack.get(p.server)
        if p.alt is not None and first is not None and first <= until:
            rec = p.alt
        rec["conn"] = p.gid
        return rec


def seg_key_of(conn) -> tuple:
    a, b = conn.client, conn.server
    return (a, b) if a <= b else (b, a)


def _last_feeds(conns: list, rt: ChunkTracker) -> list[tuple[int, float]]:
    # ChunkTracker.hand_on runs after the feed that finished the connection, but the record of
    # its last packet is dropped only by ``describe``: here it is still there
    return [rt.last_feed.pop(c.conn_id) for c in conns]
