"""Connection tracking on the capture's clock: every connection is finished exactly when the
rules say, checked against a model of the rules written out here (not a second tracker).

Sweeps run at the first segment, then at each segment at least ``sweep_every`` after the last
sweep. A sweep finishes every connection idle more than ``idle``, and every ended one (both
sides finished, or an accepted RST) quiet at least ``closed``. Besides sweeps, a connection is
finished when its 4-tuple starts a new one, when ``max_active`` is exceeded (the least recently
active goes), and at the end of the input. The core skips, at each sweep, connections an earlier
sweep found quiet but not yet due; the model has no such shortcut, so any connection the
shortcut forgets or finishes early shows up."""

from __future__ import annotations

import bisect
from collections import defaultdict

import pytest
from analyzer.core.decode import open_native
from analyzer.core.observer import Observer

from analyzer import synth
from analyzer.pipeline import Timeouts


def _key(a, b):
    return frozenset((a, b))


def run_and_model(path, timeouts: Timeouts):
    with open_native(str(path)) as reader:
        segs = list(reader.segments())
    ended_at: dict[int, float] = {}
    obs = Observer(timeouts, on_end=lambda c, _l: ended_at.setdefault(c.conn_id, c.end))
    finished_at: dict[int, int] = {}  # conn id -> index of the segment that finished it
    order: list[int] = []
    most_quiet = 0  # connections the sweeps skipped at once (the shortcut was taken)
    for i, seg in enumerate(segs):
        obs.feed_segment(seg)
        most_quiet = max(most_quiet, obs.quiet_stats()[0])
        for conn, _v in obs.done[len(order):]:
            finished_at[conn.conn_id] = i
            order.append(conn.conn_id)
        assert obs.open_connections <= timeouts.max_active
    n_open_at_close = obs.open_connections
    obs.close()
    conns = {c.conn_id: c for c, _v in obs.done}
    closed_at_end = [c for c, _v in obs.done[len(order):]]
    assert len(closed_at_end) == n_open_at_close
    # at the end of the input: by first frame
    assert [c.first_frame for c in closed_at_end] == sorted(c.first_frame for c in closed_at_end)

    sweeps = []  # segment indices at which a sweep ran
    last = None
    for i, seg in enumerate(segs):
        if last is None:
            last = seg.ts
        elif seg.ts - last >= timeouts.sweep_every:
            sweeps.append(i)
            last = seg.ts
    sweep_ts = [segs[i].ts for i in sweeps]

    # each connection's segments (their timestamps), to know its last activity at any moment
    by_tuple = defaultdict(list)
    for c in conns.values():
        by_tuple[_key(c.client, c.server)].append(c)
    activity = defaultdict(list)
    starts = {}  # segment index -> the connection it opened
    for i, seg in enumerate(segs):
        for c in by_tuple[_key((seg.src, seg.sport), (seg.dst, seg.dport))]:
            if c.first_frame <= seg.frame <= c.last_frame:
                activity[c.conn_id].append(i)
                if seg.frame == c.first_frame:
                    starts[i] = c
                break

    def due(c, t: float) -> bool:
        quiet = t - c.end
        return quiet > timeouts.idle or (
            quiet >= timeouts.closed and c.conn_id in ended_at and ended_at[c.conn_id] <= t)

    def first_due_sweep(c):
        k = bisect.bisect_right(sweep_ts, c.end)
        for j in range(k, len(sweeps)):
            if due(c, sweep_ts[j]):
                return sweeps[j]
        return None

    how = defaultdict(int)
    for cid, i in finished_at.items():
        c = conns[cid]
        expected_sweep = first_due_sweep(c)
        assert expected_sweep is None or i <= expected_sweep, (c.conn_id, "finished late")
        if i == expected_sweep:
            how["sweep"] += 1
            continue
        # not due by a sweep yet: a new connection on its 4-tuple, or an eviction
        opened = starts.get(i)
        assert opened is not None and opened.conn_id != cid, (cid, "finished early", i)
        if _key(opened.client, opened.server) == _key(c.client, c.server):
            how["reuse"] += 1
            continue
        how["evicted"] += 1
        # the least recently active of the open connections
        mine = segs[activity[cid][-1]].ts
        for other in conns.values():
            if other.conn_id == cid or finished_at.get(other.conn_id, len(segs)) < i:
                continue
            before = [j for j in activity[other.conn_id] if j < i]
            if before:
                assert mine <= segs[before[-1]].ts, (cid, "evicted before", other.conn_id)
    for c in closed_at_end:  # never due at any sweep
        assert first_due_sweep(c) is None, (c.conn_id, "never finished by a sweep")
    how["most quiet"] = most_quiet
    return how, obs


@pytest.fixture(scope="module")
def idle_heavy(tmp_path_factory):
    # the teardown mix holds connections left open and keepalive timeouts: quiet for long
    path = tmp_path_factory.mktemp("tracker") / "teardowns-20k.pcap"
    synth.generate(str(path), packets=20_000, seed=11, mix="teardowns")
    return path


@pytest.mark.parametrize("timeouts", [
    Timeouts(idle=3.0, closed=0.5, sweep_every=0.25),
    Timeouts(idle=2.0, closed=0.3, sweep_every=0.1),
    Timeouts(idle=1.5, closed=0.2, sweep_every=0.1, max_active=60),
], ids=["short", "shorter", "evicting"])  # (the capture spans a few seconds)
def test_every_connection_finishes_when_the_rules_say(idle_heavy, timeouts):
    how, obs = run_and_model(idle_heavy, timeouts)
    print(dict(how), obs.quiet_stats())
    assert how["sweep"] > 100 and how["most quiet"] > 10
    if timeouts.max_active < 1000:
        assert how["evicted"] == obs.evicted_early > 0
        assert obs.peak_active == timeouts.max_active
    else:
        assert how["evicted"] == obs.evicted_early == 0
