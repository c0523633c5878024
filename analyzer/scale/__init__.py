"""Scale-out: many captures, rotated sets, many processes or machines.

- ``inputs``: command-line arguments (files, directories, globs) to captures; rotated sets;
- ``walk``: a file's record headers (first and last packet times, where it can be cut);
- ``sets``: a rotated set read as one capture by the native core;
- ``run``: reading the captures in this process, on local processes (``--jobs``) or on a Dask
  cluster (``--dask``), one capture per task, the output always that of one process;
- ``split``: ``python -m analyzer.scale.split``, cut a capture into files at record boundaries.
"""

from __future__ import annotations

from analyzer.errors import UsageError


def prepare(args, progress=None, want=None):
    """(units, runner) for ``rstscope analyze``'s arguments; ``progress(path)`` may return a
    callable fed the byte offset reached; ``want``: a ``run.Json`` for ``runner.json`` (JSON
    Lines written by the core) or a ``run.Columns`` for ``runner.batches`` (the core's columns
    batches). The caller closes the runner."""
    from analyzer.scale.inputs import expand
    from analyzer.scale.run import Options, Runner, Workers, farmable
    from analyzer.timeouts import Timeouts

    jobs = getattr(args, "jobs", None)
    dask = getattr(args, "dask", None)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: needs at least one process")
    units = expand(args.files, rotated=getattr(args, "rotated", False))
    max_open = getattr(args, "max_open", None)
    if max_open is not None and max_open < 1:
        raise UsageError(f"--max-open {max_open}: needs at least one connection")
    timeouts = Timeouts() if max_open is None else Timeouts(max_active=max_open)
    opts = Options(timeouts=timeouts, zeek_options={"boundaries": args.zeek_boundaries,
                                                     **_zeek_run_options(args)},
                   check_ip_checksums=args.check_ip_checksums)
    # local processes pay only with two captures or more to read at once (one capture is read
    # by one process either way, and this one would wait); a cluster is used as asked
    farmed = sum(farmable(u) for u in units)
    workers = Workers(jobs, dask) if dask and farmed or (jobs or 1) > 1 and farmed > 1 \
        else None
    return units, Runner(units, opts, workers, progress=progress, want=want)


def _zeek_run_options(args) -> dict:
    """--zeek-ignore-checksums / --zeek-bare-mode as Observer zeek_options (Zeek's -C / -b)."""
    return {"ignore_checksums": getattr(args, "zeek_ignore_checksums", False),
            "bare_mode": getattr(args, "zeek_bare_mode", False)}
