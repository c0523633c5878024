"""The text view's order and limits, --summary-json and Analysis.top(): one aggregation, the
same numbers everywhere, and nothing a person reads says nan or None."""

from __future__ import annotations

import json
import re
from collections import Counter
from pathlib import Path

import pandas as pd
import pytest

import analyzer
from analyzer.cli import main
from analyzer.report import aggregate, text

# refused connections: (client, server, port); 10.0.0.9:443 refuses most, from two networks
REFUSED = [("10.1.1.1", "10.0.0.9", 443), ("10.1.1.2", "10.0.0.9", 443),
           ("10.1.1.2", "10.0.0.9", 443), ("10.1.2.7", "10.0.0.9", 443),
           ("10.1.1.3", "10.0.0.8", 443)]


def craft(path: Path) -> Path:
    """Five refused SYNs (above) and one graceful connection."""
    from scapy.all import IP, TCP, Ether, wrpcap

    pkts, t = [], 1700000000.0

    def p(src, dst, sport, dport, flags, seq, ack=0, load=b""):
        nonlocal t
        t += 0.01
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                   seq=seq, ack=ack)
        pkt = pkt / load if load else pkt
        pkt.time = t
        pkts.append(pkt)

    for i, (c, s, port) in enumerate(REFUSED):
        p(c, s, 40000 + i, port, "S", 100)
        p(s, c, port, 40000 + i, "RA", 0, 101)
    c, s = "10.1.1.1", "10.0.0.7"
    p(c, s, 41000, 80, "S", 1000)
    p(s, c, 80, 41000, "SA", 5000, 1001)
    p(c, s, 41000, 80, "A", 1001, 5001)
    p(c, s, 41000, 80, "FA", 1001, 5001)
    p(s, c, 80, 41000, "FA", 5001, 1002)
    p(c, s, 41000, 80, "A", 1002, 5002)
    wrpcap(str(path), pkts)
    return path


@pytest.fixture(scope="module")
def pcap(tmp_path_factory):
    return craft(tmp_path_factory.mktemp("summary") / "six.pcap")


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_text_view_opens_with_the_summary_then_who_resets_whom(pcap, capsys):
    code, out, _ = run(["analyze", str(pcap)], capsys)
    assert code == 0
    first = out.index("6 connection(s) in 1 file(s), 5 abnormal")
    who = out.index("Who is resetting whom")
    blocks = out.index("[refused]")
    assert first < who < blocks
    assert "  5 refused\n" in out
    assert "server   10.0.0.9:443 4 (80%), 10.0.0.8:443 1 (20%)\n" in out
    assert "port     443 5 (100%)\n" in out  # (left out when each server has its own port)
    assert "client   10.1.1.2 2 (40%), 10.1.1.1 1 (20%), 10.1.1.3 1 (20%), … 1 more" in out
    assert "network  10.1.1.0/24 4 (80%), 10.1.2.0/24 1 (20%)" in out
    assert out.count("[refused]") == 5 and "not listed" not in out


def test_limit_and_all(pcap, capsys):
    _, out, _ = run(["analyze", "--limit", "2", str(pcap)], capsys)
    assert out.count("[refused]") == 2
    assert "-- refused: 2 of 5" in out and "… 3 more refused not listed" in out
    assert re.findall(r"^#(\d+) ", out, re.M) == ["0", "1"]  # the lowest numbers
    assert "3 connection(s) not listed" in out
    _, out, _ = run(["analyze", "--limit", "0", str(pcap)], capsys)
    assert "[refused]" not in out and "Who is resetting whom" in out
    _, out, _ = run(["analyze", "--all", str(pcap)], capsys)
    assert out.count("[refused]") == 5 and "[graceful]" in out and "not listed" not in out
    _, out, _ = run(["analyze", "--all", "--limit", "1", str(pcap)], capsys)
    assert out.count("[refused]") == 1 and "[graceful]" in out
    code, _, err = run(["analyze", "--limit", "-1", str(pcap)], capsys)
    assert code == 2 and "--limit" in err


