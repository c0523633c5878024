"""The HTML report: self-contained, and its table (rendered by headless Chromium, JS included)
matches ``rstscope analyze --json`` on the same capture."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from collections import Counter
from html.parser import HTMLParser
from pathlib import Path

import pandas as pd
import pytest

import analyzer
from analyzer.cli import main
from analyzer.errors import OutputExists
from analyzer.report import aggregate, commands, html, plot, table
from tests.test_plot import craft

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")

# Injected first in <head>: any uncaught error or console.error lands in the DOM.
HOOK = """<script>
window.__errs = [];
function __note(m) { window.__errs.push(String(m));
  document.documentElement.setAttribute('data-js-errors', window.__errs.join(' | ')); }
window.onerror = function (m, s, l) { __note(m + ' at line ' + l); };
window.addEventListener('unhandledrejection', function (e) { __note(e.reason); });
var __ce = console.error; console.error = function () {
  __note(Array.prototype.join.call(arguments, ' ')); __ce.apply(console, arguments); };
</script>"""

# Injected last in <body>: once the table is decoded, drive it (pages, sort, filters, a
# drill-down link) and write what it showed into the DOM.
PROBE = """<script>
(function () {
  var root = document.documentElement;
  function $(id) { return document.getElementById(id); }
  function change(el) { el.dispatchEvent(new Event('change')); }
  function rows() {
    return Array.prototype.map.call($('connections').tBodies[0].rows, function (r) {
      var c = Array.prototype.map.call(r.cells, function (x) { return x.textContent; });
      return {file: r.dataset.file, conn: +r.dataset.conn, case: r.dataset.case,
              abnormal: r.dataset.abnormal, cells: c}; });
  }
  function all() {  // every page, first to last
    $('page-first').click();
    var out = [];
    for (var k = 0; k < 100000; k++) {
      out = out.concat(rows());
      var m = $('page-info').textContent.match(/page (\\d+) of (\\d+)/);
      if (m[1] === m[2]) break;
      $('page-next').click();
    }
    return out;
  }
  function conns(list) { return list.map(function (r) { return r.conn; }); }
  function run() {
    var out = {};
    var ps = $('page-size'); ps.value = '50'; change(ps);
    out.pages = $('page-info').textContent; out.first_page = rows().length;
    out.all = all();
    var th = $('connections').tHead.rows[0].cells;
    th[1].click(); th[1].click(); out.desc = conns(rows());
    th[4].click(); out.by_start = conns(all());
    var sel = $('case-filter'); sel.value = 'refused'; change(sel);
    out.refused = conns(all()); out.count = $('shown-count').textContent;
    sel.value = ''; change(sel);
    var ab = $('abnormal-only'); ab.click(); out.abnormal = conns(all()); ab.click();
    var q = $('filter'); q.value = ':8080'; change(q); out.text = conns(all());
    q.value = ''; change(q);
    var link = document.querySelector("table.top[data-case='refused'][data-by='server'] a.drill");
    link.click();
    out.drill = {server: link.dataset.filter, rows: all().map(function (r) {
      return [r.conn, r.case, r.cells[3]]; })};
    var net = document.querySelector("table.top[data-case='refused'][data-by='client_net'] a.drill");
    net.click();
    out.net = {filter: net.dataset.filter, rows: conns(all())};
    var pre = document.createElement('pre'); pre.id = 'probe';
    pre.textContent = JSON.stringify(out); document.body.appendChild(pre);
  }
  (function wait() {
    if (root.hasAttribute('data-ready') || root.hasAttribute('data-table-error')) run();
    else setTimeout(wait, 20);
  })();
})();
</script>"""


class Dom(HTMLParser):
    """The probe's output, the attributes the page script sets on <html>, and every piece of
    text a person would read (not scripts, styles or attributes), from a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.root: dict = {}
        self.probe = ""
        self.texts: list[str] = []
        self._skip = 0
        self._in_probe = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.root = a
        if tag in ("script", "style"):
            self._skip += 1
        if tag == "pre" and a.get("id") == "probe":
            self._in_probe = True
        if tag == "img" and a.get("alt"):
            self.texts.append(a["alt"])

    def handle_endtag(self, tag):
        if tag in ("script", "style"):
            self._skip -= 1
        if tag == "pre":
            self._in_probe = False

    def handle_data(self, data):
        if self._in_probe:
            self.probe += data
        elif not self._skip and data.strip():
            self.texts.append(data.strip())


def chromium_dom(page: Path) -> tuple[Dom, str]:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=20000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom, proc.stderr


def instrumented(page: str, probe: bool = True) -> str:
    assert page.count("<head>") == 1 and page.count("</body>") == 1
    return page.replace("<head>", "<head>" + HOOK).replace("</body>",
                                                           (PROBE if probe else "") + "</body>")


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    return craft(tmp_path_factory.mktemp("html") / "four.pcap")


