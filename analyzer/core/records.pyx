# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Records straight from the compiled connection: JSON Lines written in C, and the record as a
Python dict only where one is wanted (the API, the text view, CSV).

The fields, their order and their meaning are ``analyzer.pipeline.RECORD_FIELDS`` (the public
contract, documented there); the text is byte for byte what ``export.json_line(make_record(...))``
gives for the same connection: json.dumps' escaping with ensure_ascii off, floats as Python's
repr, ``round(x, 9)`` for the times and ``round(x, 6)`` for the duration.
"""

from cpython.mem cimport PyMem_Free
from libc.stdint cimport int64_t, uint8_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcpy, strlen

from analyzer.core.conn cimport Conn, Ep, hist_frame, hist_state
from analyzer.core.seg cimport Addr, Tunnel

from analyzer.core.seg import TUNNEL_KINDS
from analyzer.core.verdict cimport (
    CONF_LIKELY,
    Verdict,
    verdict_case_id,
    verdict_closer_name,
    verdict_errno_name,
    verdict_n_secondary,
    verdict_reason,
    verdict_secondary,
)
from analyzer.core.zeekview cimport ZeekConn, zeek_conn_state, zeek_history


cdef extern from "Python.h":
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    double PyOS_string_to_double(const char* s, char** endptr, object overflow) except? -1.0
    int Py_DTSF_ADD_DOT_0

cdef extern from "arpa/inet.h" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, int size)

cdef extern from "sys/socket.h" nogil:
    int AF_INET
    int AF_INET6


# ---------------------------------------------------------------- the catalog and state names
# Declared once in Python (analyzer.cases, analyzer.tcpstate); kept here as C strings.

from analyzer import cases as _cases
from analyzer.tcpstate import State as _State

cdef list _keep_alive = []  # the bytes behind the C strings below
cdef const char* CASE_TITLE[64]
cdef const char* CASE_ADVICE[64]
cdef bint CASE_ABNORMAL[64]
cdef const char* STATE_NAME[16]


cdef const char* _c_string(str text):
    b = text.encode()
    _keep_alive.append(b)
    return <const char*>(<bytes>b)


def _load_tables():
    cdef int i
    if len(_cases.CATALOG) > 64 or len(_State) > 16:
        raise ValueError("records.pyx: catalog or state table larger than its C arrays")
    for i, case in enumerate(_cases.CATALOG):
        if verdict_case_id(i) == NULL or verdict_case_id(i).decode() != case.id:
            raise ValueError(f"records.pyx: case {i} is not {case.id} in the classifier")
        CASE_TITLE[i] = _c_string(case.title)
        CASE_ADVICE[i] = _c_string(case.advice)
        CASE_ABNORMAL[i] = case.abnormal
    for i, st in enumerate(_State):
        STATE_NAME[i] = _c_string(st.value)


_load_tables()


# ---------------------------------------------------------------- a growable byte buffer (Out)

cdef int out_reserve(Out* o, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    if o.len + more <= o.cap:
        return 0
    cap = o.cap * 2 if o.cap else 1 << 16
    while cap < o.len + more:
        cap *= 2
    grown = <char*>realloc(o.buf, cap)
    if grown == NULL:
        raise MemoryError()
    o.buf = grown
    o.cap = cap
    return 0


cdef inline int put(Out* o, const char* s, Py_ssize_t n) except -1:
    out_reserve(o, n)
    memcpy(o.buf + o.len, s, n)
    o.len += n
    return 0


cdef inline int puts(Out* o, const char* s) except -1:
    return put(o, s, strlen(s))


cdef int itoa(int64_t v, char* out) noexcept nogil:
    """Decimal digits of v into out (24 bytes at least); returns the length (snprintf %lld's
    text, written out: printf's machinery was a tenth of the run time)."""
    cdef char tmp[24]
    cdef int n = 0, i
    cdef uint64_t u = <uint64_t>v
    if v < 0:
        u = <uint64_t>0 - u
    while True:
        tmp[n] = <char>(48 + u % 10)
        n += 1
        u //= 10
        if u == 0:
            break
    i = 0
    if v < 0:
        out[0] = b'-'
        i = 1
    while n:
        n -= 1
        out[i] = tmp[n]
        i += 1
    return i


cdef int put_int(Out* o, int64_t v) except -1:
    out_reserve(o, 24)
    o.len += itoa(v, o.buf + o.len)
    return 0


cdef int put_repr(Out* o, double x) except -1:
    """Python's repr(x), as json.dumps writes a float."""
    cdef char* s = PyOS_double_to_string(x, b'r', 0, Py_DTSF_ADD_DOT_0, NULL)
    try:
        puts(o, s)
    finally:
        PyMem_Free(s)
    return 0


cdef double py_round(double x, int ndigits) except? -1.0:
    """Python's round(x, ndigits): correctly rounded to ndigits decimals, read back."""
    cdef char* s
    cdef double r
    if x != x or x == 0.0 or x - x != 0.0:  # nan, zero, infinities: round() returns x
        return x
    s = PyOS_double_to_string(x, b'f', ndigits, 0, NULL)
    try:
        r = PyOS_string_to_double(s, NULL, None)
    finally:
        PyMem_Free(s)
    return r


cdef const char* HEX = b"0123456789abcdef"


cdef int put_str(Out* o, const char* s, Py_ssize_t n) except -1:
    """A JSON string as json.dumps(ensure_ascii=False) writes it (UTF-8 passes as it is)."""
    cdef Py_ssize_t i
    cdef unsigned char ch
    out_reserve(o, 2 + 6 * n)
    o.buf[o.len] = b'"'
    o.len += 1
    for i in range(n):
        ch = <unsigned char>s[i]
        if ch == b'"' or ch == b'\\':
            o.buf[o.len] = b'\\'
            o.buf[o.len + 1] = ch
            o.len += 2
        elif ch >= 0x20:
            o.buf[o.len] = ch
            o.len += 1
        elif ch == b'\n':
            memcpy(o.buf + o.len, b"\\n", 2)
            o.len += 2
        elif ch == b'\r':
            memcpy(o.buf + o.len, b"\\r", 2)
            o.len += 2
        elif ch == b'\t':
            memcpy(o.buf + o.len, b"\\t", 2)
            o.len += 2
        elif ch == 8:
            memcpy(o.buf + o.len, b"\\b", 2)
            o.len += 2
        elif ch == 12:
            memcpy(o.buf + o.len, b"\\f", 2)
            o.len += 2
        else:
            memcpy(o.buf + o.len, b"\\u00", 4)
            o.buf[o.len + 4] = HEX[ch >> 4]
            o.buf[o.len + 5] = HEX[ch & 15]
            o.len += 6
    o.buf[o.len] = b'"'
    o.len += 1
    return 0


cdef inline int put_cstr(Out* o, const char* s) except -1:
    return put_str(o, s, strlen(s))


# ---------------------------------------------------------------- pieces of a record

cdef int addr_text(const Addr* a, int version, char* out) noexcept nogil:
    """The address as socket.inet_ntop writes it (out holds at least 48 bytes)."""
    if inet_ntop(AF_INET6 if version == 6 else AF_INET, a.b, out, 48) == NULL:
        out[0] = 0
    return 0


cdef int put_endpoint(Out* o, const Addr* a, int port, int version) except -1:
    """pipeline.endpoint_text as a JSON string: "[addr]:port" for IPv6, "addr:port" otherwise
    (nothing in it needs escaping)."""
    cdef char addr[48]
    addr_text(a, version, addr)
    puts(o, '"[' if version == 6 else '"')
    puts(o, addr)
    puts(o, "]:" if version == 6 else ":")
    put_int(o, port)
    puts(o, '"')
    return 0


cdef int put_states(Out* o, const Ep* ep) except -1:
    """[[state, frame], ...]"""
    cdef int i
    puts(o, "[")
    for i in range(ep.n_hist):
        if i:
            puts(o, ", ")
        puts(o, "[")
        put_cstr(o, STATE_NAME[hist_state(ep, i)])
        puts(o, ", ")
        put_int(o, hist_frame(ep, i))
        puts(o, "]")
    puts(o, "]")
    return 0


cdef int put_sees(Out* o, const Verdict* v, int role) except -1:
    cdef int i
    puts(o, "[")
    for i in range(v.n_sees[role]):
        if i:
            puts(o, ", ")
        put_cstr(o, verdict_errno_name(v.sees[role][i]))
    puts(o, "]")
    return 0


cdef int put_text(Out* o, const Verdict* v, const Conn* c, int which) except -1:
    """The reason (which < 0) or secondary line `which`, escaped."""
    cdef char small[512]
    cdef char* big
    cdef Py_ssize_t n
    if which < 0:
        n = verdict_reason(v, c, small, 512)
    else:
        n = verdict_secondary(v, c, which, small, 512)
    if n < 512:
        return put_str(o, small, n)
    big = <char*>realloc(NULL, n + 1)
    if big == NULL:
        raise MemoryError()
    try:
        if which < 0:
            verdict_reason(v, c, big, n + 1)
        else:
            verdict_secondary(v, c, which, big, n + 1)
        put_str(o, big, n)
    finally:
        free(big)
    return 0


cdef int put_wireshark(Out* o, const Conn* c) except -1:
    """pipeline.wireshark_filter as a JSON string (nothing in it needs escaping)."""
    cdef char a[48]
    cdef char b[48]
    cdef const char* ip = "ipv6" if c.ip_version == 6 else "ip"
    addr_text(&c.client_addr, c.ip_version, a)
    addr_text(&c.server_addr, c.ip_version, b)
    puts(o, '"')
    puts(o, ip)
    puts(o, ".addr==")
    puts(o, a)
    if not (strlen(a) == strlen(b) and memcmp_eq(a, b)):
        puts(o, " && ")
        puts(o, ip)
        puts(o, ".addr==")
        puts(o, b)
    puts(o, " && tcp.port==")
    put_int(o, c.client_port)
    puts(o, " && tcp.port==")
    put_int(o, c.server_port)
    puts(o, " && frame.number>=")
    put_int(o, c.first_frame)
    puts(o, " && frame.number<=")
    put_int(o, c.last_frame)
    puts(o, '"')
    return 0


cdef inline bint memcmp_eq(const char* a, const char* b) noexcept nogil:
    cdef Py_ssize_t i = 0
    while a[i] and a[i] == b[i]:
        i += 1
    return a[i] == b[i]


# ---------------------------------------------------------------- the record

cdef int record_json(Out* o, const char* file_json, Py_ssize_t file_len, const Conn* c,
                     const ZeekConn* z, const Verdict* v) except -1:
    """One JSON line (with its newline): export.json_line(make_record(...))."""
    cdef int i, n
    cdef double start = py_round(c.start, 9), end = py_round(c.end, 9)
    cdef const char* closer = verdict_closer_name(v.closer)
    puts(o, '{"file": ')
    put(o, file_json, file_len)
    puts(o, ', "conn": ')
    put_int(o, c.conn_id)
    puts(o, ', "client": ')
    put_endpoint(o, &c.client_addr, c.client_port, c.ip_version)
    puts(o, ', "server": ')
    put_endpoint(o, &c.server_addr, c.server_port, c.ip_version)
    puts(o, ', "first_frame": ')
    put_int(o, c.first_frame)
    puts(o, ', "last_frame": ')
    put_int(o, c.last_frame)
    puts(o, ', "start": ')
    put_repr(o, start)
    puts(o, ', "end": ')
    put_repr(o, end)
    puts(o, ', "packets": ')
    put_int(o, c.packets - c.duplicates)
    puts(o, ', "bytes_client": ')
    put_int(o, c.d[0].bytes)
    puts(o, ', "bytes_server": ')
    put_int(o, c.d[1].bytes)
    puts(o, ', "case": ')
    put_cstr(o, verdict_case_id(v.case))
    puts(o, ', "closer": ')
    if closer == NULL:
        puts(o, "null")
    else:
        put_cstr(o, closer)
    puts(o, ', "client_sees": ')
    put_sees(o, v, 0)
    puts(o, ', "server_sees": ')
    put_sees(o, v, 1)
    puts(o, ', "client_states": ')
    put_states(o, &c.ep[0])
    puts(o, ', "server_states": ')
    put_states(o, &c.ep[1])
    puts(o, ', "evidence": [')
    for i in range(v.n_evidence):
        if i:
            puts(o, ", ")
        put_int(o, v.evidence[i])
    puts(o, '], "wireshark": ')
    put_wireshark(o, c)
    puts(o, ', "zeek_state": ')
    put_py_str(o, zeek_conn_state(z))
    puts(o, ', "zeek_history": ')
    put_py_str(o, zeek_history(z))
    puts(o, ', "title": ')
    put_cstr(o, CASE_TITLE[v.case])
    puts(o, ', "abnormal": ')
    puts(o, "true" if CASE_ABNORMAL[v.case] else "false")
    puts(o, ', "confidence": ')
    puts(o, '"likely"' if v.confidence == CONF_LIKELY else '"certain"')
    puts(o, ', "rival": ')
    if v.rival < 0:
        puts(o, "null")
    else:
        put_cstr(o, verdict_case_id(v.rival))
    puts(o, ', "reason": ')
    put_text(o, v, c, -1)
    puts(o, ', "advice": ')
    put_cstr(o, CASE_ADVICE[v.case])
    puts(o, ', "anomalies": [')
    n = verdict_n_secondary(v, c)
    for i in range(n):
        if i:
            puts(o, ", ")
        put_text(o, v, c, i)
    puts(o, '], "ip_version": ')
    put_int(o, c.ip_version)
    puts(o, ', "duration": ')
    put_repr(o, py_round(c.end - c.start, 6))
    puts(o, ', "tunnel": ')
    put_tunnel(o, c)
    puts(o, "}\n")
    return 0


cdef const char* TUNNEL_NAME[16]
for _i, _name in enumerate(TUNNEL_KINDS[1:16], 1):
    TUNNEL_NAME[_i] = _c_string(_name)


cdef int put_tunnel(Out* o, const Conn* c) except -1:
    """pipeline.RECORD_FIELDS["tunnel"]: null, or the kind and the outer endpoints."""
    cdef const Tunnel* t = c.more.tunnel if c.more != NULL else NULL
    cdef char a[48]
    if t == NULL or t.kind == 0 or t.kind >= 16:
        return puts(o, "null")
    puts(o, '{"kind": "')
    puts(o, TUNNEL_NAME[t.kind])
    puts(o, '", "outer_client": ')
    if t.outer_sport or t.outer_dport:
        put_endpoint(o, &t.outer_src, t.outer_sport, t.outer_version)
        puts(o, ', "outer_server": ')
        put_endpoint(o, &t.outer_dst, t.outer_dport, t.outer_version)
    else:  # IP-in-IP and GRE over IP: addresses only
        addr_text(&t.outer_src, t.outer_version, a)
        put_cstr(o, a)
        puts(o, ', "outer_server": ')
        addr_text(&t.outer_dst, t.outer_version, a)
        put_cstr(o, a)
    puts(o, ', "depth": ')
    put_int(o, t.depth)
    return puts(o, "}")


cdef int put_py_str(Out* o, str text) except -1:
    b = text.encode()
    return put_str(o, <const char*>(<bytes>b), len(b))


cdef class JsonLines:
    """JSON Lines of finished connections, accumulated until taken."""

    def __cinit__(self):
        self.out.buf = NULL
        self.out.len = 0
        self.out.cap = 0

    def __init__(self, str file):
        self.set_file(file)

    def __dealloc__(self):
        free(self.out.buf)

    def set_file(self, str file):
        import json

        # (a file name that is not UTF-8 keeps its bytes, as the name's own surrogates say)
        self.file_json = json.dumps(file, ensure_ascii=False).encode("utf-8", "surrogateescape")

    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1:
        return record_json(&self.out, <const char*>self.file_json, len(self.file_json), c, z, v)

    def take(self):
        """The lines so far, as bytes (UTF-8); the buffer starts again."""
        data = (<char*>self.out.buf)[:self.out.len] if self.out.len else b""
        self.out.len = 0
        return data

    def __len__(self):
        return self.out.len


def round_like_python(double x, int ndigits):
    """py_round, for the tests (it must equal round(x, ndigits))."""
    return py_round(x, ndigits)
