# Records straight from the compiled connection (records.pyx): JSON Lines written in C.

from analyzer.core.conn cimport Conn
from analyzer.core.seg cimport Addr
from analyzer.core.verdict cimport Verdict
from analyzer.core.zeekview cimport ZeekConn

from cpython.object cimport PyObject

ctypedef struct Out:
    char* buf  # malloc'd, or (JsonLines) the bytes of `chunk`
    Py_ssize_t len
    Py_ssize_t cap
    PyObject* chunk  # JsonLines: the bytes object written into and handed over whole by take()
    Py_ssize_t hint  # JsonLines: the last chunk's capacity, the next one's first

cdef class JsonLines:
    cdef Out out
    cdef bytes file_json
    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1

# Shared with columns.pyx: Python's round(x, ndigits), and an address as inet_ntop writes it
# (out holds at least 48 bytes).
cdef double py_round(double x, int ndigits) except? -1.0
cdef int addr_text(const Addr* a, int version, char* out) noexcept nogil
