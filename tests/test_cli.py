"""The command line: output formats, filters and exit codes, on captures crafted with scapy."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from analyzer import cases
from analyzer.cli import main

INTERFACE = Path(__file__).resolve().parents[2] / "shared" / "INTERFACE.md"
CONTRACT_FIELDS = ["file", "conn", "client", "server", "first_frame", "last_frame", "start",
                   "end", "packets", "bytes_client", "bytes_server", "case", "closer",
                   "client_sees", "server_sees", "client_states", "server_states", "evidence",
                   "wireshark", "zeek_state", "zeek_history"]


def craft(path: Path) -> Path:
    """Two connections: one refused (port 81), one graceful with data (port 80), IPv4."""
    from scapy.all import IP, TCP, Ether, wrpcap

    def p(src, dst, sport, dport, flags, seq, ack=0, load=b"", t=0.0):
        pkt = Ether() / IP(src=src, dst=dst) / TCP(sport=sport, dport=dport, flags=flags,
                                                   seq=seq, ack=ack)
        if load:
            pkt = pkt / load
        pkt.time = 1700000000 + t
        return pkt

    c, s = "10.1.1.1", "10.1.1.2"
    pkts = [
        p(c, s, 40001, 81, "S", 100, t=0.0),
        p(s, c, 81, 40001, "RA", 0, 101, t=0.001),
        p(c, s, 40002, 80, "S", 1000, t=1.0),
        p(s, c, 80, 40002, "SA", 5000, 1001, t=1.001),
        p(c, s, 40002, 80, "A", 1001, 5001, t=1.002),
        p(c, s, 40002, 80, "PA", 1001, 5001, b"GET /\r\n", t=1.003),
        p(s, c, 80, 40002, "PA", 5001, 1008, b"hello", t=1.004),
        p(c, s, 40002, 80, "FA", 1008, 5006, t=1.005),
        p(s, c, 80, 40002, "FA", 5006, 1009, t=1.006),
        p(c, s, 40002, 80, "A", 1009, 5007, t=1.007),
    ]
    wrpcap(str(path), pkts)
    return path


@pytest.fixture
def pcap(tmp_path):
    return craft(tmp_path / "two.pcap")


def run_cli(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_contract_fields_are_those_of_interface_md():
    if not INTERFACE.exists():
        pytest.skip(f"{INTERFACE} not found")
    example = re.search(r"```json\n(.*?)```", INTERFACE.read_text(), re.S).group(1)
    assert list(json.loads(example)) == CONTRACT_FIELDS


def test_json_lines(pcap, capsys):
    code, out, _ = run_cli(["analyze", "--json", str(pcap)], capsys)
    assert code == 0
    recs = sorted((json.loads(line) for line in out.splitlines()), key=lambda r: r["conn"])
    assert [r["case"] for r in recs] == ["refused", "graceful"]
    for r in recs:
        assert list(r)[:len(CONTRACT_FIELDS)] == CONTRACT_FIELDS
    refused, graceful = recs
    assert refused["client"] == "10.1.1.1:40001" and refused["server"] == "10.1.1.2:81"
    assert refused["closer"] == "server" and refused["client_sees"] == ["ECONNREFUSED"]
    assert refused["first_frame"] == 1 and refused["last_frame"] == 2
    assert graceful["first_frame"] == 3 and graceful["packets"] == 8
    assert graceful["bytes_client"] == 7 and graceful["bytes_server"] == 5
    assert graceful["client_states"] == [["SYN_SENT", 3], ["ESTABLISHED", 4],
                                         ["FIN_WAIT_1", 8], ["FIN_WAIT_2", 9],
                                         ["TIME_WAIT", 9]]
    assert graceful["server_states"][-1] == ["CLOSED", 10]
    assert graceful["zeek_state"] == "SF" and graceful["zeek_history"] == "ShADdFf"
    assert refused["zeek_state"] == "REJ"
    assert "frame.number>=3 && frame.number<=10" in graceful["wireshark"]


def test_text_output_lists_abnormal_only_unless_all(pcap, capsys):
    code, out, _ = run_cli(["analyze", str(pcap)], capsys)
    assert code == 0
    assert "[refused]" in out and "[graceful]" not in out
    assert "2 connection(s) in 1 file(s), 1 abnormal" in out
    assert cases.get("refused").advice in out
    _, out, _ = run_cli(["analyze", "--all", str(pcap)], capsys)
    assert "[graceful]" in out


def test_filters(pcap, capsys):
    _, out, _ = run_cli(["analyze", "--json", "--case", "graceful", str(pcap)], capsys)
    assert [json.loads(x)["case"] for x in out.splitlines()] == ["graceful"]
    _, out, _ = run_cli(["analyze", "--json", "--port", "81", str(pcap)], capsys)
    assert [json.loads(x)["case"] for x in out.splitlines()] == ["refused"]
    code, _, err = run_cli(["analyze", "--case", "nonsense", str(pcap)], capsys)
    assert code == 2 and "unknown case id" in err


def test_csv_and_parquet(pcap, tmp_path, capsys):
    csv, pq = tmp_path / "c.csv", tmp_path / "c.parquet"
    code, _, _ = run_cli(["analyze", "--csv", str(csv), "--parquet", str(pq), str(pcap)], capsys)
    assert code == 0
    df = pd.read_csv(csv)
    assert sorted(df["case"]) == ["graceful", "refused"]
    assert list(df.columns)[:len(CONTRACT_FIELDS)] == CONTRACT_FIELDS
    dq = pd.read_parquet(pq)
    assert len(dq) == 2 and json.loads(dq.loc[dq["case"] == "refused", "client_sees"].iloc[0]) \
        == ["ECONNREFUSED"]
    code, _, err = run_cli(["analyze", "--csv", str(csv), str(pcap)], capsys)
    assert code == 2 and "already exists" in err  # never silently overwritten
    code, _, _ = run_cli(["analyze", "--csv", str(csv), "--force", str(pcap)], capsys)
    assert code == 0


def test_unreadable_and_missing_files_exit_2(tmp_path, capsys):
    bad = tmp_path / "x.pcap"
    bad.write_text("<html>not a capture</html>")
    code, _, err = run_cli(["analyze", str(bad)], capsys)
    assert code == 2 and str(bad) in err and "Traceback" not in err
    code, _, err = run_cli(["analyze", str(tmp_path / "missing.pcap")], capsys)
    assert code == 2 and "missing.pcap" in err


def test_truncated_capture_exits_1_with_partial_result(pcap, tmp_path, capsys):
    data = pcap.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-20])  # tcpdump killed mid-write: the last record is cut
    code, out, err = run_cli(["analyze", "--json", str(cut)], capsys)
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "cut.pcap" in err
    recs = [json.loads(x) for x in out.splitlines()]
    assert {r["case"] for r in recs} >= {"refused"}  # what came before the damage is reported


def test_stdin_and_module_entry_point(pcap):
    res = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--json", "-"],
                         input=pcap.read_bytes(), capture_output=True, timeout=60)
    assert res.returncode == 0, res.stderr
    assert len(res.stdout.splitlines()) == 2


def test_cases_command(capsys):
    code, out, _ = run_cli(["cases", "--json"], capsys)
    rows = [json.loads(x) for x in out.splitlines()]
    assert code == 0 and [r["id"] for r in rows] == [c.id for c in cases.CATALOG]
    assert all(r["documents"] and r["advice"] and r["wire"] for r in rows)
    code, out, _ = run_cli(["cases"], capsys)
    assert "write_after_close" in out and "EPIPE" in out


def test_python_api(pcap):
    import analyzer

    res = analyzer.analyze(str(pcap))
    assert list(res.connections["case"]) == ["refused", "graceful"]
    ev = res.events[res.events["conn"] == 1]
    assert list(ev[ev["role"] == "server"]["state"]) == ["LISTEN", "SYN_RCVD", "ESTABLISHED",
                                                         "CLOSE_WAIT", "LAST_ACK", "CLOSED"]
    assert ev.iloc[0]["from_state"] == "UNKNOWN"


def test_csv_to_stdout_and_outputs_that_collide(pcap, tmp_path, capsys):
    code, out, _ = run_cli(["analyze", "--csv", "-", str(pcap)], capsys)
    assert code == 0 and out.splitlines()[0].startswith("file,conn,client,server")
    assert not (Path.cwd() / "-").exists()
    same = tmp_path / "x.out"
    code, _, err = run_cli(["analyze", "--csv", str(same), "--parquet", str(same), str(pcap)],
                           capsys)
    assert code == 2 and "same file" in err and not same.exists()


def test_lab_run_refuses_to_overwrite(tmp_path, capsys):
    (tmp_path / "refused.pcap").write_bytes(b"")
    code, _, err = run_cli(["lab", "run", "refused", "-o", str(tmp_path)], capsys)
    assert code == 2 and "--force" in err


def test_damaged_frame_exits_1_and_the_rest_is_written(pcap, tmp_path, capsys):
    """A frame whose header lengths lie is skipped: exit 1, one line naming the file, the frame,
    its byte offset and the lie; every other frame analyzed and written."""
    data = bytearray(pcap.read_bytes())
    rec = 24 + 2 * (16 + 54)  # third record, the graceful SYN (frames 1 and 2: 54 bytes each)
    data[rec + 16 + 14] = 0x44  # IPv4 header length 16
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(bytes(data))
    out_csv = tmp_path / "out.csv"
    code, out, err = run_cli(["analyze", "--json", "--csv", str(out_csv), str(bad)], capsys)
    assert code == 1
    assert err.splitlines() == [
        f"rstscope: {bad} (frame 3, byte {rec}): IPv4 header length 16 is less than the minimum "
        "20 (frame skipped; the rest was analyzed)"]
    recs = [json.loads(x) for x in out.splitlines()]
    assert [r["case"] for r in recs][0] == "refused" and len(recs) == 2
    assert recs[1]["first_frame"] == 4  # the connection is seen from its SYN/ACK on
    assert len(pd.read_csv(out_csv)) == 2
    # the undamaged capture is exit 0 and quiet
    code, _, err = run_cli(["analyze", "--json", str(pcap)], capsys)
    assert code == 0 and err == ""


def test_outputs_are_published_without_a_race(tmp_path):
    """export.write_new / create_new, behind --csv, --parquet, plot -o, report -o, live -w and
    the generator's CLI: an output that appears between the check and the write is never
    overwritten without force; with force it is replaced whole (not truncated in place)."""
    import os

    from analyzer.errors import OutputExists
    from analyzer.report import export

    path = tmp_path / "out.bin"

    def sneaky(tmp):  # someone else creates the output while ours is being written
        Path(tmp).write_bytes(b"mine")
        path.write_bytes(b"theirs")

    with pytest.raises(OutputExists, match="use --force"):
        export.write_new(str(path), False, sneaky)
    assert path.read_bytes() == b"theirs" and os.listdir(tmp_path) == ["out.bin"]
    export.write_new(str(path), True, lambda tmp: Path(tmp).write_bytes(b"mine"))
    assert path.read_bytes() == b"mine" and os.listdir(tmp_path) == ["out.bin"]
    mask = os.umask(0)
    os.umask(mask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~mask  # as a plain open would have made it

    with pytest.raises(OutputExists):  # a stream (live -w) is published before it is written
        export.create_new(str(path), False)
    assert path.read_bytes() == b"mine" and os.listdir(tmp_path) == ["out.bin"]
    with open(path, "rb") as held, export.create_new(str(path), True) as f:
        f.write(b"new")
        f.flush()
        assert path.read_bytes() == b"new" and held.read() == b"mine"
    fresh = tmp_path / "fresh.bin"
    with export.create_new(str(fresh), False) as f:
        f.write(b"x")
    assert fresh.read_bytes() == b"x"

    def interrupted(tmp):
        Path(tmp).write_bytes(b"half")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        export.write_new(str(tmp_path / "never.bin"), False, interrupted)
    assert sorted(os.listdir(tmp_path)) == ["fresh.bin", "out.bin"]


def test_max_open_bounds_the_open_connections(tmp_path, capsys):
    """--max-open: past N open connections the least recently active one is finished early (so
    a capture of interleaved connections comes out in more pieces); below 1 it is a usage
    error."""
    from analyzer import synth

    path = tmp_path / "short.pcap"
    synth.generate(str(path), packets=4000, seed=3, mix="short")
    assert main(["analyze", "--json", str(path)]) == 0
    whole = capsys.readouterr().out.splitlines()
    assert main(["analyze", "--json", "--max-open", "2", str(path)]) == 0
    pieces = capsys.readouterr().out.splitlines()
    assert len(pieces) > len(whole) > 100
    assert main(["analyze", "--json", "--max-open", "0", str(path)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == ["rstscope: --max-open 0: needs at least one connection"]
