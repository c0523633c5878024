# Records as columns (columns.pyx): each finished connection's fields appended to C arrays, handed
# out a batch at a time as numpy arrays (columns.Batch), from which the pandas tables, CSV and
# Parquet are built with no Python dict per connection.

from analyzer.core.conn cimport Conn
from analyzer.core.verdict cimport Verdict
from analyzer.core.zeekview cimport ZeekConn

ctypedef struct Vec:  # a growable array of bytes, read as items of one C type
    char* buf
    Py_ssize_t len  # bytes
    Py_ssize_t cap

cdef class Columns:
    cdef Vec v[32]  # one per field of FIELDS (columns.pyx), in that order
    cdef Py_ssize_t n
    cdef public str file
    cdef list tunnels  # (row, tunnel dict) of the few rows that came through a tunnel
    cdef int add(self, const Conn* c, const ZeekConn* z, const Verdict* v) except -1
