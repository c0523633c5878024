"""The HTML report: self-contained, and its table (rendered by headless Chromium, JS included)
matches ``rstscope analyze --json`` on the same capture."""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest

import analyzer
from analyzer.cli import main
from analyzer.errors import OutputExists
from analyzer.report import commands, html
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

# Injected last in <body>: drive the table (sort, filter) and write what happened into the DOM.
PROBE = """<script>
(function () {
  var out = {};
  var t = document.getElementById('connections'), th = t.tHead.rows[0].cells;
  function conns() { return Array.prototype.filter.call(t.tBodies[0].rows, function (r) {
    return r.style.display !== 'none'; }).map(function (r) { return r.dataset.conn; }); }
  th[1].click(); th[1].click(); out.desc = conns();
  th[4].click(); out.by_start = conns();
  var sel = document.getElementById('case-filter');
  sel.value = 'refused'; sel.dispatchEvent(new Event('change')); out.refused = conns();
  out.count = document.getElementById('shown-count').textContent;
  sel.value = ''; sel.dispatchEvent(new Event('change'));
  var ab = document.getElementById('abnormal-only'); ab.click(); out.abnormal = conns();
  ab.click();
  var q = document.getElementById('filter'); q.value = ':8080';
  q.dispatchEvent(new Event('input')); out.text = conns();
  q.value = ''; q.dispatchEvent(new Event('input')); out.all = conns();
  var pre = document.createElement('pre'); pre.id = 'probe'; pre.textContent = JSON.stringify(out);
  document.body.appendChild(pre);
})();
</script>"""


class Dom(HTMLParser):
    """Rows of #connections, the probe's output and the error attribute of a dumped DOM."""

    def __init__(self):
        super().__init__()
        self.rows: list[dict] = []
        self.errors = None
        self.probe = ""
        self._in_table = self._in_probe = False

    def handle_starttag(self, tag, attrs):
        a = dict(attrs)
        if tag == "html":
            self.errors = a.get("data-js-errors")
        if tag == "table":
            self._in_table = a.get("id") == "connections"
        if tag == "tr" and self._in_table and "data-conn" in a:
            self.rows.append(a)
        if tag == "pre" and a.get("id") == "probe":
            self._in_probe = True

    def handle_endtag(self, tag):
        if tag == "table":
            self._in_table = False
        if tag == "pre":
            self._in_probe = False

    def handle_data(self, data):
        if self._in_probe:
            self.probe += data


def chromium_dom(page: Path) -> tuple[Dom, str]:
    with tempfile.TemporaryDirectory() as profile:
        proc = subprocess.run(
            [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking", "--disable-component-update",
             "--disable-sync", f"--user-data-dir={profile}", "--enable-logging=stderr", "--v=0",
             "--virtual-time-budget=5000", "--dump-dom", page.resolve().as_uri()],
            capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    dom = Dom()
    dom.feed(proc.stdout)
    return dom, proc.stderr


def instrumented(page: str) -> str:
    assert page.count("<head>") == 1 and page.count("</body>") == 1
    return page.replace("<head>", "<head>" + HOOK).replace("</body>", PROBE + "</body>")


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    return craft(tmp_path_factory.mktemp("html") / "four.pcap")


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


def test_timeline_cap(pcap):
    page = html.render_report(analyzer.analyze(str(pcap)), max_timelines=1)
    assert page.count("<section class='conn'") == 1
    assert "2 more abnormal connections are not drawn (limit 1)" in page


def test_report_command_refuses_to_overwrite(pcap, tmp_path):
    parser = argparse.ArgumentParser(prog="rstscope")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    out = tmp_path / "r.html"
    assert commands.run(parser.parse_args(["report", str(pcap), "-o", str(out)])) == 0
    with pytest.raises(OutputExists):
        commands.run(parser.parse_args(["report", str(pcap), "-o", str(out)]))
    assert commands.run(parser.parse_args(["report", str(pcap), "-o", str(out), "--force"])) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["r.html"]


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed (apt-get install "
                                             "chromium)")
def test_rendered_table_matches_analyze_json(pcap, tmp_path, capsys):
    recs = json_records(pcap, capsys)
    page = tmp_path / "report.html"
    page.write_text(instrumented(html.render_report(analyzer.analyze(str(pcap)))), "utf-8")
    dom, stderr = chromium_dom(page)
    assert dom.errors is None, f"JavaScript errors: {dom.errors}"
    assert "Uncaught" not in stderr
    got = sorted((r["data-file"], int(r["data-conn"]), r["data-case"]) for r in dom.rows)
    want = sorted((r["file"], r["conn"], r["case"]) for r in recs)
    assert got == want
    probe = json.loads(dom.probe)
    n = len(recs)
    assert probe["desc"] == [str(i) for i in reversed(range(n))]
    assert probe["by_start"] == [str(r["conn"]) for r in sorted(recs, key=lambda r: r["start"])]
    assert probe["refused"] == [str(r["conn"]) for r in recs if r["case"] == "refused"]
    assert probe["count"] == f"{len(probe['refused'])} of {n} connections shown"
    abnormal = {str(r["conn"]) for r in recs if r["abnormal"]}
    assert set(probe["abnormal"]) == abnormal and abnormal
    assert probe["text"] == [str(r["conn"]) for r in recs if r["server"].endswith(":8080")]
    assert len(probe["all"]) == n


@pytest.mark.skipif(CHROMIUM is None, reason="chromium is not installed")
def test_error_hook_catches_errors(tmp_path):
    """The check above would notice a broken script: a page that throws is caught."""
    page = tmp_path / "broken.html"
    page.write_text(instrumented("<!DOCTYPE html><html><head></head><body>"
                                 "<table id='connections'><thead><tr><th>a</th></tr></thead>"
                                 "<tbody></tbody></table><script>nosuchfunction();</script>"
                                 "</body></html>"), "utf-8")
    dom, _ = chromium_dom(page)
    assert dom.errors and "nosuchfunction" in dom.errors
