"""Adversarial traffic (issue 8, item 3): a SYN flood of 1,000,000 distinct 4-tuples, RST storms
and sequence-number sweeps are analyzed in linear time and bounded memory, and the verdicts stay
right.

Captures come from ``analyzer.synth`` (mixes ``syn_flood`` and ``rst_storm``) at three sizes each,
with the generator's truth labels (client endpoint -> intended case), cached in ``bench-data/``
(regenerated when the generator's source changes). Each is analyzed by ``rstscope analyze --json``
in a child process under ``/usr/bin/time -v`` (wall clock, CPU, peak RSS of that child alone),
its JSON Lines kept on disk and then checked against the truth:

- flood: every connection of the flood (spoofed clients, 100.64.0.0/10 and 2001:db8:f::/48) must
  be ``syn_timeout`` or ``refused``, as the generator made it; the top size must hold at least
  1,000,000 of them, each its own 4-tuple;
- storm: every connection the generator attacked with forged RSTs (storms across the window,
  sweeps of every offset around it) must be ``ignored_reset`` or ``injected_reset``, as made;
- the rest of the traffic (teardowns of every case) is checked against its labels too.

Linearity is the CPU time per packet of each size over that of the smallest (1.00: linear), net
of the fixed cost of starting (imports: ``rstscope analyze`` of an empty capture), and in CPU
seconds, which other work on the machine disturbs less than the wall clock; bounded memory is the
peak RSS of each size over that of the smallest.

    python bench/adversarial.py            # flood 0.5M, 1M, 2M packets; storm 0.25M, 0.5M, 1M
    python bench/adversarial.py --quick    # a tenth of that: the linearity figures are rougher

Exit status: 0 all verdicts right, 1 some verdict wrong or a run failed, 2 usage.
``run(data_dir, quick) -> list[str]`` gives the table's lines (a failed check's line starts with
FAIL); ``run_checked`` also says whether everything passed.
"""

from __future__ import annotations

import argparse
import hashlib
import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
TIME = "/usr/bin/time"
SEED = 1
FLOOD_TUPLES = 1_000_000  # distinct SYN-flood 4-tuples the largest flood must hold (issue 8)
# The generator makes one flood SYN per two packets it counts: 2,000,000 packets hold about
# 1,000,000 flood SYNs; the margin makes "at least" certain whatever the seed.
SIZES = {"syn_flood": (500_000, 1_000_000, 2 * FLOOD_TUPLES + 20_000),
         "rst_storm": (250_000, 500_000, 1_000_000)}
QUICK_SIZES = {"syn_flood": (50_000, 100_000, 200_000), "rst_storm": (25_000, 50_000, 100_000)}
FLOOD_NETS = (ipaddress.ip_network("100.64.0.0/10"), ipaddress.ip_network("2001:db8:f::/48"))
EXPECTED = {"syn_flood": {"syn_timeout", "refused"},
            "rst_storm": {"ignored_reset", "injected_reset"}}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def rstscope_bin() -> str | None:
    here = Path(sys.executable).parent / "rstscope"
    return str(here) if here.exists() else shutil.which("rstscope")


def synth_version() -> str:
    """Changes when the generator does (the cache key of the captures)."""
    h = hashlib.sha256()
    for name in ("synth.py", "synth_cases.py", "synth_wire.py"):
        h.update((ROOT / "analyzer" / name).read_bytes())
    return h.hexdigest()[:16]


def ensure_capture(data: Path, mix: str, packets: int, seed: int = SEED) -> tuple[Path, Path, dict]:
    """The cached capture, its truth file and its metadata (generated if missing or stale)."""
    from analyzer import synth

    data.mkdir(parents=True, exist_ok=True)
    stem = f"adv-{mix}-{packets // 1000}k-s{seed}"
    path, truth, meta = (data / f"{stem}{ext}" for ext in (".pcap", ".truth.json", ".json"))
    version = synth_version()
    if path.exists() and truth.exists() and meta.exists():
        info = json.loads(meta.read_text())
        if info.get("version") == version and path.stat().st_size == info.get("bytes"):
            return path, truth, info
    log(f"generating {path.name} ...")
    t = time.perf_counter()
    res = synth.generate(str(path), packets=packets, seed=seed, mix=mix, truth=True)
    dt = time.perf_counter() - t
    labels = res.pop("truth")
    truth.write_text(json.dumps(labels, separators=(",", ":")))
    info = {"version": version, "bytes": path.stat().st_size, "packets": res["packets"],
            "connections": res["connections"], "cases": res["cases"],
            "flood": sum(1 for c in labels if _in_flood(c)), "generate_s": round(dt, 2)}
    meta.write_text(json.dumps(info, indent=1))
    log(f"  {res['packets']:,} packets, {res['connections']:,} connections in {dt:.1f} s")
    return path, truth, info