def test_summary_json_is_the_aggregate_of_the_api(pcap, capsys):
    code, out, _ = run(["analyze", "--summary-json", str(pcap)], capsys)
    assert code == 0 and len(out.splitlines()) == 1
    obj = json.loads(out)
    assert obj["connections"] == 6 and obj["abnormal"] == 5 and obj["files"] == 1
    by_case = {c["case"]: c for c in obj["cases"]}
    assert by_case["graceful"]["count"] == 1 and "top" not in by_case["graceful"]
    refused = by_case["refused"]
    assert refused["count"] == 5 and refused["share"] == round(5 / 6, 6)
    assert refused["top"]["server"]["values"][0] == {"value": "10.0.0.9:443", "count": 4,
                                                     "share": 0.8}
    assert refused["top"]["client_addr"]["distinct"] == 4
    api = analyzer.analyze(str(pcap))
    assert obj == json.loads(json.dumps(aggregate.summary_object(api.connections, 1)))
    code, _, err = run(["analyze", "--json", "--summary-json", str(pcap)], capsys)
    assert code == 2 and "pick one" in err


def test_top_counts_every_connection(pcap):
    a = analyzer.analyze(str(pcap))
    t = a.top(case="refused", by="server")
    assert list(t.columns) == ["case", "server", "count", "share"]
    assert t["server"].tolist() == ["10.0.0.9:443", "10.0.0.8:443"]
    assert t["count"].tolist() == [4, 1] and t["share"].tolist() == [0.8, 0.2]
    every = a.top(by="client_addr", n=None)
    want = Counter(zip(a.connections["case"], a.connections["client"].str.rpartition(":")[0],
                       strict=True))
    assert {(r.case, r.client_addr): r.count for r in every.itertuples()} == want
    assert every.groupby("case")["share"].sum().round(9).eq(1).all()
    assert a.top(by="server_port", n=1)["server_port"].tolist() == ["443", "80"]
    with pytest.raises(ValueError, match="unknown case"):
        a.top(case="nonsense")
    with pytest.raises(ValueError, match="by must be one of"):
        a.top(by="colour")


def test_ipv6_networks_and_reset_rates():
    df = pd.DataFrame({"case": ["refused", "refused", "graceful"],
                       "client": ["[2001:db8:1::5]:4000", "[2001:db8:1:0:ff::9]:4001",
                                  "10.0.0.1:5"],
                       "server": ["[2001:db8::1]:443"] * 2 + ["10.9.9.9:80"],
                       "zeek_state": ["REJ", "REJ", "SF"]})
    assert aggregate.top(df, "client_net")["client_net"].tolist() == ["2001:db8:1::/64",
                                                                      "10.0.0.0/24"]
    rates = aggregate.server_rates(df)
    assert rates.iloc[0].to_dict() == {"server": "[2001:db8::1]:443", "connections": 2,
                                       "resets": 2, "reset_share": 1.0, "abnormal": 2,
                                       "abnormal_share": 1.0}
    assert rates.iloc[1]["resets"] == 0


def test_no_nan_or_none_in_the_text_view(pcap, capsys):
    """Every field of every block, from the CLI and from API rows (where pandas fills missing
    values with NaN), reads as text."""
    _, out, _ = run(["analyze", "--all", str(pcap)], capsys)
    rows = analyzer.analyze(str(pcap)).records()
    rows[0] = {**rows[0], "rival": float("nan"), "closer": None, "zeek_state": float("nan"),
               "client_sees": float("nan"), "reason": None}
    blocks = "\n".join(text.connection_block(r) + "\n" + text.connection_line(r) for r in rows)
    for shown in (out, blocks):
        assert not re.search(r"\b(nan|NaN|None|null)\b", shown), shown
    assert text.shown(float("nan")) == "-" and text.shown("") == "-" and text.shown(0) == "0"
