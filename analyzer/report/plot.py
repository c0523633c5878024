"""Pictures of connections: the ladder diagram of one connection and the overview of a capture.

Matplotlib's object API only (``Figure`` + ``FigureCanvasAgg``), no pyplot, no global state, so
the functions are safe in notebooks, threads and servers::

    ladder_figure(source, conn=None, *, file=None, segments=None, max_segments=40) -> Figure
        source: an ``Analysis`` (then ``conn`` picks the connection number, ``file`` the capture
        when it holds several), or one connection record (dict or pandas Series).
        segments: the connection's ``Segment`` list; read again from ``record["file"]`` if None.
        More than ``max_segments`` segments: the middle is collapsed behind "… N segments …"
        markers; the handshake, the teardown and the evidence frames stay drawn.
    overview_figure(analysis, *, bins=None, individual=100) -> Figure
        endings per time bin stacked by case (one ``StepPatch`` per case, gid
        ``endings-<case>``); below, a ``LineCollection`` (gid ``connections``) of the
        connections drawn one by one: every one of a small capture, else the longest-lived and
        the longest-lived abnormal ones. ``analysis``: an Analysis or a connections table.
    segments_by_conn(records, path) -> {(file, conn): [Segment, ...]}   one pass over a capture
    figure_bytes(fig, fmt="png", dpi=100) -> bytes;  save_figure(fig, path, dpi=100)
    compact_png(fig, dpi=80, colors=64) -> bytes   a palette PNG, for pages of many pictures

Artists tests can find: segment arrows are ``Annotation``s with gid ``segment-<frame>``, state
labels ``Text``s with gid ``state-<role>-<n>``, errno labels ``sees-<role>``, the heading
``case-title``, collapse markers ``collapse-<n>``.
"""

from __future__ import annotations

import functools
import io
import re
from collections import defaultdict

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from analyzer import cases
from analyzer.segment import ACK, FIN, RST, SYN, Segment

KIND_COLOURS = {"SYN": "#2ca02c", "FIN": "#1f77b4", "RST": "#d62728", "data": "#222222",
                "ACK": "#999999", "ICMP": "#9467bd"}
CASE_COLOURS = {
    "graceful": "#2ca02c", "half_close": "#98df8a", "simultaneous_close": "#17becf",
    "simultaneous_open": "#9edae5", "open": "#c7c7c7", "partial": "#7f7f7f",
    "refused": "#d62728", "unreachable": "#9467bd", "injected_reset": "#e377c2",
    "backlog_overflow": "#ff7f0e", "write_after_close": "#8c564b", "keepalive_timeout": "#bcbd22",
    "aborted_before_accept": "#ffbb78", "peer_state_lost": "#c5b0d5", "unread_data_reset": "#ff9896",
    "abortive_close": "#f7b6d2", "retransmission_timeout": "#1f77b4", "syn_timeout": "#aec7e8",
    "close_wait_stall": "#c49c94", "ignored_reset": "#dbdb8d",
}
_SPARE = ("#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173")
SLANT = 0.6  # rows an arrow descends while crossing: time in flight is unknown at one point
FORMATS = ("png", "svg", "pdf")
_CJK = re.compile(r"[\u2e80-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]+")
_QUOTED = re.compile(r'"[^"]*"')


def parse_endpoint(text: str) -> tuple[str, int]:
    """``"10.0.0.1:80"`` or ``"[::1]:80"`` -> (address, port)."""
    addr, _, port = text.rpartition(":")
    return addr.strip("[]"), int(port)


# font families that draw the documents' Chinese quotes (the first one installed is used)
_CJK_FAMILIES = ("Noto Sans CJK", "Noto Serif CJK", "Source Han Sans", "Source Han Serif",
                 "WenQuanYi", "Droid Sans Fallback", "AR PL", "Noto Sans SC", "Noto Sans TC",
                 "SimHei", "Microsoft YaHei", "PingFang", "Hiragino Sans")


@functools.cache
def cjk_font() -> str | None:
    """The name of an installed font that can draw Chinese, or None (then quotes are elided)."""
    from matplotlib import font_manager

    names = sorted({f.name for f in font_manager.fontManager.ttflist})
    for family in _CJK_FAMILIES:
        for name in names:
            if name.startswith(family):
                return name
    return None


