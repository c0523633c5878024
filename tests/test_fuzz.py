"""Hostile input, the fast subset of `make fuzz` (analyzer.fuzz): never crash, never lose what
was read. Every input goes through ``analyzer.cli.main`` in-process and ``fuzz.Checker`` checks
exit code, standard error lines and that nothing before the damage was lost."""

from __future__ import annotations

import functools
import struct
from collections import Counter
from pathlib import Path

import pytest
from analyzer.core.decode import open_native

from analyzer import cli, fuzz
from analyzer.errors import UnreadableCapture

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


@pytest.fixture(scope="module")
def checker(tmp_path_factory):
    # one argparse parser for the module: building it dominates an in-process run
    real = cli._parser
    cli._parser = functools.lru_cache(maxsize=None)(real)
    try:
        yield fuzz.Checker(str(tmp_path_factory.mktemp("fuzz")))
    finally:
        cli._parser = real


def assert_ok(checker, m: fuzz.Mutant, subprocess_too: bool = False) -> fuzz.Outcome:
    got, problems = checker.check(m, subprocess_too)
    assert problems == [], f"{m.category} ({m.detail}): {problems}"
    return got


def _small(name: str, fmt: str) -> bytes:
    data = (CAPTURES / name).read_bytes()
    return data if fmt == "pcap" else fuzz.pcap_to_pcapng(data)


@pytest.mark.parametrize("name,fmt", [("refused.pcap", "pcap"), ("unreachable.pcap", "pcap"),
                                      ("refused_v6.pcap", "pcapng")])
def test_every_truncation_point(checker, name, fmt):
    """Cut at every byte: inside the file header exit 2, at a record boundary exit 0, inside
    record k exit 1 with the damage at record k and the records of the k-1 complete ones."""
    data = _small(name, fmt)
    exits = Counter()
    for cut in range(len(data) + 1):
        got = assert_ok(checker, fuzz.truncate_inside(data, fmt, cut))
        exits[got.code] += 1
    assert exits[0] and exits[1] and exits[2]


def test_random_mutations_fixed_seed(checker):
    seeds = fuzz.load_seeds()
    ran = Counter()
    failures = []
    for index in range(2000):
        m, base = fuzz.make_mutant(seeds, 20240, index)
        _, problems = checker.check(m)
        ran[m.category] += 1
        if problems:
            failures.append((index, m.category, m.detail, base, problems))
    assert failures == []
    assert set(ran) == set(fuzz.MUTATORS)


def test_subprocess_end_to_end(checker):
    """The real `python -m analyzer analyze --json`: one line, no traceback, same result."""
    data = (CAPTURES / "half_close.pcap").read_bytes()
    lay = fuzz.pcap_layout(data)
    absurd = bytearray(data)
    struct.pack_into("<I", absurd, lay.records[3][0] + 8, 0xFFFFFFFF)
    for m in [fuzz.Mutant("good", data, exits=frozenset((0,))),
              fuzz.truncate_inside(data, "pcap", len(data) - 3),
              fuzz.Mutant("absurd", bytes(absurd), exits=frozenset((1,)),
                          damage_at=lay.records[3][0]),
              fuzz.Mutant("empty", b"", exits=frozenset((2,))),
              fuzz.Mutant("magic", b"GIF89a" + data[6:], exits=frozenset((2,)))]:
        assert_ok(checker, m, subprocess_too=True)


