"""The synthetic capture generator: deterministic bytes, and every connection it scripts is
classified as the case it was scripted for."""

from __future__ import annotations

import bisect
import hashlib
import ipaddress
import json
import subprocess
import sys

import pytest

import analyzer
from analyzer import synth


def _digest(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def small(tmp_path_factory):
    path = tmp_path_factory.mktemp("synth") / "teardowns.pcap"
    res = synth.generate(str(path), packets=5000, seed=7, truth=True, bulk=(10, 40))
    return path, res, analyzer.analyze(str(path))


def test_same_seed_same_bytes(tmp_path):
    a, b, c = tmp_path / "a.pcap", tmp_path / "b.pcap", tmp_path / "c.pcap"
    ra = synth.generate(str(a), packets=3000, seed=11)
    rb = synth.generate(str(b), packets=3000, seed=11)
    synth.generate(str(c), packets=3000, seed=12)
    assert ra == rb
    assert _digest(a) == _digest(b)
    assert _digest(a) != _digest(c)


@pytest.mark.parametrize("mix", ["syn_flood", "rst_storm"])
def test_mixes_deterministic(tmp_path, mix):
    a, b = tmp_path / "a.pcap", tmp_path / "b.pcap"
    synth.generate(str(a), packets=2000, seed=3, mix=mix)
    synth.generate(str(b), packets=2000, seed=3, mix=mix)
    assert _digest(a) == _digest(b)


def test_every_connection_gets_its_intended_case(small):
    _, res, result = small
    got = dict(zip(result.connections.client, result.connections.case, strict=True))
    truth = res["truth"]
    assert len(got) == len(truth) == res["connections"]
    wrong = {k: (v, got.get(k)) for k, v in truth.items() if got.get(k) != v}
    assert not wrong, wrong
    # the deck deals every scripted case within 5,000 packets
    assert {fn.__name__.rstrip("_") for fn, _, _ in synth.SCRIPTS} - {"bulk", "stream"} \
        <= set(truth.values())


def test_counts_and_checksums(small):
    path, res, result = small
    st = result.files[0].stats
    assert res["packets"] >= 5000
    assert st.frames == st.tcp_segments == res["packets"]
    assert st.bad_tcp_checksums == st.bad_ip_checksums == st.offloaded_checksums == 0
    assert st.malformed == st.truncated_frames == 0
    assert not result.problems
    assert result.connections.packets.sum() == res["packets"]  # no capture duplicates
    assert sum(res["cases"].values()) == res["connections"]


def test_ipv6_and_interleaving(small):
    _, _, result = small
    conns = result.connections
    assert (conns.ip_version == 6).any() and (conns.ip_version == 4).any()
    assert conns.client.str.startswith("[").sum() == (conns.ip_version == 6).sum()
    # many connections are open at once: each starts before most earlier ones ended
    starts, ends = conns.start.to_numpy(), conns.end.to_numpy()
    overlapping = max(((starts <= s) & (ends >= s)).sum() for s in starts)
    assert overlapping >= 20


def test_times_increase(small):
    path, _, _ = small
    from analyzer.core.decode import open_native

    ts = [seg.ts for seg in open_native(str(path), check_ip_checksums=True)]
    assert all(a <= b for a, b in zip(ts, ts[1:], strict=False))


@pytest.mark.parametrize("mix", ["syn_flood", "rst_storm"])
def test_adversarial_mixes_classified(tmp_path, mix):
    path = tmp_path / f"{mix}.pcap"
    # at most 31 storm RSTs: the connection keeps 32 RSTs, the exact one must be among them
    res = synth.generate(str(path), packets=4000, seed=5, mix=mix, truth=True, bulk=(10, 40),
                         storm_rsts=16)
    conns = analyzer.analyze(str(path)).connections
    got = dict(zip(conns.client, conns.case, strict=True))
    wrong = {k: (v, got.get(k)) for k, v in res["truth"].items() if got.get(k) != v}
    assert not wrong, wrong
    special = {"syn_flood": {"refused", "syn_timeout"},
               "rst_storm": {"ignored_reset", "injected_reset"}}[mix]
    assert special <= set(res["truth"].values())


def test_cli(tmp_path):
    out = tmp_path / "cli.pcap"
    run = subprocess.run([sys.executable, "-m", "analyzer.synth", str(out), "--packets", "500",
                          "--seed", "4", "--mix", "syn_flood"], capture_output=True, text=True,
                         check=True)
    assert '"packets"' in run.stdout
    ref = tmp_path / "ref.pcap"
    synth.generate(str(ref), packets=500, seed=4, mix="syn_flood")
    assert _digest(out) == _digest(ref)


def test_bad_mix(tmp_path):
    with pytest.raises(ValueError):
        synth.generate(str(tmp_path / "x.pcap"), packets=10, mix="nope")


def test_cli_never_overwrites_without_force(tmp_path):
    out = tmp_path / "x.pcap"
    out.write_bytes(b"precious")
    cmd = [sys.executable, "-m", "analyzer.synth", str(out), "--packets", "200", "--seed", "4"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    assert run.returncode == 2 and run.stdout == ""
    assert run.stderr == (f"python -m analyzer.synth: {out}: already exists (use --force to "
                          "overwrite)\n")
    assert out.read_bytes() == b"precious"
    truth = tmp_path / "t.json"
    truth.write_text("{}")
    run = subprocess.run([*cmd, "--force", "--truth", str(truth)], capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr
    ref = tmp_path / "ref.pcap"
    synth.generate(str(ref), packets=200, seed=4)
    assert _digest(out) == _digest(ref) and len(json.loads(truth.read_text())) > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ref.pcap", "t.json", "x.pcap"]


def test_rst_storm_has_sequence_number_sweeps(tmp_path):
    """Sequence-number games: some attacks are a RST at every sequence number around a small
    window, one apart; crossing the exact number kills the connection, the rest are ignored,
    and rstscope says which."""
    from collections import defaultdict

    from analyzer.core.decode import open_native

    from analyzer.segment import ACK, RST

    path = tmp_path / "storm.pcap"
    res = synth.generate(str(path), packets=20000, seed=5, mix="rst_storm", truth=True,
                         bulk=(10, 40), storm_rsts=16)
    seqs = defaultdict(list)
    for seg in open_native(str(path), check_ip_checksums=True):
        if seg.flags & RST and not seg.flags & ACK:
            seqs[(seg.dst, seg.dport)].append(seg.seq)  # keyed by the victim, the client
    sweeps = {k: v for k, v in seqs.items() if len(v) >= 128 and all(
        (b - a) & 0xFFFFFFFF == 1 for a, b in zip(v, v[1:], strict=False))}
    conns = analyzer.analyze(str(path)).connections
    got = dict(zip(conns.client, conns.case, strict=True))
    clients = [synth.endpoint_text(ipaddress.ip_address(a).packed, p) for a, p in sweeps]
    truth = {k: res["truth"][k] for k in clients}
    assert len(sweeps) >= 10
    assert set(truth.values()) == {"ignored_reset", "injected_reset"}
    assert {k: got.get(k) for k in truth} == truth


# ------------------------------------------------------------------ the short mix

SHORT_CASES = {"graceful", "refused", "unread_data_reset", "abortive_close", "syn_timeout",
               "write_after_close"}
DOC_NETS = [ipaddress.ip_network(n) for n in ("198.51.100.0/24", "203.0.113.0/24",
                                              "2001:db8::/32")]


def test_existing_mixes_keep_their_bytes(tmp_path):
    """Cached benchmark captures and other tests rely on each mix's bytes: a change to the
    generator must leave the mixes that exist byte for byte as they were (these digests were
    taken before the short mix was added)."""
    pinned = {
        "teardowns": "470121a3e815eb8936b06421b3f7593ece01cd0907387d56d7517265b277ad12",
        "syn_flood": "e131264ca5926d5f6eb115db62d2631d2fd773b60c6903166b2c53760ec5a8bd",
        "rst_storm": "930100fa2c068477da1ee6ab02c2710e375c0725208b5d2731791c7a177690c0",
        "short": "bbd615fb094ca1b46c832a138d092593a0d90ed0675ccef8a128f4e4de7b886e",
    }
    for mix, digest in pinned.items():
        path = tmp_path / f"{mix}.pcap"
        synth.generate(str(path), packets=2000, seed=9, mix=mix)
        assert _digest(path) == digest, mix


@pytest.fixture(scope="module")
def short(tmp_path_factory):
    path = tmp_path_factory.mktemp("short") / "short.pcap"
    return path, synth.generate(str(path), packets=20000, seed=2, mix="short", truth=True)


def test_short_mix_deterministic(tmp_path, short):
    path, res = short
    again, other = tmp_path / "again.pcap", tmp_path / "other.pcap"
    assert synth.generate(str(again), packets=20000, seed=2, mix="short", truth=True) == res
    synth.generate(str(other), packets=20000, seed=3, mix="short")
    assert _digest(again) == _digest(path) != _digest(other)


def test_short_mix_shape(short):
    """About 13 packets a connection, 20 % IPv6, the six cases, documentation addresses, client
    endpoints that never repeat (the labels are keyed by them), many connections at once."""
    from analyzer.core.decode import open_native

    path, res = short
    assert 12 <= res["packets"] / res["connections"] <= 14
    assert set(res["cases"]) == SHORT_CASES
    assert res["cases"]["graceful"] / res["connections"] == pytest.approx(0.6, abs=0.02)
    truth = res["truth"]
    assert len(truth) == res["connections"]  # one label per client endpoint
    v6 = sum(k.startswith("[") for k in truth) / len(truth)
    assert v6 == pytest.approx(0.2, abs=0.03)
    spans: dict = {}
    n = 0
    for seg in open_native(str(path), check_ip_checksums=True):
        n += 1
        for a in (seg.src, seg.dst):
            ip = ipaddress.ip_address(a)
            assert any(ip.version == net.version and ip in net for net in DOC_NETS), a
        key = frozenset(((seg.src, seg.sport), (seg.dst, seg.dport)))
        first, _ = spans.get(key, (seg.ts, seg.ts))
        spans[key] = (first, seg.ts)
    assert n == res["packets"] and len(spans) == res["connections"]
    # interleaved: at the start of a connection, many others have started and not yet ended
    starts = sorted(a for a, _ in spans.values())
    ends = sorted(b for _, b in spans.values())
    mid = starts[len(starts) // 2]
    assert bisect.bisect_right(starts, mid) - bisect.bisect_left(ends, mid) >= 50


def test_short_mix_classified(tmp_path):
    """The compiled core names every connection of a small short-mix capture as the generator
    labelled it."""
    path = tmp_path / "short.pcap"
    res = synth.generate(str(path), packets=5000, seed=7, mix="short", truth=True)
    conns = analyzer.analyze(str(path)).connections
    got = dict(zip(conns.client, conns.case, strict=True))
    truth = res["truth"]
    assert len(got) == len(truth) == res["connections"]
    wrong = {k: (v, got.get(k)) for k, v in truth.items() if got.get(k) != v}
    assert not wrong, wrong
    assert set(truth.values()) == SHORT_CASES


def test_short_mix_cli(tmp_path, capsys):
    out, truth = tmp_path / "s.pcap", tmp_path / "s.json"
    assert synth.main([str(out), "--packets", "300", "--seed", "4", "--mix", "short",
                       "--truth", str(truth)]) == 0
    assert json.loads(capsys.readouterr().out)["packets"] >= 300
    ref = tmp_path / "ref.pcap"
    labels = synth.generate(str(ref), packets=300, seed=4, mix="short", truth=True)["truth"]
    assert _digest(out) == _digest(ref) and json.loads(truth.read_text()) == labels
