# Zeek's view of one connection (conn_state and history) as C-level data. Semantics:
# analyzer/zeek.py, exactly (ZeekView and starts_new_connection).
#
# Contract with observer.pyx: the functions below keep their names and meanings; the struct's
# fields are zeekview.pyx's own.

from libc.stdint cimport uint8_t

from analyzer.core.seg cimport Seg

cdef enum:
    ZEEK_BARE = 1  # zeek -b: the bare-mode likely-server-port set
    ZEEK_IGNORE_CHECKSUMS = 2  # zeek -C: bad checksums are not reported and the packets count

ctypedef struct ZeekConn:
    uint8_t options  # ZEEK_* bits
    void* impl  # placeholder: zeekview.pyx replaces it with its fields

cdef void zeek_init(ZeekConn* z, uint8_t options) noexcept nogil
cdef void zeek_free(ZeekConn* z) noexcept nogil
# ZeekView.observe (ICMP errors are ignored, as there). 0, or -1 when memory ran out.
cdef int zeek_observe(ZeekConn* z, const Seg* s) noexcept nogil
# starts_new_connection(view, seg, last_ts)
cdef bint zeek_starts_new(const ZeekConn* z, const Seg* s, double last_ts) noexcept nogil
# ZeekView.conn_state and .history, as str
cdef object zeek_conn_state(const ZeekConn* z)
cdef object zeek_history(const ZeekConn* z)
