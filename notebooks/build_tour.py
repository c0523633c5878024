"""Build ``teardown_tour.ipynb`` (outputs empty) from the cells below: ``python build_tour.py``.

The notebook walks through the cases found in the lab's ``captures/*.pcap`` (the folder is found
from the working directory upwards, or given by ``RSTSCOPE_CAPTURES``); an empty folder is fine.
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

CELLS = [
    ("md", """# A tour of TCP teardowns

Each capture in `captures/` was produced by `rstscope lab`: real sockets, one scenario per catalog
case, with a `.json` label saying which case it reproduces. This notebook reads them with
`analyzer.analyze`, compares what rstscope found with the labels, and shows each case's ladder
diagram: both endpoints' TCP states, every segment, and what each application saw."""),
    ("code", """import json
import os
from pathlib import Path

import pandas as pd
from IPython.display import Image, Markdown, display

import analyzer
from analyzer import cases
from analyzer.report import plot

root = Path.cwd().resolve()
while not (root / "pyproject.toml").exists() and root != root.parent:
    root = root.parent
capdir = Path(os.environ.get("RSTSCOPE_CAPTURES") or root / "captures")
paths = sorted(str(p) for p in capdir.glob("*.pcap"))
analysis = analyzer.analyze(*paths)
conns, events = analysis.connections, analysis.events
print(f"{len(paths)} captures in {capdir}, {len(conns)} connections")"""),
    ("md", """## The catalog

Every connection gets one case id. `abnormal` cases are the ones an application notices as an
error (or a hang); the documents column points at the passages each case comes from."""),
    ("code", """catalog = pd.DataFrame([c.as_dict() for c in cases.CATALOG])
catalog[["id", "title", "abnormal", "documents"]]"""),
    ("md", """## What the lab meant, what rstscope found

The label of each capture names the scenario's case; a capture holds the connection of the
scenario and sometimes helpers (a connection filling a listen queue, for instance)."""),
    ("code", """def label(path):
    j = Path(path).with_suffix(".json")
    try:
        return json.loads(j.read_text()).get("case")
    except (OSError, ValueError):
        return None


if conns.empty:
    print("no captures yet: run `rstscope lab run all -o captures` (root) to make them")
else:
    found = conns.groupby("file")["case"].agg(lambda s: sorted(set(s)))
    check = pd.DataFrame({"label": [label(f) for f in found.index], "found": found.values},
                         index=[Path(f).name for f in found.index])
    check["agrees"] = [lab in got for lab, got in zip(check["label"], check["found"], strict=True)]
    display(check)
    print(f"{int(check['agrees'].sum())} of {len(check)} captures agree with their label")"""),
    ("md", "## Connections by case"),
    ("code", """if not conns.empty:
    display(conns.groupby(["case", "abnormal"]).agg(
        connections=("conn", "size"), packets=("packets", "sum"),
        median_duration=("duration", "median")))"""),
    ("md", """## Who is resetting whom

The most frequent server endpoints and client networks of each abnormal case, with their share
of the case: where to look first in a big capture (the same numbers as the text view and the
report)."""),
    ("code", """if not conns.empty:
    display(analysis.top(case=sorted(set(conns.loc[conns["abnormal"], "case"])), by="server", n=3))
    display(analysis.top(by="client_net", n=1))"""),
    ("md", """## Overview

Above, how many connections ended in each time bin, stacked by case; below, the connections
one by one from their first to their last packet (a big capture: the longest-lived ones)."""),
    ("code", """if not conns.empty:
    display(Image(plot.figure_bytes(plot.overview_figure(analysis), dpi=80)))"""),
    ("md", """## One ladder per case

For each case found, one connection (IPv4 when there is one): the segments between the two
endpoints (time downwards, labels relative to the initial sequence numbers), each side's state
where it changes, and what each application's socket calls returned at the end."""),
    ("code", """order = {c.id: i for i, c in enumerate(cases.CATALOG)}
examples = (conns.assign(v6=conns["ip_version"] == 6, rank=conns["case"].map(order))
            .sort_values(["rank", "v6", "file", "conn"]).drop_duplicates("case"))
for rec in examples.to_dict("records"):
    case = cases.get(rec["case"])
    display(Markdown(f"### {case.title} (`{case.id}`)\\n\\n"
                     f"*On the wire:* {case.wire}  \\n*What the applications see:* {case.sees}"
                     f"  \\n*This connection:* {rec['reason']}  \\n*Advice:* {case.advice}"))
    display(Image(plot.figure_bytes(plot.ladder_figure(rec), dpi=70)))"""),
    ("md", """## State changes as a table

`analysis.events` has one row per endpoint state change; here the first abnormal connection's."""),
    ("code", """bad = conns[conns["abnormal"]]
if not bad.empty:
    first = bad.iloc[0]
    display(Markdown(f"`{Path(first['file']).name}` conn {first['conn']}: {first['title']}"))
    display(events[(events["file"] == first["file"]) & (events["conn"] == first["conn"])])"""),
    ("md", """## Zeek's view

Zeek's `conn_state` for the same packets, against the case: Zeek says which flags were seen,
rstscope says what they mean to the applications."""),
    ("code", """if not conns.empty:
    display(pd.crosstab(conns["case"], conns["zeek_state"].fillna("-")))"""),
]


def build() -> nbformat.NotebookNode:
    nb = new_notebook()
    nb.cells = [new_markdown_cell(src, id=f"cell-{i}") if kind == "md"
                else new_code_cell(src, id=f"cell-{i}") for i, (kind, src) in enumerate(CELLS)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3",
                                 "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


if __name__ == "__main__":
    out = Path(__file__).with_name("teardown_tour.ipynb")
    nbformat.write(build(), out)
    print(f"wrote {out}")
