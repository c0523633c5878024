"""rstscope analyze with rotated sets, --jobs and --dask: the same output as one process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from analyzer.core.decode import open_native

from analyzer.scale.split import split
from analyzer.synth import generate
from tests.scale_helpers import CAPTURES, in_order, run, without_file


@pytest.fixture(scope="module")
def capture(tmp_path_factory) -> tuple[str, str]:
    """A synthetic capture, and a directory of its ten rotated pieces."""
    base = tmp_path_factory.mktemp("scale")
    whole = base / "trace.pcap"
    generate(str(whole), packets=40_000, seed=21, mix="teardowns")
    split(str(whole), str(base / "rotated"), 10)
    return str(whole), str(base / "rotated")


@pytest.fixture(scope="module")
def mixed(capture, tmp_path_factory) -> list[str]:
    """Arguments of every kind, in a directory of their own (relative names in messages): a
    capture, a rotated set, a lab capture, a truncated file, a file with a damaged record in the
    middle, a file that is not a capture, a missing one."""
    whole, rotated = capture
    base = tmp_path_factory.mktemp("mixed")
    blob = Path(whole).read_bytes()
    (base / "whole.pcap").write_bytes(blob)
    (base / "truncated.pcap").write_bytes(blob[:300_000])
    bad = bytearray(blob[:400_000])
    bad[200_000:200_016] = b"\xff" * 16  # a record header: impossible length, reading stops
    (base / "damaged.pcap").write_bytes(bytes(bad))
    (base / "notes.pcap").write_text("not a capture\n")
    return ["whole.pcap", rotated, str(CAPTURES / "refused.pcap"), "truncated.pcap",
            "damaged.pcap", "notes.pcap", "missing.pcap"], base


def test_a_rotated_set_equals_its_concatenation(capture, capsys):
    whole, rotated = capture
    code, out, err = run(["analyze", "--json", whole], capsys)
    assert code == 0 and err == ""
    code2, out2, err2 = run(["analyze", "--json", rotated], capsys)
    assert code2 == 0 and err2 == ""
    assert len(out2.splitlines()) > 300
    assert without_file(out2) == without_file(out)
    first = os.path.join(rotated, "trace.pcap")
    assert {line.split('"file": ')[1].split(",")[0].strip('"')
            for line in out2.splitlines()} == {first}
    # with mergecap, the frame numbers are those of the files laid end to end
    if subprocess.run(["which", "mergecap"], capture_output=True).returncode == 0:
        merged = os.path.join(os.path.dirname(rotated), "merged.pcap")
        pieces = [os.path.join(rotated, n) for n in in_order(rotated)]
        subprocess.run(["mergecap", "-a", "-F", "pcap", "-w", merged, *pieces], check=True)
        _code, out3, _err = run(["analyze", "--json", merged], capsys)
        assert without_file(out3) == without_file(out)
    # the text view's statistics count the set as the one file
    text_whole = run(["analyze", whole], capsys)[1].splitlines()
    text_set = run(["analyze", rotated], capsys)[1].splitlines()
    assert text_set[-1].split(":", 1)[1] == text_whole[-1].split(":", 1)[1]


@pytest.mark.parametrize("extra", [[], ["--json"], ["--all"], ["--csv", "-"]])
def test_jobs_give_the_output_of_one_process(mixed, extra, capsys, monkeypatch):
    args, base = mixed
    monkeypatch.chdir(base)
    one = run(["analyze", *extra, *args], capsys)
    assert one[0] == 1 and one[1]
    for name in args[3:]:  # every bad input has its line
        assert os.path.basename(name) in one[2]
    assert "damaged.pcap (frame" in one[2]
    two = run(["analyze", *extra, "--jobs", "2", *args], capsys)
    assert two == one


def test_jobs_over_the_lab_corpus(capsys):
    """Forty separate files: text view, summary and JSON exactly as one process prints them."""
    for extra in ([], ["--json"]):
        one = run(["analyze", *extra, str(CAPTURES)], capsys)
        two = run(["analyze", *extra, "--jobs", "3", str(CAPTURES)], capsys)
        assert one == two
        assert one[0] == 0 and one[1]


def test_dask_local_gives_the_output_of_one_process(mixed, capsys, monkeypatch):
    args, base = mixed
    monkeypatch.chdir(base)
    one = run(["analyze", "--json", *args], capsys)
    two = run(["analyze", "--json", "--dask", "local", "--jobs", "2", *args], capsys)
    assert two == one


def test_a_truncated_last_file_is_reported_as_one_process_reports_it(capture, tmp_path, capsys):
    _whole, rotated = capture
    names = in_order(rotated)
    for name in names[:4]:
        (tmp_path / name).write_bytes((Path(rotated) / name).read_bytes())
    last = (Path(rotated) / names[3]).read_bytes()
    (tmp_path / names[3]).write_bytes(last[:-200])  # tcpdump killed mid-record
    one = run(["analyze", "--json", str(tmp_path)], capsys)
    assert one[0] == 1 and "truncated" in one[2] and names[3] in one[2]
    two = run(["analyze", "--json", "--jobs", "2", str(tmp_path), str(CAPTURES / "refused.pcap")],
              capsys)
    assert two[0] == 1 and two[2] == one[2] and two[1].startswith(one[1])


def test_standard_input_with_jobs(capsys):
    path = CAPTURES / "unread_data_reset.pcap"
    expected = run(["analyze", "--json", str(path), str(path)], capsys)[1]
    proc = subprocess.run([sys.executable, "-m", "analyzer", "analyze", "--json", "--jobs",
                           "2", "-", str(path)], stdin=path.open("rb"), capture_output=True,
                          text=True)
    assert proc.returncode == 0 and proc.stderr == ""
    assert without_file(proc.stdout) == without_file(expected)


def test_bad_jobs_and_unreachable_cluster(capsys, monkeypatch):
    monkeypatch.setattr("analyzer.scale.run.CONNECT_SECONDS", 1)
    code, out, err = run(["analyze", "--jobs", "0", str(CAPTURES / "refused.pcap")], capsys)
    assert code == 2 and err == "rstscope: --jobs 0: needs at least one process\n"
    code, out, err = run(["analyze", "--dask", "tcp://127.0.0.1:9", str(CAPTURES)], capsys)
    assert code == 2 and err.startswith("rstscope: --dask tcp://127.0.0.1:9: cannot reach")
    assert err.count("\n") == 1


def test_a_gzip_rotated_set(capture, tmp_path, capsys):
    import gzip

    _whole, rotated = capture
    names = in_order(rotated)[:3]
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
    assert len(out.splitlines()) > 50
    assert without_file(out2) == without_file(out)
    three = run(["analyze", "--json", "--jobs", "2", str(tmp_path / "*.gz"), str(plain)], capsys)
    assert three == (0, out2 + out, "")


def test_editcap_pieces_are_a_rotated_set(capture, tmp_path, capsys):
    """Ten files cut by Wireshark's editcap -c (names out_00000_<time>.pcap, ...)."""
    if subprocess.run(["which", "editcap"], capture_output=True).returncode:
        pytest.skip("editcap not installed")
    whole, _rotated = capture
    with open_native(whole) as reader:
        frames = sum(1 for _ in reader) and reader.stats.frames
    subprocess.run(["editcap", "-F", "pcap", "-c", str(-(-frames // 10)), whole,
                    str(tmp_path / "out.pcap")], check=True, capture_output=True)
    assert len(os.listdir(tmp_path)) == 10
    _code, out, _err = run(["analyze", "--json", whole], capsys)
    code, out2, err = run(["analyze", "--json", "--jobs", "2", str(tmp_path)], capsys)
    assert (code, err) == (0, "")
    assert without_file(out2) == without_file(out)
