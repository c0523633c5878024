"""Cut a capture into files at record boundaries, named as ``tcpdump -C`` names its files.

    python -m analyzer.scale.split IN.pcap OUTDIR [--pieces N]

writes ``OUTDIR/IN.pcap``, ``OUTDIR/IN.pcap1``, ... ``IN.pcapN-1``: each a valid capture (pcap:
the file header, then whole records; pcapng: the section header and the interface blocks the
records need, then whole blocks), of about the same size, whose concatenation holds the input's
records in order. Reading the directory as a rotated set gives the input's analysis (the tests'
use). The cuts are record boundaries found by walking the headers (``walk``).
"""

from __future__ import annotations

import argparse
import os
import sys

from analyzer.errors import RstscopeError, UnreadableCapture, UsageError
from analyzer.scale.walk import read_block, walk


def split(path: str, outdir: str, pieces: int) -> list[str]:
    """Write the pieces; returns their paths in order. Fewer pieces come out when the capture
    has fewer records (or cuts) than asked for."""
    if pieces < 1:
        raise UsageError(f"--pieces {pieces}: needs at least one")
    lay = walk(path, max(1, os.path.getsize(path) // (pieces * 16)))
    if lay.format == "gzip":
        raise UnreadableCapture(path, "gzip-compressed: decompress it first")
    # from the fine cuts, the ones nearest to equal shares of the file
    first = lay.cuts[0][0]
    share = (lay.size - first) / pieces
    chosen: list[int] = []
    for i in range(pieces):
        goal = first + i * share
        best = min(range(len(lay.cuts)), key=lambda k: abs(lay.cuts[k][0] - goal))
        if not chosen or best > chosen[-1]:
            chosen.append(best)
    os.makedirs(outdir, exist_ok=True)
    name = os.path.basename(path)
    out = []
    with open(path, "rb") as f:
        def read(off: int, n: int) -> bytes:
            f.seek(off)
            return f.read(n)

        for n, k in enumerate(chosen):
            start = lay.cuts[k][0] if n else 0  # the first piece keeps the file's own head
            end = lay.cuts[chosen[n + 1]][0] if n + 1 < len(chosen) else lay.size
            if lay.format == "pcap":
                head = lay.header if n else b""
            else:
                _off, _frames, shb, nidb = lay.cuts[k]
                head = read_block(f, shb, shb) + b"".join(
                    read_block(f, o, shb) for o in lay.idbs.get(shb, [])[:nidb]) if n else b""
            target = os.path.join(outdir, name + (str(n) if n else ""))
            with open(target, "xb") as w:
                w.write(head)
                f.seek(start)
                left = end - start
                while left:
                    buf = f.read(min(left, 1 << 20))
                    if not buf:
                        break
                    w.write(buf)
                    left -= len(buf)
            out.append(target)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m analyzer.scale.split",
                                description="cut a capture into files at record boundaries")
    p.add_argument("capture")
    p.add_argument("outdir")
    p.add_argument("--pieces", "-n", type=int, default=10)
    args = p.parse_args(argv)
    try:
        for path in split(args.capture, args.outdir, args.pieces):
            print(path)
    except FileExistsError as exc:
        print(f"split: {exc.filename}: already exists", file=sys.stderr)
        return 2
    except (RstscopeError, OSError) as exc:
        print(f"split: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
