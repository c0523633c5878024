"""The compiled Zeek view (analyzer/core/zeekview.pyx) against the Python one (analyzer.zeek).

Every segment goes to both: the Python `ZeekView` the tracker keeps per connection and a
`ZeekProbe` kept beside it; after each segment their conn_state, history and closed-for-reuse
must be equal (and, on real captures and random soups, their whole internal state: endpoint
states, sequence space, reassembler, timers), and before each segment so must
`starts_new_connection`. Inputs: the bundled captures and Zeek's traces (each with four option
sets, Zeek boundaries on and off), the hand-built sequences of tests/test_zeek.py, synthetic
captures, random segment soups, and the floats around every timer deadline.
"""

from __future__ import annotations

import inspect
import math
import random
from pathlib import Path

import pytest
from analyzer.core.zeekview import ZeekProbe, zeek_struct_size

from analyzer import synth
from analyzer.capture import open_capture
from analyzer.segment import ACK, FIN, PSH, RST, SYN, Segment
from analyzer.tracker import Tracker, _key
from analyzer.zeek import ZeekView, starts_new_connection
from tests import test_zeek

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path("/work/shared/zeek-oracle/traces")
OPTION_SETS = [{}, {"bare_mode": True}, {"ignore_checksums": True},
               {"bare_mode": True, "ignore_checksums": True}]


def real_captures() -> list[Path]:
    files = sorted((ROOT / "captures").glob("*.pcap"))
    if ORACLE.is_dir():
        files += sorted(p for p in ORACLE.rglob("*") if p.is_file())
    return files


def same(view: ZeekView, probe: ZeekProbe, where) -> None:
    got = (probe.conn_state, probe.history, probe.is_closed_for_reuse())
    want = (view.conn_state, view.history, view.is_closed_for_reuse())
    assert got == want, where


def _merged(blocks) -> list[tuple[int, int]]:
    """Python's buffered blocks, touching and overlapping ones coalesced (the compiled form)."""
    out: list[list[int]] = []
    for lo, hi in sorted(blocks):
        if out and lo <= out[-1][1]:
            out[-1][1] = max(out[-1][1], hi)
        else:
            out.append([lo, hi])
    return [(lo, hi) for lo, hi in out]


def py_internals(v: ZeekView) -> dict:
    """ZeekView's state in the shape of ZeekProbe.internals()."""

    def ep(e, is_orig):
        return {
            "state": e.state, "prev_state": e.prev_state, "start": e.start, "last": e.last,
            "ackseq": e.ackseq, "did_close": e.did_close, "fin_cnt": e.fin_cnt > 0,
            "fin_seq": e.fin_seq, "sent_payload": e.sent_payload, "seen": frozenset(e.seen),
            "last_syn": e.last_syn, "last_fin": e.last_fin, "last_rst": e.last_rst,
            "scaled": {k: c[0] for k, c in e.scaled.items() if c[0]},
            "last_reassem": e.reasm.last_reassem, "trim_seq": e.reasm.trim_seq,
            "blocks": _merged(e.reasm.blocks), "first_seen": is_orig in v._first_seen,
        }

    return {
        "started": v.orig is not None, "orig": ep(v._o, True), "resp": ep(v._r, False),
        "partial": v._is_partial, "last_time": v._last_time, "attempt_at": v._attempt_at,
        "delete_at": v._delete_at, "cancelled": v._timers_cancelled,
        "grids": list(v._expire_grids),
    }


def same_inside(view: ZeekView, probe: ZeekProbe, where) -> None:
    got, want = probe.internals(), py_internals(view)
    assert got == want, (where, {k: (got[k], want[k]) for k in want if got[k] != want[k]})


class Stats:
    def __init__(self):
        self.segments = self.connections = self.splits = self.starts_checked = 0


def run_parity(segments, options: dict, boundaries: bool, name: str, stats: Stats,
               inside: bool = False) -> None:
    """Feed `segments` through the tracker (its ZeekViews) and ZeekProbes, comparing."""
    probes: dict[int, ZeekProbe] = {}

    def finish(conn):
        probe = probes.pop(conn.conn_id, None)
        if probe is not None:
            same(conn.zeek, probe, (name, "finish", conn.conn_id))
            stats.connections += 1

    tracker = Tracker(finish, zeek_options={**options, "boundaries": boundaries})
    for seg in segments:
        key = _key(seg)
        conn = tracker.active.get(key)
        if conn is not None and not seg.is_icmp:
            want = starts_new_connection(conn.zeek, seg, conn.end)
            got = probes[conn.conn_id].starts_new(seg, conn.end)
            assert got == want, (name, "starts_new", seg)
            stats.starts_checked += 1
            stats.splits += want
        tracker.feed(seg)
        conn = tracker.active[key]
        probe = probes.get(conn.conn_id)
        if probe is None:
            probe = probes[conn.conn_id] = ZeekProbe(**options)
        probe.observe(seg)
        same(conn.zeek, probe, (name, seg))
        if inside:
            same_inside(conn.zeek, probe, (name, seg))
        stats.segments += 1
    tracker.close()
    assert not probes


