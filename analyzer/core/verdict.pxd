# The classifier over the compiled connection (conn.pxd's Conn), with no Python object per
# connection. A Verdict holds indices and numbers; its texts (reason, secondary lines) are
# formatted on demand from it and the Conn it came from, so the Conn must outlive the Verdict's
# formatting (the rules only read it, except the give_up classify_conn itself applies).
#
# Numbering (filled at import from the Python declarations, never written twice):
# - case: index in analyzer.cases.CATALOG (CASE_IDS in Python, verdict_case_id in C);
# - errno: index in ERRNO_NAMES (the ERR_* below; the import checks that classify.py's tables
#   name no other);
# - role: 0 client, 1 server.

from libc.stdint cimport int8_t, int64_t, uint8_t, uint32_t

from analyzer.core.conn cimport Conn

# errno codes (what an application saw); ERRNO_NAMES[i] is the text
cdef enum:
    ERR_EOF = 0
    ERR_EPIPE = 1
    ERR_ECONNRESET = 2
    ERR_ECONNREFUSED = 3
    ERR_ETIMEDOUT = 4
    ERR_EHOSTUNREACH = 5
    ERR_ENETUNREACH = 6
    ERR_EACCES = 7
    ERR_ENOPROTOOPT = 8
    ERR_ENOTCONN = 9
    N_ERRNO = 10

# Verdict.closer
cdef enum:
    CLOSER_NONE = 0
    CLOSER_CLIENT = 1
    CLOSER_SERVER = 2
    CLOSER_BOTH = 3

# Verdict.confidence
cdef enum:
    CONF_CERTAIN = 0
    CONF_LIKELY = 1

cdef enum:
    V_SEES_MAX = 2  # errnos per side: no rule gives more than two (EOF, EPIPE)
    V_EVIDENCE_MAX = 8  # frames: the rules give at most 6 (ladder[:6], syn_frames[:6])
    V_MENTIONS_MAX = 6  # "also <case>": one per WORTH_A_MENTION case (the import checks)
    V_ANOM_SHOWN = 10  # classify shows conn.anomalies[:10]

# A reason text: template RS_* (verdict.pyx) and its arguments; what it names of the Conn (a
# RST's TTL against the sender's TTL set, an ICMP error) is read from the Conn when formatted.
ctypedef struct Reason:
    int64_t n0  # first number (a frame or a count)
    int64_t n1  # second number
    uint8_t tmpl
    uint8_t role  # the role the text is about
    uint8_t bits  # template switches (RB_* in verdict.pyx)
    uint8_t idx  # an index or small number the template names (ICMP error, TTL)

ctypedef struct Mention:  # "also <case>: <reason>"
    Reason reason
    int8_t case

ctypedef struct Verdict:
    int64_t evidence[V_EVIDENCE_MAX]
    Reason reason
    Mention mention[V_MENTIONS_MAX]  # in rule order
    uint32_t retrans[2]  # the per-role notes of `secondary`, as the classifier saw them
    uint32_t zero_windows[2]
    int8_t case  # CATALOG index
    int8_t rival  # CATALOG index, or -1
    uint8_t closer  # CLOSER_*
    uint8_t confidence  # CONF_*
    uint8_t sees[2][V_SEES_MAX]  # ERR_* per role: client_sees, server_sees
    uint8_t n_sees[2]
    uint8_t n_evidence
    uint8_t n_mention
    uint8_t n_anom  # anomalies shown (min(len(conn.anomalies), 10), after the give_up)
    uint8_t gave_up  # bit per role: classify applied GIVE_UP to that endpoint

# classify_conn's context (what other connections showed), as bits: CTX_ANSWERED, the server
# answered a SYN in this capture (classify's listener_seen); CTX_BURST, this connection's
# server RST was one of a burst of listener resets from its endpoint, of CTX_BURST_SHIFT'ed
# size (the observer's count, at most 65535).
cdef enum:
    CTX_ANSWERED = 1
    CTX_BURST = 2
    CTX_BURST_SHIFT = 8

# The verdict of `c` in `context` (CTX_* bits): fills `v` and closes the timeline of a side
# whose timers gave up (GIVE_UP at its last segment). Returns 0, or -1 when memory ran out (the give_up's timeline entry or
# anomaly could not be stored; `v` is complete all the same).
cdef int classify_conn(Conn* c, int context, Verdict* v) noexcept nogil

# Texts, UTF-8, as the Python Verdict holds them. Like snprintf: writes at most cap - 1 bytes
# and a NUL (when cap > 0) and returns the length of the whole text, so a return >= cap means
# it was cut (call again with a larger buffer). `c` is the Conn `v` was classified from.
cdef Py_ssize_t verdict_reason(const Verdict* v, const Conn* c, char* out,
                               Py_ssize_t cap) noexcept nogil
cdef int verdict_n_secondary(const Verdict* v, const Conn* c) noexcept nogil
cdef Py_ssize_t verdict_secondary(const Verdict* v, const Conn* c, int i, char* out,
                                  Py_ssize_t cap) noexcept nogil
# Names: NULL for an index out of range.
cdef const char* verdict_case_id(int case) noexcept nogil
cdef const char* verdict_errno_name(int err) noexcept nogil
cdef const char* verdict_closer_name(int closer) noexcept nogil  # NULL for CLOSER_NONE
# The verdict as an analyzer.classify.Verdict.
cdef object verdict_to_py(const Verdict* v, const Conn* c)
