# One connection's endpoints and facts as C-level data: both endpoints' TCP state machines
# (the integer table compiled from analyzer.tcpstate.TRANSITIONS at import) and the
# per-direction facts the classifier reads. Semantics: analyzer/connection.py, exactly.
#
# Contract with observer.pyx (the tracker): the fields up to `duplicates` and the functions
# below keep their names and meanings; everything else in the struct is conn.pyx's own.

from libc.stdint cimport int64_t, uint8_t, uint16_t

from analyzer.core.seg cimport Addr, Seg

ctypedef struct Conn:
    int64_t conn_id
    Addr client_addr  # the side that sent the first SYN (or the tracker's guess)
    Addr server_addr
    uint16_t client_port
    uint16_t server_port
    uint8_t ip_version
    int64_t first_frame
    int64_t last_frame
    double start
    double end
    int64_t packets  # capture duplicates included (as Connection.packets)
    int64_t duplicates
    # ---- conn.pyx's own state below (endpoints, facts, ICMP, anomalies, ...)
    void* impl  # conn.pyx's private data (placeholder: conn.pyx may replace it with fields)

# Set up `c` for the first segment `s` (not yet observed) with the given roles.
cdef int conn_init(Conn* c, int64_t conn_id, const Seg* s, const Addr* client_addr,
                   uint16_t client_port, const Addr* server_addr,
                   uint16_t server_port) noexcept nogil
# Release what conn_init and the observe calls allocated.
cdef void conn_free(Conn* c) noexcept nogil
# Connection.observe / observe_icmp. Return 0, or -1 when memory ran out.
cdef int conn_observe(Conn* c, const Seg* s) noexcept nogil
cdef int conn_observe_icmp(Conn* c, const Seg* s) noexcept nogil
# Connection.ended / any_closed.
cdef bint conn_ended(const Conn* c) noexcept nogil
cdef bint conn_any_closed(const Conn* c) noexcept nogil
# Connection.role_of(seg) == "client"
cdef bint conn_from_client(const Conn* c, const Seg* s) noexcept nogil
# The tracker's last test in Tracker._starts_new: a SYN from the client with another ISN while
# the server has sent nothing (a new attempt on the same ports). `s` is a SYN without ACK/RST.
cdef bint conn_new_attempt(const Conn* c, const Seg* s) noexcept nogil
# A Python analyzer.connection.Connection equal, attribute for attribute, to what the Python
# observer would hold after the same segments (the classifier reads it; zeek is left None).
cdef object conn_export(const Conn* c)
