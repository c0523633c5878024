"""One pcap file read by several local processes at once, each tracking a share of its
connections; the same records, in the same order, as one process.

Every process walks the whole file with the fast reader (the compiled kernel makes that cheap),
but builds, tracks and classifies only the connections whose 4-tuple's bucket falls in its
share (``fastreader.bucket_of``; share 0, the parent's, is smaller: it also merges). Every other
packet arrives as a ``Foreign``: it still advances the process's clock, so sweeps happen at the
same capture times as in one process, and a foreign SYN/ACK still tells the classifier's context
that its server answers. Connections do not
otherwise depend on each other, with one exception: past ``max_active`` open connections, one
process finishes the least recently active one early. Shares cannot see that, so the parent
counts the connections open at each moment and, if one process would have evicted, the file is
read again in one process (``merge.Fallback``; the records already given are skipped).

To merge, each process tags every new connection and every hand-on with a key that orders it
among all processes' events as one process would have:

    (sweeps so far, 0, frame of the connection's last packet, 0)  handed on by a sweep (the
                                                                   tracker's LRU order)
    (sweeps so far, 1, frame, 0)   handed on because a new connection takes its 4-tuple
    (sweeps so far, 1, frame, 1)   a new connection, started by that frame
    (END, 2, first frame, 0)       still open at the end of the file (first frame order)

Each process's events come in increasing key order; the parent merges the streams, numbers the
connections in order of first frame, and yields the records. The parent reads share 0 itself;
the other shares run in forked processes that send their events through a pipe (a bounded
buffer: a process far ahead waits, its memory stays flat).
"""

from __future__ import annotations

import heapq
import multiprocessing
import os
import queue
import sys
import threading
from collections import deque
from collections.abc import Iterator

from analyzer.pipeline import FileReport, fast_reader, make_record, reader_connections, without_gc
from analyzer.scale.merge import Fallback
from analyzer.scale.worker import Options
from analyzer.segment import Segment, SegmentRun
from analyzer.tracker import Timeouts, Tracker, _key

END = sys.maxsize  # the sweep count given to connections still open at the end
NEW, DONE = 0, 1  # event kinds
BATCH = 256  # events per message from a share's process
AHEAD = 64  # messages a share's process may be ahead of the merge (its memory stays flat)
PARENT_WEIGHT = 0.8  # the parent's share, against 1 for the others: it also merges and writes


def share_ranges(n: int) -> list[tuple[int, int]]:
    """The bucket ranges [lo, hi) of ``n`` shares, covering every bucket once."""
    from analyzer.capture.fastreader import SHARE_BUCKETS

    weights = [PARENT_WEIGHT] + [1.0] * (n - 1)
    edges, acc = [0], 0.0
    for w in weights[:-1]:
        acc += w
        edges.append(round(SHARE_BUCKETS * acc / sum(weights)))
    return list(zip(edges, edges[1:] + [SHARE_BUCKETS], strict=True))


class ShareTracker(Tracker):
    """A Tracker that never evicts (the parent judges ``max_active`` for the whole file) and keys
    each new connection (``news``) and each hand-on (``keys``, by connection id) as above."""

    def __init__(self, timeouts: Timeouts, zeek_options: dict):
        t = Timeouts(timeouts.idle, timeouts.closed, timeouts.sweep_every, sys.maxsize)
        super().__init__(lambda conn: None, t, zeek_options=zeek_options)
        self.sweeps = 0
        self.sweeping = False
        self.touched: dict[int, int] = {}  # conn id -> frame of its last packet or run end
        self.feeding: tuple | None = None  # (4-tuple key, frame) of the segment being fed
        self.news: deque[tuple] = deque()
        self.keys: dict[int, tuple] = {}

    def feed(self, seg: Segment) -> None:
        key = _key(seg)
        self.feeding = (key, seg.frame)
        sweeps, made = self.sweeps, self.next_id
        super().feed(seg)
        self.feeding = None
        if self.next_id != made:
            self.news.append((sweeps, 1, seg.frame, 1))
        conn = self.active.get(key)
        if conn is not None:
            self.touched[conn.conn_id] = seg.frame

    def end_run(self, run: SegmentRun) -> None:
        conn = self.pending_runs[id(run)][1]
        super().end_run(run)
        self.touched[conn.conn_id] = run.last_frame

    def sweep(self, now: float) -> None:
        self.sweeps += 1
        self.sweeping = True
        try:
            super().sweep(now)
        finally:
            self.sweeping = False

    def _finish(self, key, conn) -> None:
        touched = self.touched.pop(conn.conn_id, 0)
        feeding = self.feeding
        if self.sweeping:
            # the connection being fed right now was touched by this very frame
            frame = feeding[1] if feeding is not None and feeding[0] == key else touched
            self.keys[conn.conn_id] = (self.sweeps, 0, frame, 0)
        else:  # a new connection on the same 4-tuple (never an eviction: there are none)
            self.keys[conn.conn_id] = (self.sweeps, 1, feeding[1], 0)
        super()._finish(key, conn)

    def close(self) -> None:
        for conn in self.active.values():
            self.keys[conn.conn_id] = (END, 2, conn.first_frame, 0)
        self.touched.clear()
        super().close()


