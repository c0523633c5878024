"""The compiled Zeek view (analyzer/core/zeekview.pyx): its documented bounds, and what must hold
on any input. Its answers on real traffic are held to Zeek's own baselines by
tests/test_zeek_conformance.py, and on hand-built sequences to reasoned expectations by
tests/test_zeek.py."""

from __future__ import annotations

import random

import pytest
from analyzer.core.zeekview import ZeekProbe, zeek_struct_size

from analyzer.segment import ACK, FIN, PSH, RST, SYN, Segment
from tests import test_zeek
from tests.core_helpers import zeek_view

OPTION_SETS = [{}, {"bare_mode": True}, {"ignore_checksums": True},
               {"bare_mode": True, "ignore_checksums": True}]
# Zeek's conn_state values and history letters (Zeek's conn.log documentation)
CONN_STATES = {"S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH"}
HISTORY_LETTERS = set("SHADFRCGIQTWsshadfrcgiqtw^") | set("hg")


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


def _unflipped(history: str) -> str:
    return history.replace("^", "").lower()


SOUPS = {"any": (FLAGS, 0.5), "data": (MOSTLY_DATA, 0.5), "one-sided": (FLAGS, 0.9)}


@pytest.mark.parametrize("soup", list(SOUPS))
@pytest.mark.parametrize("options", OPTION_SETS, ids=["default", "bare", "C", "bare-C"])
def test_random_soups_keep_zeeks_vocabulary_and_bounds(options, soup):
    """Any sequence: a conn_state of Zeek's, history letters of Zeek's, a history that only
    grows (a flip adds one `^` and swaps the roles' cases), at most 16 buffered blocks
    per side, and no exception."""
    flag_set, a_share = SOUPS[soup]
    rng = random.Random(f"{soup} {sorted(options.items())}")
    checked = 0
    for _ in range(600):
        segs = _soup(rng, rng.randint(1, 30), flag_set, a_share)
        probe = ZeekProbe(**options)
        before, last = "", None
        for s in segs:
            if last is not None:
                assert probe.starts_new(s, last) in (True, False)
            probe.observe(s)
            last = s.ts
            h = probe.history
            assert probe.conn_state in CONN_STATES, (probe.conn_state, segs)
            assert set(h) <= HISTORY_LETTERS and h.count("^") <= 1, h
            assert _unflipped(h).startswith(_unflipped(before)), (before, h)
            assert max(probe.blocks) <= 16
            before = h
            checked += 1
    assert checked > 4000


def test_a_reset_letter_follows_every_rst():
    """Invariant from Zeek's history rules: a connection whose first RST came from one side has
    an R (originator) or r (responder) in its history, whatever came before."""
    rng = random.Random(3)
    for _ in range(300):
        segs = _soup(rng, rng.randint(1, 20))
        probe = zeek_view(segs)
        good = [s for s in segs if s.checksum_ok is not False]
        if any(s.flags & RST and not s.flags & FIN for s in good):
            assert set(probe.history) & {"R", "r", "I", "i"}, (probe.history, segs)


# --------------------------------------------------------------------------- bounds and details


def test_many_holes_stay_bounded():
    """Past 16 disjoint out-of-order blocks, a block is not buffered (documented bound); the
    peer's ACK past all of them is one content gap per hole either way, and the gap letter
    comes at 1 and 10 gaps (Zeek's log scale)."""
    isn = test_zeek.S_ISN + 1

    def run(holes):
        c = test_zeek.Conv()
        segs = test_zeek.handshake(c) + [
            c.seg("s", ACK | PSH, isn + 200 * i + 100, test_zeek.C_ISN + 1, 50)
            for i in range(holes)]
        probe = zeek_view(segs)
        buffered = max(probe.blocks)
        probe.observe(c.seg("c", ACK, test_zeek.C_ISN + 1, isn + 200 * holes + 100))
        return probe, buffered

    probe, buffered = run(16)
    assert buffered == 16 and max(probe.blocks) == 0
    assert probe.history == "ShAdgg"  # 17 gaps: letters at 1 and 10
    probe, buffered = run(30)
    assert buffered == 16 and max(probe.blocks) == 0  # the ack consumed them all
    assert probe.history == "ShAdgg"  # 31 gaps: still between 10 and 100


def test_retransmitted_block_does_not_grow_the_table():
    c = test_zeek.Conv()
    segs = test_zeek.handshake(c) + [
        c.seg("s", ACK | PSH, test_zeek.S_ISN + 101, test_zeek.C_ISN + 1, 100)
        for _ in range(50)]
    assert zeek_view(segs).blocks == (0, 1)  # server is side 1


def test_long_history_moves_to_the_heap_and_is_bounded():
    """Every SYN with a new ISN adds an S. 40 letters in the struct, then a heap buffer (64,
    128, ...); past 65536 letters the history stops growing."""
    c = test_zeek.Conv()
    probe = ZeekProbe()
    n = 0
    for count in (39, 40, 41, 63, 64, 65, 127, 128, 129, 1000, 65536, 65600):
        while n < count:
            probe.observe(c.seg("c", SYN, 1000 + 7 * n, dt=0.0))
            n += 1
        assert probe.history == "S" * min(count, 65536)
        assert probe.conn_state == "S0"


def test_payload_cut_by_the_snap_length_is_not_reassembled():
    """A segment carrying `payload_captured` (cut by the snap length) is not reassembled: the
    peer's ACK of it is a content gap."""

    class Cut:
        def __init__(self, seg, captured):
            self._seg, self.payload_captured = seg, captured

        def __getattr__(self, name):
            return getattr(self._seg, name)

    c = test_zeek.Conv()
    data = c.seg("s", ACK | PSH, test_zeek.S_ISN + 1, test_zeek.C_ISN + 1, 100)
    ack = c.seg("c", ACK, test_zeek.C_ISN + 1, test_zeek.S_ISN + 101)
    assert zeek_view(test_zeek.handshake(test_zeek.Conv()) + [data, ack]).history == "ShAd"
    c = test_zeek.Conv()
    segs = test_zeek.handshake(c) + [Cut(data, 40), ack]
    assert zeek_view(segs).history == "ShAdg"


def test_struct_size():
    size = zeek_struct_size()
    print(f"sizeof(ZeekConn) = {size}")
    assert size <= 256
