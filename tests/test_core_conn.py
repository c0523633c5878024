"""The compiled connection (analyzer/core/conn.pyx): the facts it keeps, checked against the
generator's labels on large synthetic captures (storms longer than any kept list, floods, every
teardown), against reasoned expectations on hand-built edge cases (the bounds of every list,
capture duplicates, pending challenges, anomalies past the first ten), and for what must hold
of any connection on every bundled capture and Zeek trace. Its memory: the struct and the heap
of a typical connection."""

from __future__ import annotations

import json

import pytest
from analyzer.core.conn import (
    LONGEST_PATH,
    ConnProbe,
    conn_struct_size,
    dir_struct_size,
    shared_empty_dir_intact,
)
from analyzer.core.observer import Observer
from analyzer.core.zeekview import shared_side1_intact

from analyzer import synth
from analyzer.errors import UnreadableCapture
from analyzer.pipeline import FileReport, iter_connections, make_record
from analyzer.segment import RST, SYN, Segment
from analyzer.tcpstate import State
from tests.core_helpers import bundled_captures, connections, observe, oracle_traces, states
from tests.segments import Flow, handshake

MAX_KEPT = 32  # every per-direction list of frames keeps at most this many
RST_ACCEPTED_KEPT = 8  # accepted RSTs kept past a full list
ANOM_KEPT = 10  # the export keeps the first 10 anomalies in full (the classifier shows those)
STATES = {s.value for s in State}


# ------------------------------------------------------------------ the generator's labels


@pytest.mark.parametrize("mix,packets,kw", [
    ("teardowns", 60_000, {}),
    ("syn_flood", 24_000, {}),
    ("rst_storm", 80_000, {"storm_rsts": 48}),  # longer than MAX_KEPT
    ("short", 60_000, {}),
], ids=["teardowns", "syn_flood", "rst_storm-48", "short"])
def test_generated_capture_gets_the_generators_labels(tmp_path, mix, packets, kw):
    path = tmp_path / f"{mix}.pcap"
    res = synth.generate(str(path), packets=packets, seed=5, mix=mix, truth=True,
                         bulk=(10, 60), **kw)
    rep = FileReport(str(path))
    got, kept_full = {}, 0
    for conn, verdict in iter_connections(str(path), rep):
        got[f"{conn.client[0]}:{conn.client[1]}" if conn.ip_version == 4
            else f"[{conn.client[0]}]:{conn.client[1]}"] = verdict.case
        kept_full += any(len(d.rsts) >= MAX_KEPT for d in conn.sent.values())
    truth = res["truth"]
    assert len(got) == len(truth) >= 1000
    wrong = {k: (v, got.get(k)) for k, v in truth.items() if got.get(k) != v}
    assert not wrong, list(wrong.items())[:10]
    if mix == "rst_storm":
        assert kept_full > 50  # storms past the bound were classified right
    assert rep.problems == []
    # the shared stand-ins for a server not yet heard from were never written
    assert shared_empty_dir_intact() and shared_side1_intact()


# ------------------------------------------------------------------ any real connection


def _check_connection(conn) -> None:
    assert conn.first_frame <= conn.last_frame and conn.start <= conn.end
    assert conn.packets >= 1 and conn.duplicates >= 0  # (packets: duplicates left out)
    for role in ("client", "server"):
        hist = conn.ep[role].history
        assert len(hist) <= LONGEST_PATH + 1, hist
        assert all(s in STATES for s, _f, _t in hist)
        frames = [f for _s, f, _t in hist]
        # in frame order, but for a last CLOSED the classifier gave up (ETIMEDOUT) at the side's
        # own last segment, which may be before the peer's later changes
        assert frames[:-1] == sorted(frames[:-1]), hist
        assert all(0 <= f <= conn.last_frame for f in frames)
        d = conn.sent[role]
        assert d.bytes >= 0 and d.retransmissions >= 0
        for name in ("syn_frames", "synack_frames", "ladder", "keepalives"):
            assert len(getattr(d, name)) <= MAX_KEPT, name
        assert len(d.rsts) <= MAX_KEPT + RST_ACCEPTED_KEPT


def test_every_real_connection_keeps_its_bounds():
    files = bundled_captures() + oracle_traces()
    assert len(files) >= 20
    n = 0
    for path in files:
        rep = FileReport(str(path))
        try:
            for conn, _v in iter_connections(str(path), rep):
                _check_connection(conn)
                n += 1
        except UnreadableCapture:
            continue
    assert n > 150


