"""The native rotated-set reader (decode.SetReader) and the header walk (scale.walk)."""

from __future__ import annotations

import dataclasses
import shutil
import subprocess
from pathlib import Path

import pytest
from analyzer.core.decode import SetReader, open_native

from analyzer.pipeline import FileReport, iter_connections
from analyzer.scale.sets import set_connections
from analyzer.scale.split import split
from analyzer.scale.walk import walk
from analyzer.synth import generate
from tests.capture_helpers import ng_epb, ng_idb, ng_shb, tcp_ip


@pytest.fixture(scope="module")
def pieces(tmp_path_factory) -> tuple[str, list[str]]:
    base = tmp_path_factory.mktemp("sets")
    whole = base / "cap.pcap"
    generate(str(whole), packets=6000, seed=9, mix="teardowns")
    return str(whole), split(str(whole), str(base / "rot"), 4)


def frames_of(reader) -> list[tuple[int, float]]:
    return [(s.frame, s.ts) for s in reader.segments()]


def test_a_set_gives_the_segments_of_the_whole_file(pieces):
    whole, paths = pieces
    with open_native(whole) as r:
        expected = frames_of(r)
        stats = r.stats.values()
    s = SetReader(paths)
    assert frames_of(s) == expected and len(expected) > 5000
    got = s.stats
    assert got.frames == stats["frames"] and got.tcp_segments == stats["tcp_segments"]
    assert got.link_types == stats["link_types"] and got.format == "pcap"
    assert got.bytes_read == Path(paths[-1]).stat().st_size  # (the last file's, as before)
    assert s.problems == [] and s.notes == []


def test_damage_is_reported_against_the_file_that_holds_it(pieces, tmp_path):
    _whole, paths = pieces
    files = [tmp_path / Path(p).name for p in paths]
    for src, dst in zip(paths, files, strict=True):
        shutil.copy(src, dst)
    blob = bytearray(files[1].read_bytes())
    order = "little" if blob[:4] == b"\xd4\xc3\xb2\xa1" else "big"
    at = 24 + 16 + int.from_bytes(blob[32:36], order)  # the second record's header
    blob[at + 8:at + 12] = (10 << 20).to_bytes(4, order)  # an impossible length
    files[1].write_bytes(bytes(blob))
    files[2].write_text("not a capture\n")
    names = [f"shown{i}" for i in range(4)]
    s = SetReader([str(f) for f in files], names)
    got = frames_of(s)
    alone = {}
    for i in (1, 3):
        with open_native(str(files[i]), name=names[i]) as r:
            alone[i] = (frames_of(r), [str(p) for p in r.problems], r.stats.frames)
    with open_native(str(files[0])) as r:
        first = frames_of(r)
        n0 = r.stats.frames
    # frames go on across the files; the damaged file stops after its first record, the
    # unreadable one adds nothing, the next is read whole
    assert got == first + [(f + n0, t) for f, t in alone[1][0]] + \
        [(f + n0 + alone[1][2], t) for f, t in alone[3][0]]
    assert len(alone[1][0]) == 1
    assert [str(p) for p in s.problems] == [
        f"shown1 (frame 2, byte {at}): " + alone[1][1][0].split(": ", 1)[1],
        "shown2 (byte 0): not a pcap or pcapng file (starts with 6e 6f 74 20)"]
    assert s.stats.frames == n0 + alone[1][2] + alone[3][2]


def test_set_connections_equal_the_whole_file(pieces):
    whole, paths = pieces
    one, many = FileReport(whole), FileReport(paths[0])
    a = [(c.first_frame, c.last_frame, v.case) for c, v in iter_connections(whole, one)]
    b = [(c.first_frame, c.last_frame, v.case) for c, v in set_connections(paths, paths, many)]
    assert a == b and len(a) > 10
    assert many.stats == dataclasses.replace(one.stats, bytes_read=many.stats.bytes_read)
    assert many.peak_connections == one.peak_connections


def test_notes_name_their_file(tmp_path):
    from analyzer.scale.walk import Layout  # noqa: F401 - (module imports cleanly)

    good = tmp_path / "a.pcap"
    generate(str(good), packets=50, seed=1, mix="teardowns")
    odd = bytearray(good.read_bytes())
    order = "little" if odd[:4] == b"\xd4\xc3\xb2\xa1" else "big"
    odd[20:24] = (147).to_bytes(4, order)  # a link type nobody decodes
    (tmp_path / "b.pcap").write_bytes(bytes(odd))
    s = SetReader([str(good), str(tmp_path / "b.pcap")], ["a", "b"])
    with open_native(str(good)) as r:
        assert frames_of(s) == frames_of(r)
    assert s.notes == ["b: link type 147 is not supported (first: frame 1); its frames are "
                       "skipped"]


def test_walk_pcap_and_pcapng(pieces, tmp_path):
    whole, _paths = pieces
    with open_native(whole) as r:
        segs = list(r.segments())
        frames = r.stats.frames
    lay = walk(whole, 100_000)
    assert (lay.format, lay.frames, lay.clean, lay.linktype) == ("pcap", frames, True, 1)
    assert (lay.first_ts, lay.last_ts) == (segs[0].ts, segs[-1].ts)
    assert len(lay.cuts) > 5 and lay.cuts[0] == (24, 0, 0, 0)
    cut = bytearray(Path(whole).read_bytes()[:-10])
    (tmp_path / "cut.pcap").write_bytes(bytes(cut))
    lay = walk(str(tmp_path / "cut.pcap"))
    assert (lay.frames, lay.clean, lay.last_ts) == (frames - 1, False, segs[-2].ts)
    pkt = bytes(tcp_ip())
    ng = ng_shb() + ng_idb(1, tsresol=9) + b"".join(
        ng_epb(0, (1_700_000_000 + i) * 10**9 + 5, b"\0" * 12 + b"\x08\x00" + pkt)
        for i in range(3))
    (tmp_path / "x.pcapng").write_bytes(ng)
    lay = walk(str(tmp_path / "x.pcapng"))
    with open_native(str(tmp_path / "x.pcapng")) as r:
        ts = [s.ts for s in r.segments()]
    assert (lay.format, lay.frames, lay.clean, lay.linktype) == ("pcapng", 3, True, 1)
    assert (lay.first_ts, lay.last_ts) == (ts[0], ts[-1])


def test_split_pcapng_pieces_are_a_set(tmp_path):
    if subprocess.run(["which", "editcap"], capture_output=True).returncode:
        pytest.skip("editcap not installed")
    src = tmp_path / "a.pcap"
    generate(str(src), packets=3000, seed=4, mix="teardowns")
    subprocess.run(["editcap", "-F", "pcapng", str(src), str(tmp_path / "a.pcapng")],
                   check=True, capture_output=True)
    paths = split(str(tmp_path / "a.pcapng"), str(tmp_path / "rot"), 3)
    assert len(paths) == 3
    with open_native(str(tmp_path / "a.pcapng")) as r:
        expected = frames_of(r)
    assert frames_of(SetReader(paths)) == expected
