# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Records as columns: what the pandas API, CSV, Parquet and the text view read, with no Python
dict per connection.

When the observer finishes a connection, ``Columns.add`` appends its record's fields to C arrays:
numbers as they are, the case, closer, confidence, rival and Zeek state as small codes (their
names are the catalog's and the classifier's tables, declared once in Python), endpoints as
address bytes and ports, the errno lists, evidence and both timelines as codes and frames, and the
texts (Zeek history, reason, anomalies) as UTF-8 in one arena. ``take()`` hands them out as a
``Batch`` of numpy arrays (plain data: it pickles, for the ``--jobs`` workers).

A Batch becomes the tables of ``analyzer.api``: ``frame()`` has exactly the columns, dtypes and
values of ``pd.DataFrame([pipeline.make_record(...), ...])``. Its list-valued fields (the errno
lists, timelines, evidence, anomalies) are object columns of lists built from the compact arrays
when the frame is built: a DataFrame of equal values needs a list per cell, and building them in
C from codes costs a fraction of the dict per connection they replace. ``frame(flat=True)`` is
what CSV and Parquet write (``export._flat``): those fields as JSON text, written here directly,
with no list made. ``records(rows)`` builds dicts only for the rows asked for (the text view's
listing); ``events()`` is the state-change table, computed over the arrays with numpy.
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset, strlen

from analyzer.core.conn cimport Conn, Ep, hist_fs, hist_ts
from analyzer.core.records cimport addr_text, py_round
from analyzer.core.seg cimport Addr
from analyzer.core.verdict cimport (
    V_SEES_MAX,
    Verdict,
    verdict_n_secondary,
    verdict_reason,
    verdict_secondary,
)
from analyzer.core.zeekview cimport ZEEK_HIST_INLINE, ZeekConn, zeek_conn_state

import json

import numpy as np

from analyzer import cases as _cases
from analyzer.core import verdict as _verdict
from analyzer.tcpstate import State as _State

# ---------------------------------------------------------------- the fields kept per connection
# (name, numpy dtype, items per row; 0: a variable number, counted by the field named after it)

FIELDS = (
    ("conn", "i8", 1), ("first_frame", "i8", 1), ("last_frame", "i8", 1), ("packets", "i8", 1),
    ("bytes_client", "i8", 1), ("bytes_server", "i8", 1),
    ("start", "f8", 1), ("end", "f8", 1), ("duration", "f8", 1),
    ("ip_version", "u1", 1), ("case", "i1", 1), ("closer", "u1", 1), ("confidence", "u1", 1),
    ("rival", "i1", 1), ("zeek_state", "u1", 1),
    ("client_addr", "u1", 16), ("server_addr", "u1", 16), ("client_port", "u2", 1),
    ("server_port", "u2", 1),
    ("sees", "u1", 2 * V_SEES_MAX), ("n_sees", "u1", 2),
    ("n_evidence", "u1", 1), ("evidence", "i8", 0),
    ("n_hist", "u1", 2), ("hist_fs", "i8", 0), ("hist_ts", "f8", 0),
    # texts per row: the Zeek history, the reason, then n_anom anomalies
    ("n_anom", "u1", 1), ("text_len", "i4", 0), ("text", "u1", 0),
)
cdef enum:
    F_CONN, F_FIRST, F_LAST, F_PACKETS, F_BYTES_C, F_BYTES_S, F_START, F_END, F_DURATION
    F_IPV, F_CASE, F_CLOSER, F_CONF, F_RIVAL, F_ZSTATE, F_CADDR, F_SADDR, F_CPORT, F_SPORT
    F_SEES, F_NSEES, F_NEV, F_EV, F_NHIST, F_HFS, F_HTS, F_NANOM, F_TLEN, F_TEXT, N_FIELDS

if len(FIELDS) != N_FIELDS or N_FIELDS > 32:
    raise ValueError("columns.pyx: FIELDS and the F_* numbers disagree")

