"""Benchmark: rstscope against tshark and tcptrace on synthetic captures (issue 6, "Speed").

Captures come from ``analyzer.synth`` and are cached in ``bench-data/`` (regenerated when the
generator's source changes): 1M and 10M packet teardown mixes, a 1M SYN flood, a 1M RST storm.
Each tool runs on each capture, the tools' order rotating from round to round; every run is one
child process measured alone (wall clock; user and system CPU from /usr/bin/time, its children
included). Memory: the larger of /usr/bin/time's peak RSS (that of the largest process) and the
peak of the process tree's summed PSS (proportional set size: a page shared by forked processes
counted once), sampled every 20 ms, since rstscope reads a large file with a process per CPU.
"rstscope" is the default command (one process); "rstscope-j2" adds ``--jobs 2`` (the file read in
two shares, each process tracking half of the connections).

    python bench/run_bench.py            # 1M teardowns x 3 rounds, the others and 10M x 1
    python bench/run_bench.py --quick    # the 1M teardown file, 1 round
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
M = 1_000_000
TARGETS = """targets (issue 6): >= 1.5M packets/s end to end; >= 30x tshark; >= 7x tcptrace;
  peak RSS <= 300 MB and within 1.3x between 1M and 10M; 10M time <= 11x the 1M time"""


def rstscope_bin() -> str | None:
    here = Path(sys.executable).parent / "rstscope"
    return str(here) if here.exists() else shutil.which("rstscope")


def commands(path: str) -> dict[str, list[str] | None]:
    rs = rstscope_bin()
    return {
        "rstscope": [rs, "analyze", "--json", path] if rs else None,
        "rstscope-j2": [rs, "analyze", "--json", "--jobs", "2", path] if rs else None,
        "tshark": ["tshark", "-q", "-z", "conv,tcp", "-r", path] if shutil.which("tshark")
        else None,
        "tcptrace": ["tcptrace", "-n", "-l", path] if shutil.which("tcptrace") else None,
    }


def synth_version() -> str:
    h = hashlib.sha256()
    for name in ("synth.py", "synth_cases.py", "synth_wire.py"):
        h.update((ROOT / "analyzer" / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_capture(data: Path, mix: str, packets: int, seed: int) -> tuple[Path, int]:
    """The cached capture (generated if missing or stale) and its packet count."""
    from analyzer import synth

    data.mkdir(parents=True, exist_ok=True)
    path = data / f"{mix}-{packets // M}M-s{seed}.pcap"
    meta = path.with_suffix(".json")
    version = synth_version()
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("version") == version and path.stat().st_size == info.get("bytes"):
            return path, info["packets"]
    print(f"generating {path.name} ...", end=" ", flush=True)
    t = time.perf_counter()
    res = synth.generate(str(path), packets=packets, seed=seed, mix=mix)
    dt = time.perf_counter() - t
    print(f"{res['packets']:,} packets, {res['connections']:,} connections in {dt:.1f} s "
          f"({res['packets'] / dt / 1e3:,.0f}k packets/s)", flush=True)
    meta.write_text(json.dumps({"version": version, "bytes": path.stat().st_size,
                                "packets": res["packets"], "cases": res["cases"],
                                "generate_s": round(dt, 2)}, indent=1))
    return path, res["packets"]


TIME = "/usr/bin/time"


def run_once(cmd: list[str]) -> dict:
    """Run ``cmd`` (stdout discarded); its wall time, CPU seconds, peak RSS, exit status.

    Through /usr/bin/time when present: a child forked by this (large) Python process would
    report the parent's RSS as its peak (Linux carries ``maxrss`` across fork and exec)."""
    with tempfile.NamedTemporaryFile("w+") as out, tempfile.TemporaryFile() as err:
        timed = os.access(TIME, os.X_OK)
        full = [TIME, "-f", "%e %U %S %M", "-o", out.name, *cmd] if timed else cmd
        t = time.perf_counter()
        proc = subprocess.Popen(full, stdout=subprocess.DEVNULL, stderr=err)
        tree = TreeRss(proc.pid)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        tree.stop()
        proc.returncode = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
        user, sys_, rss = ru.ru_utime, ru.ru_stime, ru.ru_maxrss / 1024
        if timed:
            fields = out.read().split()[-4:]  # after "Command exited with non-zero status"
            if len(fields) == 4:
                user, sys_, rss = float(fields[1]), float(fields[2]), int(fields[3]) / 1024
    return {"wall": wall, "cpu": user + sys_, "user": user, "sys": sys_,
            "rss_mb": max(rss, tree.peak_mb), "rss_largest_mb": rss, "pss_tree_mb": tree.peak_mb,
            "rc": proc.returncode, "err": tail[0] if tail else ""}


