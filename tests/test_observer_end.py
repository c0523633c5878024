"""The observer's verdict at the segment that ends a connection (``on_end``, what `live` prints):
given by the compiled classifier while the connection stays open, it must leave that connection
as it was, and equal the verdict at the finish when no packet came in between."""

from __future__ import annotations

import pytest
from analyzer.core.decode import open_native
from analyzer.core.observer import Observer

from analyzer import synth
from analyzer.classify import Verdict
from analyzer.connection import Connection
from analyzer.pipeline import make_record
from analyzer.timeouts import Timeouts


def _records(path: str, timeouts: Timeouts, on_end=None) -> list[dict]:
    obs = Observer(timeouts, None, on_end=on_end)
    reader = open_native(path)
    try:
        while obs.feed_reader(reader):
            pass
    finally:
        reader.close()
    obs.close()
    return [make_record(conn, verdict, path) for conn, verdict in obs.done]


@pytest.mark.parametrize("mix", ["teardowns", "rst_storm", "short"])
def test_verdict_at_end(tmp_path, mix):
    path = str(tmp_path / f"{mix}.pcap")
    synth.generate(path, packets=20000, seed=11, mix=mix)
    timeouts = Timeouts(closed=0.05, idle=0.5)  # many finished by sweeps, after their end
    at_end: dict[int, dict] = {}

    def on_end(conn, verdict):
        assert isinstance(conn, Connection) and isinstance(verdict, Verdict)
        assert conn.conn_id not in at_end  # once per connection
        at_end[conn.conn_id] = make_record(conn, verdict, path)

    plain = _records(path, timeouts)
    watched = _records(path, timeouts, on_end)
    # classifying an open connection at its end changes nothing of what it becomes
    assert watched == plain
    assert len(at_end) > len(plain) // 4
    finished = {r["conn"]: r for r in plain}
    quiet_after = [c for c, r in at_end.items() if r["last_frame"] == finished[c]["last_frame"]]
    assert len(quiet_after) > len(at_end) // 2
    for c in quiet_after:  # nothing came after the end: the same record, verdict included
        assert at_end[c] == finished[c], c
    for c, r in at_end.items():  # later packets (last ACKs) only add to the connection
        assert r["case"] == finished[c]["case"] or r["last_frame"] < finished[c]["last_frame"]
