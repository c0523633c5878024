# Records straight from the compiled connection (records.pyx): JSON Lines written in C.

from analyzer.core.conn cimport Conn
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
