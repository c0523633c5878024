"""What a worker does with one chunk: the ordinary reader and tracker, plus what the merge needs.

The worker cannot know the state the capture was in when its chunk begins (connections open
across the cut, the tracker's sweep clock, which servers answered SYNs earlier). It does not need
to, because of how the tracker works (``analyzer.tracker``):

- Which packets form which connection does not depend on when sweeps run, as long as no packet
  reaches a connection that has been idle past its timeout without starting a new one (then it
  would matter whether a sweep had removed the old connection first). ``ChunkTracker`` watches
  for exactly that and marks the chunk ``unsafe`` (the run falls back to one process).
- Sweeps only decide *when* a connection is handed on, and that the merge recomputes from each
  connection's last packet and the capture's own sweep times (``times``).
- A connection open across the cut is continued on the client (``analyzer.scale.merge``): the
  worker sends its chunk's first packet of every 4-tuple and, for connections still open at the
  end, the connection itself.
- The one fact the classifier takes from other connections, whether the server answered other
  SYNs before (``Context.listener_seen``), is asked as of the connection's last packet; when the
  chunk alone says no, the record is also made with the answer yes, and the merge picks.

No eviction happens in a worker (``max_active`` is unbounded): whether the whole capture would
have hit the limit is decided by the merge, which counts the connections open at each moment.
"""

from __future__ import annotations

import gc
import pickle
import sys
from array import array
from collections import OrderedDict
from dataclasses import dataclass, field

import numpy as np

from analyzer.classify import Context, classify
from analyzer.connection import Connection
from analyzer.pipeline import make_record
from analyzer.scale.chunk import ChunkSpec, fix_messages, open_chunk
from analyzer.segment import Segment
from analyzer.tracker import Timeouts, Tracker

INF = float("inf")
PRUNE_EVERY = 4096  # packets between prunings of the finished-connection memory
GC_EVERY = 1 << 18  # packets between young-generation collections


@dataclass
class Options:
    timeouts: Timeouts = field(default_factory=Timeouts)
    zeek_options: dict = field(default_factory=dict)
    check_ip_checksums: bool = False
    engine: str = "auto"  # the one-process reader (pipeline.iter_connections); workers: python


def seg_key(seg: Segment) -> tuple:
    a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
    return (a, b) if a <= b else (b, a)


def conn_key(conn: Connection) -> tuple:
    a, b = conn.client, conn.server
    return (a, b) if a <= b else (b, a)


def expired(conn_end: float, ended: bool, now: float, t: Timeouts) -> bool:
    """Would ``Tracker.sweep`` at ``now`` finish a connection that last touched ``conn_end``?
    (The sweep's own test; tests/test_scale_merge.py holds the two together.)"""
    idle = now - conn_end
    return idle >= t.closed and (idle > t.idle or ended)


class AsOf(Context):
    """The classifier's context as the sequential pipeline had it at frame ``until``: a server
    was "seen listening" if it sent a SYN/ACK at or before that frame. ``forced`` servers are
    answered yes (the alternative record); servers answered no are collected in ``denied``."""

    def __init__(self, first_synack: dict, until: float, forced=()):
        super().__init__()
        self.first_synack, self.until, self.forced = first_synack, until, frozenset(forced)
        self.denied: set = set()

    def listener_seen(self, server) -> bool:
        if server in self.forced:
            return True
        first = self.first_synack.get(server)
        if first is not None and first <= self.until:
            return True
        self.denied.add(server)
        return False


