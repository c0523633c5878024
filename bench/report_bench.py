"""Benchmark of what a person looks at (issue 15): the report page, the overview plot and the
text view's aggregates at a million connections, from records already gathered.

The capture: ``analyzer.synth``'s teardown mix with short connections (2-10 data segments
each), 10M packets, about 1M connections, cached in ``bench-data/``. Reading it once through
the pipeline into ``table.Collector`` (what ``rstscope report`` does while it reads) gives the
report's table, pickled beside it: that reading is the analysis, done once (it takes minutes).
Then each step runs in a child process of its own, measured as ``bench/run_bench.py`` measures
(wall and CPU seconds, peak RSS: the larger of /usr/bin/time's and the tree's summed PSS):

- ``report``: the page from the loaded table (aggregates, overview, packed table, timelines of
  the first 2 connections of each abnormal case, read from the capture) written to a file;
- ``plot``: ``plot --overview``'s figure from the loaded table, saved as PNG;
- ``summary``: the text view's "who is resetting whom" and the ``--summary-json`` object.

The seconds reported for a step are the child's own, from the loaded table to the finished
output (loading the pickle is not part of it); the peak RSS is the child's, table included.
The Collector's cost per connection (paid while reading, inside "the analysis") is timed on a
smaller capture's records. Chromium: ``--headless --dump-dom`` of the page, wall time minus
that of an empty page (median of 3 each), after checking that the page's script decoded the
table (``data-ready``) without error.

    python bench/report_bench.py              # 1M connections
    python bench/report_bench.py --quick      # 100k connections
"""

from __future__ import annotations

import argparse
import json
import pickle
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from run_bench import ROOT, run_once, synth_version  # noqa: E402

TARGETS = ("targets (issue 15) at 1M connections: report <= 15 s beyond the analysis, "
           "<= 600 MB peak, page <= 20 MB, ready in Chromium <= 3 s; overview plot <= 3 s")


def ensure_capture(data: Path, conns: int) -> Path:
    from analyzer import synth

    path = data / f"conns-{conns // 1000}k-s1.pcap"
    meta = path.with_suffix(".json")
    if path.exists() and meta.exists() and \
            json.loads(meta.read_text()).get("version") == synth_version():
        return path
    print(f"generating {path.name} ...", flush=True)
    res = synth.generate(str(path), packets=conns * 10, seed=1, bulk=(2, 10))
    meta.write_text(json.dumps({"version": synth_version(), "packets": res["packets"],
                                "connections": res["connections"]}))
    return path


def table_key() -> str:
    from analyzer.report import table

    return f"{synth_version()}:{','.join(table.COLUMNS)}"


def ensure_table(capture: Path) -> Path:
    """The report's table of ``capture`` (gathered in a child, measured, once)."""
    out = capture.with_suffix(".report.pkl")
    meta = capture.with_suffix(".report.json")
    if out.exists() and meta.exists() and json.loads(meta.read_text()).get("key") == table_key():
        info = json.loads(meta.read_text())
        print(f"table of {capture.name}: cached (gathered in {info['wall']:.0f} s, "
              f"peak {info['rss_mb']:.0f} MB)")
        return out
    print(f"reading {capture.name} into the report's table (the analysis; minutes) ...",
          flush=True)
    with tempfile.NamedTemporaryFile(suffix=".json") as res:
        r = run_once([sys.executable, __file__, "--child", "gather", str(capture), str(out),
                      res.name])
    if r["rc"] != 0:
        sys.exit(f"gathering failed: {r['err']}")
    meta.write_text(json.dumps({"key": table_key(), "wall": r["wall"], "rss_mb": r["rss_mb"]}))
    print(f"  {r['wall']:.0f} s, {r['cpu']:.0f} s CPU, peak {r['rss_mb']:.0f} MB")
    return out


def child(step: str, src: str, out: str, result: str) -> None:
    """One measured step; writes a JSON object of its own figures to ``result``."""
    if step == "gather":
        from analyzer.report.commands import _gather

        data = _gather([src], 2)
        with open(out, "wb") as f:
            pickle.dump((data.table, data.samples), f, protocol=pickle.HIGHEST_PROTOCOL)
        Path(result).write_text(json.dumps({"connections": len(data.table)}))
        return
    with open(src, "rb") as f:
        df, samples = pickle.load(f)
    if step == "summary":  # what the text view holds per connection (text.View.frame)
        df = df[["case", "client_addr", "server"]].astype(object)
    t, c = time.perf_counter(), time.process_time()
    if step == "report":
        from analyzer.report import html

        html.write_report(html.ReportInput(df, samples, [], []), out)
        extra = {"page_bytes": Path(out).stat().st_size}
    elif step == "plot":
        from analyzer.report import plot

        plot.save_figure(plot.overview_figure(df), out, dpi=100)
        extra = {}
    elif step == "summary":
        from analyzer.report import aggregate, text

        lines = text.who_resets_whom(df)
        json.dumps(aggregate.summary_object(df, 1))
        extra = {"lines": lines.count("\n") + 1}
    else:
        raise SystemExit(f"unknown step {step}")
    Path(result).write_text(json.dumps({"seconds": time.perf_counter() - t,
                                        "cpu": time.process_time() - c,
                                        "connections": len(df), **extra}))


