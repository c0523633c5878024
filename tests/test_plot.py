"""Ladder diagrams and the overview: what the Figures contain, read back from their artists."""

from __future__ import annotations

import argparse
import re
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure
from matplotlib.text import Annotation

import analyzer
from analyzer import cases
from analyzer.errors import OutputExists, UsageError
from analyzer.report import commands, plot

LONG_PAIRS = 60  # data segments (each ACKed) in the long connection


def craft(path: Path) -> Path:
    """Four IPv4 connections: refused (81), graceful with data (80), a long transfer ended by
    the server's RST (8080), and a SYN answered by ICMP host unreachable from a router."""
    from scapy.all import ICMP, IP, TCP, Ether, wrpcap

    t = [1700000000.0]

    def p(src, dst, sport, dport, flags, seq, ack=0, load=b"", dt=0.001):
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                   seq=seq, ack=ack)
        if load:
            pkt = pkt / load
        t[0] += dt
        pkt.time = t[0]
        return pkt

    c, s = "10.1.1.1", "10.1.1.2"
    pkts = [p(c, s, 40001, 81, "S", 100), p(s, c, 81, 40001, "RA", 0, 101)]
    pkts += [
        p(c, s, 40002, 80, "S", 1000, dt=1.0), p(s, c, 80, 40002, "SA", 5000, 1001),
        p(c, s, 40002, 80, "A", 1001, 5001), p(c, s, 40002, 80, "PA", 1001, 5001, b"GET /\r\n"),
        p(s, c, 80, 40002, "PA", 5001, 1008, b"hello"), p(c, s, 40002, 80, "FA", 1008, 5006),
        p(s, c, 80, 40002, "FA", 5006, 1009), p(c, s, 40002, 80, "A", 1009, 5007),
    ]
    cs, ss = 7000, 9000
    pkts += [p(c, s, 40003, 8080, "S", cs, dt=1.0), p(s, c, 8080, 40003, "SA", ss, cs + 1),
             p(c, s, 40003, 8080, "A", cs + 1, ss + 1)]
    for i in range(LONG_PAIRS):
        seq = cs + 1 + 100 * i
        pkts.append(p(c, s, 40003, 8080, "PA", seq, ss + 1, b"x" * 100))
        pkts.append(p(s, c, 8080, 40003, "A", ss + 1, seq + 100))
    pkts.append(p(s, c, 8080, 40003, "RA", ss + 1, cs + 1 + 100 * LONG_PAIRS))
    syn = IP(src=c, dst="10.9.9.9") / TCP(sport=40004, dport=443, flags="S", seq=4242)
    pkts.append(p(c, "10.9.9.9", 40004, 443, "S", 4242, dt=1.0))
    icmp = Ether() / IP(src="10.1.1.254", dst=c) / ICMP(type=3, code=1) / bytes(syn)[:28]
    t[0] += 0.002
    icmp.time = t[0]
    pkts.append(icmp)
    wrpcap(str(path), pkts)
    return path


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    return craft(tmp_path_factory.mktemp("plot") / "four.pcap")


@pytest.fixture(scope="module")
def analysis(pcap):
    a = analyzer.analyze(str(pcap))
    assert len(a.connections) == 4, a.connections[["conn", "case", "packets"]]
    return a


def arrows(fig: Figure) -> list[Annotation]:
    return [a for ax in fig.axes for a in ax.texts
            if isinstance(a, Annotation) and (a.get_gid() or "").startswith("segment-")]


def texts(fig: Figure, prefix: str) -> list[str]:
    found = [t for ax in fig.axes for t in ax.texts] + list(fig.texts)
    return [t.get_text() for t in found if (t.get_gid() or "").startswith(prefix)]


def test_one_arrow_per_segment_with_states_and_title(analysis):
    rec = analysis.connections.iloc[1].to_dict()
    assert rec["case"] == "graceful"
    fig = plot.ladder_figure(analysis, 1)
    frames = sorted(int(a.get_gid().split("-")[1]) for a in arrows(fig))
    assert frames == list(range(rec["first_frame"], rec["last_frame"] + 1))
    for role in ("client", "server"):
        assert texts(fig, f"state-{role}-") == [s for s, _ in rec[f"{role}_states"]]
        assert texts(fig, f"sees-{role}") == ["sees: " + ", ".join(rec[f"{role}_sees"])]
    assert texts(fig, "case-title") == [rec["title"]]
    assert not texts(fig, "collapse-")
    # labels are relative to the ISNs: the client's request is bytes 1:8
    labels = [t.get_text() for t in fig.axes[0].texts]
    assert "P. 1:8 ack 1 len 7" in labels and "S seq 0" in labels


