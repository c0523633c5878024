"""One self-contained HTML page about an analysis: no network, inline CSS/JS, inline PNG images.

    render_report(analysis, *, title=None, max_timelines=200, dpi=80) -> str
    write_report(analysis, path, **same) -> int          (number of timelines drawn)

The page holds: the overview picture, a summary by case, a table of every connection (click a
header to sort, type to filter, pick a case, abnormal only), and for each abnormal connection
(up to ``max_timelines``, a note says how many were left out) its ladder diagram, the reason,
what each application saw and the advice. Table rows carry ``data-file``, ``data-conn`` and
``data-case`` so scripts and tests can read them.
"""

from __future__ import annotations

import base64
import datetime as dt
import os
from collections import defaultdict
from html import escape

from analyzer import __version__, cases
from analyzer.report import plot

COLUMNS = [  # key, heading, numeric
    ("file", "file", False), ("conn", "conn", True), ("client", "client", False),
    ("server", "server", False), ("start", "start (s)", True), ("duration", "duration (s)", True),
    ("packets", "packets", True), ("case", "case", False), ("closer", "closer", False),
    ("client_sees", "client sees", False), ("server_sees", "server sees", False),
    ("confidence", "confidence", False),
]

CSS = """
body{font-family:system-ui,sans-serif;margin:1.5em;color:#222;max-width:1400px}
h1{margin-bottom:.2em} .muted{color:#666} table{border-collapse:collapse;margin:.5em 0}
th,td{border:1px solid #ccc;padding:2px 6px;font-size:13px;text-align:left}
th{background:#f0f0f0;cursor:pointer;user-select:none;position:sticky;top:0}
th.asc::after{content:" \\25B2"} th.desc::after{content:" \\25BC"}
tr.abnormal td.case{font-weight:bold;color:#b00} td.num{text-align:right}
.swatch{display:inline-block;width:.9em;height:.9em;margin-right:.3em;vertical-align:middle}
.controls{margin:.5em 0} .controls>*{margin-right:1em}
section.conn{border-top:2px solid #ddd;margin-top:1.5em;padding-top:.5em}
section.conn img{max-width:100%;border:1px solid #eee}
dl{display:grid;grid-template-columns:max-content auto;gap:.2em 1em} dt{font-weight:bold}
code{background:#f6f6f6;padding:0 3px} .note{background:#fff6d5;padding:.4em;border:1px solid #ec6}
"""

JS = """
(function(){
  var table=document.getElementById('connections'); if(!table) return;
  var tbody=table.tBodies[0], rows=Array.prototype.slice.call(tbody.rows);
  var text=document.getElementById('filter'), sel=document.getElementById('case-filter');
  var abn=document.getElementById('abnormal-only'), count=document.getElementById('shown-count');
  function apply(){
    var q=text.value.toLowerCase(), c=sel.value, only=abn.checked, n=0;
    rows.forEach(function(r){
      var ok=(!q||r.textContent.toLowerCase().indexOf(q)>=0)&&(!c||r.dataset.case===c)
             &&(!only||r.dataset.abnormal==='1');
      r.style.display=ok?'':'none'; if(ok) n++;
    });
    count.textContent=n+' of '+rows.length+' connections shown';
  }
  function sortBy(th,i){
    var num=th.dataset.num==='1', asc=!th.classList.contains('asc');
    Array.prototype.forEach.call(table.tHead.rows[0].cells,function(h){
      h.classList.remove('asc','desc');});
    th.classList.add(asc?'asc':'desc');
    rows.sort(function(a,b){
      var x=a.cells[i].dataset.v, y=b.cells[i].dataset.v, d;
      if(num){d=parseFloat(x)-parseFloat(y); if(isNaN(d)) d=0;}
      else{d=x<y?-1:(x>y?1:0);}
      return asc?d:-d;
    });
    rows.forEach(function(r){tbody.appendChild(r);});
  }
  Array.prototype.forEach.call(table.tHead.rows[0].cells,function(th,i){
    th.addEventListener('click',function(){sortBy(th,i);});});
  [text,sel,abn].forEach(function(el){el.addEventListener('input',apply);
    el.addEventListener('change',apply);});
  apply();
})();
"""


