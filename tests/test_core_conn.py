"""The compiled connection (analyzer/core/conn.pyx) against the Python one (analyzer.connection),
on real data: every bundled capture, every Zeek regression trace, generated captures (teardowns,
SYN flood, RST storm) and random segment soups.

The Python tracker groups the segments; each Connection it creates gets a twin ConnProbe built
from the same arguments and fed the same segments. Whenever the tracker asks a connection
something (ended, any_closed, its role, a new attempt) the twin must answer the same, and when
the connection finishes, the twin's export must equal it attribute for attribute, classify to the
same verdict and give the same record.
"""

from __future__ import annotations

import dataclasses
import random
from pathlib import Path

import pytest
from analyzer.core.conn import LONGEST_PATH, ConnProbe, conn_struct_size

from analyzer import synth
from analyzer import tracker as tracker_mod
from analyzer.capture import open_capture
from analyzer.classify import Context, classify
from analyzer.connection import MAX_KEPT, Connection
from analyzer.pipeline import make_record
from analyzer.segment import ACK, FIN, PSH, RST, SYN, Segment
from analyzer.tcpstate import Anomaly
from analyzer.tracker import Timeouts, Tracker
from tests.segments import Flow, handshake

ROOT = Path(__file__).resolve().parent.parent
ANOM_KEPT = 10  # the export keeps the first 10 anomalies in full (the classifier shows those)


# ------------------------------------------------------------------ the twin


class Twin(Connection):
    """A Python Connection that feeds its compiled twin everything it is fed."""

    __slots__ = ("probe",)

    def __init__(self, conn_id, seg, client, server):
        super().__init__(conn_id, seg, client, server)
        self.probe = ConnProbe(conn_id, seg, client, server)

    def observe(self, seg):
        super().observe(seg)
        self.probe.observe(seg)
        self._check_queries(seg)

    def observe_icmp(self, seg):
        super().observe_icmp(seg)
        self.probe.observe(seg)  # the probe dispatches ICMP errors itself
        self._check_queries(seg)

    def _check_queries(self, seg):
        assert self.probe.ended == self.ended, (seg, self.ep)
        assert self.probe.any_closed == self.any_closed, seg


def _new_attempt(conn: Connection, seg: Segment) -> bool:
    """Tracker._starts_new's last test, written out."""
    role = conn.role_of(seg)
    isn = conn.sent[role].isn
    return role == "client" and isn is not None and isn != seg.seq \
        and not conn.sent["server"].packets


class TwinTracker(Tracker):
    """The Python tracker, checking the twin's answers to what it asks a connection."""

    def _starts_new(self, conn, seg):
        probe = conn.probe
        assert probe.from_client(seg) == (conn.role_of(seg) == "client")
        assert probe.ended == conn.ended and probe.any_closed == conn.any_closed
        if not seg.is_icmp and seg.flags & SYN and not seg.flags & (ACK | RST):
            assert probe.new_attempt(seg) == _new_attempt(conn, seg), seg
        return super()._starts_new(conn, seg)


@pytest.fixture
def twins(monkeypatch):
    monkeypatch.setattr(tracker_mod, "Connection", Twin)


# ------------------------------------------------------------------ comparison


