"""The pipeline: the compiled core (``analyzer.core``: reader, observer, classifier) -> one record
per connection.

``iter_records`` streams records as connections finish (memory bounded by the connections open at
once); ``analyze`` collects them into pandas tables for the Python API.
"""

from __future__ import annotations

import gc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from analyzer import cases
from analyzer.capture.stats import ReadStats
from analyzer.classify import Verdict
from analyzer.connection import Connection
from analyzer.core.observer import Observer
from analyzer.errors import CaptureError
from analyzer.timeouts import Timeouts


def endpoint_text(addr: str, port: int) -> str:
    return f"[{addr}]:{port}" if ":" in addr else f"{addr}:{port}"


def wireshark_filter(conn: Connection) -> str:
    (a, pa), (b, pb) = conn.client, conn.server
    ip = "ipv6" if conn.ip_version == 6 else "ip"
    addrs = f"{ip}.addr=={a}" if a == b else f"{ip}.addr=={a} && {ip}.addr=={b}"
    return (f"{addrs} && tcp.port=={pa} && tcp.port=={pb} && "
            f"frame.number>={conn.first_frame} && frame.number<={conn.last_frame}")


# Fields of one connection record. The first block is the public contract (INTERFACE.md);
# the rest are additions.
RECORD_FIELDS: dict[str, str] = {
    "file": "the capture file the connection was read from",
    "conn": "connection number, in order of first frame within that file (0-based)",
    "client": "addr:port of the side that sent the first SYN ([addr]:port for IPv6)",
    "server": "addr:port of the other side",
    "first_frame": "1-based frame number of its first packet, as Wireshark counts",
    "last_frame": "frame number of its last packet",
    "start": "timestamp of the first packet (s since the epoch)",
    "end": "timestamp of the last packet",
    "packets": "packets seen (ICMP errors about it included, capture duplicates excluded)",
    "bytes_client": "payload bytes the client sent, retransmissions excluded",
    "bytes_server": "payload bytes the server sent, retransmissions excluded",
    "case": "catalog case id (rstscope cases)",
    "closer": "who sent the first FIN or RST: client, server, both (FINs crossed) or null",
    "client_sees": "predicted results of the client's socket calls: errno names or EOF",
    "server_sees": "the same for the server",
    "client_states": "client's TCP state timeline: [[state, frame], ...]; frame 0 = before",
    "server_states": "server's TCP state timeline",
    "evidence": "frame numbers that decide the case",
    "wireshark": "a Wireshark display filter showing the connection",
    "zeek_state": "Zeek's conn_state for the same packets",
    "zeek_history": "Zeek's history string for the same packets",
    # additions
    "title": "the case's title",
    "abnormal": "true for the abnormal cases of the catalog",
    "confidence": "certain, or likely when another case could explain the same packets",
    "rival": "the other case, when likely",
    "reason": "the mark on the wire that decided the case",
    "advice": "one line of advice for the case",
    "anomalies": "secondary observations: impossible transitions, retransmissions, ...",
    "ip_version": "4 or 6",
    "duration": "end - start, seconds",
    "tunnel": "null, or the tunnel the connection's first packet came in, as Zeek's "
              "tunnel_parents names it: {kind: ip, gre, teredo, ayiya, vxlan, geneve or gtpv1; "
              "outer_client, outer_server: the outer endpoints on the client's and the server's "
              "side (addr:port for UDP tunnels, addr otherwise); depth: tunnels around it}",
}