def documents_text(text: str) -> tuple[str, list[str] | None]:
    """The documents reference as a picture can show it, and the font families to draw it
    with: the Chinese quotes in a CJK font where one is installed, else elided (never boxes)."""
    font = cjk_font()
    if font and _CJK.search(text):
        return text, ["DejaVu Sans", font]
    return latin_text(text), None


def latin_text(text: str) -> str:
    """``text`` with CJK passages elided: the default fonts cannot draw them (HTML shows all)."""
    text = _QUOTED.sub(lambda m: '"…"' if _CJK.search(m.group(0)) else m.group(0), text)
    return _CJK.sub("…", text)


def segment_kind(seg: Segment) -> str:
    if seg.icmp_kind is not None:
        return "ICMP"
    for flag, kind in ((RST, "RST"), (SYN, "SYN"), (FIN, "FIN")):
        if seg.flags & flag:
            return kind
    return "data" if seg.payload_len else "ACK"


def segments_by_conn(records, path: str) -> dict[tuple[str, int], list[Segment]]:
    """Read ``path`` once; the segments of each record (frames within its range, its 4-tuple)."""
    index: dict[frozenset, list[tuple[int, int, tuple]]] = defaultdict(list)
    out: dict[tuple[str, int], list[Segment]] = {}
    last = 0
    for rec in records:
        key = (rec["file"], int(rec["conn"]))
        out[key] = []
        ends = frozenset((parse_endpoint(rec["client"]), parse_endpoint(rec["server"])))
        index[ends].append((int(rec["first_frame"]), int(rec["last_frame"]), key))
        last = max(last, int(rec["last_frame"]))
    if not out:
        return out
    from analyzer.core.decode import open_native

    reader = open_native(path)  # IPv4 checksums unchecked, as analyze reads
    try:
        for seg in reader:
            if seg.frame > last:
                break
            for first, end, key in index.get(frozenset(((seg.src, seg.sport),
                                                        (seg.dst, seg.dport))), ()):
                if first <= seg.frame <= end:
                    out[key].append(seg)
                    break
    finally:
        close = getattr(reader, "close", None)
        if close:
            close()
    return out


def _record(source, conn, file) -> dict:
    if hasattr(source, "connections"):  # an Analysis
        df = source.connections
        if conn is None:
            raise ValueError("conn is required with an Analysis")
        rows = df[df["conn"] == int(conn)]
        if file is not None:
            rows = rows[rows["file"] == file]
        if rows.empty:
            raise KeyError(f"no connection {conn}" + (f" in {file}" if file else ""))
        if rows["file"].nunique() > 1:
            raise ValueError(f"connection {conn} exists in several files: pass file=")
        return rows.iloc[0].to_dict()
    return source.to_dict() if hasattr(source, "to_dict") else dict(source)