def test_refused_arrows_coloured_by_kind(analysis):
    fig = plot.ladder_figure(analysis.connections.iloc[0])  # a Series works too
    colours = {a.get_gid(): a.arrow_patch.get_edgecolor() for a in arrows(fig)}
    assert len(colours) == 2
    syn, rst = (colours[f"segment-{f}"] for f in (1, 2))
    assert np.allclose(syn[:3], [0x2c / 255, 0xa0 / 255, 0x2c / 255])  # SYN green
    assert np.allclose(rst[:3], [0xd6 / 255, 0x27 / 255, 0x28 / 255])  # RST red
    assert texts(fig, "sees-client") == ["sees: ECONNREFUSED"]


def test_long_connection_is_collapsed(analysis):
    rec = analysis.connections.iloc[2].to_dict()
    total = rec["last_frame"] - rec["first_frame"] + 1
    assert total == 3 + 2 * LONG_PAIRS + 1
    fig = plot.ladder_figure(rec, max_segments=40)
    shown = arrows(fig)
    markers = texts(fig, "collapse-")
    assert len(shown) <= 40 + 3 * 3 and markers
    hidden = sum(int(m.split("…")[1].split()[0]) for m in markers)
    assert hidden + len(shown) == total
    frames = {int(a.get_gid().split("-")[1]) for a in shown}
    first, last = rec["first_frame"], rec["last_frame"]
    assert {first, first + 1, first + 2, last} <= frames  # handshake and the RST stay
    assert set(rec["evidence"]) <= frames | set(range(first, last + 1))
    everything = plot.ladder_figure(rec, max_segments=1000)
    assert len(arrows(everything)) == total and not texts(everything, "collapse-")


def test_icmp_arrow_is_dashed_from_the_far_side(analysis):
    rec = analysis.connections.iloc[3].to_dict()
    fig = plot.ladder_figure(rec)
    shown = {a.get_gid(): a for a in arrows(fig)}
    assert len(shown) == 2
    icmp = shown[f"segment-{rec['last_frame']}"]
    assert icmp.arrow_patch.get_linestyle() not in ("-", "solid")
    assert icmp.xy[0] == 0.0 and 0 < icmp.xyann[0] < 1  # back to the client, from the path
    assert any("ICMP host unreachable from 10.1.1.254" in t.get_text()
               for t in fig.axes[0].texts)


def test_rendered_png_is_not_blank(analysis, tmp_path):
    from matplotlib.image import imread

    out = tmp_path / "ladder.png"
    start = time.perf_counter()
    plot.save_figure(plot.ladder_figure(analysis, 2), str(out), dpi=100)
    elapsed = time.perf_counter() - start
    img = imread(str(out))
    h, w = img.shape[:2]
    assert w == 1000 and h > 1000  # 10 in wide at 100 dpi, tall enough for ~50 rows
    assert float(np.var(img[..., :3])) > 0.001
    assert elapsed < 10, f"one ladder took {elapsed:.1f}s"


def endings(fig: Figure) -> dict[str, float]:
    """Endings per case, read back from the stacked steps of the overview's upper axes."""
    out = {}
    for p in fig.axes[0].patches:
        if (p.get_gid() or "").startswith("endings-"):
            values, _, baseline = p.get_data()
            out[p.get_gid()[len("endings-"):]] = float(np.sum(values - baseline))
    return out


def drawn(fig: Figure):
    (lines,) = [c for c in fig.axes[1].collections if c.get_gid() == "connections"]
    return lines


def test_overview_small_capture(analysis):
    fig = plot.overview_figure(analysis)
    df = analysis.connections
    assert endings(fig) == {c: float(n) for c, n in df["case"].value_counts().items()}
    top, low = fig.axes[:2]
    assert sorted(h.get_text() for h in top.get_legend().get_texts()) == \
        sorted(f"{c} ({n})" for c, n in df["case"].value_counts().items())
    assert len(drawn(fig).get_segments()) == len(df)  # every connection, one by one
    order = df.sort_values("start")["conn"]
    assert [t.get_text() for t in low.get_yticklabels()] == [f"#{c}" for c in order]


def test_overview_one_connection_reads_cleanly(analysis):
    fig = plot.overview_figure(analysis.connections.iloc[:1])
    top, low = fig.axes[:2]
    assert [t.get_text() for t in low.get_yticklabels()] == ["#0"]
    ticks = top.get_yticks()
    assert np.allclose(ticks, np.round(ticks)) and top.get_ylim()[0] == 0  # counts, not -0.4
    assert low.get_xlabel() == "µs since the first packet"  # the refusal took microseconds
    assert "1 connection, 1 file" in top.get_title()


