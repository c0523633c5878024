"""Arguments to captures: directories, globs, rotated sets, and what is not one."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from analyzer.cli import main
from analyzer.scale.inputs import expand
from analyzer.scale.split import split
from analyzer.synth import generate

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.fixture(scope="module")
def pieces(tmp_path_factory) -> list[str]:
    """A synthetic capture cut into five files named as tcpdump -C names them."""
    base = tmp_path_factory.mktemp("set")
    whole = base / "cap.pcap"
    generate(str(whole), packets=3000, seed=5, mix="teardowns")
    return split(str(whole), str(base / "rot"), 5)


def test_a_directory_of_rotated_files_is_one_capture_in_time_order(pieces):
    units = expand([os.path.dirname(pieces[0])])
    assert len(units) == 1
    assert units[0].paths == pieces and units[0].name == pieces[0]


def test_a_ring_buffer_is_ordered_by_time_not_by_name(pieces, tmp_path):
    # tcpdump -W 5 -C ...: cap0..cap4, and the oldest file may be any of them
    order = [3, 4, 0, 1, 2]
    for i, src in enumerate(pieces):
        shutil.copy(src, tmp_path / f"ring.pcap{order[i]}")
    units = expand([str(tmp_path)])
    assert len(units) == 1
    assert [os.path.basename(p) for p in units[0].paths] == [f"ring.pcap{n}" for n in order]


def test_a_glob_argument_is_expanded_and_grouped(pieces):
    pattern = os.path.join(os.path.dirname(pieces[0]), "cap.pcap*")
    units = expand([pattern])
    assert [u.paths for u in units] == [pieces]


def test_files_named_one_by_one_stay_apart_unless_rotated(pieces):
    assert [u.paths for u in expand(pieces)] == [[p] for p in pieces]
    assert [u.paths for u in expand(pieces, rotated=True)] == [pieces]


def test_the_lab_corpus_is_separate_captures():
    units = expand([str(CAPTURES)])
    assert len(units) == len(list(CAPTURES.glob("*.pcap")))  # (its .json labels are not captures)
    assert all(len(u.paths) == 1 and u.paths[0].endswith(".pcap") for u in units)


def test_overlapping_files_are_not_a_set(pieces, tmp_path):
    shutil.copy(pieces[0], tmp_path / "x.pcap1")
    shutil.copy(pieces[0], tmp_path / "x.pcap2")  # same times: one does not follow the other
    units = expand([str(tmp_path)])
    assert [len(u.paths) for u in units] == [1, 1]
    assert "starts before" in units[0].note


def test_different_link_layers_are_not_a_set(tmp_path):
    shutil.copy(CAPTURES / "refused.pcap", tmp_path / "y.pcap1")
    head = (CAPTURES / "graceful.pcap").read_bytes()
    blob = bytearray(head)
    blob[20:24] = (113).to_bytes(4, "little")  # Linux cooked capture instead of Ethernet
    (tmp_path / "y.pcap2").write_bytes(bytes(blob))
    units = expand([str(tmp_path)])
    assert [len(u.paths) for u in units] == [1, 1]
    assert "headers differ" in units[0].note


def run(argv, capsys):
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_an_empty_directory_is_an_error(tmp_path, capsys):
    (tmp_path / "notes.txt").write_text("not a capture\n")
    code, out, err = run(["analyze", "--json", str(tmp_path)], capsys)
    assert code == 2 and out == ""
    assert err == f"rstscope: {tmp_path}: directory holds no pcap or pcapng file\n"


def test_a_glob_matching_nothing_is_an_error(tmp_path, capsys):
    pattern = str(tmp_path / "nothing*.pcap")
    code, out, err = run(["analyze", "--json", pattern], capsys)
    assert code == 2 and out == ""
    assert err == f"rstscope: {pattern}: no file matches\n"


def test_one_bad_argument_among_good_ones_is_a_partial_result(tmp_path, capsys):
    code, out, err = run(["analyze", "--json", str(tmp_path / "none*"),
                          str(CAPTURES / "refused.pcap")], capsys)
    assert code == 1
    assert len(out.splitlines()) == 1 and err.count("\n") == 1
