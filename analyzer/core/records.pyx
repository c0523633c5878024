# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Records straight from the compiled connection: JSON Lines written in C, and the record as a
Python dict only where one is wanted (the API, the text view, CSV).

The fields, their order and their meaning are ``analyzer.pipeline.RECORD_FIELDS`` (the public
contract, documented there); the text is byte for byte what ``export.json_line(make_record(...))``
gives for the same connection: json.dumps' escaping with ensure_ascii off, floats as Python's
repr, ``round(x, 9)`` for the times and ``round(x, 6)`` for the duration.
"""

from cpython.bytes cimport PyBytes_AS_STRING, PyBytes_FromStringAndSize
from cpython.mem cimport PyMem_Free
from cpython.object cimport PyObject
from cpython.ref cimport Py_DECREF, Py_INCREF, Py_XDECREF
from cpython.unicode cimport PyUnicode_AsUTF8AndSize
from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t
from libc.stdlib cimport free, realloc
from libc.string cimport memcmp, memcpy, memset, strlen

from analyzer.core.conn cimport Conn, Ep, conn_dir, hist_frame, hist_state
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
    ctypedef struct PyVarObject:
        pass
    void Py_SET_SIZE(PyVarObject* o, Py_ssize_t size)
    int _PyBytes_Resize(PyObject** b, Py_ssize_t size) except -1
    char* PyOS_double_to_string(double val, char format_code, int precision, int flags,
                                int* ptype) except NULL
    double PyOS_string_to_double(const char* s, char** endptr, object overflow) except? -1.0
    int Py_DTSF_ADD_DOT_0



# ---------------------------------------------------------------- the catalog and state names
# Declared once in Python (analyzer.cases, analyzer.tcpstate); kept here as JSON strings, escaped
# once by put_str when the module loads (_load_tables, at its end), not once a record.

from analyzer import cases as _cases
from analyzer.tcpstate import State as _State

ctypedef struct Json:
    const char* s  # quotes and escapes included
    Py_ssize_t n

cdef list _keep_alive = []  # the bytes behind the JSON strings below
cdef Json CASE_ID[64]
cdef Json CASE_TITLE[64]
cdef Json CASE_ADVICE[64]
cdef bint CASE_ABNORMAL[64]
cdef Json STATE_NAME[16]
cdef Py_ssize_t STATE_NAME_MAX = 0  # the longest, as JSON


# ---------------------------------------------------------------- a growable byte buffer (Out)

cdef inline int out_reserve(Out* o, Py_ssize_t more) except -1:
    if o.len + more <= o.cap:
        return 0
    return out_grow(o, more)


cdef int out_grow(Out* o, Py_ssize_t more) except -1:
    cdef Py_ssize_t cap
    cdef char* grown
    cap = o.cap * 2 if o.cap else max(1 << 16, o.hint)
    while cap < o.len + more:
        cap *= 2
    if o.hint >= 0:  # JsonLines: a bytes object, so that take() hands it over without a copy
        if o.chunk == NULL:
            fresh = PyBytes_FromStringAndSize(NULL, cap)
            Py_INCREF(fresh)  # Out's own reference
            o.chunk = <PyObject*>fresh
        else:
            try:
                _PyBytes_Resize(&o.chunk, cap)  # (Out holds the only reference)
            except MemoryError:
                o.buf = NULL  # (the chunk is gone, its lines with it)
                o.len = o.cap = 0
                raise
        o.buf = PyBytes_AS_STRING(<object>o.chunk)
        o.cap = cap
        return 0
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


cdef const char* DIGIT_PAIRS = (  # "00" to "99"
    b"00010203040506070809101112131415161718192021222324"
    b"25262728293031323334353637383940414243444546474849"
    b"50515253545556575859606162636465666768697071727374"
    b"75767778798081828384858687888990919293949596979899")


cdef int itoa(int64_t v, char* out) noexcept nogil:
    """Decimal digits of v into out (24 bytes at least); returns the length (snprintf %lld's
    text, written out two digits at a time: printf's machinery was a tenth of the run time)."""
    cdef char tmp[24]
    cdef int start = 24, n = 0
    cdef uint64_t u = <uint64_t>v, pair
    if v < 0:
        u = <uint64_t>0 - u
        out[0] = b'-'
        n = 1
    while u >= 100:
        pair = u % 100
        u //= 100
        start -= 2
        memcpy(tmp + start, DIGIT_PAIRS + 2 * pair, 2)
    if u >= 10:
        start -= 2
        memcpy(tmp + start, DIGIT_PAIRS + 2 * u, 2)
    else:
        start -= 1
        tmp[start] = <char>(48 + u)
    memcpy(out + n, tmp + start, 24 - start)
    return n + 24 - start


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


# ---------------------------------------------------------------- floats without dtoa
# Python's repr and round go through dtoa's big-number arithmetic: three times a record, that was
# an eighth of the short mix's time. Most times and durations have a short decimal form that
# exact integer arithmetic finds and IEEE division proves; anything else still goes to dtoa.
#
# x = m * 2**-sh exactly (a positive normal double, 2**52 <= m < 2**53). The k-decimal below x is
# floor(m * 10**k / 2**sh), in 128-bit integers (m * 10**9 < 2**83). A decimal D / 10**k with
# D < 2**53 and k <= 22 reads back as the IEEE quotient D / 10**k, rounded once, as strtod rounds
# (both operands are exact doubles): so `<double>D / 10**k == x` says exactly whether the text
# reads back as x. repr(x) is the shortest text that reads back as x (the closest to x among the
# shortest); for 1e-4 <= x < 1e16 it is written in positional notation, and since a double below
# 2**52 has an ulp under 1, "shortest" means the fewest decimals k. The texts that read back as x
# form an interval around x, so at each k one of the two k-decimals either side of x reads back
# if any does; that one is repr(x) when its outer neighbours do not (more than one: ask dtoa).

cdef extern from *:
    """
    #define RSTSCOPE_TWO_53 ((uint64_t)1 << 53)
    """
    # GCC and Clang's 128-bit integer (x86-64, arm64): m * 10**k exactly
    ctypedef unsigned long long wide_t "unsigned __int128"
    const uint64_t TWO_53 "RSTSCOPE_TWO_53"  # integers below it are exact doubles
cdef uint64_t POW10_INT[10]
cdef double POW10_DBL[10]
POW10_INT[0] = 1
POW10_DBL[0] = 1.0
for _k in range(1, 10):
    POW10_INT[_k] = POW10_INT[_k - 1] * 10
    POW10_DBL[_k] = <double>POW10_INT[_k]


cdef inline int split_double(double x, uint64_t* m) noexcept nogil:
    """x = m * 2**-sh: returns sh, or 0 where x is not a positive normal double below 2**52
    whose binary point lies within 120 bits (then the caller asks dtoa)."""
    cdef uint64_t bits
    cdef int biased
    memcpy(&bits, &x, 8)
    biased = <int>(bits >> 52)  # the sign bit is above it: negative x gives biased > 2047
    if biased == 0 or biased >= 1075 or biased < 1075 - 120:
        return 0
    m[0] = (bits & ((<uint64_t>1 << 52) - 1)) | (<uint64_t>1 << 52)
    return 1075 - biased


cdef inline bint reads_back(uint64_t d, int k, double x) noexcept nogil:
    return d < TWO_53 and <double>d / POW10_DBL[k] == x


cdef int shortest_text(double x, int max_k, char* out) noexcept nogil:
    """repr(x) into out (48 bytes) if it has at most max_k (<= 9) decimals and x >= 1e-4;
    returns its length, or 0 where dtoa must answer."""
    cdef uint64_t m, below, above, d, whole, frac
    cdef wide_t scaled
    cdef int sh = split_double(x, &m), k, n, j, found
    if sh == 0:
        return 0
    for k in range(max_k + 1):
        scaled = <wide_t>m * POW10_INT[k]
        if (scaled >> sh) + 2 >= TWO_53:
            return 0  # the decimals no longer read back as one rounding
        below = <uint64_t>(scaled >> sh)
        above = below + ((scaled & (((<wide_t>1) << sh) - 1)) != 0)
        found = reads_back(below, k, x) + (above != below and reads_back(above, k, x))
        if found == 0:
            continue
        if found > 1 or (below and reads_back(below - 1, k, x)) or reads_back(above + 1, k, x):
            return 0  # several texts of k decimals read back: dtoa picks the closest
        d = below if reads_back(below, k, x) else above
        if k >= 4 and d < POW10_INT[k - 4]:
            return 0  # below 1e-4: repr writes an exponent
        whole = d // POW10_INT[k]
        frac = d - whole * POW10_INT[k]
        n = itoa(<int64_t>whole, out)
        out[n] = b'.'
        n += 1
        if k == 0:
            out[n] = b'0'
            return n + 1
        for j in range(k - 1, -1, -1):
            out[n + j] = <char>(48 + frac % 10)
            frac //= 10
        return n + k
    return 0


cdef int put_time(Out* o, double x) except -1:
    """repr(round(x, 9)), as the record writes start and end. If some text of at most 9 decimals
    reads back as x (pcap's microseconds and nanoseconds since the epoch have one), the 9-decimal
    nearest x is no farther from x than it, so it reads back as x too: round(x, 9) == x (not at a
    power of two, where the interval of texts reading back as x is lopsided)."""
    cdef char text[48]
    cdef int n = 0
    cdef uint64_t bits
    memcpy(&bits, &x, 8)
    if bits & ((<uint64_t>1 << 52) - 1):
        n = shortest_text(x, 9, text)
    if n:
        return put(o, text, n)
    return put_repr(o, py_round(x, 9))


cdef int put_duration(Out* o, double x) except -1:
    """repr(round(x, 6)), as the record writes the duration. round: the integer nearest
    x * 10**6, ties to even (dtoa's rounding of the exact binary value), computed exactly; read
    back as D / 10**6 (one IEEE rounding, as strtod); that double's repr has at most 6 decimals."""
    cdef char text[48]
    cdef uint64_t m, d
    cdef wide_t scaled, rest, half
    cdef int sh = split_double(x, &m), n = 0
    cdef double r
    if sh == 0:
        return put_repr(o, py_round(x, 6))
    scaled = <wide_t>m * POW10_INT[6]
    if (scaled >> sh) + 1 >= TWO_53:
        return put_repr(o, py_round(x, 6))
    d = <uint64_t>(scaled >> sh)
    rest = scaled & (((<wide_t>1) << sh) - 1)
    half = (<wide_t>1) << (sh - 1)
    if rest > half or (rest == half and d & 1):
        d += 1
    r = <double>d / POW10_DBL[6]
    if d:
        n = shortest_text(r, 6, text)
    if n:
        return put(o, text, n)
    return put_repr(o, r)


def integer_text(int64_t v):
    """itoa's text, for the tests (it must equal str(v))."""
    cdef char out[24]
    return out[:itoa(v, out)].decode()


def time_text(double x):
    """put_time's text, for the tests (it must equal repr(round(x, 9)))."""
    cdef Out o
    memset(&o, 0, sizeof(Out))
    o.hint = -1  # malloc'd
    try:
        put_time(&o, x)
        return o.buf[:o.len].decode()
    finally:
        free(o.buf)


def duration_text(double x):
    """put_duration's text, for the tests (it must equal repr(round(x, 6)))."""
    cdef Out o
    memset(&o, 0, sizeof(Out))
    o.hint = -1  # malloc'd
    try:
        put_duration(&o, x)
        return o.buf[:o.len].decode()
    finally:
        free(o.buf)


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


cdef inline int put_json(Out* o, Json j) except -1:
    return put(o, j.s, j.n)


# ---------------------------------------------------------------- pieces of a record

cdef int ipv4_text(const uint8_t* b, char* out) noexcept nogil:
    """Dotted decimal, as inet_ntop writes it (glibc's goes through sprintf: about 3% of the
    short mix's time); returns the length, out holds at least 16 bytes."""
    cdef int i, n = 0, v
    for i in range(4):
        if i:
            out[n] = b'.'
            n += 1
        v = b[i]
        if v >= 100:
            out[n] = <char>(48 + v // 100)
            n += 1
        if v >= 10:
            out[n] = <char>(48 + v // 10 % 10)
            n += 1
        out[n] = <char>(48 + v % 10)
        n += 1
    out[n] = 0
    return n


cdef int ipv6_text(const uint8_t* b, char* out) noexcept nogil:
    """An IPv6 address as glibc's inet_ntop writes it: hex words without leading zeros, the
    first longest run of two or more zero words as "::", and the last 32 bits dotted where the
    address is IPv4-compatible (::a.b.c.d) or IPv4-mapped (::ffff:a.b.c.d)."""
    cdef uint32_t word[8]
    cdef int i, n = 0, best = -1, best_len = 0, run = -1, run_len = 0, shift, started
    for i in range(8):
        word[i] = (<uint32_t>b[2 * i] << 8) | b[2 * i + 1]
        if word[i] == 0:
            if run < 0:
                run = i
                run_len = 0
            run_len += 1
            if run_len > best_len:
                best = run
                best_len = run_len
        else:
            run = -1
    if best_len < 2:
        best = -1
    i = 0
    while i < 8:
        if best >= 0 and best <= i < best + best_len:
            if i == best:
                out[n] = b':'
                n += 1
            i += 1
            continue
        if i:
            out[n] = b':'
            n += 1
        if i == 6 and best == 0 and (best_len == 6 or (best_len == 5 and word[5] == 0xFFFF)):
            return n + ipv4_text(b + 12, out + n)
        started = 0
        for shift in range(12, -1, -4):
            if started or (word[i] >> shift) & 15 or shift == 0:
                out[n] = HEX[(word[i] >> shift) & 15]
                n += 1
                started = 1
        i += 1
    if best >= 0 and best + best_len == 8:
        out[n] = b':'
        n += 1
    out[n] = 0
    return n


cdef int addr_text(const Addr* a, int version, char* out) noexcept nogil:
    """The address as socket.inet_ntop writes it (out holds at least 48 bytes); its length."""
    if version == 6:
        return ipv6_text(a.b, out)
    return ipv4_text(a.b, out)


def address_text(bytes packed):
    """addr_text, for the tests (it must equal socket.inet_ntop)."""
    cdef Addr a
    cdef char out[48]
    cdef int n
    memset(a.b, 0, 16)
    memcpy(a.b, <const char*>packed, min(len(packed), 16))
    n = addr_text(&a, 6 if len(packed) == 16 else 4, out)
    return out[:n].decode()


cdef int put_endpoint(Out* o, const char* addr, Py_ssize_t addr_len, int port,
                      int version) except -1:
    """pipeline.endpoint_text as a JSON string: "[addr]:port" for IPv6, "addr:port" otherwise
    (nothing in it needs escaping)."""
    if version == 6:
        put(o, '"[', 2)
        put(o, addr, addr_len)
        put(o, "]:", 2)
    else:
        put(o, '"', 1)
        put(o, addr, addr_len)
        put(o, ":", 1)
    put_int(o, port)
    put(o, '"', 1)
    return 0


cdef inline void put_unchecked(Out* o, const char* s, Py_ssize_t n) noexcept nogil:
    memcpy(o.buf + o.len, s, n)
    o.len += n


cdef int put_states(Out* o, const Ep* ep) except -1:
    """[[state, frame], ...]: room for all of it reserved once (a name, a frame number's 24
    digits and 6 bytes of punctuation an entry)."""
    cdef int i
    cdef Json name
    out_reserve(o, 2 + <Py_ssize_t>ep.n_hist * (STATE_NAME_MAX + 24 + 6))
    put_unchecked(o, "[", 1)
    for i in range(ep.n_hist):
        if i:
            put_unchecked(o, ", [", 3)
        else:
            put_unchecked(o, "[", 1)
        name = STATE_NAME[hist_state(ep, i)]
        put_unchecked(o, name.s, name.n)
        put_unchecked(o, ", ", 2)
        o.len += itoa(hist_frame(ep, i), o.buf + o.len)
        put_unchecked(o, "]", 1)
    put_unchecked(o, "]", 1)
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


cdef int put_wireshark(Out* o, const Conn* c, const char* a, Py_ssize_t a_len, const char* b,
                       Py_ssize_t b_len) except -1:
    """pipeline.wireshark_filter as a JSON string (nothing in it needs escaping); a and b: the
    client's and server's address texts."""
    cdef const char* ip = "ipv6" if c.ip_version == 6 else "ip"
    puts(o, '"')
    puts(o, ip)
    puts(o, ".addr==")
    put(o, a, a_len)
    if not (a_len == b_len and memcmp(a, b, a_len) == 0):
        puts(o, " && ")
        puts(o, ip)
        puts(o, ".addr==")
        put(o, b, b_len)
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


# ---------------------------------------------------------------- the record

cdef int record_json(Out* o, const char* file_json, Py_ssize_t file_len, const Conn* c,
                     const ZeekConn* z, const Verdict* v) except -1:
    """One JSON line (with its newline): export.json_line(make_record(...))."""
    cdef int i, n
    cdef const char* closer = verdict_closer_name(v.closer)
    cdef char client[48]
    cdef char server[48]
    cdef Py_ssize_t client_len = addr_text(&c.client_addr, c.ip_version, client)
    cdef Py_ssize_t server_len = addr_text(&c.server_addr, c.ip_version, server)
    puts(o, '{"file": ')
    put(o, file_json, file_len)
    puts(o, ', "conn": ')
    put_int(o, c.conn_id)
    puts(o, ', "client": ')
    put_endpoint(o, client, client_len, c.client_port, c.ip_version)
    puts(o, ', "server": ')
    put_endpoint(o, server, server_len, c.server_port, c.ip_version)
    puts(o, ', "first_frame": ')
    put_int(o, c.first_frame)
    puts(o, ', "last_frame": ')
    put_int(o, c.last_frame)
    puts(o, ', "start": ')
    put_time(o, c.start)
    puts(o, ', "end": ')
    put_time(o, c.end)
    puts(o, ', "packets": ')
    put_int(o, c.packets)  # (capture duplicates were never counted)
    puts(o, ', "bytes_client": ')
    put_int(o, conn_dir(c, 0).bytes)
    puts(o, ', "bytes_server": ')
    put_int(o, conn_dir(c, 1).bytes)
    puts(o, ', "case": ')
    put_json(o, CASE_ID[v.case])
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
    put_wireshark(o, c, client, client_len, server, server_len)
    puts(o, ', "zeek_state": ')
    put_py_str(o, zeek_conn_state(z))
    puts(o, ', "zeek_history": ')
    put_py_str(o, zeek_history(z))
    puts(o, ', "title": ')
    put_json(o, CASE_TITLE[v.case])
    puts(o, ', "abnormal": ')
    puts(o, "true" if CASE_ABNORMAL[v.case] else "false")
    puts(o, ', "confidence": ')
    puts(o, '"likely"' if v.confidence == CONF_LIKELY else '"certain"')
    puts(o, ', "rival": ')
    if v.rival < 0:
        puts(o, "null")
    else:
        put_json(o, CASE_ID[v.rival])
    puts(o, ', "reason": ')
    put_text(o, v, c, -1)
    puts(o, ', "advice": ')
    put_json(o, CASE_ADVICE[v.case])
    puts(o, ', "anomalies": [')
    n = verdict_n_secondary(v, c)
    for i in range(n):
        if i:
            puts(o, ", ")
        put_text(o, v, c, i)
    puts(o, '], "ip_version": ')
    put_int(o, c.ip_version)
    puts(o, ', "duration": ')
    put_duration(o, c.end - c.start)
    puts(o, ', "tunnel": ')
    put_tunnel(o, c)
    puts(o, "}\n")
    return 0


cdef Json TUNNEL_NAME[16]  # seg.TUNNEL_KINDS as JSON strings (filled by _load_tables)


cdef int put_tunnel(Out* o, const Conn* c) except -1:
    """pipeline.RECORD_FIELDS["tunnel"]: null, or the kind and the outer endpoints."""
    cdef const Tunnel* t = c.more.tunnel if c.more != NULL else NULL
    cdef char a[48]
    cdef char b[48]
    cdef Py_ssize_t na, nb
    if t == NULL or t.kind == 0 or t.kind >= 16:
        return puts(o, "null")
    puts(o, '{"kind": ')
    put(o, TUNNEL_NAME[t.kind].s, TUNNEL_NAME[t.kind].n)
    puts(o, ', "outer_client": ')
    na = addr_text(&t.outer_src, t.outer_version, a)
    nb = addr_text(&t.outer_dst, t.outer_version, b)
    if t.outer_sport or t.outer_dport:
        put_endpoint(o, a, na, t.outer_sport, t.outer_version)
        puts(o, ', "outer_server": ')
        put_endpoint(o, b, nb, t.outer_dport, t.outer_version)
    else:  # IP-in-IP and GRE over IP: addresses only
        put_str(o, a, na)
        puts(o, ', "outer_server": ')
        put_str(o, b, nb)
    puts(o, ', "depth": ')
    put_int(o, t.depth)
    return puts(o, "}")


cdef int put_py_str(Out* o, str text) except -1:
    cdef Py_ssize_t n
    cdef const char* s = PyUnicode_AsUTF8AndSize(text, &n)  # kept by the str: no copy a record
    return put_str(o, s, n)


cdef class JsonLines:
    """JSON Lines of finished connections, accumulated until taken."""

    def __cinit__(self):
        memset(&self.out, 0, sizeof(Out))  # hint 0: written into bytes objects

    def __init__(self, str file):
        self.set_file(file)

    def __dealloc__(self):
        Py_XDECREF(self.out.chunk)

    def set_file(self, str file):
        import json

        # (a file name that is not UTF-8 keeps its bytes, as the name's own surrogates say)
        self.file_json = json.dumps(file, ensure_ascii=False).encode("utf-8", "surrogateescape")

    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1:
        return record_json(&self.out, <const char*>self.file_json, len(self.file_json), c, z, v)

    def take(self):
        """The lines so far, as bytes (UTF-8); the buffer starts again."""
        cdef object data
        if self.out.len == 0:
            return b""
        # The bytes object keeps its allocation (freed whole, by size-less PyObject_Free) and
        # says it holds len bytes: realloc'd smaller, the next chunk at `hint` would not fit in
        # its place, and glibc maps and unmaps each one (twice the page faults of a copy).
        Py_SET_SIZE(<PyVarObject*>self.out.chunk, self.out.len)
        self.out.buf[self.out.len] = 0  # bytes end with a NUL (the allocation has cap + 1)
        data = <object>self.out.chunk
        Py_DECREF(data)  # the reference Out held is now data's
        self.out.hint = self.out.cap
        self.out.chunk = NULL
        self.out.buf = NULL
        self.out.len = self.out.cap = 0
        return data

    def __len__(self):
        return self.out.len


def round_like_python(double x, int ndigits):
    """py_round, for the tests (it must equal round(x, ndigits))."""
    return py_round(x, ndigits)


# ---------------------------------------------------------------- the tables, escaped once

cdef Json _json_text(str text) except *:
    cdef Out o
    cdef Json j
    b = text.encode()
    memset(&o, 0, sizeof(Out))
    o.hint = -1  # malloc'd
    try:
        put_str(&o, <const char*>(<bytes>b), len(b))
        kept = o.buf[:o.len]
    finally:
        free(o.buf)
    _keep_alive.append(kept)
    j.s = <const char*>(<bytes>kept)
    j.n = len(kept)
    return j


def _load_tables():
    global STATE_NAME_MAX
    cdef int i
    if len(_cases.CATALOG) > 64 or len(_State) > 16:
        raise ValueError("records.pyx: catalog or state table larger than its C arrays")
    for i, case in enumerate(_cases.CATALOG):
        if verdict_case_id(i) == NULL or verdict_case_id(i).decode() != case.id:
            raise ValueError(f"records.pyx: case {i} is not {case.id} in the classifier")
        CASE_ID[i] = _json_text(case.id)
        CASE_TITLE[i] = _json_text(case.title)
        CASE_ADVICE[i] = _json_text(case.advice)
        CASE_ABNORMAL[i] = case.abnormal
    for i, st in enumerate(_State):
        STATE_NAME[i] = _json_text(st.value)
        STATE_NAME_MAX = max(STATE_NAME_MAX, STATE_NAME[i].n)
    for i, kind in enumerate(TUNNEL_KINDS[1:16], 1):
        TUNNEL_NAME[i] = _json_text(kind)


_load_tables()