def _eq_typed(a, b, where):
    """a == b, recursively with the same types: a list is not the empty tuple, True is not 1,
    an int is not a float (the dataclasses' own == compares values only)."""
    assert type(a) is type(b), f"{where}: {type(a).__name__} != {type(b).__name__}: {a!r}"
    if dataclasses.is_dataclass(a):
        for f in dataclasses.fields(a):
            _eq_typed(getattr(a, f.name), getattr(b, f.name), f"{where}.{f.name}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), f"{where}: {len(a)} items != {len(b)}: {a!r} != {b!r}"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            _eq_typed(x, y, f"{where}[{i}]")
    elif isinstance(a, dict):
        assert sorted(a) == sorted(b), f"{where}: keys {sorted(a)} != {sorted(b)}"
        for k in b:
            _eq_typed(a[k], b[k], f"{where}[{k!r}]")
    elif isinstance(a, frozenset):
        assert a == b and {type(x) for x in a} <= {int}, f"{where}: {a!r} != {b!r}"
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


def compare(got: Connection, want: Connection) -> None:
    where = f"conn {want.conn_id} {want.client}->{want.server}"
    assert type(got) is Connection
    for name in Connection.__slots__:
        g, w = getattr(got, name), getattr(want, name)
        at = f"{where}: {name}"
        if name == "zeek":
            assert g is None
        elif name == "anomalies":
            assert type(g) is list and len(g) == len(w), f"{at}: {len(g)} != {len(w)}"
            _eq_typed(g[:ANOM_KEPT], w[:ANOM_KEPT], at)
        elif name in ("ep", "sent"):
            assert list(g) == list(w), at  # same roles, same order (the rules loop over them)
            _eq_typed(g, w, at)
        else:
            _eq_typed(g, w, at)
    for role in ("client", "server"):
        assert got.ep[role].state is want.ep[role].state


class Checker:
    """on_finish: compare the twin's export with the connection, then both verdicts/records."""

    def __init__(self, ctx: Context, file: str):
        self.ctx = ctx
        self.file = file
        self.n = 0
        self.cases: dict[str, int] = {}
        self.stats = {"rsts": 0, "icmp": 0, "anomalies": 0, "kept_full": 0}

    def __call__(self, conn: Twin) -> None:
        got = conn.probe.export()
        compare(got, conn)
        assert conn.probe.hist_dropped() == (0, 0)
        got.zeek = conn.zeek
        vw = classify(conn, self.ctx)
        vg = classify(got, self.ctx)
        assert vg == vw, (conn.conn_id, vg, vw)
        assert make_record(got, vg, self.file) == make_record(conn, vw, self.file)
        # the classifier's give_up went the same way on both
        _eq_typed(got.ep, conn.ep, f"conn {conn.conn_id} after classify: ep")
        _eq_typed(got.anomalies[:ANOM_KEPT], conn.anomalies[:ANOM_KEPT], "after classify")
        self.n += 1
        self.cases[vw.case] = self.cases.get(vw.case, 0) + 1
        for d in conn.sent.values():
            self.stats["rsts"] += len(d.rsts)
            if len(d.rsts) > MAX_KEPT or any(len(getattr(d, n)) >= MAX_KEPT for n in (
                    "syn_frames", "synack_frames", "ladder", "keepalives")):
                self.stats["kept_full"] += 1
        self.stats["icmp"] += len(conn.icmp)
        self.stats["anomalies"] += len(conn.anomalies)


def run_twins(segments, file: str, **tracker_kw) -> Checker:
    ctx = Context()
    check = Checker(ctx, file)
    t = TwinTracker(check, **tracker_kw)
    for seg in segments:
        ctx.note(seg)
        t.feed(seg)
    t.close()
    return check


# ------------------------------------------------------------------ real data

CAPTURES = sorted((ROOT / "captures").glob("*.pcap"))


def _oracle_traces() -> list[Path]:
    from tests.test_zeek_conformance import oracle_dir

    traces = oracle_dir() / "traces"
    return sorted(p for p in traces.rglob("*") if p.is_file()) if traces.is_dir() else []


TRACES = _oracle_traces()


def test_there_is_real_data():
    assert len(CAPTURES) >= 20


@pytest.mark.parametrize("path", CAPTURES, ids=lambda p: p.name)
def test_bundled_capture(twins, path):
    check = run_twins(open_capture(str(path)), path.name)
    assert check.n >= 1


@pytest.mark.parametrize("path", TRACES, ids=lambda p: p.name)
def test_zeek_trace(twins, path):
    try:
        segments = list(open_capture(str(path), check_ip_checksums=False))
    except Exception as exc:  # not a capture the reader takes (the conformance test says so)
        pytest.skip(f"{path.name}: {type(exc).__name__}: {exc}")
    check = run_twins(segments, path.name)
    print(path.name, check.n, check.stats)


@pytest.mark.parametrize("mix,packets", [("teardowns", 30_000), ("syn_flood", 12_000),
                                         ("rst_storm", 80_000)])
def test_generated_capture(twins, tmp_path, mix, packets):
    path = tmp_path / f"{mix}.pcap"
    # storms of 48 RSTs: longer than MAX_KEPT, short enough for a thousand connections
    synth.generate(str(path), packets=packets, seed=5, mix=mix, bulk=(10, 60), storm_rsts=48)
    check = run_twins(open_capture(str(path)), path.name)
    print(mix, check.n, check.cases, check.stats)
    assert check.n >= 1000, check.n
    if mix == "rst_storm":
        assert check.cases.get("ignored_reset", 0) + check.cases.get("injected_reset", 0) > 50
        assert check.stats["kept_full"] > 0  # storms longer than MAX_KEPT were compared
    if mix == "syn_flood":
        assert check.cases.get("syn_timeout", 0) > 500 and check.cases.get("refused", 0) > 500


def test_small_timeouts_and_eviction(twins, tmp_path):
    """Connections finished early (max_active) and by short timeouts, mid-way through."""
    path = tmp_path / "t.pcap"
    synth.generate(str(path), packets=8000, seed=9, mix="rst_storm", bulk=(5, 20))
    check = run_twins(open_capture(str(path)), path.name,
                      timeouts=Timeouts(idle=0.5, closed=0.05, max_active=40))
    assert check.n >= 100


# ------------------------------------------------------------------ random segment soups


def _soup(rnd: random.Random, n: int) -> list[Segment]:
    """Segments of a few 4-tuples with numbers near each other's windows: every path of the
    observer (crossed FINs, forged RSTs, storms, challenges, keepalives, ladders, duplicates)
    comes up, most of them impossible by the table (anomalies)."""
    c = [("10.1.0.1", 40000), ("10.1.0.1", 40001)]
    s = ("10.1.0.2", 80)
    base = {"c": 0xFFFFFF00, "s": 7000}  # the client's numbers wrap around 2**32
    out, ts = [], 1000.0
    flag_sets = [SYN, SYN | ACK, ACK, ACK | PSH, FIN | ACK, FIN, RST, RST | ACK, ACK, ACK,
                 SYN | FIN, 0]
    for i in range(n):
        who = rnd.choice("cs")
        cl = c[rnd.random() < 0.2]
        src, dst = (cl, s) if who == "c" else (s, cl)
        other = "s" if who == "c" else "c"
        flags = rnd.choice(flag_sets)
        seq = (base[who] + rnd.randrange(-3, 40)) & 0xFFFFFFFF
        ack = (base[other] + rnd.randrange(-3, 40)) & 0xFFFFFFFF
        plen = rnd.choice((0, 0, 0, 1, 10, 20))
        ts += rnd.choice((0.0, 0.0005, 0.01, 0.3, 2.0))
        seg = Segment(frame=i + 1, ts=ts, src=src[0], sport=src[1], dst=dst[0], dport=dst[1],
                      seq=seq, ack=ack, flags=flags, window=rnd.choice((0, 512)),
                      payload_len=plen, ttl=rnd.choice((64, 64, 64, 63, 50, 128)),
                      ip_id=rnd.choice((0, 1)), has_options=rnd.random() < 0.5,
                      tsval=rnd.choice((None, 5, 6)))
        if rnd.random() < 0.03:  # an ICMP error quoting it
            seg.icmp_kind, seg.icmp_type, seg.icmp_code = "host_unreachable", 3, 1
            seg.icmp_from = rnd.choice(("192.0.2.1", None))
        out.append(seg)
        if rnd.random() < 0.05:  # a capture duplicate
            out.append(dataclasses.replace(seg, frame=i + 1))
        if rnd.random() < 0.15:
            base[who] = (base[who] + plen) & 0xFFFFFFFF
    return out


@pytest.mark.parametrize("seed", range(40))
def test_random_soup(twins, seed):
    rnd = random.Random(seed)
    run_twins(_soup(rnd, 400), f"soup-{seed}",
              timeouts=Timeouts(idle=30.0, closed=1.0))


# ------------------------------------------------------------------ hand-built edge cases


def _one(f: Flow):
    check = run_twins(f.segments, "flow")
    assert check.n == 1
    return check


def test_rst_storm_keeps_accepted_ones_past_the_bound(twins):
    f = Flow()
    handshake(f)
    f("c", ".", 1001, 5001, length=10)
    for k in range(MAX_KEPT + 20):  # stray RSTs from the "server": fill the list
        f("s", "R", 9000 + 1000 * k, 0)
    for k in range(12):  # exact ones: kept beyond the bound, 8 accepted at most
        f("s", "R", 5001, 0, ip_id=k + 1)  # (not capture duplicates of each other)
    f("s", ".", 5001, 1011)  # and the server goes on: the last kept RST was forged
    check = _one(f)
    assert check.stats["rsts"] == MAX_KEPT + 8


def test_pending_challenge_of_an_unkept_rst(twins):
    f = Flow()
    handshake(f)
    for k in range(MAX_KEPT + 3):  # out-of-window RSTs: each awaits a challenge ACK
        f("s", "R", 9000 + 1000 * k, 0)
    f("c", ".", 1001, 5001)  # the challenge ACK of the last, unkept, RST
    f("s", "R", 9000, 0)
    _one(f)  # ends with a pending challenge: exported as Python holds it


def test_many_ttls_and_anomalies(twins):
    f = Flow()
    handshake(f)
    for ttl in (64, 63, 62, 61, 200, 0, 255):
        f("c", "P.", 1001, 5001, length=1, ttl=ttl)
    for k in range(25):  # a SYN from the established client: impossible, again and again
        f("c", "S", 1000 + k)
    f("c", "F.", 1002, 5001)
    f("s", "F.", 5001, 1002)  # the FINs cross
    f("c", ".", 1003, 5002)
    f("s", ".", 5002, 1003)
    check = _one(f)
    assert check.stats["anomalies"] > ANOM_KEPT


def test_keepalives_and_ladder_bounds(twins):
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, length=100)
    for _ in range(MAX_KEPT + 5):
        f("c", "P.", 1001, 5001, length=100, dt=0.2)  # retransmissions: one ladder
    f("s", ".", 5001, 1101)
    for _ in range(MAX_KEPT + 5):
        f("s", ".", 5000, 1101, dt=75)  # keepalive probes
    _one(f)


