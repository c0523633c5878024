"""A batch of finished connections' records as numpy arrays (``columns.FIELDS``, made by the
core's ``columns.Columns``), and the tables made from it with no Python dict per connection.

``frame()`` has exactly the columns, dtypes and values of ``pd.DataFrame([pipeline.make_record(
...), ...])`` (``Analysis.connections``). Its list-valued fields (the errno lists, timelines,
evidence, anomalies) are object columns of lists, built in C from the compact arrays when the
frame is made: a DataFrame of equal values needs a list per cell, and making them from codes costs
a fraction of the dict per connection they replace. ``frame(flat=True)`` is what CSV and Parquet
write (``export._flat``): those fields as JSON text, written directly, no list made.
``records(rows)`` makes dicts only for the rows asked for (the text view's listing); ``events()``
is the state-change table, computed over the arrays with numpy.
"""

from __future__ import annotations

import json

import numpy as np

from analyzer import cases as _cases
from analyzer.core import columns as _c
from analyzer.core.columns import ERRNOS, FIELDS, ZEEK_STATES  # noqa: F401 (ERRNOS: report.table)

# the names behind the codes, as arrays to index with the code columns
CASE_IDS = np.array(_c.CASE_IDS, dtype=object)
CASE_TITLES = np.array([c.title for c in _cases.CATALOG], dtype=object)
CASE_ADVICE = np.array([c.advice for c in _cases.CATALOG], dtype=object)
CASE_ABNORMAL = np.array([c.abnormal for c in _cases.CATALOG], dtype=bool)
CLOSERS = np.array(_c.CLOSERS, dtype=object)
CONFIDENCES = np.array(_c.CONFIDENCES, dtype=object)
STATES = np.array(_c.STATES, dtype=object)


def _offsets(counts) -> np.ndarray:
    out = np.zeros(len(counts) + 1, dtype=np.int64)
    np.cumsum(counts, out=out[1:])
    return out