# names behind the codes, from their one declaration in Python
CASE_IDS = np.array([c.id for c in _cases.CATALOG], dtype=object)
CASE_TITLES = np.array([c.title for c in _cases.CATALOG], dtype=object)
CASE_ADVICE = np.array([c.advice for c in _cases.CATALOG], dtype=object)
CASE_ABNORMAL = np.array([c.abnormal for c in _cases.CATALOG], dtype=bool)
CLOSERS = np.array(_verdict.CLOSER_NAMES, dtype=object)  # code 0: none
CONFIDENCES = np.array(["certain", "likely"], dtype=object)  # CONF_CERTAIN, CONF_LIKELY
ERRNOS = tuple(_verdict.ERRNO_NAMES)
STATES = np.array([s.value for s in _State], dtype=object)
ZEEK_STATES = ("S0", "S1", "SF", "REJ", "S2", "S3", "RSTO", "RSTR", "RSTOS0", "RSTRH", "SH",
               "SHR", "OTH")
cdef dict _zeek_code = {s: i for i, s in enumerate(ZEEK_STATES)}
if tuple(_verdict.CASE_IDS) != tuple(CASE_IDS):
    raise ValueError("columns.pyx: the classifier's case numbers are not the catalog's")


# ---------------------------------------------------------------- growable C arrays