# --------------------------------------------------------------------------- real captures


@pytest.mark.parametrize("boundaries", [True, False], ids=["zeek-boundaries", "tcp-boundaries"])
def test_real_captures(boundaries):
    files = real_captures()
    assert len(files) >= 40
    stats = Stats()
    for path in files:
        for options in OPTION_SETS:
            segs = list(open_capture(str(path),
                                     check_ip_checksums=not options.get("ignore_checksums")))
            run_parity(segs, options, boundaries, f"{path.name} {options}", stats, inside=True)
    print(f"{len(files)} files: {stats.segments} segments, {stats.connections} connections, "
          f"{stats.starts_checked} boundary checks ({stats.splits} splits)")
    assert stats.connections > 100 and stats.segments > 4 * 1000
    if boundaries:
        assert stats.splits > 0  # Zeek's boundaries were exercised


# --------------------------------------------------------------------------- tests/test_zeek.py


class TwinView(ZeekView):
    """A ZeekView that drives a ZeekProbe alongside and checks it after every segment."""

    __slots__ = ("probe",)

    def __init__(self, *, bare_mode=False, ignore_checksums=False):
        super().__init__(bare_mode=bare_mode, ignore_checksums=ignore_checksums)
        self.probe = ZeekProbe(bare_mode=bare_mode, ignore_checksums=ignore_checksums)

    def observe(self, seg):
        super().observe(seg)
        self.probe.observe(seg)
        same(self, self.probe, seg)


def twin_starts_new(view, seg, last_ts):
    want = starts_new_connection(view, seg, last_ts)
    assert view.probe.starts_new(seg, last_ts) == want, seg
    return want


def _hand_built_cases():
    cases = []
    for name, fn in sorted(vars(test_zeek).items()):
        if not name.startswith("test_") or not callable(fn):
            continue
        marks = [m for m in getattr(fn, "pytestmark", []) if m.name == "parametrize"]
        if not marks:
            cases.append(pytest.param(fn, {}, id=name))
            continue
        names, values = marks[0].args[0], marks[0].args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else names
        for i, v in enumerate(values):
            v = v if len(names) > 1 else (v,)
            cases.append(pytest.param(fn, dict(zip(names, v, strict=True)), id=f"{name}[{i}]"))
    return cases


@pytest.mark.parametrize(("fn", "kwargs"), _hand_built_cases())
def test_hand_built(fn, kwargs, monkeypatch):
    assert set(inspect.signature(fn).parameters) == set(kwargs)
    monkeypatch.setattr(test_zeek, "ZeekView", TwinView)
    monkeypatch.setattr(test_zeek, "starts_new_connection", twin_starts_new)
    fn(**kwargs)


def test_hand_built_cases_collected():
    assert len(_hand_built_cases()) >= 45


# --------------------------------------------------------------------------- synthetic captures


@pytest.mark.parametrize(("mix", "packets"), [("teardowns", 40000), ("syn_flood", 6000),
                                              ("rst_storm", 6000)])
def test_synthetic(tmp_path, mix, packets):
    path = tmp_path / f"{mix}.pcap"
    res = synth.generate(str(path), packets=packets, seed=17, mix=mix, bulk=(5, 40))
    segs = list(open_capture(str(path)))
    stats = Stats()
    run_parity(segs, {}, True, mix, stats)
    run_parity(segs, {"bare_mode": True}, False, mix, stats)
    print(f"{mix}: {res['connections']} connections generated; {stats.segments} segments, "
          f"{stats.connections} connections compared")
    assert stats.connections >= res["connections"]
    assert res["connections"] >= (1000 if mix == "teardowns" else 50)


# --------------------------------------------------------------------------- random soups

A_PORTS = (40000, 40000, 40000, 443, 22)  # sometimes both ports are likely server ports
B_PORTS = (80, 8443, 22, 443)


FLAGS = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, RST, RST | ACK, FIN | RST | ACK, SYN | FIN,
         0, FIN]