def _in_flood(client: str) -> bool:
    """Is this client endpoint (as rstscope prints it) one of the flood's spoofed sources?"""
    addr = client.rsplit(":", 1)[0].strip("[]")
    ip = ipaddress.ip_address(addr)
    return any(ip.version == n.version and ip in n for n in FLOOD_NETS)


_TIME_FIELDS = {
    "Elapsed (wall clock) time (h:mm:ss or m:ss)": "elapsed",
    "User time (seconds)": "user",
    "System time (seconds)": "sys",
    "Maximum resident set size (kbytes)": "rss_kb",
    "Exit status": "rc",
}


def _seconds(clock: str) -> float:
    s = 0.0
    for part in clock.split(":"):
        s = s * 60 + float(part)
    return s


def measure(cmd: list[str], out_path: Path) -> dict:
    """Run ``cmd`` with standard output to ``out_path``: wall, CPU, peak RSS, exit status, the
    last line of its standard error.

    Through /usr/bin/time, whose child is measured alone (a child forked by this process, which
    holds the truth labels, would start with this process's peak RSS as its own)."""
    timed = os.access(TIME, os.X_OK)
    with tempfile.NamedTemporaryFile("w+") as tv, open(out_path, "wb") as out, \
            tempfile.TemporaryFile() as err:
        full = [TIME, "-v", "-o", tv.name, *cmd] if timed else cmd
        t = time.perf_counter()
        proc = subprocess.Popen(full, stdout=out, stderr=err)
        _, status, ru = os.wait4(proc.pid, 0)
        wall = time.perf_counter() - t
        rc = os.waitstatus_to_exitcode(status)
        err.seek(0)
        tail = err.read().decode(errors="replace").strip().splitlines()[-1:]
        r = {"wall": wall, "user": ru.ru_utime, "sys": ru.ru_stime, "rss_mb": ru.ru_maxrss / 1024,
             "rc": rc, "err": tail[0] if tail else "", "timed": timed}
        if timed:
            got = {}
            for line in tv.read().splitlines():
                key, _, value = line.strip().rpartition(": ")
                if key in _TIME_FIELDS:
                    got[_TIME_FIELDS[key]] = value
            if "rss_kb" in got:
                r["rss_mb"] = int(got["rss_kb"]) / 1024
                r["user"], r["sys"] = float(got["user"]), float(got["sys"])
                r["rc"] = int(got["rc"])
    return r


def check(mix: str, truth_path: Path, json_path: Path) -> dict:
    """rstscope's verdicts (JSON Lines at ``json_path``) against the generator's labels."""
    truth: dict[str, str] = json.loads(truth_path.read_text())
    want = EXPECTED[mix]
    c: Counter = Counter()
    tuples: set[tuple[str, str]] = set()
    seen: set[str] = set()
    others: Counter = Counter()  # (intended, got) of the attacked connections got wrong
    with open(json_path, encoding="utf-8") as f:
        for line in f:
            rec = json.loads(line)
            client, case = rec["client"], rec["case"]
            label = truth.get(client)
            if label is None:
                c["unlabelled"] += 1  # a connection the generator did not make: split, invented
                continue
            seen.add(client)
            attacked = _in_flood(client) if mix == "syn_flood" else label in want
            kind = "attacked" if attacked else "background"
            c[kind] += 1
            if attacked:
                if mix == "syn_flood":
                    tuples.add((client, rec["server"]))
                if case not in want:
                    c["attacked_outside"] += 1
            if case != label:
                c[f"{kind}_wrong"] += 1
                if attacked:
                    others[(label, case)] += 1
    for client, label in truth.items():
        if client not in seen:
            attacked = _in_flood(client) if mix == "syn_flood" else label in want
            c[f"{'attacked' if attacked else 'background'}_missing"] += 1
    c["tuples"] = len(tuples)
    c["labelled_attacked"] = sum(1 for k, v in truth.items()
                                 if (_in_flood(k) if mix == "syn_flood" else v in want))
    c["examples"] = others.most_common(3)
    return c


