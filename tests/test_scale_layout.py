"""Cutting captures at record boundaries: the layout walk, chunk readers, the splitter."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer.capture import open_capture, pcap
from analyzer.scale import chunk as chunks
from analyzer.scale.layout import layout, record_offsets
from analyzer.scale.split import main as split_main
from analyzer.scale.split import split
from analyzer.synth import generate

ZEEK = Path("/work/shared/zeek-oracle/traces")


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> str:
    path = tmp_path_factory.mktemp("synth") / "teardowns.pcap"
    generate(str(path), packets=20_000, seed=11, mix="teardowns")
    return str(path)


@pytest.fixture(scope="module")
def synth_ng(synth, tmp_path_factory) -> str:
    if shutil.which("editcap") is None:
        pytest.skip("editcap not installed")
    out = tmp_path_factory.mktemp("ng") / "teardowns.pcapng"
    subprocess.run(["editcap", "-F", "pcapng", synth, str(out)], check=True)
    return str(out)


def segment_view(seg) -> tuple:
    return (seg.frame, seg.ts, seg.src, seg.sport, seg.dst, seg.dport, seg.seq, seg.flags)


def whole(path: str) -> tuple[list, object, list]:
    reader = open_capture(path, check_ip_checksums=False)
    segs = [segment_view(s) for s in reader]
    return segs, reader.stats, [str(p) for p in reader.problems]


def by_chunks(path: str, target: int) -> tuple[list, object, list, int]:
    """Every chunk read on its own, as the workers do, and put back together."""
    specs = _specs(path, target)
    segs, stats, problems = [], [], []
    for spec in specs:
        reader, it, shift = chunks.open_chunk(spec, False)
        segs.extend(segment_view(s) for s in it)
        chunks.fix_messages(spec, reader, shift)
        stats.append(reader.stats)
        problems.append(reader.problems)
    merged = chunks.merge_stats(stats)
    return segs, merged, [str(p) for p in chunks.merge_problems(problems)], len(specs)


def _specs(path: str, target: int) -> list[chunks.ChunkSpec]:
    specs = chunks.plan(0, path, [path], [layout(path, target)])
    assert isinstance(specs, list), specs
    return specs


@pytest.mark.parametrize("fixture", ["synth", "synth_ng"])
def test_chunks_read_back_the_whole_capture(fixture, request):
    path = request.getfixturevalue(fixture)
    size = os.path.getsize(path)
    lay = layout(path, size // 7)
    assert lay.clean and lay.frames == whole(path)[1].frames
    assert 6 <= len(lay.cuts) <= 9  # about one cut per seventh of the file
    segs, stats, problems = whole(path)
    got, got_stats, got_problems, n = by_chunks(path, size // 7)
    assert n == len(lay.cuts)
    assert got == segs  # same segments, same frame numbers, same order
    assert got_stats == stats
    assert got_problems == problems == []


def test_zeek_pcapng_traces_cut_into_tiny_chunks():
    traces = sorted(ZEEK.rglob("*.pcapng")) if ZEEK.exists() else []
    if not traces:
        pytest.skip("zeek oracle traces not found")
    for path in map(str, traces):
        segs, stats, problems = whole(path)
        got, got_stats, got_problems, n = by_chunks(path, 1)
        assert n == stats.frames, path  # a chunk per packet block
        assert (got, got_stats, got_problems) == (segs, stats, problems), path


def test_a_truncated_file_is_cut_only_before_the_damage(synth, tmp_path):
    blob = Path(synth).read_bytes()
    bad = tmp_path / "truncated.pcap"
    bad.write_bytes(blob[:len(blob) - 700])  # ends inside a record
    lay = layout(str(bad), len(blob) // 5)
    assert not lay.clean
    assert lay.cuts[-1][0] < len(blob) - 700
    segs, stats, problems = whole(str(bad))
    assert problems and "truncated" in problems[0]
    got, got_stats, got_problems, _n = by_chunks(str(bad), len(blob) // 5)
    assert (got, got_stats, got_problems) == (segs, stats, problems)


def test_record_offsets(synth):
    lay = layout(synth, 1 << 40)
    little = pcap.parse_header(lay.header).little_endian
    offsets = record_offsets(synth, 24, lay.frames, little)
    assert len(offsets) == lay.frames and offsets[0] == 24
    blob = Path(synth).read_bytes()
    for a, b in zip(offsets[:50], offsets[1:51], strict=True):
        assert b - a == 16 + int.from_bytes(blob[a + 8:a + 12], "little" if little else "big")


@pytest.mark.parametrize("fixture", ["synth", "synth_ng"])
def test_split_into_ten_files_named_as_tcpdump_does(fixture, request, tmp_path):
    path = request.getfixturevalue(fixture)
    out = split(path, str(tmp_path / "rot"), 10)
    name = os.path.basename(path)
    assert [os.path.basename(p) for p in out] == [name] + [f"{name}{i}" for i in range(1, 10)]
    segs, stats, _ = whole(path)
    got, frames = [], 0
    for piece in out:
        reader = open_capture(piece, check_ip_checksums=False)
        for s in reader:
            s.frame += frames
            got.append(segment_view(s))
        assert not reader.problems
        frames += reader.stats.frames
    assert got == segs and frames == stats.frames
    sizes = [os.path.getsize(p) for p in out]
    assert max(sizes) < 2 * min(sizes)  # about equal shares


def test_split_command_line(synth, tmp_path, capsys):
    assert split_main([synth, str(tmp_path / "o"), "-n", "3"]) == 0
    assert len(capsys.readouterr().out.split()) == 3
    assert split_main([synth, str(tmp_path / "o"), "-n", "3"]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
