"""Running captures: in this process, on local worker processes (``--jobs``), or on a Dask
cluster (``--dask``); the same records, in the same order, whichever.

With ``--jobs N``, a pcap file the fast reader takes is read in *shares* by N local processes
(``share``: each walks the whole file but tracks a share of its connections). Other files, and
all with ``--chunk-size`` or ``--dask``, are cut into chunks:

``Runner.records(unit, reports)`` yields (record, None) pairs as ``pipeline.iter_records`` does
(the connection objects stay with the workers). In parallel, a capture is cut into chunks
(``layout``), each chunk is read by a worker (``worker.analyze_chunk``), and the results are
merged in capture order (``merge.Merger``); chunks of the next captures are already being read
while one is merged. When the merge cannot vouch for the answer (``merge.Fallback``), the capture
is read again in this process, the records already given are skipped, and stderr says why.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import struct
import sys
from collections import deque
from collections.abc import Iterator

import numpy as np

from analyzer import errors
from analyzer.capture import open_capture, pcap
from analyzer.capture.reader import CaptureReader
from analyzer.errors import DamagedCapture, UnreadableCapture, UsageError
from analyzer.pipeline import (
    FileReport,
    iter_connections,
    make_record,
    reader_connections,
    takes_fast_reader,
    without_gc,
)
from analyzer.scale import chunk as chunks
from analyzer.scale.inputs import Unit
from analyzer.scale.layout import layout, record_offsets
from analyzer.scale.merge import Fallback, Merger
from analyzer.scale.share import share_records
from analyzer.scale.worker import Options, analyze_chunk

CHUNK_BYTES = 256 << 20  # a chunk's size: seconds of work, few cuts for the merge to mend
CONNECT_SECONDS = 10  # how long to wait for a Dask scheduler to answer
SKIPPED_FRAMES = getattr(errors, "DamagedFrames", ())  # damage that does not stop a reading


class Workers:
    """Where chunks are read: a pool of local processes, or a Dask cluster."""

    def __init__(self, jobs: int | None = None, dask: str | None = None):
        self.pool = self.client = self.cluster = None
        if dask:
            self._dask(dask, jobs)
        else:
            ctx = multiprocessing.get_context("forkserver" if sys.platform != "win32"
                                              else "spawn")
            from concurrent.futures import ProcessPoolExecutor

            self.workers = jobs or os.cpu_count() or 1
            self.pool = ProcessPoolExecutor(self.workers, mp_context=ctx)

    def _dask(self, address: str, jobs: int | None) -> None:
        import logging

        from distributed import Client, LocalCluster

        if address == "local":
            self.cluster = LocalCluster(n_workers=jobs or os.cpu_count() or 1,
                                        threads_per_worker=1, processes=True,
                                        host="127.0.0.1", dashboard_address=":0",
                                        silence_logs=logging.ERROR)
            self.client = Client(self.cluster)
        else:
            try:
                self.client = Client(address, timeout=CONNECT_SECONDS)
            except (OSError, TimeoutError, ValueError) as exc:
                raise UsageError(f"--dask {address}: cannot reach the scheduler ({exc})") from None
        self.workers = max(1, len(self.client.scheduler_info().get("workers", {})))

    def submit(self, fn, *args):
        if self.client is not None:
            return self.client.submit(fn, *args, pure=False)
        return self.pool.submit(fn, *args)

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(cancel_futures=True)
        if self.client is not None:
            self.client.close()
        if self.cluster is not None:
            self.cluster.close()


class Runner:
    """Reads units one after the other; with workers, keeps them busy ahead."""

    def __init__(self, units: list[Unit], opts: Options, workers: Workers | None = None,
                 chunk_bytes: int = CHUNK_BYTES, say=None, progress=None, shares: int = 1):
        self.units, self.opts, self.pool_of = units, opts, workers
        self.progress = progress  # path -> callable(byte offset) or None
        self.chunk_bytes = chunk_bytes
        self.say = say or (lambda line: print(f"rstscope: {line}", file=sys.stderr))
        self.plans: dict[int, list[chunks.ChunkSpec] | str | None] = {}
        self.queue: deque = deque()  # (spec, future) submitted, in order
        self.todo: deque = deque()  # specs not yet submitted, in order
        self.fallbacks = 0
        self.last_merger: Merger | None = None
        # unit index -> processes reading it in shares
        self.shared = {i: shares for i, unit in enumerate(units)
                       if shares > 1 and self._shareable(unit)}
        if workers is not None:
            for i, unit in enumerate(units):
                if i in self.shared:
                    continue
                plan = self._plan(i, unit)
                self.plans[i] = plan
                if isinstance(plan, list):
                    self.todo.extend(plan)

    def _shareable(self, unit: Unit) -> bool:
        return unit.error is None and len(unit.paths) == 1 and unit.paths[0] != "-" \
            and takes_fast_reader(unit.paths[0], self.opts.engine, self.opts.zeek_options)

    def _plan(self, index: int, unit: Unit) -> list[chunks.ChunkSpec] | str | None:
        """The chunks of a unit, or why it is read in this process (None: no need to say)."""
        if unit.error is not None or unit.paths == ["-"]:
            return None  # (nothing to read, or standard input: one reader by nature)
        for path in unit.paths:  # what does not open is for the ordinary reader to report
            try:
                open_capture(path).close()
            except UnreadableCapture:
                return None
        try:
            lays = unit.layouts or [layout(p, self.chunk_bytes) for p in unit.paths]
        except (OSError, ValueError):
            return "the file could not be walked"
        return chunks.plan(index, unit.name, unit.paths, lays)

    def _pump(self) -> None:
        window = 2 * self.pool_of.workers + 1
        while self.todo and len(self.queue) < window:
            spec = self.todo.popleft()
            self.queue.append((spec, self.pool_of.submit(analyze_chunk, spec, self.opts)))

    # ------------------------------------------------------------------ reading
    def records(self, index: int, reports: list[FileReport]) -> Iterator[tuple[dict, None]]:
        """Records of unit ``index`` (units must be read in order); its FileReport is appended
        to ``reports``. Raises UnreadableCapture when nothing of it can be read."""
        unit = self.units[index]
        if unit.error is not None:
            raise unit.error
        if unit.note:
            self.say(unit.note)
        report = FileReport(unit.name)
        reports.append(report)
        plan = self.plans.get(index)
        given = 0
        if index in self.shared:
            path = unit.paths[0]
            try:
                for rec in without_gc(share_records(
                        path, unit.name, report, self.opts, self.shared[index],
                        self.progress(path) if self.progress else None)):
                    given += 1
                    yield rec, None
                return
            except Fallback as why:
                self.fallbacks += 1
                self.say(f"{unit.name}: read again in one process: {why}")
                report.stats, report.problems[:], report.notes[:] = None, [], []
                report.run_segments = 0
            # (here, not in the except clause, whose exception still holds the share's frames)
            gc.collect()  # the abandoned share's connections (cyclic GC is off meanwhile)
        if isinstance(plan, str):
            self.say(f"{unit.name}: read in one process: {plan}")
        if isinstance(plan, list) and plan:
            try:
                for rec in self._parallel(unit, plan, report):
                    given += 1
                    yield rec, None
                return
            except Fallback as why:
                self.fallbacks += 1
                self._drain(index)
                self.say(f"{unit.name}: read again in one process: {why}")
                report.stats, report.problems[:], report.notes[:] = None, [], []
        yield from self._sequential(unit, report, given)

    def _sequential(self, unit: Unit, report: FileReport, skip: int):
        """One process, the pipeline's own loop (a rotated set: the same loop over its files);
        the first ``skip`` records were given already."""
        o = self.opts
        if len(unit.paths) == 1:
            path = unit.paths[0]
            pairs = iter_connections(path, report, o.timeouts,
                                     check_ip_checksums=o.check_ip_checksums,
                                     zeek_options=o.zeek_options, engine=o.engine,
                                     progress=self.progress(path) if self.progress else None)
        else:
            pairs = _set_connections(unit, report, o)
        for conn, verdict in pairs:
            if skip:
                skip -= 1
                continue
            yield make_record(conn, verdict, unit.name), None

    def _parallel(self, unit: Unit, plan: list, report: FileReport) -> Iterator[dict]:
        merger = Merger(unit.name, self.opts, lambda s, r, k: _reread(s, r, k, self.opts))
        self.last_merger = merger
        parts: dict[str, dict] = {}  # file -> {"stats": [...], "problems": [...], "notes": [...]}
        stopped: set[str] = set()
        bar = self.progress(unit.name) if self.progress and not unit.rotated else None
        for _ in plan:
            self._pump()
            spec, fut = self.queue.popleft()
            try:
                res = fut.result()
            except Exception as exc:  # a worker died, or a host of the cluster went away
                raise Fallback(f"a worker failed ({type(exc).__name__}: {exc})") from None
            if spec.shown in stopped:
                continue  # the file's reading stopped on damage in an earlier chunk
            if res.error is not None:
                raise Fallback(f"{spec.shown}: {res.error}")
            part = parts.setdefault(spec.shown, {"stats": [], "problems": [], "notes": []})
            part["stats"].append(res.stats)
            part["problems"].append(res.problems)
            part["notes"].append(res.notes)
            if any(isinstance(p, DamagedCapture) and not isinstance(p, SKIPPED_FRAMES)
                   for p in res.problems):  # reading stopped there
                if not spec.last_in_file:
                    raise Fallback(f"{spec.shown}: damage found inside the file")
                stopped.add(spec.shown)
            yield from merger.add(spec, res)
            if bar is not None:
                bar(spec.end)
        yield from merger.close()
        _fill(report, unit, parts, merger.peak)

    def _drain(self, index: int) -> None:
        """Forget the chunks of unit ``index`` still queued (a fallback reads it anew)."""
        for spec, fut in self.queue:
            if spec.unit == index:
                fut.cancel()  # (those already running finish unheeded)
        self.queue = deque(x for x in self.queue if x[0].unit != index)
        self.todo = deque(s for s in self.todo if s.unit != index)

    def close(self) -> None:
        if self.pool_of is not None:
            self.pool_of.close()


def _reread(spec: chunks.ChunkSpec, res, keys: set, opts: Options) -> Iterator:
    """The chunk's segments of the 4-tuples ``keys`` again, with capture frame numbers, for the
    merge's replays. In a pcap chunk only their records are read and decoded (the worker said
    which segments they are); otherwise the chunk is read again and the rest dropped."""
    if spec.fmt != "pcap":
        _reader, segments, _shift = chunks.open_chunk(spec, opts.check_ip_checksums)
        for seg in segments:
            seg.frame += spec.base
            yield seg
        return
    wanted = [i for i, k in enumerate(res.firsts) if k in keys]
    frames = res.frame_of[np.isin(res.key_of, wanted)]
    if not len(frames):
        return
    hdr = pcap.parse_header(spec.head)
    skip = spec.base + spec.frames_before  # frames before the chunk's first record
    offsets = record_offsets(spec.path, spec.start, int(frames[-1]) - skip, hdr.little_endian)
    decode = CaptureReader(spec.shown, None, None, "pcap", b"", hdr, False,
                           opts.check_ip_checksums).frame_decoder()
    unpack = struct.Struct("<IIII" if hdr.little_endian else ">IIII").unpack
    div = 1e9 if hdr.nanoseconds else 1e6
    with open(spec.path, "rb") as f:
        for frame in frames.tolist():
            seg = None
            if frame - skip - 1 < len(offsets):
                at = int(offsets[frame - skip - 1])
                f.seek(at)
                head = f.read(pcap.RECORD_LEN)
                if len(head) == pcap.RECORD_LEN:
                    sec, frac, caplen, _wire = unpack(head)
                    seg = decode(f.read(caplen), hdr.linktype, frame - spec.base,
                                 sec + frac / div, at)
            if seg is None:  # what the worker decoded is not there any more
                raise Fallback(f"{spec.shown} changed while it was read")
            seg.frame = frame
            yield seg


def _fill(report: FileReport, unit: Unit, parts: dict, peak: int) -> None:
    """The unit's report from its files' chunk reports, as one reading would have made it."""
    stats, problems, notes = [], [], []
    for shown, part in parts.items():
        stats.append(chunks.merge_stats(part["stats"]))
        problems.extend(chunks.merge_problems(part["problems"]))
        file_notes = chunks.merge_notes(part["notes"])
        notes.extend(f"{shown}: {n}" for n in file_notes) if unit.rotated \
            else notes.extend(file_notes)
    report.stats = chunks.merge_stats(stats) if unit.rotated else stats[0] if stats else None
    report.problems.extend(problems)
    report.notes.extend(notes)
    report.peak_connections = peak


def _set_connections(unit: Unit, report: FileReport, o: Options):
    """The pipeline's segment-by-segment loop over a rotated set's files."""
    reader = chunks.SetReader(unit.paths, unit.paths, o.check_ip_checksums)
    return without_gc(reader_connections(reader, report, o.timeouts,
                                         zeek_options=o.zeek_options))


__all__ = ["CHUNK_BYTES", "Runner", "UnreadableCapture", "Workers"]