def test_duplicate_window_boundary(twins):
    """Capture duplicates: the same key exactly DUPLICATE_WINDOW later still is one."""
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, length=10)
    f("c", "P.", 1001, 5001, length=10)  # 1 ms later: a duplicate
    f("c", "P.", 1001, 5001, length=10)  # 1 ms after that: a resend
    f("s", ".", 5001, 1011)
    exact = [0.0001, 0.0002, 0.0003, 0.001, 0.002, 0.0030000000000000005, 0.004]
    assert exact[4] - exact[3] == 0.001 and exact[5] - exact[4] > 0.001
    for seg, ts in zip(f.segments, exact, strict=True):
        seg.ts = ts
    check = _one(f)
    assert check.n == 1


def test_anomaly_placeholders_only_past_ten(twins):
    f = Flow()
    handshake(f)
    for k in range(14):
        f("c", "S", 1000 + k)
    f("c", "F.", 1001, 5001)
    ctx = Context()
    seen = []
    t = TwinTracker(seen.append)
    for seg in f.segments:
        ctx.note(seg)
        t.feed(seg)
    t.close()
    (conn,) = seen
    got = conn.probe.export()
    assert len(got.anomalies) == len(conn.anomalies) > ANOM_KEPT
    assert got.anomalies[:ANOM_KEPT] == conn.anomalies[:ANOM_KEPT]
    assert all(isinstance(a, Anomaly) for a in got.anomalies)


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
    ref = Connection(0, f.segments[0], c, s)
    for seg in f.segments:
        probe.observe(seg)
        ref.observe(seg)
    compare(probe.export(), ref)
    size, heap, chunks = conn_struct_size(), probe.heap_bytes(), probe.heap_bytes(True)
    print(f"sizeof(Conn) {size}, lists {heap} bytes ({chunks} as malloc chunks)")
    assert size <= 440  # (grows only on purpose: it is every open connection's)
    # timelines of 5 and 6 entries, one SYN/ACK (the one SYN is in the struct)
    assert heap == 11 * 16 + 16
    assert probe.ended and not probe.new_attempt(f.segments[0])


