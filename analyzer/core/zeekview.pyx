# cython: language_level=3
"""Placeholder: Zeek's view of one connection (being written)."""

cdef void zeek_init(ZeekConn* z, uint8_t options) noexcept nogil:
    z.options = options
cdef void zeek_free(ZeekConn* z) noexcept nogil:
    pass
cdef int zeek_observe(ZeekConn* z, const Seg* s) noexcept nogil:
    return 0
cdef bint zeek_starts_new(const ZeekConn* z, const Seg* s, double last_ts) noexcept nogil:
    return False
cdef object zeek_conn_state(const ZeekConn* z):
    return "OTH"
cdef object zeek_history(const ZeekConn* z):
    return ""
