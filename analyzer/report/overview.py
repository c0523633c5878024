"""The overview of a capture: endings over time by case, and the connections worth seeing one
by one. Aggregated, so that a million connections cost about what a thousand do: a few artists
per case, never one per connection (``rstscope plot --overview`` and the report's picture).

    overview_figure(analysis, *, bins=None, width=11.0, individual=100) -> Figure

Artists tests can find: one ``StepPatch`` per case with gid ``endings-<case>`` (stacked: its
baseline is the cases below it), and one ``LineCollection`` with gid ``connections``.
"""

from __future__ import annotations

import math

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.collections import LineCollection
from matplotlib.figure import Figure

from analyzer import cases
from analyzer.report import aggregate
from analyzer.report.plot import case_colours


def overview_figure(analysis, *, bins: int | None = None, width: float = 11.0,
                    individual: int = 100) -> Figure:
    """Endings per time bin stacked by case (above); below, connections drawn one by one from
    start to end: all of them up to ``2 * individual``, else the ``individual`` longest-lived
    and the ``individual`` longest-lived abnormal ones. Aggregated, so a million connections
    cost what a thousand do: a few artists per case, never one per connection."""
    df = aggregate.as_frame(analysis)
    n = len(df)
    fig = Figure(figsize=(width, 7.0), layout="constrained")
    FigureCanvasAgg(fig)
    top, low = fig.subplots(2, 1, sharex=True, height_ratios=[1, 1])
    if n == 0:
        top.text(0.5, 0.5, "no connections", ha="center", va="center", transform=top.transAxes)
        low.set_axis_off()
        return fig
    nbins = bins or int(min(120, max(10, math.sqrt(n))))
    edges, per_case = aggregate.endings_over_time(df, nbins)
    bin_width = _duration(edges[1] - edges[0])
    unit, scale = _time_unit(float(edges[-1]))
    edges = edges / scale
    colours = case_colours(per_case)
    base = np.zeros(len(edges) - 1)
    for case, counts in per_case.items():
        step = top.stairs(base + counts, edges, baseline=base.copy(), fill=True,
                          color=colours[case], label=f"{case} ({int(counts.sum()):,})")
        step.set_gid(f"endings-{case}")
        base += counts
    top.set_ylabel(f"endings per {bin_width}")
    top.set_ylim(0, max(1.0, float(base.max())) * 1.05)
    top.yaxis.get_major_locator().set_params(integer=True)
    files = df["file"].nunique()
    top.set_title(f"{n:,} connection{'s' if n != 1 else ''}, {files} file{'s' if files != 1 else ''}"
                  ": endings over time, by case")
    top.legend(loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, title="case")

    t0 = float(df["start"].min())
    start = (df["start"].to_numpy(float) - t0) / scale
    end = (df["end"].to_numpy(float) - t0) / scale
    life = end - start
    if n <= 2 * individual:
        pick = np.argsort(start, kind="stable")
        what = "every connection"
    else:
        ab = np.flatnonzero(df["case"].isin(cases.ABNORMAL).to_numpy())
        longest = np.argsort(-life, kind="stable")[:individual]
        longest_ab = ab[np.argsort(-life[ab], kind="stable")[:individual]]
        pick = np.union1d(longest, longest_ab)
        pick = pick[np.argsort(start[pick], kind="stable")]
        what = (f"the {individual} longest-lived connections and the {individual} "
                "longest-lived abnormal ones")
    span = max(float(end.max()), 1e-9)
    width_ = np.maximum(life[pick], span * 0.002)
    y = np.arange(len(pick))
    segs = np.stack([np.column_stack([start[pick], y]),
                     np.column_stack([start[pick] + width_, y])], axis=1)
    case_of = df["case"].to_numpy(object)[pick]
    lines = LineCollection(segs, colors=[colours.get(c, "#000000") for c in case_of],
                           linewidths=max(1.0, min(8.0, 160 / max(len(pick), 1))))
    lines.set_gid("connections")
    low.add_collection(lines)
    low.set_ylim(len(pick) - 0.5, -0.5)
    low.set_xlim(0, span * 1.02)
    if len(pick) <= 40:
        conns = df["conn"].to_numpy()[pick]
        low.set_yticks(y, [f"#{int(c)}" for c in conns], fontsize=7)
    else:
        low.set_yticks([])
    low.set_ylabel("connection (by start)")
    low.set_title(f"{what}, from first to last packet", fontsize=9)
    low.set_xlabel(f"{unit} since the first packet")
    return fig


def _time_unit(span: float) -> tuple[str, float]:
    """The unit a time axis of ``span`` seconds reads best in, and its length in seconds."""
    for unit, scale, below in (("µs", 1e-6, 2e-3), ("ms", 1e-3, 2.0), ("seconds", 1.0, 600.0),
                               ("minutes", 60.0, 7200.0)):
        if span < below:
            return unit, scale
    return "hours", 3600.0


def _duration(seconds: float) -> str:
    """A bin width as a person says it: "2.5 s", "40 ms", "1.2 min"."""
    if seconds >= 120:
        return f"{seconds / 60:.3g} min"
    if seconds >= 1:
        return f"{seconds:.3g} s"
    if seconds >= 1e-3:
        return f"{seconds * 1e3:.3g} ms"
    return f"{seconds * 1e6:.3g} µs"
