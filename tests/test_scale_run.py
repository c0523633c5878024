"""The runner itself: JSON Lines from workers, and a worker that fails."""

from __future__ import annotations

from concurrent.futures import Future

import pytest

from analyzer import cases
from analyzer.errors import UnreadableCapture
from analyzer.report.export import json_line
from analyzer.scale.inputs import expand
from analyzer.scale.run import Json, Options, Runner, Workers
from tests.scale_helpers import CAPTURES

FILES = [str(CAPTURES / n) for n in ("refused.pcap", "graceful.pcap", "abortive_close.pcap")]


def everything(runner: Runner, n: int, json: bool):
    """What the runner gives for units 0..n-1: output, reports' messages, errors raised."""
    reports: list = []
    out, errors = [], []
    for i in range(n):
        try:
            if json:
                out.extend(runner.json(i, reports))
            else:
                for batch in runner.batches(i, reports):
                    out.extend(json_line(rec) for rec in batch.records(range(len(batch))))
        except UnreadableCapture as exc:
            errors.append(str(exc))
    view = [(r.path, r.stats, [str(p) for p in r.problems], r.notes, r.peak_connections)
            for r in reports]
    return out, view, errors


@pytest.fixture(scope="module")
def pool():
    workers = Workers(2)
    yield workers
    workers.close()


@pytest.mark.parametrize("want", [Json(), Json(case_ids=[cases.CATALOG.index(
    cases.get("refused"))]), Json(ports=[80, 20240])])
def test_json_from_workers_equals_json_in_this_process(pool, want, tmp_path, monkeypatch):
    (tmp_path / "bad.pcap").write_bytes(b"\xd4\xc3\xb2\xa1" + bytes(30))
    monkeypatch.chdir(tmp_path)
    args = [*FILES, "bad.pcap", "missing.pcap"]
    units = expand(args)
    here = everything(Runner(units, Options(), None, want=want), len(units), True)
    there = everything(Runner(units, Options(), pool, want=want), len(units), True)
    assert there == here
    assert here[0] and len(here[2]) == 1 and "missing.pcap" in here[2][0]
    text = b"".join(here[0]).decode()
    records = everything(Runner(units, Options()), len(units), False)[0]
    if want == Json():  # the core's JSON is the records' JSON
        assert text == "".join(line + "\n" for line in records)


class Failing:
    """Workers whose every task fails (a worker killed, a host gone)."""

    workers = 2

    def submit(self, fn, *args):
        fut: Future = Future()
        fut.set_exception(RuntimeError("worker lost"))
        return fut

    def close(self):
        pass


def test_a_failed_worker_means_reading_in_this_process():
    said: list[str] = []
    units = expand(FILES)
    expected = everything(Runner(units, Options()), len(units), False)
    runner = Runner(units, Options(), Failing(), say=said.append)
    assert everything(runner, len(units), False) == expected
    assert runner.fallbacks == 3
    assert said[0] == f"{FILES[0]}: read again in one process: a worker failed " \
                      "(RuntimeError: worker lost)"
