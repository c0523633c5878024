"""Benchmark: rstscope against tshark, tcptrace and NFStream on synthetic captures (the "Speed"
issue), with the issue's targets.

Captures come from ``analyzer.synth`` and are cached in ``bench-data/`` (regenerated when the
generator's source changes):

- ``short-1M``: the ``short`` mix, where resets live (~13 packets a connection: HTTP/1.0-like
  exchanges, refusals, unread-data resets, aborts, SYN timeouts, writes after close);
- ``teardowns-1M`` and ``teardowns-10M``: the ``teardowns`` mix (bulk transfers dominate);
- ``flood``: the ``syn_flood`` mix at 2.02M packets, about 1M SYNs each on its own 4-tuple
  (shared with ``bench/adversarial.py``'s cache);
- ``tiny``: ~10 packets, for the cost of starting.

(RST storms and floods at several sizes, with every verdict checked, are ``bench/adversarial.py``'s,
which ``make bench`` runs next.)

rstscope runs ``rstscope analyze --all --json FILE`` (output discarded) in one process;
the peers run on the same files in the same rounds, the tools' order rotating from round to round;
the table gives medians. Every run is one child process measured alone (wall clock; user and
system CPU from /usr/bin/time, its children included). Memory: the larger of /usr/bin/time's peak
RSS (that of the largest process) and the peak of the process tree's summed PSS (a page shared by
forked processes counted once; NFStream forks its meters), sampled every 20 ms.

    python bench/run_bench.py            # 3 rounds on the 1M captures, 1 on 10M and the flood
    python bench/run_bench.py --quick    # small captures, 1 round: a smoke test of the bench
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

sys.path.insert(0, str(Path(__file__).resolve().parent))  # peers, adversarial (run as a script)

import adversarial  # noqa: E402
import peers  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))  # analyzer, when the bench runs outside the project's venv
M = 1_000_000
STARTUP_RUNS = 10
# (mix, packets) of each capture; quick: small enough for a couple of minutes at ~50k pkt/s
SIZES = {"short": ("short", M), "teardowns": ("teardowns", M),
         "teardowns-big": ("teardowns", 10 * M), "flood": ("syn_flood", 2 * M + 20_000),
         "tiny": ("short", 10)}
QUICK_SIZES = {"short": ("short", 100_000), "teardowns": ("teardowns", 100_000),
               "flood": ("syn_flood", 100_000), "tiny": ("short", 10)}
TARGETS = """targets (the speed issue): short mix >= 1.5M packets/s end to end, >= 10x tshark,
  >= 4x tcptrace, >= 10x NFStream; 1M teardowns >= 3M packets/s; startup (10 packets) <= 0.15 s;
  peak RSS <= 200 MB on both 1M captures and <= 1.2x that at 10M; 10M time <= 10.5x the 1M
  time; SYN flood of 1M distinct 4-tuples <= 500 MB and <= 5 s with no eviction, at most 300
  bytes per open connection"""


def warm(path: Path) -> None:
    """Read the file once before its runs, so that every tool starts from the page cache (a
    capture just written, or pushed out by a larger one, would charge the disk to the first)."""
    with open(path, "rb", buffering=0) as f:
        while f.read(1 << 22):
            pass


def rstscope_bin() -> str | None:
    here = Path(sys.executable).parent / "rstscope"
    return str(here) if here.exists() else shutil.which("rstscope")


def synth_version() -> str:
    h = hashlib.sha256()
    for name in ("synth.py", "synth_cases.py", "synth_wire.py"):
        h.update((ROOT / "analyzer" / name).read_bytes())
    return h.hexdigest()[:16]


def size_label(n: int) -> str:
    if n >= M and n % M == 0:
        return f"{n // M}M"
    return f"{n // 1000}k" if n >= 1000 and n % 1000 == 0 else str(n)


def ensure_capture(data: Path, mix: str, packets: int, seed: int) -> tuple[Path, dict]:
    """The cached capture (generated if missing or stale) and its metadata."""
    if mix == "syn_flood":  # the adversarial bench's copy, with its count of flood tuples
        path, _, info = adversarial.ensure_capture(data, mix, packets, seed)
        return path, info
    from analyzer import synth

    data.mkdir(parents=True, exist_ok=True)
    path = data / f"{mix}-{size_label(packets)}-s{seed}.pcap"
    meta = path.with_suffix(".json")
    version = synth_version()
    if path.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("version") == version and path.stat().st_size == info.get("bytes"):
            return path, info
    print(f"generating {path.name} ...", end=" ", flush=True)
    t = time.perf_counter()
    res = synth.generate(str(path), packets=packets, seed=seed, mix=mix)
    dt = time.perf_counter() - t
    print(f"{res['packets']:,} packets, {res['connections']:,} connections in {dt:.1f} s",
          flush=True)
    info = {"version": version, "bytes": path.stat().st_size, "packets": res["packets"],
            "connections": res["connections"], "cases": res["cases"],
            "generate_s": round(dt, 2)}
    meta.write_text(json.dumps(info, indent=1))
    return path, info


def tiny_capture(data: Path, packets: int, seed: int) -> tuple[Path, dict]:
    """The first ``packets`` records of a short-mix capture (the generator finishes the
    connections it started, so asked for 10 packets it writes more): rewritten on every run, it
    takes milliseconds."""
    import struct

    from analyzer import synth

    data.mkdir(parents=True, exist_ok=True)
    path = data / f"short-{packets}-s{seed}.pcap"
    with tempfile.TemporaryDirectory(dir=data) as tmp:
        whole = Path(tmp) / "whole.pcap"
        synth.generate(str(whole), packets=packets, seed=seed, mix="short")
        blob = whole.read_bytes()
    end = 24  # the file header; then each record: 16-byte header (big-endian) and its bytes
    for _ in range(packets):
        end += 16 + struct.unpack_from(">I", blob, end + 8)[0]
    path.write_bytes(blob[:end])
    return path, {"packets": packets}


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
    """Peak of the summed proportional set size of a process and its descendants (sampled).

    Every 20 ms for the first 2 s (short runs), then every 100 ms, the process list re-read one
    sample in five: on a 2-CPU machine a scan of /proc every 20 ms took a fifth of a CPU from
    the run being measured."""

    def __init__(self, root: int, every: float = 0.02):
        self.root, self.every, self.peak_mb = root, every, 0.0
        self.kids: dict[int, list[int]] = {}
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        n = 0
        while not self.done.wait(self.every if n < 100 else 5 * self.every):
            if n % 5 == 0:
                self.kids = self._children()
            self.peak_mb = max(self.peak_mb, self._sample())
            n += 1

    @staticmethod
    def _children() -> dict[int, list[int]]:
        kids: dict[int, list[int]] = {}
        for d in os.listdir("/proc"):
            if d.isdigit():
                try:
                    with open(f"/proc/{d}/stat") as f:
                        kids.setdefault(int(f.read().rsplit(")", 1)[1].split()[1]), []).append(
                            int(d))
                except (OSError, ValueError, IndexError):
                    continue
        return kids

    def _sample(self) -> float:
        kids = self.kids
        total_kb, todo, seen = 0, [self.root], set()
        while todo:  # bounded: each pid is visited once
            pid = todo.pop()
            if pid in seen:
                continue
            seen.add(pid)
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


PEAK_CODE = """import sys
from analyzer.pipeline import iter_records
from analyzer.timeouts import Timeouts
reports = []
for _ in iter_records([sys.argv[1]], reports, Timeouts(max_active=int(sys.argv[2]))):
    pass