def measured(step: str, src: Path, out: Path) -> dict:
    with tempfile.NamedTemporaryFile(suffix=".json") as res:
        r = run_once([sys.executable, __file__, "--child", step, str(src), str(out), res.name])
        if r["rc"] != 0:
            sys.exit(f"{step} failed: {r['err']}")
        return {**r, **json.loads(Path(res.name).read_text())}


def chromium_ready(page: Path, rounds: int = 3) -> tuple[float, dict]:
    exe = shutil.which("chromium") or shutil.which("chromium-browser")
    if exe is None:
        return float("nan"), {}
    with tempfile.TemporaryDirectory() as tmp:
        blank = Path(tmp) / "blank.html"
        blank.write_text("<!DOCTYPE html><html><body>blank</body></html>")

        def once(p: Path) -> tuple[float, str]:
            prof = tempfile.mkdtemp(dir=tmp)
            t = time.perf_counter()
            proc = subprocess.run([exe, "--headless", "--no-sandbox", "--disable-gpu",
                                   "--no-first-run", f"--user-data-dir={prof}",
                                   "--virtual-time-budget=1000", "--dump-dom", p.as_uri()],
                                  capture_output=True, text=True, timeout=300)
            return time.perf_counter() - t, proc.stdout

        pages, blanks, dom = [], [], ""
        for _ in range(rounds):
            w, dom = once(page.resolve())
            pages.append(w)
            blanks.append(once(blank)[0])
    start = dom.find("<html")
    head = dom[start:dom.find(">", start) + 1]
    attrs = {k: k in head for k in ("data-ready", "data-table-error")}
    return statistics.median(pages) - statistics.median(blanks), attrs


def collector_cost(capture: Path) -> float:
    """Seconds per connection that gathering the table adds to reading (median of 3), on the
    records the pipeline yields (what ``rstscope report`` feeds it)."""
    from analyzer.pipeline import iter_records
    from analyzer.report import table

    recs = [rec for rec, _ in iter_records([str(capture)], [])]
    runs = []
    for _ in range(3):
        col = table.Collector(2)
        t = time.perf_counter()
        for rec in recs:
            col.add(rec)
        col.frame()
        runs.append((time.perf_counter() - t) / len(recs))
    return statistics.median(runs)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="100k connections instead of 1M")
    ap.add_argument("--connections", type=int, help="about this many connections")
    ap.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        child(*args.child)
        return
    conns = args.connections or (100_000 if args.quick else 1_000_000)
    data = ROOT / "bench-data"
    data.mkdir(exist_ok=True)
    capture = ensure_capture(data, conns)
    tab = ensure_table(capture)
    with open(Path("/proc/loadavg")) as f:
        load = f.read().split()[0]
    print(f"load average {load} on {__import__('os').cpu_count()} CPUs")
    with tempfile.TemporaryDirectory() as tmp:
        page, png = Path(tmp) / "report.html", Path(tmp) / "overview.png"
        rep = measured("report", tab, page)
        print(f"report   {rep['connections']:>9,} connections  {rep['seconds']:6.2f} s "
              f"({rep['cpu']:.2f} s CPU)  peak RSS {rep['rss_mb']:4.0f} MB  page "
              f"{rep['page_bytes'] / 1e6:5.1f} MB", flush=True)
        ready, attrs = chromium_ready(page)
        ok = "ok" if attrs.get("data-ready") and not attrs.get("data-table-error") else \
            f"NOT READY {attrs}"
        print(f"chromium ready in {ready:5.2f} s beyond an empty page ({ok})", flush=True)
        pl = measured("plot", tab, png)
        print(f"plot     --overview  {pl['seconds']:6.2f} s ({pl['cpu']:.2f} s CPU)  peak RSS "
              f"{pl['rss_mb']:4.0f} MB", flush=True)
        su = measured("summary", tab, Path(tmp) / "unused")
        print(f"summary  who-resets-whom + --summary-json  {su['seconds']:6.2f} s "
              f"({su['cpu']:.2f} s CPU)", flush=True)
    small = ensure_capture(data, 30_000)
    per = collector_cost(small)
    print(f"gathering the table while reading: {per * 1e6:.1f} µs per connection "
          f"({per * conns:.1f} s at {conns:,})")
    print(TARGETS)


if __name__ == "__main__":
    main()