def _shown_rows(n: int, frames: list[int], evidence, max_segments: int) -> list[int | None]:
    """Indices of the segments to draw, ``None`` standing for a collapsed run."""
    if n <= max_segments:
        return list(range(n))
    head = max(3, max_segments * 2 // 5)
    keep = set(range(head)) | set(range(n - (max_segments - head), n))
    pos = {f: i for i, f in enumerate(frames)}
    for f in list(evidence or ())[:8]:
        if f in pos:
            keep.update(range(max(0, pos[f] - 1), min(n, pos[f] + 2)))
    out: list[int | None] = []
    for i in range(n):
        if i in keep:
            out.append(i)
        elif not out or out[-1] is not None:
            out.append(None)
    return out


def _label(seg: Segment, isn: dict[str, int], role: str) -> str:
    other = "server" if role == "client" else "client"
    seq = (seg.seq - isn.get(role, seg.seq)) % 2**32
    text = seg.flag_text()
    if seg.payload_len:
        text += f" {seq}:{seq + seg.payload_len}"
    else:
        text += f" seq {seq}"
    if seg.flags & ACK:
        text += f" ack {(seg.ack - isn.get(other, seg.ack)) % 2**32}"
    if seg.payload_len:
        text += f" len {seg.payload_len}"
    if seg.icmp_kind is not None:  # the quote may stop before the flags (8 bytes of TCP)
        frm = f" from {seg.icmp_from}" if seg.icmp_from else ""
        quoted = f"{seg.flag_text()} seq {seq}" if seg.flags else f"seq {seq}"
        text = f"ICMP {seg.icmp_kind.replace('_', ' ')}{frm} (quotes {quoted})"
    return text


def ladder_figure(source, conn=None, *, file=None, segments=None, max_segments: int = 40,
                  width: float = 10.0, layout: str | None = "constrained") -> Figure:
    """The ladder diagram of one connection (see the module docstring). ``layout=None``
    places the diagram with fixed margins: half the drawing time of the constrained layout,
    for the report's many small ones."""
    rec = _record(source, conn, file)
    if segments is None:
        key = (rec["file"], int(rec["conn"]))
        segments = segments_by_conn([rec], rec["file"]).get(key, [])
    segments = sorted(segments, key=lambda s: s.frame)
    client = parse_endpoint(rec["client"])
    isn: dict[str, int] = {}
    roles = []
    for seg in segments:
        role = "client" if (seg.src, seg.sport) == client else "server"
        roles.append(role)
        if role not in isn and seg.icmp_kind is None and not seg.flags & RST:
            isn[role] = seg.seq  # the SYN's, or the first seen mid-stream
    frames = [s.frame for s in segments]
    rows = _shown_rows(len(segments), frames, rec.get("evidence"), max_segments)

    # vertical layout: one row per arrow, a little more room after long pauses
    y_of: dict[int, float] = {}  # segment index -> y of the arrow's start
    hidden_y: dict[int, float] = {}  # segment index (collapsed) -> y of its marker
    y, prev_ts, markers = 0.0, None, []
    gaps = np.diff([s.ts for s in segments]) if len(segments) > 1 else np.array([0.0])
    typical = float(np.median(gaps)) if len(gaps) else 0.0
    i = 0
    for r in rows:
        if r is None:
            j = i
            while j < len(segments) and j not in rows:
                hidden_y[j] = y
                j += 1
            markers.append((y, j - i, segments[i].ts, segments[j - 1].ts))
            i, y, prev_ts = j, y + 1.2, None
            continue
        ts = segments[r].ts
        if prev_ts is not None and ts - prev_ts > max(10 * typical, 0.001):
            y += 0.5
        y_of[r] = y
        y, prev_ts, i = y + 1.0, ts, r + 1
    bottom = y + SLANT

    height = 2.6 + 0.36 * (bottom + 1)
    fig = Figure(figsize=(width, height), layout=layout)
    if layout is None:  # room above the axes for the two titles
        fig.subplots_adjust(left=0.01, right=0.99, bottom=0.01, top=1 - 1.0 / height)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.set_xlim(-0.75, 1.75)
    ax.set_ylim(bottom + 1.3, -1.6)
    ax.axis("off")
    for x, role in ((0.0, "client"), (1.0, "server")):
        ax.plot([x, x], [-0.8, bottom + 0.4], color="#444444", lw=1.5, zorder=1)
        ax.text(x, -1.0, f"{role}\n{rec[role]}", ha="center", va="bottom", fontsize=9,
                weight="bold")
    t0 = segments[0].ts if segments else 0.0
    evidence = set(rec.get("evidence") or ())
    for idx, yy in y_of.items():
        seg, role = segments[idx], roles[idx]
        kind = segment_kind(seg)
        colour = KIND_COLOURS[kind]
        if kind == "ICMP":  # from the far side (or a router on the path) back to the sender
            x0 = 0.75 if role == "client" else 0.25
            x1 = 0.0 if role == "client" else 1.0
        else:
            x0, x1 = (0.0, 1.0) if role == "client" else (1.0, 0.0)
        ann = ax.annotate("", xy=(x1, yy + SLANT), xytext=(x0, yy),
                          arrowprops=dict(arrowstyle="-|>", color=colour, lw=1.4,
                                          linestyle="--" if kind == "ICMP" else "-",
                                          shrinkA=0, shrinkB=0), zorder=3)
        ann.set_gid(f"segment-{seg.frame}")
        ann.arrow_patch.set_gid(f"segment-{seg.frame}")  # so SVG groups carry it too
        ax.text((x0 + x1) / 2, yy + SLANT / 2 - 0.12, _label(seg, isn, role), ha="center",
                va="bottom", fontsize=7.5, color=colour, zorder=4,
                bbox=dict(boxstyle="round,pad=0.1", fc="white", ec="none", alpha=0.8))
        key = seg.frame in evidence
        ax.text(-0.72, yy, f"#{seg.frame}  +{seg.ts - t0:.6f}s" + ("  *" if key else ""),
                ha="left", va="center", fontsize=7, family="monospace",
                color="#d62728" if key else "#666666", weight="bold" if key else "normal")
    for n, (my, count, ta, tb) in enumerate(markers):
        ax.axhspan(my - 0.15, my + 0.75, xmin=0.1, xmax=0.9, color="#eeeeee", zorder=0)
        t = ax.text(0.5, my + 0.3, f"… {count} segments …  (+{ta - t0:.3f}s to +{tb - t0:.3f}s)",
                    ha="center", va="center", fontsize=8.5, style="italic", zorder=4)
        t.set_gid(f"collapse-{n}")

    pos_of = {f: i for i, f in enumerate(frames)}
    for x, role, ha, dx in ((0.0, "client", "right", -0.04), (1.0, "server", "left", 0.04)):
        for n, (state, frame) in enumerate(rec.get(f"{role}_states") or []):
            idx = pos_of.get(frame)
            if not frame or idx is None:
                yy = -0.5 if not frame else bottom
            elif idx in y_of:
                yy = y_of[idx] + (0 if roles[idx] == role else SLANT)
            else:
                yy = hidden_y[idx] + 0.3
            t = ax.text(x + dx, yy, state, ha=ha, va="center", fontsize=8, color="#0b4f8a",
                        weight="bold", zorder=5,
                        bbox=dict(boxstyle="round,pad=0.15", fc="#e8f1fb", ec="#0b4f8a", lw=0.5))
            t.set_gid(f"state-{role}-{n}")
        sees = rec.get(f"{role}_sees")
        sees = list(sees) if sees is not None and not isinstance(sees, float) else []
        t = ax.text(x, bottom + 0.7, "sees: " + (", ".join(sees) if sees else "no error"),
                    ha="center", va="top", fontsize=9, weight="bold",
                    color="#d62728" if sees and sees != ["EOF"] else "#2ca02c")
        t.set_gid(f"sees-{role}")

    case = cases.get(rec["case"]) if rec.get("case") in cases.BY_ID else None
    title = rec.get("title") or (case.title if case else str(rec.get("case")))
    t = fig.suptitle(title, fontsize=12, weight="bold")
    t.set_gid("case-title")
    doc, family = documents_text(case.documents) if case else ("", None)
    doc = f" · documents: {doc}" if doc else ""
    sub = (f"case {rec.get('case')}{doc}\n{rec['file']} · conn {rec['conn']} · "
           f"frames {rec['first_frame']}–{rec['last_frame']}")
    t = ax.set_title(sub, fontsize=8, color="#444444", wrap=layout is not None)
    t.set_gid("documents")
    if family:
        t.set_fontfamily(family)
    return fig


def case_colours(case_ids) -> dict[str, str]:
    """A stable colour per case: greens, blues and greys for normal endings, warm for abnormal."""
    out = {}
    for k, c in enumerate(sorted(set(case_ids), key=_case_order)):
        out[c] = CASE_COLOURS.get(c, _SPARE[k % len(_SPARE)])
    return out


def _case_order(case_id: str):
    order = [c.id for c in cases.CATALOG]
    return (order.index(case_id) if case_id in order else len(order), case_id)


def overview_figure(analysis, **kw) -> Figure:
    """The overview of a capture (``analyzer.report.overview``, where it is documented)."""
    from analyzer.report.overview import overview_figure

    return overview_figure(analysis, **kw)


def figure_bytes(fig: Figure, fmt: str = "png", dpi: int = 100) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format=fmt, dpi=dpi)
    return buf.getvalue()


def compact_png(fig: Figure, dpi: int = 80, colors: int = 64) -> bytes:
    """``fig`` as a PNG of at most ``colors`` colours: a third of the bytes of ``savefig``'s
    for these drawings of lines and text, in less time (drawn once, never decoded again), so
    that a page of many pictures loads fast."""
    from PIL import Image

    fig.set_dpi(dpi)
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    rgb = np.asarray(canvas.buffer_rgba())[..., :3]
    img = Image.fromarray(np.ascontiguousarray(rgb)).quantize(
        colors=colors, method=Image.Quantize.FASTOCTREE)
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return buf.getvalue()


def save_figure(fig: Figure, path: str, dpi: int = 100) -> None:
    fmt = path.rsplit(".", 1)[-1].lower()
    if fmt not in FORMATS:
        raise ValueError(f"{path}: unknown image format (use {', '.join(FORMATS)})")
    fig.savefig(path, format=fmt, dpi=dpi)