class ChunkTracker(Tracker):
    """A Tracker that also records each connection's last packet (its place in the LRU order)
    and marks ``unsafe`` a packet whose connection would depend on the sweep schedule."""

    def __init__(self, timeouts: Timeouts, zeek_options: dict, on_finish):
        t = Timeouts(timeouts.idle, timeouts.closed, timeouts.sweep_every, sys.maxsize)
        super().__init__(self._done, t, zeek_options=zeek_options)
        self.limits = timeouts
        self.hand_on = on_finish  # called after the feed, when the last packets are recorded
        self.last_feed: dict[int, tuple[int, float]] = {}  # conn id -> (frame, ts)
        self.gone: OrderedDict = OrderedDict()  # key -> end of its last finished connection
        self.done_now: list[Connection] = []  # finished during the current feed
        self.unsafe: str | None = None
        self.fed = 0

    def _done(self, conn: Connection) -> None:
        key = conn_key(conn)
        self.gone[key] = conn.end
        self.gone.move_to_end(key)
        self.done_now.append(conn)

    def feed(self, seg: Segment) -> None:
        key = seg_key(seg)
        prev = self.active.get(key)
        t = self.limits
        late = prev is not None and seg.ts - prev.end >= t.closed \
            and expired(prev.end, prev.ended, seg.ts, t)
        gone_end = self.gone.get(key) if prev is None else None
        done = self.done_now
        super().feed(seg)
        conn = self.active.get(key)
        if conn is None:  # finished within its own feed (a zero close timeout)
            conn = next(c for c in reversed(done) if conn_key(c) == key)
        if conn is prev and late and self.unsafe is None:
            self.unsafe = (f"frame {seg.frame}: a packet joins a connection idle past its "
                           "timeout, so the result depends on when the tracker swept")
        elif conn is not prev and gone_end is not None and self.unsafe is None:
            # the previous connection of this 4-tuple was swept here; had it still been open
            # (another sweep schedule), would this packet have started a new one as well?
            idle = seg.ts - gone_end
            if idle <= t.idle and (seg.is_icmp or idle == t.closed):
                self.unsafe = (f"frame {seg.frame}: a packet reaches a 4-tuple just swept, "
                               "so the result depends on when the tracker swept")
        self.last_feed[conn.conn_id] = (seg.frame, seg.ts)
        if done:
            for c in done:
                self.hand_on(c)
            done.clear()
        self.fed += 1
        if not self.fed % PRUNE_EVERY:
            self._prune(seg.ts)

    def _prune(self, now: float) -> None:
        # a 4-tuple idle past the idle timeout starts a new connection whatever happened to
        # the old one: no need to remember it (roughly ordered: stop at the first recent one)
        gone = self.gone
        while gone:
            key, end = next(iter(gone.items()))
            if now - end <= self.limits.idle:
                break
            del gone[key]


@dataclass(slots=True)
class ConnOut:
    """One connection as a worker hands it to the merge."""

    key: tuple
    first_frame: int
    last_feed: int  # frame of its last packet (capture duplicates included: the LRU order)
    last_feed_ts: float
    end: float  # time of its last counted packet (Connection.end)
    ended: bool
    server: tuple
    rec: dict  # its record, classified as of its last packet
    alt: dict | None = None  # the record if the server was seen listening after all
    blob: bytes | None = None  # still open at the chunk's end: the connection, unclassified


@dataclass
class ChunkResult:
    unit: int
    index: int
    frames: int = 0
    stats: object = None
    problems: list = field(default_factory=list)
    notes: list = field(default_factory=list)
    times: np.ndarray | None = None  # capture time of every segment, in order
    frame_of: np.ndarray | None = None  # its frame
    synack: dict = field(default_factory=dict)  # server -> frame of its first SYN/ACK here
    conns: list[ConnOut] = field(default_factory=list)
    firsts: dict = field(default_factory=dict)  # key -> first segment of that 4-tuple here
    key_of: np.ndarray | None = None  # index in ``firsts`` of each segment's 4-tuple
    unsafe: str | None = None
    monotonic: bool = True
    peak: int = 0  # connections open at once in the chunk alone (a floor for the capture's)
    error: object = None  # UnreadableCapture, when the file would not open