def test_generated_captures_hypothesis(checker):
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    spec = st.builds(
        fuzz.SegSpec, pair=st.integers(0, 3), reverse=st.booleans(),
        flags=st.one_of(st.sampled_from(fuzz.FLAG_CHOICES), st.integers(0, 255)),
        seq_delta=st.one_of(st.sampled_from([0, 1, -1, 2**31]), st.integers(0, 2**32 - 1)),
        ack_delta=st.one_of(st.sampled_from([0, 1, -1]), st.integers(0, 2**32 - 1)),
        payload=st.sampled_from([0, 1, 100]),
        gap=st.sampled_from([0.0, 0.001, 1.0, 6.0, 400.0, 7300.0, -3.0]),
        icmp=st.booleans())

    @settings(max_examples=200, deadline=None, derandomize=True,
              suppress_health_check=[HealthCheck.function_scoped_fixture,
                                     HealthCheck.too_slow])
    @given(specs=st.lists(spec, min_size=1, max_size=25), fmt=st.sampled_from(["pcap", "pcapng"]),
           isn=st.integers(0, 2**32 - 1), cut=st.none() | st.integers(0, 4000),
           flips=st.lists(st.tuples(st.integers(0, 4000), st.integers(0, 255)), max_size=3))
    def check(specs, fmt, isn, cut, flips):
        data = fuzz.synth_capture(specs, fmt, isn)
        assert_ok(checker, fuzz.Mutant("generated", data, exits=frozenset((0,))))
        if cut is not None and cut < len(data):
            assert_ok(checker, fuzz.truncate_inside(data, fmt, cut))
        if flips:
            b = bytearray(data)
            for pos, val in flips:
                if pos < len(b):
                    b[pos] = val
            assert_ok(checker, fuzz.Mutant("flip", bytes(b)))

    check()


# --- bugs the fuzzer found --------------------------------------------------------------------

def _ng(tmp_path, blob: bytes) -> str:
    path = tmp_path / "x.pcapng"
    path.write_bytes(blob)
    return str(path)


def _one_packet_ng(**shb) -> bytes:
    data = (CAPTURES / "refused.pcap").read_bytes()
    ng = fuzz.pcap_to_pcapng(data)
    if shb:
        ng = fuzz.ng_shb(**shb) + ng[28:]
    return ng


@pytest.mark.parametrize("damage", ["truncated", "trailer", "length", "version", "too-short"])
def test_damaged_first_section_header_is_unreadable(tmp_path, damage):
    """The first section header is the file header: damage there means nothing is readable
    (exit 2, as for a pcap file header), not an exit 1 with nothing read."""
    ng = bytearray(_one_packet_ng())
    if damage == "truncated":
        ng = ng[:20]
    elif damage == "trailer":
        struct.pack_into("<I", ng, 24, 32)
    elif damage == "length":
        struct.pack_into("<I", ng, 4, 1 << 30)
    elif damage == "too-short":
        ng = bytearray(fuzz.ng_block(fuzz.NG_SHB, struct.pack("<I", 0x1A2B3C4D)) + ng[28:])
    else:
        ng = bytearray(_one_packet_ng(major=2))
    with pytest.raises(UnreadableCapture) as ei:
        open_native(_ng(tmp_path, bytes(ng)), check_ip_checksums=True)
    assert ei.value.offset == 0


def test_later_section_with_unknown_version_is_damage(tmp_path):
    ng = _one_packet_ng()
    second = fuzz.ng_shb(major=3, minor=1) + ng[28:]
    reader = open_native(_ng(tmp_path, ng + second), check_ip_checksums=True)
    segs = list(reader)
    assert [p.offset for p in reader.problems] == [len(ng)]
    assert "version 3.1" in reader.problems[0].message
    assert len(segs) == reader.stats.frames == 2