class TreeRss:
    """Peak of the summed proportional set size of a process and its descendants (sampled)."""

    def __init__(self, root: int, every: float = 0.02):
        self.root, self.every, self.peak_mb = root, every, 0.0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while not self.done.wait(self.every):
            self.peak_mb = max(self.peak_mb, self._sample())

    def _sample(self) -> float:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(
                            int(d))
                except (OSError, ValueError, IndexError):
                    continue
        total_kb, todo = 0, [self.root]
        while todo:
            pid = todo.pop()
            try:
                with open(f"/proc/{pid}/smaps_rollup") as f:
                    total_kb += next(int(line.split()[1]) for line in f
                                     if line.startswith("Pss:"))
            except (OSError, StopIteration, ValueError):
                pass
            todo.extend(kids.get(pid, ()))
        return total_kb / 1024

    def stop(self) -> None:
        self.done.set()
        self.thread.join()


def mem_available_mb() -> float:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("inf")


class Bench:
    def __init__(self, peer_limit: float):
        self.peer_limit = peer_limit
        self.runs: dict[tuple[str, str], list[dict]] = {}
        self.packets: dict[str, int] = {}
        self.skipped: set[str] = set()

    def one(self, name: str, tool: str, cmd: list[str]) -> None:
        r = run_once(cmd)
        pk = self.packets[name]
        ok = "" if r["rc"] == 0 else f"  exit {r['rc']}: {r['err']}"
        print(f"  {name:<16} {tool:<11} wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s  "
              f"rss {r['rss_mb']:7.0f} MB  {pk / r['wall'] / 1e3:8.0f}k pkt/s{ok}", flush=True)
        if r["rc"] == 0:
            self.runs.setdefault((name, tool), []).append(r)

    def round(self, files: list[tuple[str, Path]], rnd: int, big_from: dict[str, str]) -> None:
        for name, path in files:
            cmds = commands(str(path))
            order = list(cmds)
            order = order[rnd % len(order):] + order[:rnd % len(order)]  # alternate the order
            for tool in order:
                cmd = cmds[tool]
                if cmd is None:
                    if tool not in self.skipped:
                        print(f"  {tool}: not installed, skipped")
                        self.skipped.add(tool)
                    continue
                if tool != "rstscope" and name in big_from and not self._fits(
                        name, big_from[name], tool):
                    continue
                self.one(name, tool, cmd)

    def _fits(self, name: str, small: str, tool: str) -> bool:
        """A peer runs on a big file only if its run on the small one says it will be quick
        and fit in memory."""
        base = self.runs.get((small, tool))
        if not base:
            return True
        scale = self.packets[name] / self.packets[small]
        est = statistics.median(r["wall"] for r in base) * scale
        rss = max(r["rss_mb"] for r in base) * scale
        key = f"{name}/{tool}"
        if est > self.peer_limit or rss > 0.4 * mem_available_mb():
            if key not in self.skipped:
                self.skipped.add(key)
                print(f"  {name:<16} {tool:<11} skipped: estimated {est:.0f} s, {rss:,.0f} MB "
                      f"(limit {self.peer_limit:.0f} s, 40% of the available memory)")
            return False
        return True

    def stats(self, name: str, tool: str) -> dict | None:
        rs = self.runs.get((name, tool))
        if not rs:
            return None
        wall = statistics.median(r["wall"] for r in rs)
        return {"runs": len(rs), "wall": wall, "cpu": statistics.median(r["cpu"] for r in rs),
                "rss_mb": max(r["rss_mb"] for r in rs), "pps": self.packets[name] / wall}

    def table(self) -> list[str]:
        lines = [f"{'capture':<16} {'tool':<11} {'runs':>4} {'wall s':>8} {'cpu s':>8} "
                 f"{'RSS MB':>7} {'pkt/s':>11} {'rstscope vs':>12}"]
        for name in self.packets:
            mine = self.stats(name, "rstscope")
            for tool in ("rstscope", "rstscope-j2", "tshark", "tcptrace"):
                s = self.stats(name, tool)
                if s is None:
                    continue
                vs = f"{mine['pps'] / s['pps']:.2f}x" if mine and tool != "rstscope" else ""
                lines.append(f"{name:<16} {tool:<11} {s['runs']:>4} {s['wall']:>8.2f} "
                             f"{s['cpu']:>8.2f} {s['rss_mb']:>7.0f} {s['pps']:>11,.0f} "
                             f"{vs:>12}")
        return lines

    def verdicts(self, small: str, big: str | None) -> list[str]:
        """The issue's targets against this run (rstscope on the teardown captures)."""
        out = []

        def check(label: str, value: float | None, ok: bool, shown: str) -> None:
            if value is None:
                out.append(f"  {'n/a':<5} {label}")
            else:
                out.append(f"  {'PASS' if ok else 'FAIL':<5} {label}: {shown}")

        s1, b = self.stats(small, "rstscope"), self.stats(big, "rstscope") if big else None
        check(">= 1.5M packets/s (1M)", s1 and s1["pps"], bool(s1) and s1["pps"] >= 1.5e6,
              f"{s1['pps']:,.0f}" if s1 else "")
        if b:
            check(">= 1.5M packets/s (10M)", b["pps"], b["pps"] >= 1.5e6, f"{b['pps']:,.0f}")
        for tool, want in (("tshark", 30), ("tcptrace", 7)):
            p = self.stats(small, tool)
            ratio = s1["pps"] / p["pps"] if s1 and p else None
            check(f">= {want}x {tool} (packets/s ratio, 1M)", ratio,
                  ratio is not None and ratio >= want, f"{ratio:.2f}x" if ratio else "")
        rss = [s["rss_mb"] for n in self.packets if (s := self.stats(n, "rstscope"))]
        check("peak RSS <= 300 MB (all captures)", max(rss) if rss else None,
              bool(rss) and max(rss) <= 300, f"{max(rss):.0f} MB" if rss else "")
        if s1 and b:
            q = b["rss_mb"] / s1["rss_mb"]
            check("RSS 10M / 1M <= 1.3", q, q <= 1.3, f"{q:.2f}")
            q = b["wall"] / s1["wall"]
            check("time 10M / 1M <= 11", q, q <= 11, f"{q:.2f}")
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="the 1M teardown capture, 1 round")
    ap.add_argument("--rounds", type=int, default=3, help="rounds on the 1M teardown capture")
    ap.add_argument("--adversarial-rounds", type=int, default=1,
                    help="rounds on the 1M SYN flood and RST storm captures")
    ap.add_argument("--rounds-10m", type=int, default=1, help="rounds on the 10M capture")
    ap.add_argument("--no-10m", action="store_true", help="skip the 10M capture")
    ap.add_argument("--peer-limit", type=float, default=300.0,
                    help="skip a peer on 10M when its 1M run predicts more seconds than this")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the runs here")
    a = ap.parse_args(argv)
    if rstscope_bin() is None:
        print("rstscope is not installed (make test, or pip install -e .)", file=sys.stderr)
        return 2
    small_specs = [("teardowns", M)] if a.quick else [
        ("teardowns", M), ("syn_flood", M), ("rst_storm", M)]
    big = not (a.quick or a.no_10m)
    bench = Bench(a.peer_limit)
    files = []
    for mix, n in small_specs + ([("teardowns", 10 * M)] if big else []):
        path, packets = ensure_capture(a.data, mix, n, a.seed)
        name = f"{mix}-{n // M}M"
        bench.packets[name] = packets
        files.append((name, path))
    small_files, big_files = files[:len(small_specs)], files[len(small_specs):]
    cpu0 = time.perf_counter()
    rounds = 1 if a.quick else a.rounds
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} (1M captures)", flush=True)
        bench.round(small_files if r < a.adversarial_rounds else small_files[:1], r, {})
    for r in range(a.rounds_10m if big_files else 0):
        print(f"round {r + 1}/{a.rounds_10m} (10M capture)", flush=True)
        bench.round(big_files, r, {"teardowns-10M": "teardowns-1M"})
    print(f"\nresults (median of the runs; RSS: the largest), {time.perf_counter() - cpu0:.0f} s"
          f" of runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("\n".join(bench.table()))
    print("\n" + TARGETS)
    print("\n".join(bench.verdicts("teardowns-1M", "teardowns-10M" if big_files else None)))
    if a.json:
        a.json.write_text(json.dumps({f"{n}/{t}": rs for (n, t), rs in bench.runs.items()},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
