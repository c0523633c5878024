"""Scale-out figures for the README: one capture read by one process and by two.

    python bench/scale_bench.py bench-data/teardowns-10M-s1.pcap [--runs python,fast,shares2,...]

python: one process, segment by segment; fast: one process, the fast reader (the default);
shares2: the fast reader in two processes, each tracking a share of the connections (--jobs 2);
jobs2 and dask2: the file cut into chunks read by two Python-engine workers.

Each configuration runs ``rstscope analyze --json`` under /usr/bin/time -v (elapsed time, peak
resident memory of the largest process) and the outputs are compared byte for byte. Before and
after, a calibration: the same pure-Python loop in one process, then in two at once, shows how
much CPU the machine really gives two processes (a shared or throttled VM gives less than two).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import multiprocessing
import os
import re
import subprocess
import sys
import time

RUNS = {
    "python": ["--engine", "python", "--jobs", "1"],
    "fast": ["--jobs", "1"],
    "shares2": ["--jobs", "2"],
    "jobs2": ["--engine", "python", "--jobs", "2"],
    "dask2": ["--dask", "local", "--jobs", "2"],
}


def _burn(n: int) -> float:
    t = time.perf_counter()
    s = 0
    for i in range(n):
        s += i * i
    return time.perf_counter() - t


def calibrate(n: int = 30_000_000) -> dict:
    one = _burn(n)
    with multiprocessing.get_context("spawn").Pool(2) as pool:
        t = time.perf_counter()
        pool.map(_burn, [n, n])
        two = time.perf_counter() - t
    return {"one_s": round(one, 2), "two_at_once_s": round(two, 2),
            "cpus_worth": round(2 * one / two, 2)}


def run(capture: str, name: str, out_dir: str) -> dict:
    out = os.path.join(out_dir, f"{name}.jsonl")
    cmd = ["/usr/bin/time", "-v", sys.executable, "-m", "analyzer", "analyze", "--json",
           *RUNS[name], capture]
    with open(out, "wb") as f:
        proc = subprocess.run(cmd, stdout=f, stderr=subprocess.PIPE, text=True)
    err = proc.stderr
    wall = re.search(r"Elapsed \(wall clock\) time.*: (?:(\d+):)?(\d+):([\d.]+)", err)
    h, m, s = (float(x) if x else 0.0 for x in wall.groups())
    rss = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", err).group(1))
    digest = hashlib.sha256(open(out, "rb").read()).hexdigest()[:16]
    return {"run": name, "exit": proc.returncode, "seconds": round(h * 3600 + m * 60 + s, 1),
            "peak_rss_mb": rss // 1024, "output_sha256": digest,
            "stderr": [ln for ln in err.splitlines() if ln.startswith("rstscope")]}


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("capture")
    p.add_argument("--runs", default="python,fast,shares2,jobs2,dask2")
    p.add_argument("--out", default="/tmp/scale-bench")
    args = p.parse_args()
    os.makedirs(args.out, exist_ok=True)
    report = {"capture": args.capture, "bytes": os.path.getsize(args.capture),
              "calibration_before": calibrate(), "runs": []}
    print(json.dumps(report), flush=True)
    for name in args.runs.split(","):
        report["runs"].append(run(args.capture, name, args.out))
        print(json.dumps(report["runs"][-1]), flush=True)
    report["calibration_after"] = calibrate()
    print(json.dumps(report, indent=1), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
