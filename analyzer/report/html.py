"""One self-contained HTML page about an analysis: no network, inline CSS/JS, inline PNG images.

    render_report(source, *, title=None, per_case=2, max_timelines=200, dpi=80) -> str
    write_report(source, path, *, force=True, **same) -> int      (number of timelines drawn)

``source``: an ``Analysis``, or a ``ReportInput`` (what ``rstscope report`` gathers while the
capture is read, without keeping every record). The page, in the order a person reads it:
the summary by case; endings by case over time; who is resetting whom (the top servers,
ports, client addresses and networks of each abnormal case: click one to filter the table);
reset rates per server; every connection in a table the browser pages, sorts and filters from
compact embedded data (``table.pack``; rows carry ``data-file``, ``data-conn``, ``data-case``);
and ladder diagrams of the first ``per_case`` connections to end of each abnormal case (at most
``max_timelines`` in all), with the reason, what each application saw and the advice.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import os
from collections import defaultdict
from dataclasses import dataclass, field
from html import escape

import pandas as pd

from analyzer import __version__, cases
from analyzer.report import aggregate, page, plot, table
from analyzer.report.text import number, percent, shown

COLUMNS = [  # key, heading, numeric (the page script draws the cells in this order)
    ("file", "file", False), ("conn", "conn", True), ("client", "client", False),
    ("server", "server", False), ("start", "start (s)", True), ("duration", "duration (s)", True),
    ("packets", "packets", True), ("case", "case", False), ("closer", "closer", False),
    ("client_sees", "client sees", False), ("server_sees", "server sees", False),
    ("confidence", "confidence", False),
]
TOP_N = 10


@dataclass
class ReportInput:
    """What the page is made of: the report's table (``table.COLUMNS``), full records of the
    connections to draw, the files read and what went wrong reading them."""

    table: pd.DataFrame
    samples: list[dict] = field(default_factory=list)
    files: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    @classmethod
    def from_analysis(cls, analysis, per_case: int = 2) -> ReportInput:
        df = analysis.connections
        return cls(table.compact(df), table.sample(df, per_case),
                   [str(f.path) for f in getattr(analysis, "files", [])],
                   [str(p) for p in getattr(analysis, "problems", [])])


def _img(png: bytes, alt: str, lazy: bool = False) -> str:
    data = base64.b64encode(png).decode("ascii")
    # lazy: the ladders far down the page are decoded when scrolled to, not before the table
    extra = ' loading="lazy" decoding="async"' if lazy else ""
    return f'<img alt="{escape(alt)}"{extra} src="data:image/png;base64,{data}">'


def _doc(documents: str) -> str:
    """A documents reference: the quotes in Chinese only where the browser has a font for them
    (the page script swaps them in), else elided, never drawn as empty boxes."""
    plain = plot.latin_text(documents)
    if plain == documents:
        return escape(documents)
    return f"<span data-cjk=\"{escape(documents)}\">{escape(plain)}</span>"


def _drill(value: str, case: str | None = None, filter_: str | None = None) -> str:
    extra = f" data-case='{escape(case)}'" if case else ""
    return (f"<a class='drill' href='#connections' data-filter='{escape(filter_ or value)}'"
            f"{extra}>{escape(value)}</a>")


_FILTER = {"server": "server", "server_port": "port", "client_addr": "client",
           "client_net": "net"}


def _cell_value(by: str, value: str, case: str) -> str:
    """A top-table value as a link that filters the connection table to exactly it."""
    return _drill(value, case, f"{_FILTER[by]}={value}")


def _summary(df: pd.DataFrame) -> str:
    ct = aggregate.case_table(df)
    colours = plot.case_colours(ct["case"])
    out = ["<table id='summary'><thead><tr><th>case</th><th>title</th><th>abnormal</th>"
           "<th>connections</th><th>share</th><th>documents</th></tr></thead><tbody>"]
    for r in ct.itertuples(index=False):
        case = cases.BY_ID.get(r.case)
        out.append(
            f"<tr data-case='{escape(r.case)}'><td><span class='swatch' style='background:"
            f"{colours[r.case]}'></span>{escape(r.case)}</td><td>{escape(r.title)}</td>"
            f"<td>{'yes' if r.abnormal else 'no'}</td><td class='num'>{number(r.count)}</td>"
            f"<td class='num'>{percent(r.share)}</td>"
            f"<td>{_doc(case.documents) if case else '—'}</td></tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _tops(df: pd.DataFrame) -> str:
    # only the columns the keys come from: a copy of every column of 600k rows costs 100s of MB
    cols = ["case", "server"] + (["client_addr"] if "client_addr" in df else ["client"])
    ab = df.loc[df["abnormal"].to_numpy(), cols]
    if ab.empty:
        return "<p>No abnormal endings.</p>"
    ab = aggregate.keyed(ab)
    tops = {by: aggregate.top(ab, by, n=TOP_N) for by in aggregate.TOP_BY}
    distinct = {by: aggregate.distinct(ab, by) for by in aggregate.TOP_BY}
    counts = ab["case"].value_counts()
    heads = {"server": "server", "server_port": "server port", "client_addr": "client",
             "client_net": "client network"}
    out = []
    for case in cases.CATALOG:
        if not counts.get(case.id):
            continue
        out.append(f"<h3 id='top-{case.id}'>{escape(case.id)}: {number(counts[case.id])} "
                   f"<span class='muted'>{escape(case.title)}</span></h3><div class='tops'>")
        for by, head in heads.items():
            t = tops[by][tops[by]["case"] == case.id]
            rows = "".join(
                f"<tr><td>{_cell_value(by, str(v), case.id)}</td><td class='num'>{number(c)}</td>"
                f"<td class='num'>{percent(s)}</td></tr>"
                for v, c, s in zip(t[by], t["count"], t["share"], strict=True))
            more = int(distinct[by].get(case.id, 0)) - len(t)
            cap = f"{head} ({number(more)} more)" if more > 0 else head
            out.append(f"<table class='top' data-case='{escape(case.id)}' data-by='{by}'>"
                       f"<caption>{escape(cap)}</caption><tbody>{rows}</tbody></table>")
        out.append("</div>")
    return "\n".join(out)


def _rates(df: pd.DataFrame) -> str:
    r = aggregate.server_rates(df, 20)
    if r.empty:
        return "<p>No connections.</p>"
    rows = "".join(
        f"<tr><td>{_drill(str(x.server), None, f'server={x.server}')}</td>"
        f"<td class='num'>{number(x.connections)}</td>"
        f"<td class='num'>{number(x.resets)}</td><td class='num'>{percent(x.reset_share)}</td>"
        f"<td class='num'>{number(x.abnormal)}</td>"
        f"<td class='num'>{percent(x.abnormal_share)}</td></tr>" for x in r.itertuples())
    return ("<table id='server-rates'><thead><tr><th>server</th><th>connections</th>"
            "<th>resets</th><th>reset share</th><th>abnormal</th><th>abnormal share</th>"
            f"</tr></thead><tbody>{rows}</tbody></table>")


def _connections(df: pd.DataFrame, t0: float, anchors: dict[str, str]) -> str:
    head = "".join(f"<th data-key='{k}' data-num='{int(num)}'>{escape(h)}</th>"
                   for k, h, num in COLUMNS)
    options = "".join(f"<option value='{escape(c)}'>{escape(c)}</option>"
                      for c in aggregate.case_table(df)["case"])
    blob = table.pack(df, t0)
    return f"""<div class="controls"><input id="filter" type="search"