def run_checked(data_dir: Path, quick: bool) -> tuple[list[str], bool]:
    """(table lines, True if every verdict is right and every run succeeded)."""
    rs = rstscope_bin()
    if rs is None:
        return ["FAIL rstscope is not installed (make test, or pip install -e .)"], False
    sizes = QUICK_SIZES if quick else SIZES
    ok = True
    with tempfile.TemporaryDirectory(dir=data_dir, prefix=".adv-") as tmp:
        empty = Path(tmp) / "empty.pcap"  # a pcap file header, no packets
        empty.write_bytes(bytes.fromhex("d4c3b2a1020004000000000000000000ffff000001000000"))
        start = min((measure([rs, "analyze", "--json", str(empty)], Path(tmp) / "o")
                     for _ in range(3)), key=lambda r: r["user"] + r["sys"])
    fixed = start["user"] + start["sys"]
    lines = [f"{'capture':<22} {'packets':>10} {'conns':>9} {'wall s':>8} {'cpu s':>8} "
             f"{'pkt/s':>9} {'us/pkt':>7} {'x':>5} {'RSS MB':>7} {'x':>5}  verdicts"]
    notes = [f"fixed cost (an empty capture): {start['wall']:.2f} s wall, {fixed:.2f} s CPU, "
             f"{start['rss_mb']:.0f} MB; us/pkt: CPU time per packet without it, x: over the "
             "smallest size's (1.00: linear); RSS x: peak RSS over the smallest size's"]
    for mix, counts in sizes.items():
        base = None
        for n in counts:
            path, truth, info = ensure_capture(Path(data_dir), mix, n)
            log(f"analyzing {path.name} ...")
            with tempfile.TemporaryDirectory(dir=data_dir, prefix=".adv-") as tmp:
                out = Path(tmp) / "out.jsonl"
                r = measure([rs, "analyze", "--json", str(path)], out)
                c = check(mix, truth, out) if r["rc"] == 0 else None
            pk = info["packets"]
            name = f"{mix}-{pk / 1e6:.2f}M"
            if r["rc"] != 0 or c is None:
                ok = False
                lines.append(f"FAIL {name}: rstscope exit {r['rc']}: {r['err']}")
                continue
            cpu = r["user"] + r["sys"]
            per = max(cpu - fixed, 0.0) / pk * 1e6
            if base is None:
                base = (per, r["rss_mb"])
            wrong = (c["attacked_wrong"] + c["attacked_missing"] + c["attacked_outside"]
                     + c["background_wrong"] + c["background_missing"])
            label = "flood" if mix == "syn_flood" else "forged-RST"
            verdict = (f"{label} {c['attacked']:,}: {c['attacked_outside']} not "
                       f"{'/'.join(sorted(EXPECTED[mix]))}, {c['attacked_wrong']} wrong, "
                       f"{c['attacked_missing']} missing; others {c['background']:,}: "
                       f"{c['background_wrong']} wrong, {c['background_missing']} missing"
                       + (f"; {c['unlabelled']} unlabelled" if c["unlabelled"] else ""))
            if mix == "syn_flood":
                verdict += f"; {c['tuples']:,} distinct flood 4-tuples"
            lines.append(f"{name:<22} {pk:>10,} {c['attacked'] + c['background']:>9,} "
                         f"{r['wall']:>8.2f} {cpu:>8.2f} {pk / r['wall']:>9,.0f} {per:>7.1f} "
                         f"{per / base[0]:>5.2f} {r['rss_mb']:>7.0f} {r['rss_mb'] / base[1]:>5.2f}"
                         f"  {verdict}")
            if wrong or c["unlabelled"] or c["labelled_attacked"] != c["attacked"]:
                ok = False
                notes.append(f"FAIL {name}: {wrong} verdicts wrong or missing, "
                             f"{c['unlabelled']} unlabelled (e.g. {c['examples']})")
            if mix == "syn_flood" and n == counts[-1] and not quick \
                    and c["tuples"] < FLOOD_TUPLES:
                ok = False
                notes.append(f"FAIL {name}: {c['tuples']:,} distinct flood 4-tuples, fewer "
                             f"than {FLOOD_TUPLES:,}")
    if not os.access(TIME, os.X_OK):
        notes.append(f"({TIME} not found: RSS from wait4, which may include this process's)")
    return lines + notes + ([] if not ok else ["all verdicts right"]), ok


def run(data_dir, quick: bool) -> list[str]:
    """The table's lines; a line starting with FAIL means a wrong verdict or a failed run."""
    return run_checked(Path(data_dir), quick)[0]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="a tenth of the sizes")
    ap.add_argument("--data", type=Path, default=ROOT / "bench-data",
                    help="where captures are cached (default bench-data/)")
    a = ap.parse_args(argv)
    t = time.perf_counter()
    lines, ok = run_checked(a.data, a.quick)
    print(f"adversarial traffic ({'quick' if a.quick else 'full'}; {os.cpu_count()} CPUs, load "
          f"average {os.getloadavg()[0]:.2f}; {time.perf_counter() - t:.0f} s in all)")
    print("\n".join(lines))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