def test_damaged_frames_are_errors_naming_the_first(tmp_path, checker):
    """Frames skipped as damaged while reading went on used to be a note and exit 0: they are
    an error (exit 1) naming the first one, with its record's offset where the format gives it
    exactly (pcap), and how many there were."""
    ng = bytearray(_one_packet_ng())
    blocks = fuzz.ng_layout(bytes(ng))
    struct.pack_into("<I", ng, blocks[3].offset + 8, 7)  # second EPB: interface 7
    reader = open_native(_ng(tmp_path, bytes(ng)), check_ip_checksums=True)
    list(reader)
    assert reader.notes == []
    [p] = reader.problems
    assert (p.frame, p.offset, p.count) == (2, None, 1)
    assert p.problem == "pcapng packet block refers to an undescribed interface"
    assert_ok(checker, fuzz.Mutant("bad-iface", bytes(ng), exits=frozenset((1,))))

    bad = bytearray((CAPTURES / "refused.pcap").read_bytes())
    bad[24 + 16 + 14] = 0x43  # IHL 3 in frame 1
    lay = fuzz.pcap_layout(bytes(bad))
    second = lay.records[1][0] + 16 + 14  # and frame 2's IPv4 total length below its header
    struct.pack_into("!H", bad, second + 2, 8)
    reader = open_native(_ng(tmp_path, bytes(bad)), check_ip_checksums=False)  # as the CLI
    list(reader)
    [p] = reader.problems
    assert (p.frame, p.offset, p.count) == (1, 24, 2)
    assert str(p).endswith("IPv4 header length 12 is less than the minimum 20 (frame skipped, "
                           "and 1 more damaged frame after it; the rest was analyzed)")
    got = assert_ok(checker, fuzz.Mutant("header-lie", bytes(bad), exits=frozenset((1,))))
    # a cut inside the last record (frame 2, damaged too, is never read): two lines, the
    # skipped frame first, then where reading stopped
    cut = fuzz.truncate_inside(bytes(bad), "pcap", len(bad) - 3)
    got = assert_ok(checker, cut)
    lines = got.err.splitlines()
    assert got.code == 1 and len(lines) == 2
    assert fuzz.skipped_count(lines[0]) == 1 and fuzz.skipped_count(lines[1]) is None
    assert fuzz.location(lines[1]) == (2, lay.records[1][0])


def test_checker_catches_a_reader_that_misreports_skipped_frames():
    """The fuzz's own walk, not the reader, decides which frames are damaged."""
    data = bytearray((CAPTURES / "refused.pcap").read_bytes())
    data[24 + 16 + 14] = 0x43
    damaged = fuzz.damaged_frames(bytes(data), None, False)
    assert [(f.frame, f.offset) for f in damaged] == [(1, 24)]
    ok = "rstscope: x (frame 1, byte 24): whatever (frame skipped; the rest was analyzed)"
    assert fuzz.Checker.judge_skipped([ok], damaged, bytes(data)) == []
    for wrong in [ok.replace("byte 24", "byte 40"), ok.replace("frame 1,", "frame 2,"),
                  ok.replace("skipped;", "skipped, and 1 more damaged frame after it;")]:
        assert fuzz.Checker.judge_skipped([wrong], damaged, bytes(data)) != []
    assert fuzz.Checker.judge_skipped([], damaged, bytes(data)) != []
    assert fuzz.Checker.judge_skipped([ok], [], bytes(data)) != []


def test_hostile_file_name_stays_one_line(tmp_path, capsys):
    bad = tmp_path / "a\nb\x1b[31m.pcap"
    bad.write_bytes(b"xx")
    assert cli.main(["analyze", "--json", str(bad)]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "\x1b" not in err and "a\\nb\\x1b[31m.pcap (byte 0)" in err


def test_several_files_one_line_per_problem(tmp_path, capsys):
    good = CAPTURES / "half_close.pcap"
    data = good.read_bytes()
    cut = tmp_path / "cut.pcap"
    cut.write_bytes(data[:-3])
    junk = tmp_path / "junk.pcap"
    junk.write_bytes(b"<html>")
    assert cli.main(["analyze", "--json", str(good)]) == 0
    alone = capsys.readouterr().out
    assert cli.main(["analyze", "--json", str(good), str(cut), str(junk)]) == 1
    out, err = capsys.readouterr()
    lines = err.splitlines()
    assert len(lines) == 2
    assert sum(str(cut) in line for line in lines) == sum(str(junk) in line for line in lines) == 1
    assert alone.splitlines() == [line for line in out.splitlines() if str(good) in line]
