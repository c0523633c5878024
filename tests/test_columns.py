"""Records as columns (analyzer.core.columns): the tables, CSV, Parquet and the text view built
from the core's batches hold exactly what one record dict per connection gave
(pipeline.make_record, while it exists) and what the core's JSON Lines say."""

from __future__ import annotations

import json
import os
import pickle
from pathlib import Path

import pandas as pd
import pytest

from analyzer import api, cases, synth
from analyzer.core.batch import Batch, concat
from analyzer.pipeline import (
    EVENT_FIELDS,
    RECORD_FIELDS,
    FileReport,
    iter_batches,
    iter_json,
    iter_records,
    state_events,
)
from analyzer.report import export, text

ROOT = Path(__file__).resolve().parent.parent
CAPTURES = sorted(str(p) for p in (ROOT / "captures").glob("*.pcap"))
ORACLE = Path(os.environ.get("RSTSCOPE_ZEEK_ORACLE") or ROOT.parent / "shared" / "zeek-oracle")
TRACES = sorted(str(p) for p in (ORACLE / "traces").rglob("*") if p.is_file())
ALL = CAPTURES + TRACES


def dict_tables(paths) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
    """The tables as they were built before the columns: a make_record dict per connection."""
    rows, events = [], []
    for rec, conn in iter_records(paths, []):
        rows.append(rec)
        events.extend(state_events(conn, rec["file"]))
    conns = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    if not conns.empty:
        conns = conns.sort_values(["file", "conn"], kind="stable").reset_index(drop=True)
    return conns, pd.DataFrame(events, columns=list(EVENT_FIELDS)), rows


def batch_of(path: str, **kw) -> Batch:
    return concat(iter_batches(path, FileReport(path), rows=7, **kw))  # (several batches)


def test_capture_corpus_present():
    assert len(CAPTURES) >= 30
    if not TRACES:
        pytest.skip("zeek oracle traces absent")


@pytest.mark.parametrize("path", ALL, ids=[Path(p).name for p in ALL])
def test_tables_equal_the_record_dicts(path):
    conns, events, rows = dict_tables([path])
    got = api.analyze(path)
    assert list(got.connections.columns) == list(RECORD_FIELDS)
    pd.testing.assert_frame_equal(got.connections, conns, check_exact=True)
    pd.testing.assert_frame_equal(got.events, events, check_exact=True)
    # CSV and Parquet: the flat frame written as the dicts' frame was (export._flat)
    batch = batch_of(path)
    flat = batch.frame(flat=True)
    want = export._flat(pd.DataFrame(rows, columns=list(RECORD_FIELDS)))
    pd.testing.assert_frame_equal(flat, want, check_exact=True)
    # records for a few rows only, in the order they finished
    some = list(range(0, len(batch), 3))
    assert batch.records(some) == [rows[i] for i in some]


@pytest.mark.parametrize("path", ALL[::4], ids=[Path(p).name for p in ALL[::4]])
def test_same_values_as_the_cores_json_lines(path):
    lines = b"".join(iter_json(path, FileReport(path))).decode("utf-8").splitlines()
    batch = batch_of(path)
    assert batch.records(range(len(batch))) == [json.loads(line) for line in lines]


def test_csv_and_parquet_identical_to_the_dict_path(tmp_path):
    paths = CAPTURES[:12]
    _, _, rows = dict_tables(paths)
    old = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    new = concat(b for p in paths for b in iter_batches(p, FileReport(p))).frame(flat=True)
    export.write_csv(old, str(tmp_path / "old.csv"))
    export.write_csv(new, str(tmp_path / "new.csv"), flat=True)
    assert (tmp_path / "old.csv").read_bytes() == (tmp_path / "new.csv").read_bytes()
    export.write_parquet(old, str(tmp_path / "old.parquet"))
    export.write_parquet(new, str(tmp_path / "new.parquet"), flat=True)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "new.parquet"),
                                  pd.read_parquet(tmp_path / "old.parquet"), check_exact=True)
    assert (tmp_path / "old.parquet").read_bytes() == (tmp_path / "new.parquet").read_bytes()


def test_several_files_sorted_by_file_then_conn():
    paths = [CAPTURES[5], CAPTURES[0], CAPTURES[3]]
    conns, events, _ = dict_tables(paths)
    got = api.analyze(*paths)
    pd.testing.assert_frame_equal(got.connections, conns, check_exact=True)
    pd.testing.assert_frame_equal(got.events, events, check_exact=True)
    assert got.connections["file"].is_monotonic_increasing