# ------------------------------------------------------------------ hand-built edge cases


def test_rst_storm_keeps_accepted_ones_past_the_bound():
    f = Flow()
    handshake(f)
    f("c", ".", 1001, 5001, length=10)
    for k in range(MAX_KEPT + 20):  # stray RSTs from the "server": fill the list
        f("s", "R", 9000 + 1000 * k, 0)
    for k in range(12):  # exact ones: kept beyond the bound, 8 accepted at most
        f("s", "R", 5001, 0, ip_id=k + 1)  # (not capture duplicates of each other)
    f("s", ".", 5001, 1011)  # and the server goes on: the last kept RST was forged
    (conn,) = connections(f.segments)
    rsts = conn.sent["server"].rsts
    assert len(rsts) == MAX_KEPT + RST_ACCEPTED_KEPT
    assert [r.frame for r in rsts[:MAX_KEPT]] == list(range(5, 5 + MAX_KEPT))
    assert [r.accepted for r in rsts[MAX_KEPT:]] == [True] * RST_ACCEPTED_KEPT
    assert rsts[-1].forged and not any(r.forged for r in rsts[:-1])
    assert states(conn, "client")[-1] == "CLOSED"


def test_pending_challenge_of_an_unkept_rst():
    f = Flow()
    handshake(f)
    for k in range(MAX_KEPT + 3):  # out-of-window RSTs (frames 4..38): each awaits a challenge
        f("s", "R", 9000 + 1000 * k, 0)
    f("c", ".", 1001, 5001)  # frame 39: the challenge ACK of the last, unkept, RST
    f("s", "R", 9000, 0)  # frame 40: awaits its own
    (conn,) = connections(f.segments)
    rsts = conn.sent["server"].rsts
    assert [r.frame for r in rsts] == list(range(4, 4 + MAX_KEPT))
    pending = conn.pending_challenge["client"]
    assert (pending.frame, pending.accepted, pending.seq) == (40, False, 9000)
    assert states(conn, "client") == ["SYN_SENT", "ESTABLISHED"]


def test_many_ttls_and_anomalies():
    f = Flow()
    handshake(f)
    for ttl in (64, 63, 62, 61, 200, 0, 255):
        f("c", "P.", 1001, 5001, length=1, ttl=ttl)
    for k in range(25):  # a SYN from the established client: impossible, again and again
        f("c", "S", 1000 + k)
    (conn,) = connections(f.segments)
    assert {64, 200} <= conn.sent["client"].ttls  # the usual one and the outlier
    texts = [a.text() for a in conn.anomalies]
    assert len(texts) == 25  # every one counted,
    assert texts[:ANOM_KEPT] == [f"frame {11 + k}: client in ESTABLISHED cannot send SYN"
                                 for k in range(ANOM_KEPT)]  # the first ten in full
    assert all("not kept" in t for t in texts[ANOM_KEPT:])


def test_keepalives_and_ladder_bounds():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, length=100)
    for _ in range(MAX_KEPT + 5):
        f("c", "P.", 1001, 5001, length=100, dt=0.2)  # retransmissions: one ladder
    f("s", ".", 5001, 1101)
    for _ in range(MAX_KEPT + 5):
        f("s", ".", 5000, 1101, dt=75)  # keepalive probes
    (conn,) = connections(f.segments)
    c, s = conn.sent["client"], conn.sent["server"]
    assert c.retransmissions == MAX_KEPT + 5  # counted exactly,
    assert [fr for fr, _ in c.ladder] == list(range(5, 5 + MAX_KEPT))  # the first ones kept
    assert len(s.keepalives) == MAX_KEPT
    assert c.bytes == 100


def test_duplicate_window_boundary():
    """A copy of a segment within 1 ms is a capture duplicate (the same frame twice on `lo`);
    exactly 1 ms later it still is; a third copy 1 ms after the second is a resend."""
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, length=10)
    f("c", "P.", 1001, 5001, length=10)
    f("c", "P.", 1001, 5001, length=10)
    f("s", ".", 5001, 1011)
    exact = [0.0001, 0.0002, 0.0003, 0.001, 0.002, 0.0030000000000000005, 0.004]
    assert exact[4] - exact[3] == 0.001 and exact[5] - exact[4] > 0.001
    for seg, ts in zip(f.segments, exact, strict=True):
        seg.ts = ts
    (conn,) = connections(f.segments)
    assert conn.duplicates == 1
    assert conn.sent["client"].retransmissions == 1
    assert conn.packets == 6  # the copy is not a packet of its own


