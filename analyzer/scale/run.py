"""Running captures: in this process, on local processes (``--jobs``), or on a Dask cluster
(``--dask``); the same output, in the same order, whichever.

The unit of work is a whole capture (a file, or a rotated set): a worker reads it with the
native core exactly as this process would (``analyze_unit``: the core's columns batches or
JSON Lines, from one file or a rotated set) and sends back its output and its report; the client hands them on
in input order, so records, statistics, messages and exit status are those of one process.
Splitting one file across processes (shares, chunks) is gone: on the native core one process
reads a file faster than splitting it costs (README, "--jobs N and --dask ADDRESS").

``Runner.batches(unit, reports)`` yields columns batches as ``pipeline.iter_batches`` does;
``Runner.json`` yields JSON Lines as ``pipeline.iter_json`` does. Workers pickle their result themselves (``gc_off``). Standard input
is read in this process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import pickle
import sys
from collections import deque
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from analyzer.errors import CaptureError, UsageError
from analyzer.pipeline import (
    FileReport,
    iter_batches,
    iter_json,
)
from analyzer.scale.inputs import Unit
from analyzer.scale.sets import set_batches, set_json
from analyzer.timeouts import Timeouts

CONNECT_SECONDS = 10  # how long to wait for a Dask scheduler to answer


@dataclass
class Options:
    """How every unit is read (plain data: it travels to other hosts)."""

    timeouts: Timeouts = field(default_factory=Timeouts)
    zeek_options: dict = field(default_factory=dict)
    check_ip_checksums: bool = False


@dataclass
class Result:
    """What a worker sends back for one unit."""

    records: list[dict] | bytes | list  # records, their JSON Lines (``Json``), or columns
    # batches with any JSON Lines between them (``Columns``)
    report: FileReport
    error: BaseException | None = None  # raised after the records, as the reading raised it


@dataclass
class Json:
    """Asks for JSON Lines instead of records (``pipeline.iter_json``'s filters)."""

    case_ids: list[int] | None = None
    ports: list[int] | None = None


@dataclass
class Columns:
    """Asks for columns batches (``pipeline.iter_batches``, the same filters as ``Json``), and
    with ``json`` for the JSON Lines too (bytes, between the batches)."""

    case_ids: list[int] | None = None
    ports: list[int] | None = None
    json: bool = False


def unit_batches(unit: Unit, report: FileReport, opts: Options, want: Columns,
                 paths: list[str] | None = None, progress=None) -> Iterator:
    """The unit's columns batches (and JSON Lines, as ``want`` says), read in this process;
    ``paths``: the files to open instead of ``unit.paths`` (absolute, on a worker), which stay
    the names shown."""
    paths = paths or unit.paths
    kw = dict(check_ip_checksums=opts.check_ip_checksums, zeek_options=opts.zeek_options,
              case_ids=want.case_ids, ports=want.ports, json=want.json)
    if len(paths) > 1:
        yield from set_batches(paths, unit.paths, report, opts.timeouts, **kw)
    else:
        yield from iter_batches(paths[0], report, opts.timeouts, progress=progress,
                                name=None if paths == unit.paths else unit.name, **kw)


def unit_json(unit: Unit, report: FileReport, opts: Options, want: Json,
              paths: list[str] | None = None, progress=None) -> Iterator[bytes]:
    """The unit's JSON Lines, written by the core, read in this process (``paths``: as above;
    a file opened under another name is read as records, encoded here: the same text)."""
    paths = paths or unit.paths
    if len(paths) > 1:
        yield from set_json(paths, unit.paths, report, opts.timeouts,
                            check_ip_checksums=opts.check_ip_checksums,
                            zeek_options=opts.zeek_options, case_ids=want.case_ids,
                            ports=want.ports)
    else:  # (a worker's absolute path: the records and messages keep the name as given)
        yield from iter_json(paths[0], report, opts.timeouts,
                             check_ip_checksums=opts.check_ip_checksums,
                             zeek_options=opts.zeek_options, case_ids=want.case_ids,
                             ports=want.ports, progress=progress,
                             name=None if paths == unit.paths else unit.name)


def analyze_unit(unit: Unit, paths: list[str], opts: Options, want: Json | Columns) -> bytes:
    """A worker's task: the whole unit, read from ``paths`` (absolute on a cluster, so that a
    worker elsewhere finds the files on shared storage); its pickled ``Result``."""
    report = FileReport(unit.name)
    out: list = []
    error = None
    try:
        if isinstance(want, Columns):
            out.extend(unit_batches(unit, report, opts, want, paths))
        else:
            out.extend(unit_json(unit, report, opts, want, paths))
    except Exception as exc:  # noqa: BLE001 - raised again by the client, in its place
        error = exc
    if len(paths) == 1 and paths != unit.paths:  # messages name the file as it was given
        for p in [*report.problems, error]:
            if isinstance(p, CaptureError) and p.path == paths[0]:
                p.path = unit.paths[0]
                p.args = (p.one_line(),)
    with gc_off():
        return pickle.dumps(Result(b"".join(out) if isinstance(want, Json) else out, report,
                                   error),
                            pickle.HIGHEST_PROTOCOL)


@contextmanager
def gc_off():
    """Python's cyclic collector off meanwhile: (un)pickling a hundred thousand records makes it
    run again and again over them all (5 s instead of 0.5 s to unpickle 76k records); they hold
    no cycles. Pickled here rather than by the pool, whose threads would collect."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if enabled:
            gc.enable()


class Workers:
    """Where units are read: a pool of local processes, or a Dask cluster."""

    def __init__(self, jobs: int | None = None, dask: str | None = None):
        self.pool = self.client = self.cluster = None
        if dask:
            self._dask(dask, jobs)
        else:
            from concurrent.futures import ProcessPoolExecutor

            # fork where there is one: the workers start with the modules this process has
            # loaded (a forkserver's would each import them again, ~0.3 s, as long as a small
            # capture's reading); the pool launches them all before its own thread starts
            ctx = multiprocessing.get_context("fork" if sys.platform == "linux" else "spawn")
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
    """Reads units in input order; with workers, keeps them busy ahead of the one handed on.
    ``want``: ``Columns`` to hand on columns batches (``batches``, the default), or ``Json``
    for JSON Lines (``json``)."""

    def __init__(self, units: list[Unit], opts: Options, workers: Workers | None = None,
                 say=None, progress=None, want: Json | Columns | None = None):
        self.units, self.opts, self.pool_of = units, opts, workers
        self.want = want if want is not None else Columns()
        self.progress = progress  # path -> callable(byte offset) or None (this process only)
        self.say = say or (lambda line: print(f"rstscope: {line}", file=sys.stderr))
        self.fallbacks = 0
        self.todo: deque[int] = deque(i for i, u in enumerate(units) if farmable(u)) \
            if workers is not None else deque()
        self.running: dict[int, object] = {}  # unit index -> future

    def _pump(self) -> None:
        window = 2 * self.pool_of.workers + 1  # results wait in memory: not all at once
        while self.todo and len(self.running) < window:
            i = self.todo.popleft()
            unit = self.units[i]
            # absolute: a worker's working directory is not this process's (another host, or
            # a forkserver started before a chdir)
            self.running[i] = self.pool_of.submit(
                analyze_unit, unit, [os.path.abspath(p) for p in unit.paths], self.opts,
                self.want)

    def _start(self, index: int, reports: list[FileReport]) -> tuple[Unit, Result | None]:
        """The unit, and its worker's result (None: read it in this process)."""
        unit = self.units[index]
        if unit.error is not None:
            raise unit.error
        if unit.note:
            self.say(unit.note)
        if self.pool_of is None or (index not in self.running and index not in self.todo):
            return unit, None
        self._pump()
        try:
            payload = self.running.pop(index).result()
        except Exception as exc:  # a worker died, or a host of the cluster went away
            self.fallbacks += 1
            self.say(f"{unit.name}: read again in one process: a worker failed "
                     f"({type(exc).__name__}: {exc})")
            return unit, None
        self._pump()  # (the next units start while this one is handed on)
        with gc_off():
            res = pickle.loads(payload)
        reports.append(res.report)
        return unit, res

    def _bar(self, unit: Unit):
        return self.progress(unit.paths[0]) if self.progress and not unit.rotated else None

    def json(self, index: int, reports: list[FileReport]) -> Iterator[bytes]:
        """The same as JSON Lines (UTF-8, a batch at a time), with ``want``'s filters."""
        unit, res = self._start(index, reports)
        if res is not None:
            if res.records:
                yield res.records
            if res.error is not None:
                raise res.error
            return
        report = FileReport(unit.name)
        reports.append(report)
        yield from unit_json(unit, report, self.opts, self.want,
                             progress=self._bar(unit))

    def batches(self, index: int, reports: list[FileReport]) -> Iterator:
        """The same as columns batches (``want``: a ``Columns``), with any JSON Lines it asks
        for (bytes) between them."""
        unit, res = self._start(index, reports)
        if res is not None:
            yield from res.records
            if res.error is not None:
                raise res.error
            return
        report = FileReport(unit.name)
        reports.append(report)
        yield from unit_batches(unit, report, self.opts, self.want,
                                progress=self._bar(unit))

    def close(self) -> None:
        if self.pool_of is not None:
            self.pool_of.close()


def farmable(unit: Unit) -> bool:
    """Whether a worker can read the unit: not standard input (one reader by nature), not an
    argument that named nothing."""
    return unit.error is None and unit.paths != ["-"]


__all__ = ["CONNECT_SECONDS", "Columns", "Json", "Options", "Runner", "Workers", "analyze_unit"]
