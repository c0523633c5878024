"""The live loop: sniffer -> compiled observer (tracker and classifier) -> one printed verdict
per connection.

A connection's verdict is printed at the segment that ends it (the observer's ``on_end``, which
classifies it then), or when it is evicted (idle timeout, end of capture) if nothing ended it
before. The observer is swept from the capture's clock and, when no packet comes, from the wall
clock, so idle connections are flushed and memory stays bounded by the connections open at once.
"""

from __future__ import annotations

import os
import signal
import sys
import time
from collections import Counter
from dataclasses import dataclass, field

from analyzer import cases
from analyzer.capture.stats import ReadStats
from analyzer.classify import Verdict
from analyzer.connection import Connection
from analyzer.core.observer import Observer
from analyzer.pipeline import make_record
from analyzer.report import export, text
from analyzer.timeouts import Timeouts

STATUS_EVERY = 0.5  # seconds between status line refreshes
KERNEL_DELAY = 0.25  # with --kernel, wait this long for the kernel's events before printing


@dataclass
class Options:
    json: bool = False
    cases: list[str] | None = None  # only these cases
    ports: list[int] | None = None  # only connections with one of these ports
    duration: float | None = None  # stop after this many seconds
    count: int | None = None  # stop after this many packets
    timeouts: Timeouts = field(default_factory=Timeouts)
    label: str = "live"  # the records' "file" field