def test_the_records_packet_count_leaves_each_duplicate_out_once():
    """INTERFACE: packets seen, capture duplicates excluded. 7 frames, one a duplicate: 6."""
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, 100, ip_id=7)
    f("c", "P.", 1001, 5001, 100, ip_id=7, dt=0.00001)  # the second copy on `lo`
    f("s", ".", 5001, 1101)
    f("c", "F.", 1101, 5001)
    (conn, verdict), = observe(f.segments)
    assert conn.duplicates == 1
    assert make_record(conn, verdict, "f")["packets"] == len(f.segments) - 1
    obs = Observer(json_file="f")  # and the JSON Lines the core writes itself
    for seg in f.segments:
        obs.feed_segment(seg)
    obs.close()
    assert json.loads(obs.json.take())["packets"] == len(f.segments) - 1


# ------------------------------------------------------------------ the bounds and the size


def test_timelines_fit_their_bound():
    # the table is acyclic: no timeline is longer than its longest path (see conn.pyx)
    assert 5 <= LONGEST_PATH <= 14


def test_struct_and_heap_per_typical_connection():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, length=100)
    f("s", "P.", 5001, 1101, length=1000)
    f("c", ".", 1101, 6001)
    f("c", "F.", 1101, 6001)
    f("s", "F.", 6001, 1102)
    f("c", ".", 1102, 6002)
    c, s = f.ends["c"], f.ends["s"]
    probe = ConnProbe(0, f.segments[0], c, s)
    for seg in f.segments:
        probe.observe(seg)
    conn = probe.export()
    assert states(conn, "client") == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
                                      "TIME_WAIT"]
    assert (conn.sent["client"].bytes, conn.sent["server"].bytes) == (100, 1000)
    size, heap, chunks = conn_struct_size(), probe.heap_bytes(), probe.heap_bytes(True)
    print(f"sizeof(Conn) {size}, lists {heap} bytes ({chunks} as malloc chunks)")
    assert size <= 296  # (grows only on purpose: it is every open connection's)
    # the server's Dir, timelines of 5 and 6 entries, one SYN/ACK (the one SYN is in the struct)
    assert heap == dir_struct_size() + 11 * 16 + 16
    assert probe.ended and not probe.new_attempt(f.segments[0])
    assert probe.hist_dropped() == (0, 0)


@pytest.mark.parametrize("first_frame", [5, 2**27 - 1, 2**27, 2**30, 2**33])
def test_a_lone_syn_allocates_nothing_while_its_frame_fits_the_struct(first_frame):
    # a timeline's first entry (frames below 2**27) and a direction's first SYN (below 2**30)
    # sit in the struct; larger frames, and second entries, go to the heap, with the same facts
    segs = [Segment(first_frame, 1.0, "10.0.0.1", 1234, "10.0.0.2", 80, 100, 0, SYN),
            Segment(first_frame + 2, 4.0, "10.0.0.1", 1234, "10.0.0.2", 80, 100, 0, SYN),
            Segment(first_frame + 3, 4.1, "10.0.0.2", 80, "10.0.0.1", 1234, 0, 101, RST | 0x10)]
    c, s = ("10.0.0.1", 1234), ("10.0.0.2", 80)
    probe = ConnProbe(0, segs[0], c, s)
    probe.observe(segs[0])
    want = (16 if first_frame >= 2**27 else 0) + (16 if first_frame >= 2**30 else 0)
    assert probe.heap_bytes() == want
    conn = probe.export()
    assert conn.ep["client"].history == [("SYN_SENT", first_frame, 1.0)]
    assert conn.sent["client"].syn_frames == [first_frame]
    for seg in segs[1:]:
        probe.observe(seg)
    conn = probe.export()
    assert conn.sent["client"].syn_frames == [first_frame, first_frame + 2]
    assert [(st, fr) for st, fr, _ in conn.ep["client"].history] == [
        ("SYN_SENT", first_frame), ("CLOSED", first_frame + 3)]
