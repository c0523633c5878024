"""rstscope analyze with rotated sets, --jobs and --dask: the same output as one process."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from analyzer.cli import main
from analyzer.scale.layout import layout
from analyzer.scale.split import split
from analyzer.synth import generate

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def without_file(out: str) -> list[dict]:
    recs = [json.loads(line) for line in out.splitlines()]
    for r in recs:
        r.pop("file")
    return recs


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[str, str]:
    """A synthetic capture, and a directory of its ten rotated pieces."""
    base = tmp_path_factory.mktemp("scale")
    whole = base / "trace.pcap"
    generate(str(whole), packets=40_000, seed=21, mix="teardowns")
    split(str(whole), str(base / "rotated"), 10)
    return str(whole), str(base / "rotated")


@pytest.fixture(scope="module")
def cluster():
    import logging

    from distributed import LocalCluster

    with LocalCluster(n_workers=2, processes=True, threads_per_worker=1, host="127.0.0.1",
                      dashboard_address=":0", silence_logs=logging.ERROR) as c:
        yield c.scheduler_address


def test_a_rotated_set_equals_its_concatenation(capture, capsys):
    whole, rotated = capture
    code, out, err = run(["analyze", "--json", whole], capsys)
    assert code == 0 and err == ""
    code2, out2, err2 = run(["analyze", "--json", rotated], capsys)
    assert code2 == 0 and err2 == ""
    assert len(out2.splitlines()) > 300
    assert without_file(out2) == without_file(out)
    first = os.path.join(rotated, "trace.pcap")
    assert {json.loads(line)["file"] for line in out2.splitlines()} == {first}
    # with mergecap, the frame numbers are those of the files laid end to end
    if subprocess.run(["which", "mergecap"], capture_output=True).returncode == 0:
        merged = os.path.join(os.path.dirname(rotated), "merged.pcap")
        pieces = [first] + [f"{first}{i}" for i in range(1, 10)]
        subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", merged, *pieces], check=True)
        _code, out3, _err = run(["analyze", "--json", merged], capsys)
        assert without_file(out3) == without_file(out)


def test_jobs_on_a_rotated_set_and_a_chunked_file(capture, capsys):
    whole, rotated = capture
    _code, out, _err = run(["analyze", "--json", whole], capsys)
    for args in (["--jobs", "2", rotated], ["--jobs", "2", "--chunk-size", "256k", whole]):
        code, out2, err = run(["analyze", "--json", *args], capsys)
        assert (code, err) == (0, "")
        assert without_file(out2) == without_file(out)


def test_jobs_over_the_lab_corpus_text_and_json(capsys):
    """Forty separate files: text view, summary and JSON exactly as one process prints them."""
    for extra in ([], ["--json"], ["--all"]):
        one = run(["analyze", *extra, str(CAPTURES)], capsys)
        two = run(["analyze", *extra, "--jobs", "2", "--chunk-size", "1k", str(CAPTURES)],
                  capsys)
        assert one == two
        assert one[0] == 0 and one[1]


def test_dask_cluster_gives_the_same_records(capture, cluster, capsys):
    whole, rotated = capture
    _code, out, _err = run(["analyze", "--json", whole], capsys)
    for target in (whole, rotated):
        code, out2, err = run(["analyze", "--json", "--dask", cluster, "--chunk-size", "1M",
                               target], capsys)
        assert (code, err) == (0, "")
        assert without_file(out2) == without_file(out)


def test_a_truncated_last_file_is_reported_as_one_process_reports_it(capture, tmp_path, capsys):
    _whole, rotated = capture
    names = sorted(os.listdir(rotated), key=lambda n: int(re.sub(r"\D", "", n) or 0))
    for name in names[:4]:
        (tmp_path / name).write_bytes((Path(rotated) / name).read_bytes())
    last = (Path(rotated) / names[3]).read_bytes()
    (tmp_path / names[3]).write_bytes(last[:-200])  # tcpdump killed mid-record
    one = run(["analyze", "--json", str(tmp_path)], capsys)
    assert one[0] == 1 and "truncated" in one[2] and names[3] in one[2]
    two = run(["analyze", "--json", "--jobs", "2", "--chunk-size", "200k", str(tmp_path)],
              capsys)
    assert two == one


def test_standard_input_with_jobs(capsys):
    path = CAPTURES / "unread_data_reset.pcap"
    expected = run(["analyze", "--json", str(path)], capsys)[1]
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--json", "--jobs",
                           "2", "-"], stdin=path.open("rb"), capture_output=True, text=True)
    assert proc.returncode == 0
    assert without_file(proc.stdout) == without_file(expected)


def test_bad_jobs_and_unreachable_cluster(capsys, monkeypatch):
    monkeypatch.setattr("analyzer.scale.run.CONNECT_SECONDS", 1)
    code, out, err = run(["analyze", "--jobs", "0", str(CAPTURES / "refused.pcap")], capsys)
    assert code == 2 and err == "rstscope: --jobs 0: needs at least one process\n"
    code, out, err = run(["analyze", "--chunk-size", "lots", "--jobs", "2",
                          str(CAPTURES / "refused.pcap")], capsys)
    assert code == 2 and "--chunk-size lots" in err and err.count("\n") == 1
    code, out, err = run(["analyze", "--dask", "tcp://127.0.0.1:9", str(CAPTURES)], capsys)
    assert code == 2 and err.startswith("rstscope: --dask tcp://127.0.0.1:9: cannot reach")
    assert err.count("\n") == 1


@pytest.mark.slow
def test_dask_local(capture, capsys):
    whole, _rotated = capture
    _code, out, _err = run(["analyze", "--json", whole], capsys)
    code, out2, err = run(["analyze", "--json", "--dask", "local", "--jobs", "2",
                           "--chunk-size", "2M", whole], capsys)
    assert (code, err) == (0, "") and out2 == out


def test_a_gzip_rotated_set_is_read_in_one_process(capture, tmp_path, capsys):
    import gzip

    _whole, rotated = capture
    names = sorted(os.listdir(rotated), key=lambda n: int(re.sub(r"\D", "", n) or 0))[:3]
    for name in names:  # tcpdump -z gzip leaves cap.pcap.gz, cap.pcap1.gz, ...
        with gzip.open(tmp_path / f"{name}.gz", "wb") as f:
            f.write((Path(rotated) / name).read_bytes())
    plain = tmp_path / "plain"
    plain.mkdir()
    for name in names:
        (plain / name).write_bytes((Path(rotated) / name).read_bytes())
    code, out, err = run(["analyze", "--json", str(plain)], capsys)
    code2, out2, err2 = run(["analyze", "--json", str(tmp_path / "*.gz")], capsys)
    assert (code, code2, err, err2) == (0, 0, "", "")
    assert without_file(out2) == without_file(out)
    code3, out3, err3 = run(["analyze", "--json", "--jobs", "2", str(tmp_path / "*.gz")], capsys)
    assert code3 == 0 and out3 == out2
    assert err3 == (f"rstscope: {tmp_path / names[0]}.gz: read in one process: the "
                    "gzip-compressed files of a rotated set are read in one process\n")


def test_editcap_pieces_are_a_rotated_set(capture, tmp_path, capsys):
    """Ten files cut by Wireshark's editcap -c (names out_00000_<time>.pcap, ...)."""
    if subprocess.run(["which", "editcap"], capture_output=True).returncode:
        pytest.skip("editcap not installed")
    whole, _rotated = capture
    frames = layout(whole, 1 << 40).frames
    subprocess.run(["editcap", "-F", "pcap", "-c", str(-(-frames // 10)), whole,
                    str(tmp_path / "out.pcap")], check=True, capture_output=True)
    assert len(os.listdir(tmp_path)) == 10
    _code, out, _err = run(["analyze", "--json", whole], capsys)
    code, out2, err = run(["analyze", "--json", "--jobs", "2", str(tmp_path)], capsys)
    assert (code, err) == (0, "")
    assert without_file(out2) == without_file(out)