class LiveSession:
    """Runs one live capture. ``run()`` returns 0 when --duration / --count ended it, 130 on a
    signal (SIGINT, SIGTERM)."""

    def __init__(self, source, opts: Options, *, out=None, err=None, writer_file=None,
                 kernel=None, status: bool | None = None):
        self.source = source
        self.opts = opts
        self.out = out or sys.stdout
        self.err = err or sys.stderr
        self.writer_file = writer_file
        self.writer = None
        self.kernel = kernel
        self.status = self._is_tty(self.err) if status is None else status
        self.tracker = Observer(opts.timeouts, on_end=self._on_end)
        self.printed: set[int] = set()  # ids ended and printed, until their connection finishes
        # waiting for kernel events: (due, connection, its verdict)
        self.pending: list[tuple[float, Connection, Verdict]] = []
        self.counts: Counter = Counter()
        self.frames = 0
        self.latencies: list[float] = []  # wall clock at print - capture time of the decider
        self.stop_signal: int | None = None
        self._status_len = 0

    # ---------------------------------------------------------------- verdicts
    @property
    def stats(self) -> ReadStats:
        """What the frames held (the observer decodes and counts them)."""
        return ReadStats(format="live", **self.tracker.frame_stats)

    def _on_end(self, conn: Connection, verdict: Verdict) -> None:
        self.printed.add(conn.conn_id)
        if self.kernel is not None:
            self.pending.append((time.monotonic() + KERNEL_DELAY, conn, verdict))
        else:
            self._emit(conn, verdict)

    def _take_finished(self) -> None:
        done = self.tracker.done
        for conn, verdict in done:
            if conn.conn_id in self.printed:
                self.printed.discard(conn.conn_id)
            else:
                self._emit(conn, verdict)
        done.clear()

    def _flush_pending(self, force: bool = False) -> None:
        if not self.pending:
            return
        now = time.monotonic()
        if self.kernel is not None:
            self.kernel.poll()
        keep = []
        for item in self.pending:
            if force or item[0] <= now:
                self._emit(item[1], item[2])
            else:
                keep.append(item)
        self.pending = keep

    def _emit(self, conn: Connection, verdict: Verdict) -> None:
        """Print `conn` with its verdict (given at the segment that ended it, or when it was
        finished)."""
        rec = make_record(conn, verdict, self.opts.label)
        latency = time.time() - conn.end
        self.latencies.append(latency)
        if len(self.latencies) > 10000:
            del self.latencies[:5000]
        view = None
        if self.kernel is not None:
            from analyzer.capture.kernel import summarize

            (a, pa), (b, pb) = conn.client, conn.server
            self.kernel.poll()
            view = summarize(self.kernel.take(a, pa, b, pb), conn.client, rec["case"])
        if not self._keep(rec):
            return
        self.counts[rec["case"]] += 1
        self._clear_status()
        if self.opts.json:
            rec["latency"] = round(latency, 6)
            if view is not None:
                rec["kernel"] = view
            self.out.write(export.json_line(rec) + "\n")
        else:
            self.out.write(self._text(rec, view) + "\n")
        self.out.flush()

    def _text(self, rec: dict, view: dict | None) -> str:
        body = text.connection_block(rec) if rec["abnormal"] else text.connection_line(rec)
        if view is not None:
            from analyzer.capture.kernel import describe

            body += "\n" + describe(view)
        return body

    def _keep(self, rec: dict) -> bool:
        if self.opts.cases and rec["case"] not in self.opts.cases:
            return False
        if self.opts.ports:
            ports = {int(rec["client"].rsplit(":", 1)[1]), int(rec["server"].rsplit(":", 1)[1])}
            if not ports & set(self.opts.ports):
                return False
        return True

    # ---------------------------------------------------------------- the loop
    def run(self) -> int:
        old = {s: signal.signal(s, self._on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
        try:
            self._loop()
        finally:
            for s, h in old.items():
                signal.signal(s, h)
            self.finish()
        return 130 if self.stop_signal is not None else 0

    def _on_signal(self, signum, _frame) -> None:
        self.stop_signal = signum

    def _loop(self) -> None:
        opts = self.opts
        start = time.monotonic()
        deadline = start + opts.duration if opts.duration is not None else None
        max_frames = opts.count
        tracker = self.tracker
        sweep_every = opts.timeouts.sweep_every
        last_wall_sweep = time.monotonic()
        last_status = 0.0
        last_ts = None  # capture clock of the last frame
        last_ts_at = 0.0  # monotonic time when it was seen
        for item in self.source:
            now = time.monotonic()
            if item is not None:
                ts, linktype, data = item
                self.frames += 1
                self._save(ts, linktype, data)
                # decoded and tracked in the compiled core, which sweeps from the capture clock
                tracker.feed_frame(data, linktype, self.frames, ts)
                self._take_finished()
                last_ts, last_ts_at = ts, now
            if now - last_wall_sweep >= sweep_every:
                # idle or not: advance the capture clock by the wall time since the last frame
                if last_ts is not None:
                    tracker.sweep_to(last_ts + (now - last_ts_at))
                else:
                    tracker.sweep_to(time.time())
                self._take_finished()
                last_wall_sweep = now
            self._flush_pending()
            if self.status and now - last_status >= STATUS_EVERY:
                self._show_status()
                last_status = now
            if self.writer is not None and item is None:
                self.writer.flush()
            if self.stop_signal is not None:
                break
            if deadline is not None and now >= deadline:
                break
            if max_frames is not None and self.frames >= max_frames:
                break

    def _save(self, ts: float, linktype: int, data: bytes) -> None:
        if self.writer_file is None:
            return
        if self.writer is None:
            from analyzer.capture.sniff import PcapWriter

            self.writer = PcapWriter(self.writer_file, linktype)
        self.writer.write(ts, data)

    def finish(self) -> None:
        """Close the source, finish every connection, flush outputs, print the summary."""
        try:
            self.source.close()
        finally:
            self._flush_pending(force=True)
            if self.kernel is not None:
                self.kernel.poll()
            self.tracker.close()
            self._take_finished()
            self._flush_pending(force=True)
            self._clear_status()
            if self.writer_file is not None:
                if self.writer is None:
                    from analyzer.capture.sniff import PcapWriter

                    self.writer = PcapWriter(self.writer_file,
                                             getattr(self.source, "linktype", None) or 1)
                self.writer.flush()
            self.out.flush()
            summary = self.summary()
            if self.opts.json:
                self.err.write(summary + "\n")
                self.err.flush()
            else:
                self.out.write("\n" + summary + "\n")
                self.out.flush()

    def summary(self) -> str:
        total = sum(self.counts.values())
        abnormal = sum(n for c, n in self.counts.items() if c in cases.ABNORMAL)
        lines = [f"{total} connection(s) seen live on {self.opts.label.removeprefix('live:')}, "
                 f"{abnormal} abnormal"]
        lines += text.summary([{"case": c} for c, n in self.counts.items()
                               for _ in range(n)]).splitlines()[1:]
        drops = self.source.drops()
        lines.append(f"  {self.frames} packets, {self.stats.tcp_segments} TCP segments, "
                     f"{getattr(self.source, 'duplicates', 0)} loopback duplicates dropped, "
                     f"{'?' if drops is None else drops} dropped by the kernel, "
                     f"peak {self.tracker.peak_active} open connections")
        return "\n".join(lines)

    # ---------------------------------------------------------------- status line
    @staticmethod
    def _is_tty(stream) -> bool:
        try:
            return os.isatty(stream.fileno())
        except (OSError, ValueError, AttributeError):
            return False

    def _show_status(self) -> None:
        drops = self.source.drops()
        line = (f"{self.frames} packets, {self.tracker.open_connections} open connections, "
                f"{'?' if drops is None else drops} kernel drops")
        self.err.write("\r" + line.ljust(self._status_len))
        self.err.flush()
        self._status_len = len(line)

    def _clear_status(self) -> None:
        if self.status and self._status_len:
            self.err.write("\r" + " " * self._status_len + "\r")
            self.err.flush()
            self._status_len = 0
