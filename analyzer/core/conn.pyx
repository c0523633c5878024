# cython: language_level=3
"""Placeholder: the endpoints and facts of one connection (being written)."""

cdef int conn_init(Conn* c, int64_t conn_id, const Seg* s, const Addr* client_addr,
                   uint16_t client_port, const Addr* server_addr,
                   uint16_t server_port) noexcept nogil:
    return 0
cdef void conn_free(Conn* c) noexcept nogil:
    pass
cdef int conn_observe(Conn* c, const Seg* s) noexcept nogil:
    return 0
cdef int conn_observe_icmp(Conn* c, const Seg* s) noexcept nogil:
    return 0
cdef bint conn_ended(const Conn* c) noexcept nogil:
    return False
cdef bint conn_any_closed(const Conn* c) noexcept nogil:
    return False
cdef bint conn_from_client(const Conn* c, const Seg* s) noexcept nogil:
    return True
cdef bint conn_new_attempt(const Conn* c, const Seg* s) noexcept nogil:
    return False
cdef object conn_export(const Conn* c):
    return None