cdef int vec_reserve(Vec* x, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if x.len + more <= x.cap:
        return 0
    cap = x.cap * 2 if x.cap else 4096
    while cap < x.len + more:
        cap *= 2
    grown = <char*>realloc(x.buf, cap)
    if grown == NULL:
        raise MemoryError()
    x.buf = grown
    x.cap = cap
    return 0


cdef inline int push(Vec* x, const void* p, Py_ssize_t n) except -1:
    if x.len + n > x.cap:
        vec_reserve(x, n)
    memcpy(x.buf + x.len, p, n)
    x.len += n
    return 0


cdef inline int push_i64(Vec* x, int64_t v) except -1:
    return push(x, &v, 8)


cdef inline int push_f64(Vec* x, double v) except -1:
    return push(x, &v, 8)


cdef inline int push_u8(Vec* x, uint8_t v) except -1:
    return push(x, &v, 1)


cdef int push_text(Columns cols, const Verdict* v, const Conn* c, int which) except -1:
    """The reason (which < 0) or anomaly ``which``, formatted straight into the arena."""
    cdef Vec* t = &cols.v[F_TEXT]
    cdef Py_ssize_t n
    cdef int32_t n32
    vec_reserve(t, 512)
    n = verdict_reason(v, c, t.buf + t.len, t.cap - t.len) if which < 0 else \
        verdict_secondary(v, c, which, t.buf + t.len, t.cap - t.len)
    if n >= t.cap - t.len:  # cut: room for all of it, and again
        vec_reserve(t, n + 1)
        if which < 0:
            verdict_reason(v, c, t.buf + t.len, n + 1)
        else:
            verdict_secondary(v, c, which, t.buf + t.len, n + 1)
    t.len += n
    n32 = <int32_t>n
    return push(&cols.v[F_TLEN], &n32, 4)


cdef class Columns:
    """Finished connections' records as C arrays, accumulated until taken (``take``)."""

    def __cinit__(self):
        memset(self.v, 0, sizeof(self.v))
        self.n = 0

    def __init__(self, str file):
        self.file = file

    def __dealloc__(self):
        cdef int i
        for i in range(N_FIELDS):
            free(self.v[i].buf)

    def __len__(self):
        return self.n

    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1:
        cdef int role, i, n
        cdef uint8_t sees[2 * V_SEES_MAX]
        cdef const Ep* ep
        cdef const char* hist
        cdef int32_t n32
        push_i64(&self.v[F_CONN], c.conn_id)
        push_i64(&self.v[F_FIRST], c.first_frame)
        push_i64(&self.v[F_LAST], c.last_frame)
        push_i64(&self.v[F_PACKETS], c.packets - c.duplicates)
        push_i64(&self.v[F_BYTES_C], c.d[0].bytes)
        push_i64(&self.v[F_BYTES_S], c.d[1].bytes)
        push_f64(&self.v[F_START], py_round(c.start, 9))
        push_f64(&self.v[F_END], py_round(c.end, 9))
        push_f64(&self.v[F_DURATION], py_round(c.end - c.start, 6))
        push_u8(&self.v[F_IPV], c.ip_version)
        push_u8(&self.v[F_CASE], <uint8_t>v.case)
        push_u8(&self.v[F_CLOSER], v.closer & 3)
        push_u8(&self.v[F_CONF], v.confidence)
        push_u8(&self.v[F_RIVAL], <uint8_t>v.rival)
        push_u8(&self.v[F_ZSTATE], _zeek_code[zeek_conn_state(z)])  # (an interned literal)
        push(&self.v[F_CADDR], c.client_addr.b, 16)
        push(&self.v[F_SADDR], c.server_addr.b, 16)
        push(&self.v[F_CPORT], &c.client_port, 2)
        push(&self.v[F_SPORT], &c.server_port, 2)
        memset(sees, 0, sizeof(sees))  # (the slots past n_sees are 0, not whatever was there)
        for role in range(2):
            for i in range(v.n_sees[role]):
                sees[role * V_SEES_MAX + i] = v.sees[role][i]
        push(&self.v[F_SEES], sees, sizeof(sees))
        push(&self.v[F_NSEES], v.n_sees, 2)
        push_u8(&self.v[F_NEV], v.n_evidence)
        push(&self.v[F_EV], v.evidence, 8 * v.n_evidence)
        for role in range(2):
            ep = &c.ep[role]
            push_u8(&self.v[F_NHIST], ep.n_hist)
            for i in range(ep.n_hist):
                push_i64(&self.v[F_HFS], hist_fs(ep, i))
                push_f64(&self.v[F_HTS], hist_ts(ep, i))
        hist = z.hist.heap if z.hist_len > ZEEK_HIST_INLINE else z.hist.chars
        push(&self.v[F_TEXT], hist, z.hist_len)
        n32 = <int32_t>z.hist_len
        push(&self.v[F_TLEN], &n32, 4)
        push_text(self, v, c, -1)
        n = verdict_n_secondary(v, c)
        push_u8(&self.v[F_NANOM], n)
        for i in range(n):
            push_text(self, v, c, i)
        self.n += 1
        return 0

    def take(self):
        """The rows so far as a Batch (None when there are none); the arrays start again."""
        cdef int i
        if not self.n:
            return None
        arrays = {}
        for i, (name, dtype, width) in enumerate(FIELDS):
            a = np.empty(self.v[i].len // np.dtype(dtype).itemsize, dtype=dtype)
            if self.v[i].len:
                memcpy(<char*><uint64_t>a.ctypes.data, self.v[i].buf, self.v[i].len)
            arrays[name] = a.reshape(-1, width) if width > 1 else a
            self.v[i].len = 0
        batch = Batch([self.file], np.zeros(self.n, dtype=np.int32), arrays)
        self.n = 0
        return batch


# ---------------------------------------------------------------- batches

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

    def endpoint(self, str side, rows):
        """``addr:port`` (``[addr]:port`` for IPv6) of ``side``, client or server."""
        return _endpoints(self.a[f"{side}_addr"], self.a[f"{side}_port"], self.a["ip_version"],
                          np.asarray(rows, dtype=np.int64))

    def address(self, str side, rows):
        """The address alone of ``side`` (client or server), as ``endpoint`` writes it."""
        return _addresses(self.a[f"{side}_addr"], self.a["ip_version"],
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

    def frame(self, rows=None, bint flat=False):
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

    def records(self, rows):
        """Records (dicts, as ``pipeline.make_record`` gives them) of ``rows`` only."""
        rows = np.asarray(rows, dtype=np.int64)
        if not len(rows):
            return []
        from analyzer.pipeline import RECORD_FIELDS

        make = self._columns(rows, False)
        names = list(RECORD_FIELDS)
        values = [make[k]().tolist() for k in names]
        return [dict(zip(names, vals)) for vals in zip(*values)]

    def _columns(self, rows, bint flat):
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
            "client_sees": lambda: _sees(a["sees"], a["n_sees"], rows, 0, flat),
            "server_sees": lambda: _sees(a["sees"], a["n_sees"], rows, 1, flat),
            "client_states": lambda: _states(a["hist_fs"], hist_off, a["n_hist"], rows, 0, flat),
            "server_states": lambda: _states(a["hist_fs"], hist_off, a["n_hist"], rows, 1, flat),
            "evidence": lambda: _ints(a["evidence"], ev_off, rows, flat),
            "wireshark": lambda: _wireshark(a["client_addr"], a["server_addr"], a["client_port"],
                                            a["server_port"], a["ip_version"],
                                            a["first_frame"], a["last_frame"], rows),
            "zeek_state": lambda: np.asarray(ZEEK_STATES, dtype=object)[a["zeek_state"][rows]],
            "zeek_history": lambda: _texts(a["text"], texts, first[rows]),
            "title": lambda: CASE_TITLES[case], "abnormal": lambda: CASE_ABNORMAL[case],
            "confidence": lambda: CONFIDENCES[a["confidence"][rows]],
            "rival": lambda: rival_names[np.where(rival < 0, len(CASE_IDS), rival)],
            "reason": lambda: _texts(a["text"], texts, first[rows] + 1),
            "advice": lambda: CASE_ADVICE[case],
            "anomalies": lambda: _anomalies(a["text"], texts, first, a["n_anom"], rows, flat),
            "ip_version": lambda: a["ip_version"][rows].astype(np.int64),
            "duration": lambda: a["duration"][rows],
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
                      for name, dtype, width in FIELDS})
    arrays = {name: np.concatenate([b.a[name] for b in batches]) for name, _, _ in FIELDS}
    return Batch(files, np.concatenate(codes), arrays)


# ---------------------------------------------------------------- building cells in C

cdef object _ascii(const char* s, Py_ssize_t n):
    return s[:n].decode("ascii")


cdef int _endpoint_text(char* out, const uint8_t* addr, int port, int version) noexcept nogil:
    """pipeline.endpoint_text into out (at least 64 bytes); returns its length."""
    cdef char a[48]
    cdef int n = 0
    addr_text(<const Addr*>addr, version, a)
    if version == 6:
        out[0] = b'['
        n = 1
    memcpy(out + n, a, strlen(a))
    n += <int>strlen(a)
    if version == 6:
        out[n] = b']'
        n += 1
    out[n] = b':'
    n += 1
    return n + _itoa(port, out + n)


cdef int _itoa(int64_t v, char* out) noexcept nogil:
    cdef char tmp[24]
    cdef int n = 0, i = 0
    cdef uint64_t u = <uint64_t>v
    if v < 0:
        u = <uint64_t>0 - u
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    if v < 0:
        out[0] = b'-'
        i = 1
    while n:
        n -= 1
        out[i] = tmp[n]
        i += 1
    return i


def _endpoints(const uint8_t[:, ::1] addr, const uint16_t[::1] port, const uint8_t[::1] ipv,
               const int64_t[::1] rows):
    cdef Py_ssize_t i, r
    cdef char buf[80]
    cdef int n
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        n = _endpoint_text(buf, &addr[r, 0], port[r], ipv[r])
        out[i] = _ascii(buf, n)
    return out


cdef inline int _put(char* buf, int n, const char* s) noexcept nogil:
    cdef int k = <int>strlen(s)
    memcpy(buf + n, s, k)
    return n + k


def _wireshark(const uint8_t[:, ::1] caddr, const uint8_t[:, ::1] saddr,
               const uint16_t[::1] cport, const uint16_t[::1] sport, const uint8_t[::1] ipv,
               const int64_t[::1] first, const int64_t[::1] last, const int64_t[::1] rows):
    """pipeline.wireshark_filter per row."""
    cdef Py_ssize_t i, r
    cdef char buf[256]
    cdef char a[48]
    cdef char b[48]
    cdef int n
    cdef const char* ip
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        ip = "ipv6" if ipv[r] == 6 else "ip"
        addr_text(<const Addr*>&caddr[r, 0], ipv[r], a)
        addr_text(<const Addr*>&saddr[r, 0], ipv[r], b)
        n = _put(buf, 0, ip)
        n = _put(buf, n, ".addr==")
        n = _put(buf, n, a)
        if strlen(a) != strlen(b) or memcmp_eq(a, b) == 0:
            n = _put(buf, n, " && ")
            n = _put(buf, n, ip)
            n = _put(buf, n, ".addr==")
            n = _put(buf, n, b)
        n = _put(buf, n, " && tcp.port==")
        n += _itoa(cport[r], buf + n)
        n = _put(buf, n, " && tcp.port==")
        n += _itoa(sport[r], buf + n)
        n = _put(buf, n, " && frame.number>=")
        n += _itoa(first[r], buf + n)
        n = _put(buf, n, " && frame.number<=")
        n += _itoa(last[r], buf + n)
        out[i] = _ascii(buf, n)
    return out


cdef inline int memcmp_eq(const char* a, const char* b) noexcept nogil:
    cdef Py_ssize_t i = 0
    while a[i] and a[i] == b[i]:
        i += 1
    return a[i] == b[i]


def _texts(const uint8_t[::1] text, const int64_t[::1] off, const int64_t[::1] which):
    """Text number which[i] of the arena, per i (UTF-8 -> str)."""
    cdef Py_ssize_t i, k
    cdef const char* base = <const char*>&text[0] if text.shape[0] else <const char*>""
    out = np.empty(which.shape[0], dtype=object)
    for i in range(which.shape[0]):
        k = which[i]
        out[i] = PyUnicode_DecodeUTF8(base + off[k], off[k + 1] - off[k], NULL)
    return out


def _anomalies(const uint8_t[::1] text, const int64_t[::1] off, const int64_t[::1] first,
               const uint8_t[::1] n_anom, const int64_t[::1] rows, bint flat):
    cdef Py_ssize_t i, r, j, k
    cdef const char* base = <const char*>&text[0] if text.shape[0] else <const char*>""
    out = np.empty(rows.shape[0], dtype=object)
    encode = json.encoder.encode_basestring_ascii  # (json.dumps' escaping, in C)
    for i in range(rows.shape[0]):
        r = rows[i]
        items = []
        for j in range(n_anom[r]):
            k = first[r] + 2 + j
            items.append(PyUnicode_DecodeUTF8(base + off[k], off[k + 1] - off[k], NULL))
        if flat:
            out[i] = "[" + ", ".join([encode(s) for s in items]) + "]" if items else "[]"
        else:
            out[i] = items
    return out


def _sees(const uint8_t[:, ::1] sees, const uint8_t[:, ::1] n_sees, const int64_t[::1] rows,
          int role, bint flat):
    cdef Py_ssize_t i, r, j
    cdef int n, k, e
    cdef char buf[64]
    cdef tuple names = ERRNOS
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        n = n_sees[r, role]
        if flat:
            k = _put(buf, 0, "[")
            for j in range(n):
                e = sees[r, role * V_SEES_MAX + j]
                k = _put(buf, k, ', "' if j else '"')
                k = _put(buf, k, names[e].encode("ascii"))
                k = _put(buf, k, '"')
            k = _put(buf, k, "]")
            out[i] = _ascii(buf, k)
        else:
            out[i] = [names[sees[r, role * V_SEES_MAX + j]] for j in range(n)]
    return out


def _states(const int64_t[::1] fs, const int64_t[::1] off, const uint8_t[:, ::1] n_hist,
            const int64_t[::1] rows, int role, bint flat):
    """[[state, frame], ...] of one role: the row's client entries come first."""
    cdef Py_ssize_t i, r, j, start
    cdef int n, k
    cdef int64_t f
    cdef char* buf
    cdef bytes b
    names = list(STATES)
    ascii_names = [s.encode("ascii") for s in names]
    out = np.empty(rows.shape[0], dtype=object)
    buf = <char*>realloc(NULL, 64 * 256 + 8)
    if buf == NULL:
        raise MemoryError()
    try:
        for i in range(rows.shape[0]):
            r = rows[i]
            start = off[r] + (n_hist[r, 0] if role else 0)
            n = n_hist[r, role]
            if flat:
                k = _put(buf, 0, "[")
                for j in range(n):
                    f = fs[start + j]
                    k = _put(buf, k, ', ["' if j else '["')
                    b = ascii_names[f & 15]
                    k = _put(buf, k, b)
                    k = _put(buf, k, '", ')
                    k += _itoa(f >> 4, buf + k)
                    k = _put(buf, k, "]")
                k = _put(buf, k, "]")
                out[i] = _ascii(buf, k)
            else:
                out[i] = [[names[fs[start + j] & 15], fs[start + j] >> 4] for j in range(n)]
    finally:
        free(buf)
    return out


def _ints(const int64_t[::1] values, const int64_t[::1] off, const int64_t[::1] rows,
          bint flat):
    cdef Py_ssize_t i, r, j
    cdef int k
    cdef char buf[32 * 32]
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        if flat:
            k = _put(buf, 0, "[")
            for j in range(off[r], off[r + 1]):
                if j > off[r]:
                    k = _put(buf, k, ", ")
                k += _itoa(values[j], buf + k)
            k = _put(buf, k, "]")
            out[i] = _ascii(buf, k)
        else:
            out[i] = [values[j] for j in range(off[r], off[r + 1])]
    return out


def _addresses(const uint8_t[:, ::1] addr, const uint8_t[::1] ipv, const int64_t[::1] rows):
    """The address of each row, as inet_ntop writes it."""
    cdef Py_ssize_t i, r
    cdef char buf[48]
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        addr_text(<const Addr*>&addr[r, 0], ipv[r], buf)
        out[i] = _ascii(buf, strlen(buf))
    return out