def describe(conn: Connection, tracker: ChunkTracker, name: str, synack: dict,
             keep: bool) -> ConnOut:
    """Summary and record(s) of a connection; ``keep`` (still open) also pickles it first."""
    frame, ts = tracker.last_feed.pop(conn.conn_id)
    blob = pickle.dumps(conn, pickle.HIGHEST_PROTOCOL) if keep else None
    ended = conn.ended
    ctx = AsOf(synack, frame)
    spare = None
    if not (synack.get(conn.server, INF) <= frame) and blob is None:
        spare = pickle.dumps(conn, pickle.HIGHEST_PROTOCOL)  # classify may change it
    rec = make_record(conn, classify(conn, ctx), name)
    alt = None
    if ctx.denied:
        if ctx.denied != {conn.server}:
            tracker.unsafe = tracker.unsafe or (
                f"connection at frame {conn.first_frame}: the classifier asked about another "
                "connection's server, which the merge cannot answer")
        twin = pickle.loads(blob or spare)
        alt = make_record(twin, classify(twin, AsOf(synack, frame, ctx.denied)), name)
    return ConnOut(conn_key(conn), conn.first_frame, frame, ts, conn.end, ended, conn.server,
                   rec, alt, blob)


def analyze_chunk(spec: ChunkSpec, opts: Options) -> ChunkResult:
    """Read and track one chunk (runs in a worker process)."""
    # as in pipeline.iter_connections: no automatic cyclic collection while reading (it would
    # rescan every open connection again and again); the young generation now and then
    enabled = gc.isenabled()
    gc.disable()
    try:
        return _analyze_chunk(spec, opts)
    finally:
        if enabled:
            gc.enable()


def _analyze_chunk(spec: ChunkSpec, opts: Options) -> ChunkResult:
    from analyzer.errors import UnreadableCapture

    res = ChunkResult(spec.unit, spec.index)
    try:
        reader, segments, shift = open_chunk(spec, opts.check_ip_checksums)
    except UnreadableCapture as exc:
        res.error = exc
        return res
    synack: dict = {}
    ctx = Context()
    answered = ctx.answered_syns
    out: list[ConnOut] = []
    tracker = ChunkTracker(opts.timeouts, opts.zeek_options,
                           lambda c: out.append(describe(c, tracker, spec.name, synack, False)))
    crowd = opts.timeouts.max_active  # the capture's tracker would evict: the merge gives up
    times, frames, key_of = array("d"), array("q"), array("i")
    firsts: dict = {}
    ids: dict = {}
    base = spec.base
    last_ts = -INF
    monotonic = True
    for seg in segments:
        seg.frame += base
        n = len(answered)
        ctx.note(seg)  # the pipeline's own bookkeeping; a new server: its first SYN/ACK
        if len(answered) != n:
            synack[next(reversed(answered))] = seg.frame
        ts = seg.ts
        if ts < last_ts:
            monotonic = False
        last_ts = ts
        times.append(ts)
        frames.append(seg.frame)
        key = seg_key(seg)
        kid = ids.get(key)
        if kid is None:
            kid = ids[key] = len(ids)
            firsts[key] = seg
        key_of.append(kid)
        tracker.feed(seg)
        if not len(key_of) % GC_EVERY:
            gc.collect(0)
        if tracker.unsafe is not None or len(tracker.active) > crowd:
            res.unsafe = tracker.unsafe  # the merge will not use this chunk: stop here
            res.peak = tracker.peak_active
            reader.close()
            return res
    fix_messages(spec, reader, shift)
    for conn in list(tracker.active.values()):
        out.append(describe(conn, tracker, spec.name, synack, True))
    res.frames = reader.stats.frames
    res.stats, res.problems, res.notes = reader.stats, reader.problems, reader.notes
    res.times = np.frombuffer(times, dtype=np.float64)
    res.frame_of = np.frombuffer(frames, dtype=np.int64)
    res.key_of = np.frombuffer(key_of, dtype=np.int32)
    res.synack, res.conns, res.firsts = synack, out, firsts
    res.unsafe, res.monotonic, res.peak = tracker.unsafe, monotonic, tracker.peak_active
    return res