def share_reader(path: str, share: tuple[int, int], opts: Options, progress=None):
    """The fast reader of one share (raises UnreadableCapture if the file does not open)."""
    return fast_reader(path, opts.timeouts, opts.check_ip_checksums, progress, share)


def share_events(reader, name: str, opts: Options, report: FileReport) -> Iterator[tuple]:
    """(key, NEW, None) and (key, DONE, record) for one share (``reader``), in key order; the
    record's ``conn`` is the share's own number (the parent renumbers)."""
    tracker = ShareTracker(opts.timeouts, opts.zeek_options)
    news, keys = tracker.news, tracker.keys
    for conn, verdict in reader_connections(reader, report, opts.timeouts, tracker=tracker):
        k = keys.pop(conn.conn_id)
        while news and news[0] < k:
            yield news.popleft(), NEW, None
        yield k, DONE, make_record(conn, verdict, name)
    while news:
        yield news.popleft(), NEW, None


def _share_process(path: str, name: str, share: tuple[int, int], opts: Options, send) -> None:
    """A forked process: one share's events through ``send``, then ("end", (run segments, frames
    read, bytes read)) or ("error", text)."""
    sys.stdout = open(os.devnull, "w")  # noqa: SIM115 (the parent's buffer is not ours to flush)
    try:
        report = FileReport(path)
        batch: list[tuple] = []
        events = share_events(share_reader(path, share, opts), name, opts, report)
        for event in without_gc(events):
            batch.append(event)
            if len(batch) >= BATCH:
                send.send(("events", batch))
                batch = []
        send.send(("events", batch))
        send.send(("end", (report.run_segments, report.stats.frames, report.stats.bytes_read)))
    except BaseException as exc:  # noqa: BLE001 (the parent falls back and says why)
        try:
            send.send(("error", f"{type(exc).__name__}: {exc}"))
        except OSError:
            pass
    finally:
        send.close()


def _drain(recv, inbox: queue.Queue) -> None:
    """A thread of the parent: a share's messages into ``inbox`` as they come, so that the share's
    process is never held up by a full pipe while the parent works on its own share."""
    while True:
        try:
            msg = recv.recv()
        except (EOFError, OSError):
            inbox.put(("lost", None))
            return
        inbox.put(msg)
        if msg[0] != "events":
            return


def _received(recv, share: int, totals: dict) -> Iterator[tuple]:
    inbox: queue.Queue = queue.Queue(AHEAD)
    threading.Thread(target=_drain, args=(recv, inbox), daemon=True,
                     name=f"rstscope share {share} inbox").start()
    while True:
        tag, body = inbox.get()
        if tag == "lost":
            raise Fallback(f"the process reading share {share} ended early")
        if tag == "events":
            yield from body
        elif tag == "end":
            totals[share] = body
            return
        else:
            raise Fallback(f"the process reading share {share} failed ({body})")


def share_records(path: str, name: str, report: FileReport, opts: Options, shares: int,
                  progress=None) -> Iterator[dict]:
    """The records of ``path`` read by ``shares`` processes (this one and shares - 1 forked
    ones). Raises Fallback (after the records it could vouch for) when one process must read the
    file instead; UnreadableCapture when it does not open, before any process starts."""
    from analyzer.capture import columns

    columns.warm_up()  # before forking: the children share the loaded kernel's memory
    ctx = multiprocessing.get_context("fork")
    ranges = share_ranges(shares)
    mine = share_events(share_reader(path, ranges[0], opts, progress), name, opts, report)
    sys.stdout.flush()  # a forked child must not write the parent's buffered output again
    sys.stderr.flush()
    procs, streams, totals = [], [], {}
    try:
        for i in range(1, shares):
            recv, send = ctx.Pipe(duplex=False)
            proc = ctx.Process(target=_share_process, args=(path, name, ranges[i], opts, send),
                               daemon=True, name=f"rstscope share {i}")
            proc.start()
            send.close()
            procs.append(proc)
            streams.append(_received(recv, i, totals))
        ids: dict[int, int] = {}  # first frame -> connection number
        opened = open_now = peak = 0
        limit = opts.timeouts.max_active
        for key, kind, rec in heapq.merge(mine, *streams, key=lambda e: e[0]):
            if kind == NEW:
                ids[key[2]] = opened
                opened += 1
                open_now += 1
                if open_now > limit:
                    raise Fallback(f"more than {limit:,} connections open at once: one process "
                                   "finishes the least recently active ones early")
                peak = max(peak, open_now)
            else:
                open_now -= 1
                rec["conn"] = ids.pop(rec["first_frame"])
                yield rec
        for runs, frames, nbytes in totals.values():
            if (frames, nbytes) != (report.stats.frames, report.stats.bytes_read):
                raise Fallback("the file changed while it was read")  # (growing, or rewritten)
            report.run_segments += runs
        report.peak_connections = peak
        report.engine = f"fast, {shares} processes"
    finally:
        for proc in procs:
            if proc.is_alive():
                proc.terminate()
            proc.join()
