"""Scale-out: many captures, rotated sets, and huge files read by many processes or machines.

- ``inputs``: command-line arguments (files, directories, globs) to captures; rotated sets;
- ``layout``: where a file can be cut (record boundaries), without reading its packets;
- ``chunk``: reading one chunk, reading a rotated set as one capture, merging reports;
- ``worker``: what a worker does with a chunk; ``merge``: how the client puts chunks together
  so that the result is the one-process result, exactly;
- ``run``: the local process pool (``--jobs``) or Dask cluster (``--dask``) that runs it all;
- ``split``: ``python -m analyzer.scale.split``, cut a capture into files at record boundaries.
"""

from __future__ import annotations

import re

from analyzer.errors import UsageError

SIZE = re.compile(r"^(\d+)\s*([kKmMgG]?)i?[bB]?$")


def parse_size(text: str) -> int:
    """"64M", "512k", "2G" or a number of bytes."""
    m = SIZE.match(text.strip())
    if not m or int(m.group(1)) <= 0:
        raise UsageError(f"--chunk-size {text}: expected a size such as 64M, 512k or 1G")
    return int(m.group(1)) << {"": 0, "k": 10, "m": 20, "g": 30}[m.group(2).lower()]


def prepare(args, progress=None):
    """(units, runner) for ``rstscope analyze``'s arguments; ``progress(path)`` may return a
    callable fed the byte offset reached. The caller closes the runner."""
    from analyzer.scale.inputs import expand
    from analyzer.scale.run import CHUNK_BYTES, Runner, Workers
    from analyzer.scale.worker import Options

    jobs = getattr(args, "jobs", None)
    dask = getattr(args, "dask", None)
    if jobs is not None and jobs < 1:
        raise UsageError(f"--jobs {jobs}: needs at least one process")
    size = getattr(args, "chunk_size", None)
    chunk = parse_size(size) if size else CHUNK_BYTES
    units = expand(args.files, rotated=getattr(args, "rotated", False), target=chunk)
    opts = Options(zeek_options={"boundaries": args.zeek_boundaries},
                   check_ip_checksums=args.check_ip_checksums,
                   engine=getattr(args, "engine", "auto"))
    parallel = bool(dask) or (jobs or 1) > 1
    workers = Workers(jobs, dask) if parallel and any(u.error is None for u in units) else None
    # with --jobs, pcap files are read in shares by local processes (not on a cluster: each
    # process walks the whole file; not when chunks are asked for by size)
    shares = 1 if dask or size else jobs or 1
    return units, Runner(units, opts, workers, chunk_bytes=chunk, progress=progress,
                         shares=shares)