print(max(r.peak_connections for r in reports))
"""
# The flood is read with no eviction, as the issue measures it: every tuple may stay open.
FLOOD_MAX_OPEN = 3_000_000


def peak_open(path: Path, max_open: int) -> int | None:
    """The most connections rstscope's tracker held open at once on ``path`` with ``--max-open
    max_open`` (the CLI does not print it: the same pipeline in a child process, not timed)."""
    try:
        run = subprocess.run([sys.executable, "-c", PEAK_CODE, str(path), str(max_open)],
                             capture_output=True, text=True, cwd=ROOT, timeout=3600)
        return int(run.stdout.split()[-1]) if run.returncode == 0 else None
    except (OSError, subprocess.TimeoutExpired, ValueError, IndexError):
        return None


class Bench:
    def __init__(self, peer_limit: float, rs_tools: dict[str, list[str]],
                 nfstream_py: str | None):
        self.peer_limit = peer_limit
        self.rs_tools = rs_tools  # name -> the rstscope command's arguments before the file
        self.nfstream_py = nfstream_py
        self.runs: dict[tuple[str, str], list[dict]] = {}
        self.failed: dict[tuple[str, str], str] = {}
        self.packets: dict[str, int] = {}
        self.skipped: set[str] = set()

    def commands(self, path: str, with_peers: bool, extra: tuple[str, ...] = ()
                 ) -> dict[str, list[str] | None]:
        cmds: dict[str, list[str] | None] = {t: [*a, *extra, path]
                                             for t, a in self.rs_tools.items()}
        if with_peers:
            cmds.update(peers.commands(path, self.nfstream_py))
        return cmds

    def one(self, name: str, tool: str, cmd: list[str], quiet: bool = False) -> dict:
        r = run_once(cmd)
        pk = self.packets[name]
        why = f"exit {r['rc']}" + (f" (signal {r['rc'] - 128})" if r["rc"] > 128 else "")
        why += f": {r['err'][:100]}" if r["err"] else ""
        ok = "" if r["rc"] == 0 else f"  {why}"
        if not quiet or r["rc"]:
            print(f"  {name:<16} {tool:<16} wall {r['wall']:7.2f} s  cpu {r['cpu']:7.2f} s  "
                  f"rss {r['rss_mb']:7.0f} MB  {pk / r['wall'] / 1e3:8.0f}k pkt/s{ok}",
                  flush=True)
        if r["rc"] == 0:
            self.runs.setdefault((name, tool), []).append(r)
        else:
            self.failed[(name, tool)] = why
        return r

    def round(self, files: list[tuple[str, Path]], rnd: int, with_peers: bool,
              big_from: dict[str, str] | None = None, extra: tuple[str, ...] = ()) -> None:
        for name, path in files:
            warm(path)
            cmds = self.commands(str(path), with_peers, extra)
            order = list(cmds)
            order = order[rnd % len(order):] + order[:rnd % len(order)]  # alternate the order
            for tool in order:
                cmd = cmds[tool]
                if cmd is None:
                    if tool not in self.skipped:
                        print(f"  {tool}: not installed, skipped")
                        self.skipped.add(tool)
                    continue
                if tool not in self.rs_tools and big_from and name in big_from and \
                        not self._fits(name, big_from[name], tool):
                    continue
                if (name, tool) in self.failed and tool in self.rs_tools:
                    continue  # a run of rstscope that fails once fails again: spare the time
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
                print(f"  {name:<16} {tool:<16} skipped: estimated {est:.0f} s, {rss:,.0f} MB "
                      f"(limit {self.peer_limit:.0f} s, 40% of the available memory)")
            return False
        return True

    def stats(self, name: str | None, tool: str) -> dict | None:
        rs = self.runs.get((name, tool)) if name else None
        if not rs:
            return None
        wall = statistics.median(r["wall"] for r in rs)
        return {"runs": len(rs), "wall": wall, "cpu": statistics.median(r["cpu"] for r in rs),
                "rss_mb": max(r["rss_mb"] for r in rs), "pps": self.packets[name] / wall}

    def table(self) -> list[str]:
        peer_names = ("tshark", "tcptrace", "nfstream")
        lines = [f"{'capture':<16} {'tool':<16} {'runs':>4} {'wall s':>8} {'cpu s':>8} "
                 f"{'RSS MB':>7} {'pkt/s':>11}  " + " ".join(f"{'vs ' + p:>12}"
                                                          for p in peer_names)]
        for name in self.packets:
            for tool in [*self.rs_tools, *peer_names]:
                s = self.stats(name, tool)
                if s is None:
                    if (name, tool) in self.failed:
                        lines.append(f"{name:<16} {tool:<16} failed: {self.failed[(name, tool)]}")
                    continue
                vs = ""
                if tool in self.rs_tools:  # packets/s ratios (the same file: wall ratios)
                    vs = " ".join(f"{s['pps'] / p['pps']:>11.2f}x" if (p := self.stats(
                        name, peer)) else f"{'':>12}" for peer in peer_names)
                lines.append(f"{name:<16} {tool:<16} {s['runs']:>4} {s['wall']:>8.2f} "
                             f"{s['cpu']:>8.2f} {s['rss_mb']:>7.0f} {s['pps']:>11,.0f}  {vs}")
        return lines

    def verdicts(self, tool: str, names: dict[str, str | None], flood_tuples: int | None,
                 startup: float | None, per_conn: float | None = None) -> list[str]:
        """The issue's targets for one rstscope command; ``names``: role -> capture name."""
        out = [f"{tool}:"]
        short, small, big, flood = (names.get(k) for k in ("short", "teardowns",
                                                           "teardowns-big", "flood"))
        fails = [f"{n}: {self.failed[(n, tool)]}" for n in names.values() if (n, tool) in
                 self.failed]

        def check(label: str, value, ok: bool, shown: str) -> None:
            if value is None:  # not measured: a failed run is a failure, a skipped one is not
                out.append(f"  {'FAIL' if fails else 'n/a':<5} {label}"
                           + (": a run failed" if fails else ""))
            else:
                out.append(f"  {'PASS' if ok else 'FAIL':<5} {label}: {shown}")

        s, t1, t10, fl = (self.stats(n, tool) for n in (short, small, big, flood))
        check(f">= 1.5M packets/s end to end ({short})", s and s["pps"],
              bool(s) and s["pps"] >= 1.5e6, f"{s['pps']:,.0f}" if s else "")
        for peer, want in (("tshark", 10), ("tcptrace", 4), ("nfstream", 10)):
            p = self.stats(short, peer)
            ratio = s["pps"] / p["pps"] if s and p else None
            check(f">= {want}x {peer} ({short})", ratio, ratio is not None and ratio >= want,
                  f"{ratio:.2f}x" if ratio else "")
        check(f">= 3M packets/s ({small})", t1 and t1["pps"], bool(t1) and t1["pps"] >= 3e6,
              f"{t1['pps']:,.0f}" if t1 else "")
        check(f"startup <= 0.15 s (median of {STARTUP_RUNS}, {names.get('tiny')})", startup,
              startup is not None and startup <= 0.15, f"{startup:.3f} s" if startup else "")
        rss = {n: x["rss_mb"] for n, x in ((short, s), (small, t1)) if x}
        check(f"peak RSS <= 200 MB ({', '.join(rss)})", max(rss.values()) if rss else None,
              bool(rss) and max(rss.values()) <= 200,
              ", ".join(f"{v:.0f} MB" for v in rss.values()))
        if big:
            q = t10["rss_mb"] / t1["rss_mb"] if t1 and t10 else None
            check(f"peak RSS {big} <= 1.2x {small}", q, q is not None and q <= 1.2,
                  f"{q:.2f}x ({t10['rss_mb']:.0f} MB)" if q else "")
            q = t10["wall"] / t1["wall"] if t1 and t10 else None
            check(f"time {big} <= 10.5x {small}", q, q is not None and q <= 10.5,
                  f"{q:.2f}x" if q else "")
        else:
            out.append("  n/a   10M memory and time growth: no 10M capture in this run")
        tuples = f"{flood_tuples:,} distinct 4-tuples" if flood_tuples else "flood"
        check(f"SYN flood ({flood}, {tuples}) <= 500 MB", fl and fl["rss_mb"],
              bool(fl) and fl["rss_mb"] <= 500, f"{fl['rss_mb']:.0f} MB" if fl else "")
        check(f"SYN flood ({flood}) <= 5 s", fl and fl["wall"], bool(fl) and fl["wall"] <= 5,
              f"{fl['wall']:.2f} s" if fl else "")
        check(f"bytes per open connection <= 300 ({flood}, no eviction)", per_conn,
              per_conn is not None and per_conn <= 300, f"{per_conn:,.0f}" if per_conn else "")
        out.extend(f"  failed run: {f}" for f in fails)
        return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true",
                    help="100k-packet captures, no 10M, 1 round: checks the bench runs")
    ap.add_argument("--rounds", type=int, help="rounds on the 1M captures (3; quick 1)")
    ap.add_argument("--rounds-10m", type=int, default=1, help="rounds on the 10M capture")
    ap.add_argument("--flood-rounds", type=int, default=1, help="rounds on the SYN flood")
    ap.add_argument("--no-10m", action="store_true", help="skip the 10M capture")
    ap.add_argument("--jobs2", action="store_true", help="also run rstscope with --jobs 2")
    ap.add_argument("--no-nfstream", action="store_true",
                    help="do not install or run NFStream")
    ap.add_argument("--peer-limit", type=float, default=300.0,
                    help="skip a peer on 10M when its 1M run predicts more seconds than this")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data")
    ap.add_argument("--json", type=Path, help="also write the runs here")
    a = ap.parse_args(argv)
    rs = rstscope_bin()
    if rs is None:
        print("rstscope is not installed (make test, or pip install -e .)", file=sys.stderr)
        return 2
    # bytecode, as an installed package has it (PYTHONDONTWRITEBYTECODE would otherwise make
    # every timed start compile the sources again)
    import compileall

    compileall.compile_dir(str(ROOT / "analyzer"), quiet=1)
    rounds = a.rounds if a.rounds is not None else (1 if a.quick else 3)
    if rounds < 1 or a.rounds_10m < 0 or a.flood_rounds < 0:
        ap.error("--rounds must be positive, the other round counts >= 0")
    base = [rs, "analyze", "--all", "--json"]
    rs_tools = {"rstscope": base}
    if a.jobs2:
        rs_tools["rstscope-j2"] = [*base, "--jobs", "2"]
    a.data.mkdir(parents=True, exist_ok=True)
    nfs = None if a.no_nfstream else peers.nfstream_python(a.data)

    sizes = dict(QUICK_SIZES if a.quick else SIZES)
    if a.no_10m:
        sizes.pop("teardowns-big", None)
    bench = Bench(a.peer_limit, rs_tools, nfs)
    names: dict[str, str] = {}
    paths: dict[str, Path] = {}
    flood_tuples = None
    for role, (mix, n) in sizes.items():
        path, info = (tiny_capture(a.data, n, a.seed) if role == "tiny" else
                      ensure_capture(a.data, mix, n, a.seed))
        name = "flood-" + size_label(n) if role == "flood" else f"{mix}-{size_label(n)}"
        names[role], paths[role] = name, path
        bench.packets[name] = info["packets"]
        if role == "flood":
            flood_tuples = info.get("flood")
    t0 = time.perf_counter()
    pair = [(names[r], paths[r]) for r in ("short", "teardowns")]
    for r in range(rounds):
        print(f"round {r + 1}/{rounds} ({', '.join(n for n, _ in pair)})", flush=True)
        bench.round(pair, r, with_peers=True)
    if "teardowns-big" in sizes:
        for r in range(a.rounds_10m):
            print(f"round {r + 1}/{a.rounds_10m} ({names['teardowns-big']})", flush=True)
            bench.round([(names["teardowns-big"], paths["teardowns-big"])], r, with_peers=True,
                        big_from={names["teardowns-big"]: names["teardowns"]})
    for r in range(a.flood_rounds):
        print(f"round {r + 1}/{a.flood_rounds} ({names['flood']}, rstscope only)", flush=True)
        bench.round([(names["flood"], paths["flood"])], r, with_peers=False,
                    extra=("--max-open", str(FLOOD_MAX_OPEN)))

    # startup: the median wall time of a few runs on a capture of ~10 packets, commands alternating
    print(f"startup: {STARTUP_RUNS} runs on {names['tiny']} "
          f"({bench.packets[names['tiny']]} packets)", flush=True)
    tiny = str(paths["tiny"])
    for i in range(STARTUP_RUNS):
        for tool in list(rs_tools)[i % len(rs_tools):] + list(rs_tools)[:i % len(rs_tools)]:
            if (names["tiny"], tool) not in bench.failed:
                bench.one(names["tiny"], tool, [*rs_tools[tool], tiny], quiet=True)
    startup = {t: s["wall"] for t in rs_tools if (s := bench.stats(names["tiny"], t))}

    # bytes per open connection: the flood's peak RSS over that of the tiny capture read the same
    # way, per connection open at the peak. The peak is the observer's (the same whatever the
    # command), counted once.
    flooded = [t for t in rs_tools if t != "rstscope-j2" and bench.stats(names["flood"], t)]
    peak = peak_open(paths["flood"], FLOOD_MAX_OPEN) if flooded else None
    per_conn: dict[str, tuple[float, float, float]] = {}
    for tool in flooded if peak else ():
        baseline = bench.stats(names["tiny"], tool)
        fl = bench.stats(names["flood"], tool)
        if baseline and fl:
            per_conn[tool] = ((fl["rss_mb"] - baseline["rss_mb"]) * 2**20 / peak,
                              baseline["rss_mb"], fl["rss_mb"])

    print(f"\nresults (median of the runs; RSS: the largest), {time.perf_counter() - t0:.0f} s"
          f" of runs, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    print("\n".join(bench.table()))
    for t, w in startup.items():
        print(f"startup {t}: {w:.3f} s wall (median of {STARTUP_RUNS}, {names['tiny']})")
    for tool, (per, low, high) in per_conn.items():
        print(f"bytes per open connection ({tool}, {names['flood']}): {per:,.0f} (peak RSS "
              f"{high:.0f} MB - {low:.0f} MB on {names['tiny']} read the same way, over {peak:,}"
              " connections open at the peak)")
    if not per_conn:
        print("bytes per open connection: n/a (no successful flood run or peak count)")
    print(f"note: the flood is read with --max-open {FLOOD_MAX_OPEN:,} (no eviction)" +
          (f"; {peak:,} connections open at the peak" if peak else ""))
    print("\n" + TARGETS)
    if a.quick:
        print("(--quick: the captures are a tenth of the targets' sizes or less; the verdicts "
              "below only show the bench works)")
    for tool in rs_tools:
        if tool != "rstscope-j2":
            per = per_conn.get(tool)
            print("\n".join(bench.verdicts(tool, names, flood_tuples, startup.get(tool),
                                            per[0] if per else None)))
    if a.json:
        a.json.write_text(json.dumps({f"{n}/{t}": rs for (n, t), rs in bench.runs.items()},
                                     indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