@pytest.fixture(scope="module")
def many(tmp_path_factory):
    """A few hundred connections of every case (more than a page of the table)."""
    from analyzer import synth

    path = tmp_path_factory.mktemp("html") / "many.pcap"
    synth.generate(str(path), packets=6000, seed=7, bulk=(2, 6))
    return path


def json_records(pcap: Path, capsys) -> list[dict]:
    assert main(["analyze", "--json", str(pcap)]) == 0
    out, _ = capsys.readouterr()
    return [json.loads(line) for line in out.splitlines()]


def test_page_is_self_contained(pcap):
    page = html.render_report(analyzer.analyze(str(pcap)))
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:|//)""", page, re.I)
    assert "<link" not in page and "@import" not in page
    assert page.count("data:image/png;base64,") == 1 + 3  # overview + three abnormal ladders
    assert page.count("<section class='conn'") == 3


def test_page_has_no_row_per_connection(many):
    a = analyzer.analyze(str(many))
    n = len(a.connections)
    assert n > 300
    page = html.render_report(a)
    body = re.search(r"<table id='connections'>.*?<tbody>(.*?)</tbody>", page, re.S).group(1)
    assert body.count("<tr") == 1 and "Loading" in body  # the script draws the rows
    assert page.count("data-conn='") == page.count("<section class='conn'")


def test_timelines_sample_each_abnormal_case(many, pcap):
    a = analyzer.analyze(str(many))
    abnormal = a.connections[a.connections["abnormal"]]
    page = html.render_report(a, per_case=2)
    drawn = re.findall(r"<section class='conn' id='conn-\d+' data-file='[^']*' "
                       r"data-conn='(\d+)' data-case='(\w+)'", page)
    by_case = abnormal.groupby("case")["conn"].apply(set)
    assert {c for _, c in drawn} == set(by_case.index)  # every abnormal case has a timeline
    for conn, case in drawn:
        assert int(conn) in by_case[case]
    assert all(n <= 2 for n in Counter(c for _, c in drawn).values())
    page = html.render_report(analyzer.analyze(str(pcap)), max_timelines=1)
    assert page.count("<section class='conn'") == 1
    assert "(1 of 3 abnormal connections, 1 case(s))" in page
    assert "<section class='conn'" not in html.render_report(a, per_case=0)


def test_report_command_refuses_to_overwrite(pcap, tmp_path):
    parser = argparse.ArgumentParser(prog="rstscope")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "r.html"
    assert commands.run(parser.parse_args(["report", str(pcap), "-o", str(out)])) == 0
    with pytest.raises(OutputExists):
        commands.run(parser.parse_args(["report", str(pcap), "-o", str(out)]))
    assert commands.run(parser.parse_args(["report", str(pcap), "-o", str(out), "--force"])) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


def test_streamed_table_equals_the_analysis_table(many):
    """``rstscope report`` gathers its table without keeping records; the API builds it from
    the connections frame: the same table either way."""
    from analyzer.report.commands import _gather

    streamed = _gather([str(many)], 3).table
    a = analyzer.analyze(str(many))
    built = table.compact(a.connections)
    pd.testing.assert_frame_equal(streamed.astype(str), built.astype(str))
    from_rows = table.Collector(3)  # pandas rows: missing values are NaN, not None
    for rec in a.records():
        from_rows.add(rec)
    assert a.connections["closer"].isna().any()
    pd.testing.assert_frame_equal(from_rows.frame().astype(str), built.astype(str))


def readable(texts: list[str]) -> None:
    """Nothing a person reads says nan or None, and no Chinese is shown without a font for it
    (it would be drawn as empty boxes)."""
    joined = "\n".join(texts)
    assert not re.search(r"\b(nan|NaN|None|null|undefined)\b", joined), \
        re.search(r".{0,60}\b(nan|NaN|None|null|undefined)\b.{0,60}", joined).group(0)
    if not plot.cjk_font():
        assert not re.search(r"[\u2e80-\u9fff]", joined)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium)")