def test_overview_of_a_million_is_aggregated():
    """A million connections: a few artists per case, the endings all counted."""
    rng = np.random.default_rng(1)
    n = 1_000_000
    start = 1.7e9 + rng.uniform(0, 3600, n)
    ids = np.array(["graceful", "refused", "peer_state_lost", "open"])
    df = pd.DataFrame({"file": "x.pcap", "conn": np.arange(n), "start": start,
                       "end": start + rng.exponential(2.0, n), "case": ids[rng.integers(0, 4, n)]})
    fig = plot.overview_figure(df, individual=100)
    assert sum(endings(fig).values()) == n
    assert len(fig.axes[0].patches) == 4
    segments = drawn(fig).get_segments()
    assert 100 <= len(segments) <= 200
    longest = (df["end"] - df["start"]).nlargest(100).min()
    widths = sorted(s[1][0] - s[0][0] for s in segments)
    assert widths[-100] >= longest / 60 - 1e-9  # the longest-lived are drawn (x in minutes)
    assert fig.axes[1].get_xlabel() == "minutes since the first packet"
    assert not fig.axes[1].get_yticklabels()  # too many rows to name


def test_documents_fall_back_without_a_cjk_font(monkeypatch):
    doc = cases.get("refused").documents
    assert re.search(r"[\u4e00-\u9fff]", doc)
    monkeypatch.setattr(plot, "cjk_font", lambda: None)
    text, family = plot.documents_text(doc)
    assert family is None and not re.search(r"[\u4e00-\u9fff]", text) and '"…"' in text
    monkeypatch.setattr(plot, "cjk_font", lambda: "Noto Sans CJK SC")
    assert plot.documents_text(doc) == (doc, ["DejaVu Sans", "Noto Sans CJK SC"])


def test_ladder_documents_never_draw_boxes(analysis):
    """The subtitle holds Chinese only when a font for it is installed."""
    title = plot.ladder_figure(analysis, 0).axes[0].get_title()
    assert "documents: 000 §3; 004" in title
    assert bool(re.search(r"[\u4e00-\u9fff]", title)) == bool(plot.cjk_font())


def test_empty_overview():
    fig = plot.overview_figure(analyzer.analyze())
    assert any(t.get_text() == "no connections" for t in fig.axes[0].texts)


def test_no_pyplot():
    code = ("import sys, analyzer.report.plot, analyzer.report.html, analyzer.report.commands;"
            "sys.exit('matplotlib.pyplot' in sys.modules)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


def run_cmd(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="rstscope")
    commands.add_parsers(parser.add_subparsers(dest="command"))
    return commands.run(parser.parse_args(argv))


def test_plot_command(pcap, analysis, tmp_path):
    png, svg, pdf = (tmp_path / f"c.{ext}" for ext in ("png", "svg", "pdf"))
    assert run_cmd(["plot", str(pcap), "--conn", "1", "-o", str(png)]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert run_cmd(["plot", str(pcap), "--conn", "2", "-o", str(svg)]) == 0
    shown = len(arrows(plot.ladder_figure(analysis, 2)))
    assert svg.read_bytes().count(b'<g id="segment-') == shown  # gids survive into SVG
    assert run_cmd(["plot", str(pcap), "--overview", "-o", str(pdf)]) == 0
    assert pdf.read_bytes()[:4] == b"%PDF"
    with pytest.raises(OutputExists):
        run_cmd(["plot", str(pcap), "--conn", "1", "-o", str(png)])
    assert run_cmd(["plot", str(pcap), "--conn", "0", "-o", str(png), "--force"]) == 0
    with pytest.raises(UsageError, match="no connection 9"):
        run_cmd(["plot", str(pcap), "--conn", "9", "-o", str(tmp_path / "x.png")])
    with pytest.raises(UsageError, match="must end in"):
        run_cmd(["plot", str(pcap), "--conn", "0", "-o", str(tmp_path / "x.jpg")])
    with pytest.raises(SystemExit):  # argparse: --conn or --overview is required
        run_cmd(["plot", str(pcap), "-o", str(tmp_path / "y.png")])
    assert sorted(p.name for p in tmp_path.iterdir()) == ["c.pdf", "c.png", "c.svg"]


def test_plot_never_clobbers_a_file_that_appears_meanwhile(pcap, tmp_path, monkeypatch, capsys):
    """The existence check comes before the work; an output created by someone else while the
    figure is drawn survives: exit 2, one line, nothing of ours left behind. --force replaces."""
    from analyzer import cli

    png = tmp_path / "c.png"
    real = plot.save_figure

    def racing(fig, path, dpi=100):
        real(fig, path, dpi=dpi)
        png.write_bytes(b"someone else's")

    monkeypatch.setattr(plot, "save_figure", racing)
    assert cli.main(["plot", str(pcap), "--conn", "1", "-o", str(png)]) == 2
    err = capsys.readouterr().err
    assert err == f"rstscope: {png}: already exists (use --force to overwrite)\n"
    assert png.read_bytes() == b"someone else's"
    assert [p.name for p in tmp_path.iterdir() if p.suffix == ".png"] == ["c.png"]
    monkeypatch.setattr(plot, "save_figure", real)
    assert cli.main(["plot", str(pcap), "--conn", "1", "-o", str(png)]) == 2
    assert "--force" in capsys.readouterr().err
    assert cli.main(["plot", str(pcap), "--conn", "1", "-o", str(png), "--force"]) == 0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
