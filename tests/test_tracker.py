"""Connection tracking: the sweep that skips quiet connections finishes exactly the connections
the plain walk of the whole LRU prefix finishes, in the same order."""

from __future__ import annotations

import pytest

from analyzer import synth
from analyzer.pipeline import FileReport, iter_connections, make_record
from analyzer.tracker import Timeouts, Tracker


def walk_every_time(self: Tracker, now: float) -> None:
    """The sweep without the quiet shortcut: walk the LRU prefix at every sweep."""
    self.last_sweep = now
    t = self.timeouts
    expired = []
    for key, conn in self.active.items():
        idle = now - conn.end
        if idle < t.closed:
            break
        if idle > t.idle or conn.ended:
            expired.append((key, conn))
    for key, conn in expired:
        self._finish(key, conn)


def _records(path, timeouts, engine):
    rep = FileReport(str(path))
    return [make_record(c, v, str(path))
            for c, v in iter_connections(str(path), rep, timeouts, engine=engine)]


@pytest.fixture(scope="module")
def idle_heavy(tmp_path_factory):
    # the teardown mix holds connections left open and keepalive timeouts: quiet for long
    path = tmp_path_factory.mktemp("tracker") / "teardowns-40k.pcap"
    synth.generate(str(path), packets=40_000, seed=11, mix="teardowns")
    return path


@pytest.mark.parametrize("timeouts", [
    Timeouts(idle=3.0, closed=0.5, sweep_every=0.25),
    Timeouts(idle=2.0, closed=0.3, sweep_every=0.1),
    Timeouts(idle=1.5, closed=0.2, sweep_every=0.1, max_active=60),
], ids=["short", "shorter", "evicting"])  # (the capture spans 5 s)
@pytest.mark.parametrize("engine", ["python"])
def test_quiet_sweep_finishes_what_the_full_walk_finishes(idle_heavy, monkeypatch, timeouts,
                                                          engine):
    skipped = []
    real = Tracker.sweep

    def counting(self, now):
        skipped.append(len(self.quiet))  # walked past without a look
        real(self, now)

    monkeypatch.setattr(Tracker, "sweep", counting)
    quick = _records(idle_heavy, timeouts, engine)
    monkeypatch.setattr(Tracker, "sweep", walk_every_time)
    full = _records(idle_heavy, timeouts, engine)
    assert len(quick) == len(full) > 100
    assert quick == full
    assert sum(skipped) > 0  # the shortcut was taken
