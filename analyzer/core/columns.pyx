# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Records as columns: what the pandas API, CSV, Parquet and the text view read, with no Python
dict per connection.

When the observer finishes a connection, ``Columns.add`` appends its record's fields to C arrays:
numbers as they are, the case, closer, confidence, rival and Zeek state as small codes (their
names are the catalog's and the classifier's tables, declared once in Python), endpoints as
address bytes and ports, the errno lists, evidence and both timelines as codes and frames, and the
texts (Zeek history, reason, anomalies) as UTF-8 in one arena. ``take()`` hands them out as a
``batch.Batch`` of numpy arrays (plain data: it pickles, for the ``--jobs`` workers), which
makes the tables from them with the cell builders below (a column's cells for given rows, in C:
endpoint and Wireshark texts, the arena's texts, the errno lists, timelines and evidence as lists
or as the JSON text CSV and Parquet hold).
"""

from cpython.unicode cimport PyUnicode_DecodeUTF8
from libc.stdint cimport int8_t, int32_t, int64_t, uint8_t, uint16_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, memset, strlen

from analyzer.core.conn cimport Conn, Ep, conn_dir, hist_fs, hist_ts, tunnel_export
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

# numpy, imported at the first batch taken or cell built: the observer imports this module, and
# `--json` (lines written by records.pyx) never needs numpy (a tenth of a second of start-up)
cdef object np = None


cdef object _numpy():
    global np
    if np is None:
        import numpy
        np = numpy
    return np


# names behind the codes, from their one declaration in Python (batch.py holds them as arrays)
CASE_IDS = tuple(c.id for c in _cases.CATALOG)
CLOSERS = tuple(_verdict.CLOSER_NAMES)  # code 0: none
CONFIDENCES = ("certain", "likely")  # CONF_CERTAIN, CONF_LIKELY
ERRNOS = tuple(_verdict.ERRNO_NAMES)
STATES = tuple(s.value for s in _State)
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
    if n <= 0:
        return 0  # (memcpy from or to NULL is undefined even for 0 bytes: UBSan says so)
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
        self.tunnels = []

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
        push_i64(&self.v[F_PACKETS], c.packets)  # (capture duplicates were never counted)
        push_i64(&self.v[F_BYTES_C], conn_dir(c, 0).bytes)
        push_i64(&self.v[F_BYTES_S], conn_dir(c, 1).bytes)
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
        if c.more != NULL and c.more.tunnel != NULL:
            self.tunnels.append((self.n, tunnel_export(c.more.tunnel)))
        self.n += 1
        return 0

    def take(self):
        """The rows so far as a Batch (None when there are none); the arrays start again."""
        _numpy()
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
        tunnel = np.full(self.n, None, dtype=object)
        for row, value in self.tunnels:
            tunnel[row] = value
        arrays["tunnel"] = tunnel
        self.tunnels = []
        from analyzer.core.batch import Batch

        batch = Batch([self.file], np.zeros(self.n, dtype=np.int32), arrays)
        self.n = 0
        return batch


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


def endpoints(const uint8_t[:, ::1] addr, const uint16_t[::1] port, const uint8_t[::1] ipv,
               const int64_t[::1] rows):
    _numpy()
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


def wireshark(const uint8_t[:, ::1] caddr, const uint8_t[:, ::1] saddr,
               const uint16_t[::1] cport, const uint16_t[::1] sport, const uint8_t[::1] ipv,
               const int64_t[::1] first, const int64_t[::1] last, const int64_t[::1] rows):
    """pipeline.wireshark_filter per row."""
    _numpy()
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


def texts(const uint8_t[::1] text, const int64_t[::1] off, const int64_t[::1] which):
    """Text number which[i] of the arena, per i (UTF-8 -> str)."""
    _numpy()
    cdef Py_ssize_t i, k
    cdef const char* base = <const char*>&text[0] if text.shape[0] else <const char*>""
    out = np.empty(which.shape[0], dtype=object)
    for i in range(which.shape[0]):
        k = which[i]
        out[i] = PyUnicode_DecodeUTF8(base + off[k], off[k + 1] - off[k], NULL)
    return out


def anomalies(const uint8_t[::1] text, const int64_t[::1] off, const int64_t[::1] first,
               const uint8_t[::1] n_anom, const int64_t[::1] rows, bint flat):
    _numpy()
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


def sees(const uint8_t[:, ::1] sees, const uint8_t[:, ::1] n_sees, const int64_t[::1] rows,
          int role, bint flat):
    _numpy()
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


def states(const int64_t[::1] fs, const int64_t[::1] off, const uint8_t[:, ::1] n_hist,
            const int64_t[::1] rows, int role, bint flat):
    """[[state, frame], ...] of one role: the row's client entries come first."""
    _numpy()
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


def ints(const int64_t[::1] values, const int64_t[::1] off, const int64_t[::1] rows,
          bint flat):
    _numpy()
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


def addresses(const uint8_t[:, ::1] addr, const uint8_t[::1] ipv, const int64_t[::1] rows):
    """The address of each row, as inet_ntop writes it."""
    _numpy()
    cdef Py_ssize_t i, r
    cdef char buf[48]
    out = np.empty(rows.shape[0], dtype=object)
    for i in range(rows.shape[0]):
        r = rows[i]
        addr_text(<const Addr*>&addr[r, 0], ipv[r], buf)
        out[i] = _ascii(buf, strlen(buf))
    return out