@pytest.mark.parametrize("first_frame", [5, 2**27 - 1, 2**27, 2**30, 2**33])
def test_a_lone_syn_allocates_nothing_while_its_frame_fits_the_struct(first_frame):
    # a timeline's first entry (frames below 2**27) and a direction's first SYN (below 2**30)
    # sit in the struct; larger frames, and second entries, go to the heap, with the same facts
    segs = [Segment(first_frame, 1.0, "10.0.0.1", 1234, "10.0.0.2", 80, 100, 0, SYN),
            Segment(first_frame + 2, 4.0, "10.0.0.1", 1234, "10.0.0.2", 80, 100, 0, SYN),
            Segment(first_frame + 3, 4.1, "10.0.0.2", 80, "10.0.0.1", 1234, 0, 101, RST | ACK)]
    c, s = ("10.0.0.1", 1234), ("10.0.0.2", 80)
    probe = ConnProbe(0, segs[0], c, s)
    ref = Connection(0, segs[0], c, s)
    for i, seg in enumerate(segs):
        probe.observe(seg)
        ref.observe(seg)
        compare(probe.export(), ref)
        if i == 0:
            want = (16 if first_frame >= 2**27 else 0) + (16 if first_frame >= 2**30 else 0)
            assert probe.heap_bytes() == want