def test_empty_tables_as_before(tmp_path):
    from scapy.all import IP, UDP, Ether, wrpcap

    path = str(tmp_path / "udp.pcap")
    wrpcap(path, [Ether() / IP() / UDP()])
    conns, events, _ = dict_tables([path])
    got = api.analyze(path)
    pd.testing.assert_frame_equal(got.connections, conns)
    pd.testing.assert_frame_equal(got.events, events)
    assert concat([]).frame(flat=True).columns.tolist() == list(RECORD_FIELDS)


def test_a_batch_pickles_whole():
    batch = batch_of(CAPTURES[1])
    again = pickle.loads(pickle.dumps(batch))
    pd.testing.assert_frame_equal(again.frame(), batch.frame(), check_exact=True)


def test_core_filters_keep_what_the_records_filter_kept(tmp_path):
    mixed = str(tmp_path / "short.pcap")  # (many connections, many cases: filters leave some)
    synth.generate(mixed, packets=3000, seed=5, mix="short")
    kept = 0
    for path in [mixed] + CAPTURES[::2] + TRACES[::3]:
        _, _, rows = dict_tables([path])
        if not rows:
            continue
        ids = sorted({r["case"] for r in rows})[:2]
        port = int(rows[-1]["server"].rsplit(":", 1)[1])
        case_ids = [i for i, c in enumerate(cases.CATALOG) if c.id in ids]
        batch = batch_of(path, case_ids=case_ids, ports=[port])
        want = [r for r in rows if r["case"] in ids and port in (
            int(r["client"].rsplit(":", 1)[1]), int(r["server"].rsplit(":", 1)[1]))]
        assert batch.records(range(len(batch))) == want, path
        kept += len(want) < len(rows)
    assert kept  # (some file where the filters left rows out)


@pytest.mark.parametrize("limit,everything", [(None, True), (0, False), (1, False),
                                              (2, True), (10, False)])
def test_text_view_from_batches_reads_as_from_records(limit, everything):
    paths = CAPTURES[::3] + TRACES[:6]
    by_record, by_batch = text.View(limit, everything), text.View(limit, everything)
    for path in paths:
        for rec, _ in iter_records([path], []):
            by_record.add(rec)
        for batch in iter_batches(path, FileReport(path), rows=5):
            by_batch.add_batch(batch)
    assert by_batch.render(len(paths)) == by_record.render(len(paths))
    pd.testing.assert_frame_equal(by_batch.frame(), by_record.frame())
    # only the listed rows became records
    listed = sum(len(v) for v in by_batch.listed.values())
    total = sum(by_batch.counts.values())
    if limit is not None:
        assert listed <= limit * len(cases.CATALOG) * len(paths)
    assert listed <= total


def test_cli_csv_parquet_and_text_from_batches(tmp_path, capsys):
    from analyzer.cli import main

    paths = CAPTURES[:6]
    csv, pq = tmp_path / "c.csv", tmp_path / "c.parquet"
    assert main(["analyze", "--all", "--csv", str(csv), "--parquet", str(pq), *paths]) == 0
    shown = capsys.readouterr().out
    _, _, rows = dict_tables(paths)
    old = pd.DataFrame(rows, columns=list(RECORD_FIELDS))
    export.write_csv(old, str(tmp_path / "old.csv"))
    assert csv.read_bytes() == (tmp_path / "old.csv").read_bytes()
    pd.testing.assert_frame_equal(pd.read_parquet(pq), export._flat(old), check_exact=True)
    view = text.View(None, everything=True)
    for rec in rows:
        view.add(rec)
    assert view.render(len(paths)).split("\n")[0] == shown.split("\n")[0]
    for block in (text.connection_block(r) for r in rows):
        assert block in shown


def test_report_table_from_batches_as_from_records():
    from analyzer.report import table

    paths = CAPTURES[::2] + TRACES[::5]
    by_record, by_batch = table.Collector(2), table.Collector(2)
    for path in paths:
        for rec, _ in iter_records([path], []):
            by_record.add(rec)
        for batch in iter_batches(path, FileReport(path), rows=5):
            by_batch.add_batch(batch)
    assert by_batch.samples == by_record.samples
    pd.testing.assert_frame_equal(by_batch.frame(), by_record.frame(), check_exact=True)
