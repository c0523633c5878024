# Records straight from the compiled connection (records.pyx): JSON Lines written in C.

from analyzer.core.conn cimport Conn
from analyzer.core.verdict cimport Verdict
from analyzer.core.zeekview cimport ZeekConn

ctypedef struct Out:
    char* buf
    Py_ssize_t len
    Py_ssize_t cap

cdef class JsonLines:
    cdef Out out
    cdef bytes file_json
    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1