class Batch:
    """Records of finished connections as numpy arrays (``FIELDS``), in the order they
    finished, with their files (``files``, and ``file_code`` per row)."""

    def __init__(self, files, file_code, arrays):
        self.files = list(files)
        self.file_code = file_code
        self.a = arrays
        self.n = len(file_code)

    def __len__(self):
        return self.n

    def __getstate__(self):
        return {"files": self.files, "file_code": self.file_code, "a": self.a}

    def __setstate__(self, state):
        self.__init__(state["files"], state["file_code"], state["a"])

    # -- offsets of the variable-length fields
    def _ev_off(self):
        return _offsets(self.a["n_evidence"])

    def _hist_off(self):
        return _offsets(self.a["n_hist"].sum(axis=1, dtype=np.int64))

    def _text(self):
        """(offset of each text in the arena, index of each row's first text)."""
        return _offsets(self.a["text_len"]), _offsets(2 + self.a["n_anom"].astype(np.int64))

    # -- columns
    def file(self, rows):
        return np.asarray(self.files, dtype=object)[self.file_code[rows]]

    def endpoint(self, side: str, rows):
        """``addr:port`` (``[addr]:port`` for IPv6) of ``side``, client or server."""
        return _c.endpoints(self.a[f"{side}_addr"], self.a[f"{side}_port"], self.a["ip_version"],
                          np.asarray(rows, dtype=np.int64))

    def address(self, side: str, rows):
        """The address alone of ``side`` (client or server), as ``endpoint`` writes it."""
        return _c.addresses(self.a[f"{side}_addr"], self.a["ip_version"],
                          np.asarray(rows, dtype=np.int64))

    def cases(self, rows=slice(None)):
        return CASE_IDS[self.a["case"][rows]]

    def order(self):
        """Rows by (file, conn), stably: the order of ``Analysis.connections``."""
        rank = np.empty(len(self.files), dtype=np.int64)
        rank[sorted(range(len(self.files)), key=self.files.__getitem__)] = \
            np.arange(len(self.files))
        rows = np.argsort(self.a["conn"], kind="stable")
        return rows[np.argsort(rank[self.file_code[rows]], kind="stable")]

    def frame(self, rows=None, flat: bool=False):
        """The connections table (``pipeline.RECORD_FIELDS``) for ``rows`` (default: all, in
        the order they finished); ``flat``: list fields as JSON text (``export._flat``)."""
        import pandas as pd

        from analyzer.pipeline import RECORD_FIELDS

        if self.n == 0:
            return pd.DataFrame([], columns=list(RECORD_FIELDS))
        rows = np.arange(self.n, dtype=np.int64) if rows is None else \
            np.asarray(rows, dtype=np.int64)
        make = self._columns(rows, flat)
        # (each column as pandas holds it before the next is made: str columns become Arrow
        # strings and their Python objects go)
        return pd.DataFrame({name: pd.Series(make[name](), copy=False) for name in RECORD_FIELDS},
                            columns=list(RECORD_FIELDS))

    def records(self, rows, fields=None):
        """Records (dicts, as ``pipeline.make_record`` gives them) of ``rows`` only; with
        ``fields``, only those fields of them."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        from analyzer.pipeline import RECORD_FIELDS

        make = self._columns(rows, False)
        names = list(RECORD_FIELDS) if fields is None else list(fields)
        values = [make[k]().tolist() for k in names]
        return [dict(zip(names, vals, strict=True)) for vals in zip(*values, strict=True)]

    def _columns(self, rows, flat: bool):
        """Per field, a function making its column for ``rows`` (made one at a time, so that
        one column's Python objects are gone before the next one's are made)."""
        a = self.a
        texts, first = self._text()
        ev_off, hist_off = self._ev_off(), self._hist_off()
        case = a["case"][rows]
        rival = a["rival"][rows].astype(np.int64)
        rival_names = np.append(CASE_IDS, None)
        return {
            "file": lambda: self.file(rows), "conn": lambda: a["conn"][rows],
            "client": lambda: self.endpoint("client", rows),
            "server": lambda: self.endpoint("server", rows),
            "first_frame": lambda: a["first_frame"][rows],
            "last_frame": lambda: a["last_frame"][rows],
            "start": lambda: a["start"][rows], "end": lambda: a["end"][rows],
            "packets": lambda: a["packets"][rows],
            "bytes_client": lambda: a["bytes_client"][rows],
            "bytes_server": lambda: a["bytes_server"][rows],
            "case": lambda: CASE_IDS[case], "closer": lambda: CLOSERS[a["closer"][rows]],
            "client_sees": lambda: _c.sees(a["sees"], a["n_sees"], rows, 0, flat),
            "server_sees": lambda: _c.sees(a["sees"], a["n_sees"], rows, 1, flat),
            "client_states": lambda: _c.states(a["hist_fs"], hist_off, a["n_hist"], rows, 0, flat),
            "server_states": lambda: _c.states(a["hist_fs"], hist_off, a["n_hist"], rows, 1, flat),
            "evidence": lambda: _c.ints(a["evidence"], ev_off, rows, flat),
            "wireshark": lambda: _c.wireshark(a["client_addr"], a["server_addr"], a["client_port"],
                                            a["server_port"], a["ip_version"],
                                            a["first_frame"], a["last_frame"], rows),
            "zeek_state": lambda: np.asarray(ZEEK_STATES, dtype=object)[a["zeek_state"][rows]],
            "zeek_history": lambda: _c.texts(a["text"], texts, first[rows]),
            "title": lambda: CASE_TITLES[case], "abnormal": lambda: CASE_ABNORMAL[case],
            "confidence": lambda: CONFIDENCES[a["confidence"][rows]],
            "rival": lambda: rival_names[np.where(rival < 0, len(CASE_IDS), rival)],
            "reason": lambda: _c.texts(a["text"], texts, first[rows] + 1),
            "advice": lambda: CASE_ADVICE[case],
            "anomalies": lambda: _c.anomalies(a["text"], texts, first, a["n_anom"], rows, flat),
            "ip_version": lambda: a["ip_version"][rows].astype(np.int64),
            "duration": lambda: a["duration"][rows],
            "tunnel": lambda: _tunnels(a["tunnel"][rows], flat),
        }

    def events(self):
        """The state-change table (``pipeline.EVENT_FIELDS``), rows in the order
        ``pipeline.state_events`` gives them connection after connection."""
        import pandas as pd

        from analyzer.pipeline import EVENT_FIELDS

        fs = self.a["hist_fs"]
        if not len(fs):
            return pd.DataFrame([], columns=list(EVENT_FIELDS))
        n_hist = self.a["n_hist"].astype(np.int64)
        per_row = n_hist.sum(axis=1)
        row = np.repeat(np.arange(self.n), per_row)
        pos = np.arange(len(fs)) - np.repeat(_offsets(per_row)[:self.n], per_row)
        n_client = n_hist[:, 0][row]
        server = pos >= n_client
        first = (pos == 0) | (pos == n_client)
        state = fs & 15
        prev = np.empty_like(state)
        prev[0] = 0
        prev[1:] = state[:len(state) - 1]
        prev[first] = list(STATES).index("UNKNOWN")
        frame = fs >> 4
        ts = np.where(frame != 0, self.a["hist_ts"], np.nan)
        if not (frame != 0).any():  # (no frame at all: state_events' None throughout)
            ts = np.full(len(fs), None, dtype=object)
        return pd.DataFrame({
            "file": self.file(row), "conn": self.a["conn"][row],
            "role": np.where(server, "server", "client").astype(object), "frame": frame,
            "ts": ts, "from_state": STATES[prev], "state": STATES[state]},
            columns=list(EVENT_FIELDS))


def _tunnels(values, flat: bool):
    """The tunnel column: dicts or None, or (flat) their JSON text as export._flat writes it."""
    if not flat:
        return values
    return np.array([None if v is None else json.dumps(v) for v in values], dtype=object)


def concat(batches) -> Batch:
    """One Batch of several (files merged)."""
    batches = [b for b in batches if b is not None and len(b)]
    if len(batches) == 1:
        return batches[0]
    files, codes = [], []
    index = {}
    for b in batches:
        remap = np.array([index.setdefault(f, len(index)) for f in b.files], dtype=np.int32)
        codes.append(remap[b.file_code] if len(remap) else b.file_code)
    files = list(index)
    if not batches:
        return Batch([], np.zeros(0, dtype=np.int32),
                     {name: np.zeros((0, width) if width > 1 else 0, dtype=dtype)
                      for name, dtype, width in FIELDS} | {"tunnel": np.zeros(0, dtype=object)})
    arrays = {name: np.concatenate([b.a[name] for b in batches]) for name, _, _ in FIELDS}
    arrays["tunnel"] = np.concatenate([b.a["tunnel"] for b in batches])
    return Batch(files, np.concatenate(codes), arrays)