MOSTLY_DATA = [ACK] * 6 + [ACK | PSH] * 6 + FLAGS  # longer-lived: holes, gaps, windows


def _soup(rng: random.Random, n: int, flag_set=FLAGS, a_share: float = 0.5) -> list[Segment]:
    """Random segments between two endpoints: flags, sequence numbers near two ISNs (and near
    the 2**32 wrap), holes and retransmissions, zero windows, bad checksums, timer-sized
    pauses; sometimes after a handshake."""
    a, b = ("10.0.0.1", rng.choice(A_PORTS)), ("10.0.0.2", rng.choice(B_PORTS))
    isn = [rng.choice([1000, 0, 2**32 - 300, 2**31 - 100, rng.getrandbits(32)])
           for _ in range(2)]
    t = 1000.0
    out = []
    plan = [(True, SYN, 0, 0), (False, SYN | ACK, 0, 1), (True, ACK, 1, 1)] \
        if rng.random() < 0.3 else []
    for i in range(n):
        side = rng.random() < a_share
        flags = rng.choice(flag_set)
        seq_off = rng.choice([0, 1, 1, 11, 101, 150, 200, 1449, 3000, -5, 2**31])
        ack_off = rng.choice([0, 1, 1, 2, 11, 101, 500, 1000, 3001, 5000, -3])
        if i < len(plan):
            side, flags, seq_off, ack_off = plan[i]
        src, dst = (a, b) if side else (b, a)
        me, peer = isn[0 if side else 1], isn[1 if side else 0]
        t += rng.choice([0.001, 0.01, 0.5, 2.0, 5.0, 6.0, 7.0, 30.0, 301.0]) \
            if rng.random() < 0.3 else 0.001
        plen = rng.choice([0, 0, 10, 50, 100, 1448]) \
            if not flags & SYN or rng.random() < 0.2 else 0
        seq = (me + seq_off) % 2**32
        ack = (peer + ack_off) % 2**32
        if rng.random() < 0.05:
            ack = 0
        out.append(Segment(
            frame=i + 1, ts=t, src=src[0], sport=src[1], dst=dst[0], dport=dst[1], seq=seq,
            ack=ack, flags=flags, window=0 if rng.random() < 0.1 else 1000, payload_len=plen,
            checksum_ok=rng.choice([None, True, True, False]) if rng.random() < 0.1 else None))
    return out


def _within_bounds(view: ZeekView) -> bool:
    """False when the Python view went past the compiled one's documented bounds."""
    for ep in (view._o, view._r):
        merged, hi_prev = 0, None
        for lo, hi in sorted(ep.reasm.blocks):
            if hi_prev is None or lo > hi_prev:
                merged += 1
                hi_prev = hi
            else:
                hi_prev = max(hi_prev, hi)
        if merged > 16:
            return False
    return True


SOUPS = {"any": (FLAGS, 0.5), "data": (MOSTLY_DATA, 0.5), "one-sided": (FLAGS, 0.9)}


@pytest.mark.parametrize("soup", list(SOUPS))
@pytest.mark.parametrize("options", OPTION_SETS, ids=["default", "bare", "C", "bare-C"])
def test_random_soups(options, soup):
    flag_set, a_share = SOUPS[soup]
    rng = random.Random(f"{soup} {sorted(options.items())}")
    checked = 0
    for k in range(1000):
        segs = _soup(rng, rng.randint(1, 30), flag_set, a_share)
        view = ZeekView(**options)
        probe = ZeekProbe(**options)
        last = None
        for s in segs:
            if last is not None:
                assert probe.starts_new(s, last) == starts_new_connection(view, s, last), \
                    (k, s)
            view.observe(s)
            probe.observe(s)
            last = s.ts
            if not _within_bounds(view):
                break
            same(view, probe, (k, s))
            same_inside(view, probe, (k, s))
            checked += 1
    assert checked > 8000


def _deadlines(v: ZeekView, last: float) -> list[float]:
    """The times where one of starts_new_connection's tests flips, from the Python view."""
    out = [last + (300.0 + 1e-6), v._last_time + (300.0 + 1e-6)]
    for d in (v._delete_at, v._attempt_at):
        if d is not None:
            out.append(d + 1e-6)
    quiet = v._last_time + 5.0
    for start in v._expire_grids:
        k = max(0, math.floor((quiet - start) / 6.0) + 1)
        tick = start + k * 6.0
        out.append((tick + 6.0 if tick <= quiet else tick) + 1e-6)
    return out