placeholder="filter: any text, or server=, port=, client=, net=">
<select id="case-filter"><option value="">all cases</option>{options}</select>
<label><input id="abnormal-only" type="checkbox"> abnormal only</label>
<span id="shown-count"></span></div>
<div class="controls"><button id="page-first">first</button><button id="page-prev">previous</button>
<span id="page-info"></span><button id="page-next">next</button><button id="page-last">last</button>
<label>rows per page <select id="page-size"><option>50</option><option selected>100</option>
<option>500</option><option>1000</option></select></label></div>
<table id='connections'><thead><tr>{head}</tr></thead><tbody><tr><td colspan="{len(COLUMNS)}">
Loading the table… (it needs JavaScript)</td></tr></tbody></table>
<script type="application/json" id="conn-anchors">{_script_json(anchors)}</script>
<script type="application/octet-stream" id="conn-data">{blob}</script>"""


def _script_json(obj) -> str:
    return json.dumps(obj, ensure_ascii=True).replace("</", "<\\/")


def _is_list(v) -> bool:  # (a pandas row holds NaN where a record holds no list)
    return isinstance(v, (list, tuple)) or hasattr(v, "__array__")


def _detail(rec: dict, anchor: str, png: bytes | None) -> str:
    case = cases.BY_ID.get(rec["case"])
    evidence = rec.get("evidence")
    anomalies = rec.get("anomalies")
    rows = [("reason", rec.get("reason")),
            ("client sees", table.sees_text(rec.get("client_sees")) or "—"),
            ("server sees", table.sees_text(rec.get("server_sees")) or "—"),
            ("advice", rec.get("advice")), ("closer", rec.get("closer")),
            ("confidence", table.confidence_text(rec.get("confidence"), rec.get("rival"))),
            ("evidence frames", ", ".join(map(str, evidence)) if _is_list(evidence) else ""),
            ("anomalies", "; ".join(map(str, anomalies)) if _is_list(anomalies) else ""),
            ("Zeek", f"{shown(rec.get('zeek_state'), '')} "
                     f"{shown(rec.get('zeek_history'), '')}".strip())]
    dl = "".join(f"<dt>{escape(k)}</dt><dd>{escape(shown(v))}</dd>" for k, v in rows
                 if shown(v, "") and shown(v) != "—" or k.endswith("sees"))
    if case:
        dl += f"<dt>documents</dt><dd>{_doc(case.documents)}</dd>"
    wire = shown(rec.get("wireshark"), "")
    if wire:
        dl += f"<dt>Wireshark</dt><dd><code>{escape(wire)}</code></dd>"
    img = _img(png, f"ladder diagram of connection {rec['conn']}", lazy=True) if png else ""
    return (f"<section class='conn' id='{anchor}' data-file='{escape(str(rec['file']))}'"
            f" data-conn='{int(rec['conn'])}' data-case='{escape(rec['case'])}'>"
            f"<h3>{escape(os.path.basename(str(rec['file'])))} · conn {int(rec['conn'])}: "
            f"{escape(shown(rec.get('title'), rec['case']))}</h3>"
            f"<p class='muted'>{escape(rec['client'])} → {escape(rec['server'])}, frames "
            f"{rec['first_frame']}–{rec['last_frame']}</p>{img}<dl>{dl}</dl></section>")


def _timelines(samples: list[dict], max_timelines: int, dpi: int
               ) -> tuple[list[str], dict[str, str]]:
    """The sections of the drawn connections (catalog order) and their anchors by file, conn.
    Each file is read once, only as far as its last sampled connection."""
    order = {c.id: i for i, c in enumerate(cases.CATALOG)}
    drawn = sorted(samples, key=lambda r: (order.get(r["case"], 99), r["file"], r["conn"]))
    drawn = drawn[:max_timelines]
    anchors = {f"{r['file']}\t{int(r['conn'])}": f"conn-{i}" for i, r in enumerate(drawn)}
    by_file: dict[str, list[dict]] = defaultdict(list)
    for rec in drawn:
        by_file[rec["file"]].append(rec)
    segs: dict = {}
    for path, group in by_file.items():
        segs.update(plot.segments_by_conn(group, path))
    sections = []
    for rec in drawn:
        key = (rec["file"], int(rec["conn"]))
        fig = plot.ladder_figure(rec, segments=segs.get(key), max_segments=30, layout=None)
        sections.append(_detail(rec, anchors[f"{rec['file']}\t{key[1]}"],
                                plot.compact_png(fig, dpi=dpi)))
    return sections, anchors


def render_report(source, *, title: str | None = None, per_case: int = 2,
                  max_timelines: int = 200, dpi: int = 80) -> str:
    """The whole page as a string (see the module docstring)."""
    data = source if isinstance(source, ReportInput) else \
        ReportInput.from_analysis(source, per_case)
    df = data.table
    files = sorted({str(f) for f in df["file"].unique()}) if len(df) else data.files
    names = [os.path.basename(f) for f in files]
    title = title or "rstscope report: " + (", ".join(names) if len(names) <= 3 else
                                            f"{names[0]} and {len(names) - 1} more files")
    t0 = float(df["start"].min()) if len(df) else 0.0
    n_abnormal = int(df["abnormal"].sum()) if len(df) else 0
    taken: dict[str, int] = defaultdict(int)
    samples = []
    for rec in data.samples:  # (in the order they ended)
        if taken[rec["case"]] < per_case:
            taken[rec["case"]] += 1
            samples.append(rec)
    sections, anchors = _timelines(samples, max_timelines, dpi)
    cases_drawn = {r["case"] for r in samples[:max_timelines]}
    note = (f"<p class='muted' id='timeline-note'>The first {per_case} connection(s) to end of "
            f"each abnormal case ({len(sections)} of {number(n_abnormal)} abnormal "
            f"connections, {len(cases_drawn)} case(s)); others: <code>rstscope plot FILE "
            f"--conn N</code>.</p>") if n_abnormal else ""
    prob_html = "".join(f"<p class='note'>{escape(p)}</p>" for p in data.problems)
    start = dt.datetime.fromtimestamp(t0, dt.timezone.utc).isoformat() if len(df) else "—"
    overview = _img(plot.compact_png(plot.overview_figure(df), dpi=dpi),
                    "endings by case over time") if len(df) else "<p>No connections.</p>"
    body = (f"<h2>Summary by case</h2>{_summary(df)}"
            f"<h2>Endings over time</h2>{overview}"
            f"<h2>Who is resetting whom</h2><p class='muted'>The {TOP_N} most frequent "
            f"endpoints of each abnormal case; click one to list its connections.</p>"
            f"{_tops(df)}<h2>Reset rates per server</h2>{_rates(df)}") if len(df) else ""
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{escape(title)}</title><style>{page.CSS}</style></head>
<body>
<h1>{escape(title)}</h1>
<p class="muted">{number(len(df))} connections, {number(n_abnormal)} abnormal · first packet
{start} (times below are seconds since then) · rstscope {escape(__version__)}</p>
{prob_html}{body}
<h2>Connections</h2>
{_connections(df, t0, anchors)}
<h2>Abnormal connections</h2>
{note}{''.join(sections) or '<p>No abnormal connections.</p>'}
<script>{page.JS}</script>
</body></html>
"""


def write_report(source, path: str, *, force: bool = True, **kw) -> int:
    """Write the page to ``path`` (atomically; over an existing file only with ``force``);
    returns the number of timelines drawn."""
    from analyzer.report import export

    text = render_report(source, **kw)

    def write(tmp: str) -> None:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)

    export.write_new(path, force, write, suffix=".html")
    return text.count("<section class='conn'")