def make_record(conn: Connection, verdict: Verdict, file: str) -> dict:
    case = cases.get(verdict.case)
    zeek = conn.zeek
    return {
        "file": file,
        "conn": conn.conn_id,
        "client": endpoint_text(*conn.client),
        "server": endpoint_text(*conn.server),
        "first_frame": conn.first_frame,
        "last_frame": conn.last_frame,
        "start": round(conn.start, 9),
        "end": round(conn.end, 9),
        "packets": conn.packets,  # (capture duplicates were never counted)
        "bytes_client": conn.sent["client"].bytes,
        "bytes_server": conn.sent["server"].bytes,
        "case": verdict.case,
        "closer": verdict.closer,
        "client_sees": verdict.client_sees,
        "server_sees": verdict.server_sees,
        "client_states": conn.ep["client"].states(),
        "server_states": conn.ep["server"].states(),
        "evidence": verdict.evidence,
        "wireshark": wireshark_filter(conn),
        "zeek_state": zeek.conn_state if zeek is not None else None,
        "zeek_history": zeek.history if zeek is not None else None,
        "title": case.title,
        "abnormal": case.abnormal,
        "confidence": verdict.confidence,
        "rival": verdict.rival,
        "reason": verdict.reason,
        "advice": case.advice,
        "anomalies": verdict.secondary,
        "ip_version": conn.ip_version,
        "duration": round(conn.end - conn.start, 6),
        "tunnel": conn.tunnel,
    }


def state_events(conn: Connection, file: str) -> Iterator[dict]:
    """One row per state change of either endpoint (the events table)."""
    for role in ("client", "server"):
        prev = "UNKNOWN"
        for state, frame, ts in conn.ep[role].history:
            yield {"file": file, "conn": conn.conn_id, "role": role, "frame": frame,
                   "ts": ts if frame else None, "from_state": prev, "state": state}
            prev = state


EVENT_FIELDS = {
    "file": "capture file",
    "conn": "connection number (joins the connections table on file + conn)",
    "role": "client or server",
    "frame": "frame whose segment caused the change (0: before the capture began)",
    "ts": "timestamp of that frame (null for frame 0)",
    "from_state": "state before the change",
    "state": "state after the change",
}


@dataclass
class FileReport:
    """What reading one file gave besides its connections."""

    path: str
    stats: object = None  # capture.ReadStats
    problems: list[CaptureError] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    peak_connections: int = 0


GC_EVERY = 1 << 16  # young-generation collections, in connections handed on
BATCH = 4096  # connections finished at a time at the end of the input
BATCH_ROWS = 1 << 16  # connections per columns batch handed on while reading


def iter_connections(path: str, report: FileReport, timeouts: Timeouts | None = None, *,
                     check_ip_checksums: bool = False, zeek_options: dict | None = None,
                     progress=None) -> Iterator[tuple[Connection, Verdict]]:
    """Stream (connection, verdict) pairs from one capture, in the order connections finish.

    Raises UnreadableCapture if nothing can be read; damage found later lands in
    ``report.problems`` after everything before it has been yielded. IPv4 header checksums are
    not checked by default: checksum offload leaves them wrong in captures taken on the sending
    host (Zeek's ``-C``); ``check_ip_checksums=True`` drops such packets as a router would.
    ``progress`` is called with the byte offset reached.
    """
    # Each finished pair is a few dozen Python objects, and Python's cyclic collector, set off
    # by their allocations, would scan again and again what the caller keeps (analyze()'s rows);
    # they die by reference counting, so automatic collection is off while reading and the young
    # generation is swept now and then for the few cycles (generator frames) instead.
    obs = Observer(timeouts or Timeouts(), zeek_options)
    yield from without_gc(_native_read(obs, path, report, check_ip_checksums, progress,
                                       obs.done))


def without_gc(pairs: Iterator) -> Iterator:
    """``pairs``, with Python's automatic cyclic collection off meanwhile (see above)."""
    enabled = gc.isenabled()
    gc.disable()
    try:
        for n, pair in enumerate(pairs):
            if n % GC_EVERY == GC_EVERY - 1:
                gc.collect(0)
            yield pair
    finally:
        if enabled:
            gc.enable()


def iter_json(path: str, report: FileReport, timeouts: Timeouts | None = None, *,
              check_ip_checksums: bool = False, zeek_options: dict | None = None,
              case_ids: list[int] | None = None, ports: list[int] | None = None,
              progress=None, name: str | None = None) -> Iterator[bytes]:
    """The records of one capture as JSON Lines (UTF-8 bytes, a batch at a time), written by
    the compiled core: the same text as ``export.json_line(make_record(...))`` per connection,
    with no Python object per connection. ``case_ids`` (indices of ``cases.CATALOG``) and
    ``ports`` keep only those connections. ``name``: the file's name in the records and
    messages, when it is opened under another (a worker given an absolute path)."""
    obs = Observer(timeouts or Timeouts(), zeek_options, json_file=name or path)
    obs.set_filter(case_ids, ports)
    yield from json_batches(obs, _native_read(obs, path, report, check_ip_checksums, progress,
                                              None, name))