def test_timer_edges():
    """starts_new at each timer deadline (plus _EPS) and the floats just around it."""
    rng = random.Random(5)
    probes = 0
    for k in range(400):
        segs = _soup(rng, rng.randint(1, 12), rng.choice([FLAGS, MOSTLY_DATA]))
        view, probe = ZeekView(), ZeekProbe()
        last = segs[0].ts
        for s in segs:
            view.observe(s)
            probe.observe(s)
            last = s.ts
            if not _within_bounds(view):
                break
            for edge in _deadlines(view, last):
                for t in (math.nextafter(math.nextafter(edge, 0), 0), math.nextafter(edge, 0),
                          edge, math.nextafter(edge, math.inf), edge + 1e-7, edge - 1e-7):
                    for flags, seq in ((ACK, s.seq), (SYN, 12345), (SYN | ACK, 777)):
                        q = Segment(frame=0, ts=t, src=s.src, sport=s.sport, dst=s.dst,
                                    dport=s.dport, seq=seq, ack=s.ack, flags=flags)
                        assert probe.starts_new(q, last) == \
                            starts_new_connection(view, q, last), (k, q, last)
                        probes += 1
    assert probes > 20000


# --------------------------------------------------------------------------- bounds and details


def test_many_holes_stay_bounded():
    """Past 16 disjoint out-of-order blocks, a block is not buffered (documented bound); below
    it, the gap count matches Python's."""
    c = test_zeek.Conv()
    base = test_zeek.handshake(c)
    isn = test_zeek.S_ISN + 1

    def run(holes):
        segs = base + [c.seg("s", ACK | PSH, isn + 200 * i + 100, test_zeek.C_ISN + 1, 50)
                       for i in range(holes)]
        view, probe = ZeekView(), ZeekProbe()
        for s in segs:
            view.observe(s)
            probe.observe(s)
        buffered = max(probe.blocks)
        ack = c.seg("c", ACK, test_zeek.C_ISN + 1, isn + 200 * holes + 100)
        view.observe(ack)
        probe.observe(ack)
        return view, probe, buffered

    view, probe, buffered = run(16)
    assert buffered == 16
    same(view, probe, "16 holes")
    assert view.history.endswith("dgg")  # 17 gaps: letters at 1 and 10
    view, probe, buffered = run(30)
    assert buffered == 16 and max(probe.blocks) == 0  # the ack consumed them all
    assert probe.history == view.history  # 17 vs 31 gaps: both between 10 and 100


def test_retransmitted_block_does_not_grow_the_table():
    c = test_zeek.Conv()
    segs = test_zeek.handshake(c) + [
        c.seg("s", ACK | PSH, test_zeek.S_ISN + 101, test_zeek.C_ISN + 1, 100)
        for _ in range(50)]
    probe = ZeekProbe()
    for s in segs:
        probe.observe(s)
    assert probe.blocks == (0, 1)  # server is side 1


def test_long_history_moves_to_the_heap_and_is_bounded():
    """40 letters in the struct, then a heap buffer (64, 128, ...); past 65536 letters the
    history stops growing (Python's does not)."""
    c = test_zeek.Conv()
    view, probe = ZeekView(), ZeekProbe()
    n = 0
    for count in (39, 40, 41, 63, 64, 65, 127, 128, 129, 1000, 65536, 65600):
        while n < count:
            s = c.seg("c", SYN, 1000 + 7 * n, dt=0.0)
            view.observe(s)
            probe.observe(s)
            n += 1
        assert len(view.history) == count
        assert probe.history == view.history[:65536]
        assert probe.conn_state == view.conn_state == "S0"


def test_payload_captured_honoured_like_python():
    """A segment object carrying `payload_captured` (cut by the snap length) is not
    reassembled: the peer's ACK of it is a gap, in both views."""

    class Cut:
        def __init__(self, seg, captured):
            self._seg, self.payload_captured = seg, captured

        def __getattr__(self, name):
            return getattr(self._seg, name)

    c = test_zeek.Conv()
    segs = test_zeek.handshake(c) + [
        Cut(c.seg("s", ACK | PSH, test_zeek.S_ISN + 1, test_zeek.C_ISN + 1, 100), 40),
        c.seg("c", ACK, test_zeek.C_ISN + 1, test_zeek.S_ISN + 101)]
    view, probe = ZeekView(), ZeekProbe()
    for s in segs:
        view.observe(s)
        probe.observe(s)
    assert view.history == "ShAdg"
    same(view, probe, "cut")


def test_struct_size():
    size = zeek_struct_size()
    print(f"sizeof(ZeekConn) = {size}")
    assert size <= 256