def test_rendered_table_matches_analyze_json(many, tmp_path, capsys):
    recs = json_records(many, capsys)
    n = len(recs)
    page = tmp_path / "report.html"
    page.write_text(instrumented(html.render_report(analyzer.analyze(str(many)))), "utf-8")
    dom, stderr = chromium_dom(page)
    assert dom.root.get("data-js-errors") is None, f"JavaScript errors: {dom.root}"
    assert "data-table-error" not in dom.root and "data-ready" in dom.root
    assert "Uncaught" not in stderr
    probe = json.loads(dom.probe)
    assert probe["first_page"] == 50 and probe["pages"] == f"page 1 of {-(-n // 50)}"
    t0 = min(r["start"] for r in recs)
    want = {(r["file"], r["conn"]): r for r in recs}
    assert len(probe["all"]) == n
    assert {(r["file"], r["conn"]) for r in probe["all"]} == set(want)
    for row in probe["all"]:
        r, c = want[(row["file"], row["conn"])], row["cells"]
        assert row["case"] == r["case"] and row["abnormal"] == str(int(r["abnormal"]))
        assert c[0] == Path(r["file"]).name and c[2] == r["client"] and c[3] == r["server"]
        assert abs(float(c[4]) - (r["start"] - t0)) < 0.0011
        assert abs(float(c[5]) - r["duration"]) < 0.0011 and int(c[6]) == r["packets"]
        assert c[8] == (r["closer"] or "—")
        assert c[9] == ", ".join(r["client_sees"]) and c[10] == ", ".join(r["server_sees"])
        assert c[11] == (r["confidence"] if not r["rival"]
                         else f"{r['confidence']} (or {r['rival']})")
    assert probe["desc"] == sorted((r["conn"] for r in recs), reverse=True)[:50]
    assert probe["by_start"] == [r["conn"] for r in sorted(
        recs, key=lambda r: (round((r["start"] - t0) * 1e6), r["conn"]))]
    refused = [r["conn"] for r in sorted(recs, key=lambda r: (r["start"], r["conn"]))
               if r["case"] == "refused"]
    assert sorted(probe["refused"]) == sorted(refused) and refused
    assert probe["count"] == f"{len(refused)} of {n:,} connections shown"
    assert sorted(probe["abnormal"]) == sorted(r["conn"] for r in recs if r["abnormal"])
    assert sorted(probe["text"]) == sorted(r["conn"] for r in recs
                                           if ":8080" in r["server"] or ":8080" in r["client"])
    field, server = probe["drill"]["server"].split("=", 1)
    assert field == "server" and probe["drill"]["rows"]
    assert sorted(x[0] for x in probe["drill"]["rows"]) == sorted(
        r["conn"] for r in recs if r["case"] == "refused" and r["server"] == server)
    field, net = probe["net"]["filter"].split("=", 1)
    in_net = aggregate.top(pd.DataFrame(recs), "client_net", case="refused", n=None)
    assert field == "net" and len(probe["net"]["rows"]) == \
        int(in_net.loc[in_net["client_net"] == net, "count"].iloc[0])
    assert set(probe["net"]["rows"]) <= {r["conn"] for r in recs if r["case"] == "refused"}
    readable(dom.texts)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_small_page_reads_cleanly(pcap, tmp_path):
    """Every field of the page of a small capture, details included, reads as text."""
    page = tmp_path / "small.html"
    page.write_text(instrumented(html.render_report(analyzer.analyze(str(pcap)))), "utf-8")
    dom, _ = chromium_dom(page)
    assert dom.root.get("data-js-errors") is None and "data-ready" in dom.root
    readable(dom.texts)
    assert any("ECONNREFUSED" in t for t in dom.texts)


def test_details_read_cleanly_from_pandas_rows(pcap):
    """A row of the connections frame holds NaN where a record holds None or no list."""
    rec = analyzer.analyze(str(pcap)).connections.iloc[0].to_dict()
    nan = float("nan")
    rec.update(rival=nan, closer=nan, anomalies=nan, evidence=nan, zeek_state=nan,
               zeek_history=nan, reason=nan)
    section = html._detail(rec, "conn-0", None)
    texts = re.sub(r"<[^>]+>", "\n", section).split("\n")
    readable([t for t in texts if t.strip()])
    assert "<dt>confidence</dt><dd>certain</dd>" in section


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_empty_page(tmp_path):
    page = tmp_path / "empty.html"
    page.write_text(instrumented(html.render_report(analyzer.analyze()), probe=False), "utf-8")
    dom, _ = chromium_dom(page)
    assert dom.root.get("data-js-errors") is None and "data-ready" in dom.root
    assert "0 of 0 connections shown" in dom.texts and "page 1 of 1" in dom.texts
    readable(dom.texts)


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_error_hook_catches_errors(tmp_path):
    """The check above would notice a broken script: a page that throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text(instrumented("<!DOCTYPE html><html data-ready='1'><head></head><body>"
                                 "<table id='connections'><thead><tr><th>a</th></tr></thead>"
                                 "<tbody></tbody></table><script>nosuchfunction();</script>"
                                 "</body></html>"), "utf-8")
    dom, _ = chromium_dom(page)
    assert "nosuchfunction" in dom.root.get("data-js-errors", "")