def json_batches(obs, feeding: Iterator) -> Iterator[bytes]:
    """The JSON Lines ``obs`` writes while ``feeding`` (a ``feed_observer``) runs, a batch at a
    time."""
    for _ in feeding:
        if len(obs.json):
            yield obs.json.take()
    if len(obs.json):
        yield obs.json.take()


def iter_batches(path: str, report: FileReport, timeouts: Timeouts | None = None, *,
                 check_ip_checksums: bool = False, zeek_options: dict | None = None,
                 case_ids: list[int] | None = None, ports: list[int] | None = None,
                 progress=None, name: str | None = None, rows: int = BATCH_ROWS,
                 json: bool = False) -> Iterator:
    """The records of one capture as columns (``analyzer.core.columns.Batch``, at least
    ``rows`` at a time, the rest at the end), kept by the core in C arrays: no Python object per
    connection. Filters and ``name`` as ``iter_json``. ``json``: the core writes JSON Lines
    too, yielded (bytes) as they come, between the batches."""
    obs = Observer(timeouts or Timeouts(), zeek_options, columns_file=name or path,
                   json_file=(name or path) if json else None)
    obs.set_filter(case_ids, ports)
    yield from column_batches(obs, _native_read(obs, path, report, check_ip_checksums,
                                                progress, None, name), rows)


def column_batches(obs, feeding: Iterator, rows: int = BATCH_ROWS) -> Iterator:
    """The Batches (and, with ``obs.json``, the JSON Lines) ``obs`` makes while ``feeding`` (a
    ``feed_observer``) runs."""
    for _ in feeding:
        if obs.json is not None and len(obs.json):
            yield obs.json.take()
        if len(obs.columns) >= rows:
            yield obs.columns.take()
    if obs.json is not None and len(obs.json):
        yield obs.json.take()
    if len(obs.columns):
        yield obs.columns.take()


def _native_read(obs, path: str, report: FileReport, check_ip_checksums: bool, progress,
                 done: list | None, name: str | None = None) -> Iterator:
    from analyzer.core.decode import open_native

    reader = open_native(path, check_ip_checksums=check_ip_checksums, name=name)
    report.stats = reader.stats
    yield from feed_observer(obs, reader, report, progress, done)
    report.stats = ReadStats(**reader.stats.values())  # the live counters, as a ReadStats


def feed_observer(obs, reader, report: FileReport, progress, done: list | None) -> Iterator:
    """Feed a native reader to ``obs`` a batch at a time; yields the finished pairs in ``done``
    (or None after each batch, when the observer writes JSON instead). Ends with the reader's
    problems, notes and the peak in ``report``; the caller turns ``reader.stats`` into
    ``report.stats``."""
    try:
        while obs.feed_reader(reader):
            if done is None:
                yield None
            elif done:
                yield from done
                done.clear()
            if progress is not None:
                progress(reader.stats.bytes_read)
        more = True
        while more:  # (a part at a time: a flood's million open connections end here)
            more = obs.close_some(BATCH)
            if done is None:
                yield None
            else:
                yield from done
                done.clear()
    finally:
        reader.close()
    report.problems.extend(reader.problems)
    report.notes.extend(reader.notes)
    report.peak_connections = obs.peak_active


def iter_records(paths: Iterable[str], reports: list[FileReport],
                 timeouts: Timeouts | None = None, *, check_ip_checksums: bool = False,
                 zeek_options: dict | None = None, progress=None
                 ) -> Iterator[tuple[dict, Connection]]:
    """Records of each file in turn; ``progress(path)`` may return a callable fed the byte
    offset reached (see ``iter_connections``)."""
    for path in paths:
        report = FileReport(path)
        reports.append(report)
        for conn, verdict in iter_connections(path, report, timeouts,
                                              check_ip_checksums=check_ip_checksums,
                                              zeek_options=zeek_options,
                                              progress=progress(path) if progress else None):
            yield make_record(conn, verdict, path), conn