def _sees(v) -> str:
    if v is None or isinstance(v, float):
        return ""
    return ", ".join(str(x) for x in v) if isinstance(v, (list, tuple)) else str(v)


def _cell(rec: dict, key: str, t0: float) -> tuple[str, str]:
    """(sort value, shown text) of one cell."""
    v = rec.get(key)
    if key == "file":
        return str(v), os.path.basename(str(v))
    if key == "start":
        return f"{v - t0:.6f}", f"{v - t0:.3f}"
    if key == "duration":
        return f"{v:.6f}", f"{v:.3f}"
    if key in ("client_sees", "server_sees"):
        s = _sees(v)
        return s, s
    s = "" if v is None or (isinstance(v, float) and v != v) else str(v)
    return s, s


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img alt="{escape(alt)}" src="data:image/png;base64,{data}">'


def _summary(df) -> str:
    counts = df["case"].value_counts()
    colours = plot.case_colours(counts.index)
    out = ["<table id='summary'><thead><tr><th>case</th><th>title</th><th>abnormal</th>"
           "<th>connections</th><th>documents</th></tr></thead><tbody>"]
    for cid in sorted(counts.index, key=lambda c: (-int(counts[c]), c)):
        case = cases.BY_ID.get(cid)
        out.append(
            f"<tr data-case='{escape(cid)}'><td><span class='swatch' style='background:"
            f"{colours[cid]}'></span>{escape(cid)}</td><td>{escape(case.title if case else '')}"
            f"</td><td>{'yes' if case and case.abnormal else 'no'}</td>"
            f"<td class='num'>{int(counts[cid])}</td>"
            f"<td>{escape(case.documents if case else '')}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _table(recs: list[dict], t0: float) -> str:
    head = "".join(f"<th data-key='{k}' data-num='{int(num)}'>{escape(h)}</th>"
                   for k, h, num in COLUMNS)
    out = [f"<table id='connections'><thead><tr>{head}</tr></thead><tbody>"]
    for rec in recs:
        cells = []
        for k, _, num in COLUMNS:
            v, shown = _cell(rec, k, t0)
            cls = " class='num'" if num else (" class='case'" if k == "case" else "")
            if k == "case" and rec.get("_anchor"):
                shown_html = f"<a href='#{rec['_anchor']}'>{escape(shown)}</a>"
            else:
                shown_html = escape(shown)
            title = f" title='{escape(rec.get('title') or '')}'" if k == "case" else ""
            cells.append(f"<td{cls}{title} data-v='{escape(v)}'>{shown_html}</td>")
        abnormal = bool(rec.get("abnormal"))
        out.append(f"<tr class='{'abnormal' if abnormal else 'normal'}' "
                   f"data-file='{escape(str(rec['file']))}' data-conn='{int(rec['conn'])}' "
                   f"data-case='{escape(str(rec['case']))}' data-abnormal='{int(abnormal)}'>"
                   + "".join(cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _detail(rec: dict, png: bytes | None) -> str:
    case = cases.BY_ID.get(rec["case"])
    if rec.get("rival"):
        rec = {**rec, "confidence": f"{rec.get('confidence')} (or {rec['rival']})"}
    rows = [("reason", rec.get("reason")), ("client sees", _sees(rec.get("client_sees")) or "—"),
            ("server sees", _sees(rec.get("server_sees")) or "—"),
            ("advice", rec.get("advice")), ("closer", rec.get("closer")),
            ("confidence", rec.get("confidence")),
            ("evidence frames", ", ".join(str(f) for f in rec.get("evidence") or [])),
            ("anomalies", "; ".join(str(a) for a in rec.get("anomalies") or [])),
            ("documents", case.documents if case else None),
            ("Zeek", f"{rec.get('zeek_state') or ''} {rec.get('zeek_history') or ''}".strip())]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(str(v))}</dd>" for k, v in rows if v)
    wire = rec.get("wireshark")
    if wire:
        dl += f"<dt>Wireshark</dt><dd><code>{escape(wire)}</code></dd>"
    img = _img(png, f"ladder diagram of connection {rec['conn']}") if png else ""
    return (f"<section class='conn' id='{rec['_anchor']}' data-file='{escape(str(rec['file']))}'"
            f" data-conn='{int(rec['conn'])}'><h3>{escape(os.path.basename(str(rec['file'])))}"
            f" · conn {int(rec['conn'])}: {escape(rec.get('title') or rec['case'])}</h3>"
            f"<p class='muted'>{escape(rec['client'])} → {escape(rec['server'])}, frames "
            f"{rec['first_frame']}–{rec['last_frame']}</p>{img}<dl>{dl}</dl></section>")


def render_report(analysis, *, title: str | None = None, max_timelines: int = 200,
                  dpi: int = 80) -> str:
    """The whole page as a string (see the module docstring)."""
    df = analysis.connections
    recs = df.to_dict("records")
    files = sorted({str(f) for f in df["file"]}) if len(df) else \
        [str(f.path) for f in getattr(analysis, "files", [])]
    names = [os.path.basename(f) for f in files]
    title = title or "rstscope report: " + (", ".join(names) if len(names) <= 3 else
                                            f"{names[0]} and {len(names) - 1} more files")
    t0 = float(df["start"].min()) if len(df) else 0.0

    abnormal = [r for r in recs if r.get("abnormal")]
    drawn = abnormal[:max_timelines]
    for i, rec in enumerate(drawn):
        rec["_anchor"] = f"conn-{i}"
    by_file: dict[str, list[dict]] = defaultdict(list)
    for rec in drawn:
        by_file[rec["file"]].append(rec)
    details = []
    for path, group in by_file.items():
        segs = plot.segments_by_conn(group, path)
        for rec in group:
            fig = plot.ladder_figure(rec, segments=segs.get((rec["file"], int(rec["conn"]))))
            details.append(_detail(rec, plot.figure_bytes(fig, "png", dpi=dpi)))
    note = ""
    if len(abnormal) > len(drawn):
        note = (f"<p class='note' id='timeline-note'>{len(abnormal) - len(drawn)} more abnormal "
                f"connections are not drawn (limit {max_timelines}); use "
                f"<code>rstscope plot FILE --conn N</code>.</p>")

    problems = [str(p) for p in getattr(analysis, "problems", [])]
    prob_html = "".join(f"<p class='note'>{escape(p)}</p>" for p in problems)
    start = dt.datetime.fromtimestamp(t0, dt.timezone.utc).isoformat() if len(df) else "—"
    overview = _img(plot.figure_bytes(plot.overview_figure(analysis), "png", dpi=dpi),
                    "overview") if len(df) else "<p>No connections.</p>"
    options = "".join(f"<option value='{escape(c)}'>{escape(c)}</option>"
                      for c in sorted(set(df["case"])) if len(df))
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="muted">{len(df)} connections, {len(abnormal)} abnormal · first packet {start}
(times below are seconds since then) · rstscope {escape(__version__)}</p>
{prob_html}
<h2>Overview</h2>{overview}
<h2>Summary by case</h2>{_summary(df) if len(df) else ''}
<h2>Connections</h2>
<div class="controls"><input id="filter" type="search" placeholder="filter (any text)">
<select id="case-filter"><option value="">all cases</option>{options}</select>
<label><input id="abnormal-only" type="checkbox"> abnormal only</label>
<span id="shown-count"></span></div>
{_table(recs, t0)}
<h2>Abnormal connections</h2>
{note}{''.join(details) or '<p>None.</p>'}
<script>{JS}</script>
</body></html>
"""


def write_report(analysis, path: str, *, force: bool = True, **kw) -> int:
    """Write the page to ``path`` (atomically; over an existing file only with ``force``);
    returns the number of timelines drawn."""
    from analyzer.report import export

    page = render_report(analysis, **kw)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(page)

    export.write_new(path, force, write, suffix=".html")
    return page.count("<section class='conn'")
