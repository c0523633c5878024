# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""One connection's endpoints and facts over C-level data: both endpoints' state machines and
the facts the classifier reads, no Python object per segment; a finished one is exported as an
``analyzer.connection.Connection``.

The transition table, the state groups and the bounds are read from the Python modules at
import (``_build``): the Python declarations stay the only ones. States and events are numbered
in the order of the ``State`` and ``Event`` enums.

Bounds:
- every list of frames (SYNs, SYN/ACKs, ladder, keepalives, ICMP errors) keeps at most MAX_KEPT
  items; RSTs too, plus accepted ones beyond it (up to RST_ACCEPTED_KEPT accepted in all), so a
  storm of stray RSTs cannot crowd out the few that count;
- anomalies: the classifier shows the first ANOM_KEPT. Those are kept in full and the rest only
  counted; conn_export pads the list to its full length with placeholder Anomaly objects, so
  len() and [:ANOM_KEPT] are right;
- timelines: each keeps its last HIST_MAX entries (the oldest are
  dropped and counted). The state is held apart, so it is always right, and the two steps that
  look back (a crossed FIN, a forged RST retracted) only read the last entry. Every entry moves
  the endpoint along an edge of the table, which is acyclic, and the look-backs only remove
  entries, so a timeline is never longer than the table's longest path (_build computes it,
  and it is below HIST_MAX): the bound is never reached by segments.

Optional values (None when exported) are presence bits (Dir.has, RstRec.bits); sequence
numbers are uint32_t (RFC 9293 §3.4: comparisons modulo 2**32). DirFacts.last_key_ts is not
stored: it is last_ts, set at every segment that is not a duplicate.

``ConnProbe`` drives one Conn from Python Segments (tests).
"""

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t
from libc.stdlib cimport calloc, free, malloc, realloc
from libc.string cimport memmove, memset

from analyzer.core.seg cimport (
    F_ACK,
    F_FIN,
    F_RST,
    F_SYN,
    ICMP_NONE,
    TUN_NONE,
    Addr,
    Seg,
    addr_eq,
    addr_parse,
    addr_text,
    seg_from_py,
)

import dataclasses

from analyzer import connection as _pyconn
from analyzer import tcpstate as _pystate
from analyzer.connection import Connection, DirFacts, IcmpFact, RstFact
from analyzer.core.seg import TUNNEL_KINDS
from analyzer.segment import ICMP_KINDS
from analyzer.tcpstate import Anomaly, Endpoint

cdef enum:
    MAX_STATES = 16  # a state index fits the 4 bits Hist.fs gives it
    MAX_EVENTS = 16
    HIST_MAX = 16  # timeline entries kept per endpoint (see the module docstring)
    RST_ACCEPTED_KEPT = 8  # connection.py: accepted RSTs kept past MAX_KEPT, at most this many
    PEND_COPY = 255  # Conn.pend: the pending RST is in pend_copy (its list did not keep it)
    LIST_MAX = 255  # n_* counters are uint8_t

# ------------------------------------------------------------------ tables, filled by _build

cdef uint8_t T_LEN[MAX_STATES][MAX_EVENTS]  # path length; 0: the pair is not in the table
cdef uint8_t T_PATH[MAX_STATES][MAX_EVENTS][2]
cdef uint32_t HARMLESS_EV  # event bits: missing from the table but not an anomaly
cdef uint32_t FINISHED_ST  # state bits of tcpstate.FINISHED
cdef uint32_t FIN_RECEIVED_ST
cdef uint32_t HANDSHAKE_ST  # connection._HANDSHAKE
cdef uint32_t UNSYNC_ST  # connection._UNSYNCHRONISED
cdef uint32_t NO_CHALLENGE_ST  # connection._NO_CHALLENGE
cdef int MAX_KEPT
cdef double DUPLICATE_WINDOW
# the states and events the code names, by their index
cdef uint8_t S_MIDSTREAM, S_SYN_SENT, S_SYN_RCVD, S_CLOSE_WAIT, S_CLOSED
cdef uint8_t S_ESTABLISHED
cdef uint8_t E_SEND_SYN, E_SEND_SYNACK, E_SEND_ACK, E_SEND_FIN, E_SEND_RST
cdef uint8_t E_RECV_SYN, E_RECV_SYNACK, E_RECV_ACK_OF_SYN, E_RECV_ACK, E_RECV_ACK_OF_FIN
cdef uint8_t E_RECV_FIN, E_RECV_RST

_STATES = tuple(_pystate.State)
_EVENTS = tuple(_pystate.Event)
_STATE_NAMES = tuple(s.value for s in _STATES)
_EVENT_NAMES = tuple(e.value for e in _EVENTS)
_ROLES = ("client", "server")
_OWN_RST_EVENT = "send after its own RST"
_NOT_KEPT = "(anomaly past the first 10: not kept)"
LONGEST_PATH = 0  # entries of the longest timeline the table allows (set by _build)

# the classes' field order as conn_export passes them (positionally): checked at import
_DIRFACTS_FIELDS = (
    "isn", "syn_frames", "syn_times", "synack_frames", "synack_times", "next_seq", "max_ack",
    "ack_frame", "fin_frame", "fin_seq", "packets", "bytes", "first_data_frame",
    "last_data_frame", "last_data_ts", "last_frame", "last_ts", "retransmissions", "ladder",
    "ladder_seq", "keepalives", "zero_windows", "ttls", "options_seen", "rsts",
    "data_after_peer_fin", "sent_after_own_rst", "last_key", "last_key_ts")
_RSTFACT_FIELDS = (
    "frame", "ts", "sender", "seq", "ack", "has_ack", "has_options", "ttl", "ip_id", "tsval",
    "sender_state", "receiver_state", "accepted", "answers_syn", "challenge_frame", "forged")
_ICMPFACT_FIELDS = ("frame", "ts", "kind", "icmp_type", "icmp_code", "about", "sender")
_ANOMALY_FIELDS = ("frame", "ts", "role", "state", "event", "note")


def _state_bits(states) -> int:
    bits = 0
    for s in states:
        bits |= 1 << _STATES.index(s)
    return bits


def _longest_path(edges) -> int:
    """Entries of the longest timeline: the longest walk from UNKNOWN along state changes
    (raises if the table has a cycle, which would leave timelines unbounded)."""
    memo, busy = {}, set()

    def walk(s):
        if s in memo:
            return memo[s]
        if s in busy:
            raise ValueError(f"the transition table has a cycle through {s}")
        busy.add(s)
        best = 0
        for path in edges.get(s, ()):
            steps = [p for p in path if p != s]
            if steps:
                best = max(best, len(steps) + walk(steps[len(steps) - 1]))
        busy.discard(s)
        memo[s] = best
        return best

    return walk(_pystate.State.UNKNOWN)


def _build():
    """Compile the Python declarations into the C tables above."""
    global HARMLESS_EV, FINISHED_ST, FIN_RECEIVED_ST, HANDSHAKE_ST, UNSYNC_ST, NO_CHALLENGE_ST
    global MAX_KEPT, DUPLICATE_WINDOW, LONGEST_PATH
    global S_MIDSTREAM, S_SYN_SENT, S_SYN_RCVD, S_CLOSE_WAIT, S_CLOSED, S_ESTABLISHED
    global E_SEND_SYN, E_SEND_SYNACK, E_SEND_ACK, E_SEND_FIN, E_SEND_RST
    global E_RECV_SYN, E_RECV_SYNACK, E_RECV_ACK_OF_SYN, E_RECV_ACK, E_RECV_ACK_OF_FIN
    global E_RECV_FIN, E_RECV_RST
    S, E = _pystate.State, _pystate.Event
    if len(_STATES) > MAX_STATES or len(_EVENTS) > MAX_EVENTS:
        raise ValueError("conn.pyx: more states or events than its tables hold")
    memset(T_LEN, 0, sizeof(T_LEN))
    memset(T_PATH, 0, sizeof(T_PATH))
    edges = {}
    for (state, event), target in _pystate.TRANSITIONS.items():
        path = target if isinstance(target, tuple) else (target,)
        if not 1 <= len(path) <= 2:
            raise ValueError(f"conn.pyx: paths of 1 or 2 states only, not {path}")
        i, j = _STATES.index(state), _EVENTS.index(event)
        T_LEN[i][j] = len(path)
        for k, st in enumerate(path):
            T_PATH[i][j][k] = _STATES.index(st)
        edges.setdefault(state, []).append(path)
    HARMLESS_EV = 0
    for e in _pystate._HARMLESS:
        HARMLESS_EV |= 1 << _EVENTS.index(e)
    FINISHED_ST = _state_bits(_pystate.FINISHED)
    FIN_RECEIVED_ST = _state_bits(_pystate.FIN_RECEIVED)
    HANDSHAKE_ST = _state_bits(_pyconn._HANDSHAKE)
    UNSYNC_ST = _state_bits(_pyconn._UNSYNCHRONISED)
    NO_CHALLENGE_ST = _state_bits(_pyconn._NO_CHALLENGE)
    MAX_KEPT = _pyconn.MAX_KEPT
    if not 1 <= MAX_KEPT <= LIST_MAX - RST_ACCEPTED_KEPT:
        raise ValueError("conn.pyx: MAX_KEPT out of the range its counters hold")
    DUPLICATE_WINDOW = _pyconn.DUPLICATE_WINDOW
    LONGEST_PATH = _longest_path(edges)
    if LONGEST_PATH + 2 > HIST_MAX:  # + the classifier's give_up, with room to spare
        raise ValueError("conn.pyx: HIST_MAX is below the table's longest timeline")
    si, ei = _STATES.index, _EVENTS.index
    S_MIDSTREAM, S_SYN_SENT, S_SYN_RCVD = si(S.MIDSTREAM), si(S.SYN_SENT), si(S.SYN_RCVD)
    S_ESTABLISHED = si(S.ESTABLISHED)
    S_CLOSE_WAIT, S_CLOSED = si(S.CLOSE_WAIT), si(S.CLOSED)
    E_SEND_SYN, E_SEND_SYNACK, E_SEND_ACK = ei(E.SEND_SYN), ei(E.SEND_SYNACK), ei(E.SEND_ACK)
    E_SEND_FIN, E_SEND_RST = ei(E.SEND_FIN), ei(E.SEND_RST)
    E_RECV_SYN, E_RECV_SYNACK = ei(E.RECV_SYN), ei(E.RECV_SYNACK)
    E_RECV_ACK_OF_SYN, E_RECV_ACK = ei(E.RECV_ACK_OF_SYN), ei(E.RECV_ACK)
    E_RECV_ACK_OF_FIN, E_RECV_FIN, E_RECV_RST = (ei(E.RECV_ACK_OF_FIN), ei(E.RECV_FIN),
                                                 ei(E.RECV_RST))
    if si(S.UNKNOWN) != 0:
        raise ValueError("conn.pyx: a zeroed Conn must mean UNKNOWN (the first State)")
    for cls, names in ((DirFacts, _DIRFACTS_FIELDS), (RstFact, _RSTFACT_FIELDS),
                       (IcmpFact, _ICMPFACT_FIELDS), (Anomaly, _ANOMALY_FIELDS)):
        got = tuple(f.name for f in dataclasses.fields(cls))
        if got != names:
            raise ValueError(f"conn.pyx: {cls.__name__} fields changed: {got}")


_build()

# ------------------------------------------------------------------ small helpers


cdef inline bint seq_lt(uint32_t a, uint32_t b) noexcept nogil:
    return a != b and <uint32_t>(b - a) < 0x80000000u


cdef inline bint seq_le(uint32_t a, uint32_t b) noexcept nogil:
    return a == b or seq_lt(a, b)


cdef inline bint in_set(uint32_t bits, int i) noexcept nogil:
    return (bits >> i) & 1


cdef int make_room(void** p, int n, int bound, size_t size) noexcept nogil:
    """Room for item `n` (0-based) of a list bounded by `bound` (n < bound): the array holds 1,
    2, 4, ... items, up to `bound`; it is grown when n reaches its size."""
    cdef int cap
    cdef void* q
    if n == 0:
        cap = 1  # (a list emptied and refilled, the ladder, shrinks back to one)
    elif n & (n - 1) == 0:
        cap = 2 * n if 2 * n < bound else bound
    else:
        return 0
    q = realloc(p[0], cap * size)
    if q == NULL:
        return -1
    p[0] = q
    return 0


cdef inline int list_cap(int n, int bound) noexcept nogil:
    """The array size make_room leaves for a list of n items."""
    cdef int cap = 1
    if n == 0:
        return 0
    while cap < n:
        cap *= 2
    return cap if cap < bound else bound


cdef inline int keep_frame_ts(FrameTs** p, uint8_t* n, int64_t frame, double ts) noexcept nogil:
    """connection._keep for the (frame, ts) lists."""
    if n[0] >= MAX_KEPT:
        return 0
    if make_room(<void**>p, n[0], MAX_KEPT, sizeof(FrameTs)) < 0:
        return -1
    p[0][n[0]].frame = frame
    p[0][n[0]].ts = ts
    n[0] += 1
    return 0


cdef int keep_syn(Dir* d, int64_t frame, double ts) noexcept nogil:
    """keep_frame_ts for d.syn (the list only grows): its first SYN in the struct."""
    cdef FrameTs* q = NULL
    if d.n_syn >= MAX_KEPT:
        return 0
    if d.n_syn == 0 and 0 <= frame < SYN_INLINE_FRAMES:
        d.syn.ts0 = ts
        d.syn0 = (<uint32_t>frame << 1) | SYN_INLINE
        d.n_syn = 1
        return 0
    if d.syn0 & SYN_INLINE:  # (one SYN) to the heap, as make_room would have grown it
        if make_room(<void**>&q, 1, MAX_KEPT, sizeof(FrameTs)) < 0:
            return -1
        q[0].frame = syn_frame(d, 0)
        q[0].ts = syn_ts(d, 0)
        d.syn0 = 0
        d.syn.heap = q
    return keep_frame_ts(&d.syn.heap, &d.n_syn, frame, ts)


cdef DirMore* dir_more(Dir* d) noexcept nogil:
    """d.more, allocated (zeroed: nothing seen) at its first use; NULL when memory ran out."""
    if d.more == NULL:
        d.more = <DirMore*>malloc(sizeof(DirMore))
        if d.more != NULL:
            memset(d.more, 0, sizeof(DirMore))
    return d.more


cdef ConnMore* conn_more(Conn* c) noexcept nogil:
    if c.more == NULL:
        c.more = <ConnMore*>malloc(sizeof(ConnMore))
        if c.more != NULL:
            memset(c.more, 0, sizeof(ConnMore))
    return c.more


# ------------------------------------------------------------------ endpoints


cdef int hist_append(Ep* ep, uint8_t state, int64_t frame, double ts) noexcept nogil:
    cdef Hist* q
    cdef Hist first
    cdef bint inl = (ep.fs0 & HIST_INLINE) != 0
    if ep.n_hist == 0 and (inl or ep.hist.heap == NULL) and 0 <= frame < HIST_INLINE_FRAMES:
        ep.hist.ts0 = ts
        ep.fs0 = (<uint32_t>((frame << 4) | state) << 1) | HIST_INLINE
        ep.n_hist = 1
        return 0
    if inl:  # (at most one entry) to the heap
        q = <Hist*>malloc((ep.n_hist + 1) * sizeof(Hist))
        if q == NULL:
            return -1
        if ep.n_hist:
            q[0].ts = hist_ts(ep, 0)
            q[0].fs = hist_fs(ep, 0)
        ep.fs0 = 0
    else:
        # one entry at a time: a typical timeline is 5 or 6 entries, each a state change
        q = <Hist*>realloc(ep.hist.heap, (ep.n_hist + 1) * sizeof(Hist))
        if q == NULL:
            return -1
    ep.hist.heap = q
    q[ep.n_hist].ts = ts
    q[ep.n_hist].fs = (frame << 4) | state
    ep.n_hist += 1
    return 0


cdef int hist_push(Ep* ep, uint8_t state, int64_t frame, double ts) noexcept nogil:
    if ep.n_hist == HIST_MAX:  # (HIST_MAX > 1: the entries are on the heap)
        # keep the last HIST_MAX entries: the look-backs read only the end
        memmove(ep.hist.heap, ep.hist.heap + 1, (HIST_MAX - 1) * sizeof(Hist))
        ep.n_hist -= 1
        ep.hist_dropped += 1
    return hist_append(ep, state, frame, ts)


cdef inline void hist_pop(Ep* ep) noexcept nogil:
    # (the array keeps its size: the next push reallocs to the same)
    if ep.n_hist:
        ep.n_hist -= 1
    elif ep.hist_dropped:
        ep.hist_dropped -= 1


cdef int anom_add(Conn* c, int64_t frame, double ts, uint8_t role, uint8_t state,
                  uint8_t event, int64_t note_frame) noexcept nogil:
    cdef ConnMore* m = conn_more(c)
    cdef int n
    if m == NULL:
        return -1
    n = m.n_anom
    m.n_anom += 1
    if n >= ANOM_KEPT:
        return 0
    if make_room(<void**>&m.anom, n, ANOM_KEPT, sizeof(AnomRec)) < 0:
        m.n_anom -= 1
        return -1
    m.anom[n].frame = frame
    m.anom[n].ts = ts
    m.anom[n].note_frame = note_frame
    m.anom[n].role = role
    m.anom[n].state = state
    m.anom[n].event = event
    return 0


cdef int ep_apply(Conn* c, int role, uint8_t ev, int64_t frame, double ts) noexcept nogil:
    """One event through the transition table; the change or the anomaly recorded."""
    cdef Ep* ep = &c.ep[role]
    cdef uint8_t cur = ep.state
    cdef int n = T_LEN[cur][ev], i, rc = 0
    cdef uint8_t nxt
    cdef int64_t at
    if n == 0:
        if not in_set(HARMLESS_EV, ev):
            return anom_add(c, frame, ts, role, cur, ev, 0)
        return 0
    if n == 1:
        nxt = T_PATH[cur][ev][0]
        if nxt == cur:
            return 0
        ep.state = nxt
        return hist_push(ep, nxt, frame, ts if frame else 0.0)
    for i in range(n):
        nxt = T_PATH[cur][ev][i]
        if nxt == ep.state:
            continue
        # a path's intermediate states were entered before this segment: before the capture,
        # when nothing else was known of this endpoint
        at = 0 if (i < n - 1 and ep.n_hist == 0 and ep.hist_dropped == 0) else frame
        ep.state = nxt
        if hist_push(ep, nxt, at, ts if at else 0.0) < 0:
            rc = -1
    return rc


# ------------------------------------------------------------------ the connection


# The server's Dir until its first segment: all zero (every count 0, every optional value
# absent), shared by every connection and never written (conn_dir_own replaces it first).
cdef Dir DIR_NONE
memset(&DIR_NONE, 0, sizeof(Dir))


cdef Dir* conn_dir_own(Conn* c, int role) noexcept nogil:
    """`role`'s Dir, to write: the server's is malloc'd (zeroed) the first time. NULL: out of
    memory."""
    cdef Dir* d
    if role == 0:
        return &c.client_dir
    if c.server_dir == &DIR_NONE or c.server_dir == NULL:
        d = <Dir*>calloc(1, sizeof(Dir))
        if d == NULL:
            return NULL
        c.server_dir = d
    return c.server_dir


cdef int conn_init(Conn* c, int64_t conn_id, const Seg* s, const Addr* client_addr,
                   uint16_t client_port, const Addr* server_addr,
                   uint16_t server_port) noexcept nogil:
    memset(c, 0, sizeof(Conn))  # every count 0, every optional value absent, states UNKNOWN
    c.server_dir = &DIR_NONE
    c.conn_id = conn_id
    c.client_addr = client_addr[0]
    c.server_addr = server_addr[0]
    c.client_port = client_port
    c.server_port = server_port
    c.ip_version = s.ip_version
    c.first_frame = s.frame
    c.last_frame = s.frame
    c.start = s.ts
    c.end = s.ts
    if s.tunnel.kind:
        return conn_keep_tunnel(c, s)
    return 0


cdef int conn_keep_tunnel(Conn* c, const Seg* s) noexcept nogil:
    """Keep the first segment's tunnel (in ConnMore), its outer source on the client's side."""
    cdef ConnMore* m = conn_more(c)
    cdef Tunnel* t
    if m == NULL:
        return -1
    t = m.tunnel = <Tunnel*>malloc(sizeof(Tunnel))
    if t == NULL:
        return -1
    t[0] = s.tunnel
    if not (addr_eq(&s.src, &c.client_addr) and s.sport == c.client_port):
        t.outer_src, t.outer_dst = s.tunnel.outer_dst, s.tunnel.outer_src
        t.outer_sport, t.outer_dport = s.tunnel.outer_dport, s.tunnel.outer_sport
    return 0


cdef void dir_free(Dir* d) noexcept nogil:
    cdef DirMore* dm
    if not (d.syn0 & SYN_INLINE):
        free(d.syn.heap)
    d.syn0 = 0
    free(d.synack)
    free(d.rsts)
    d.syn.heap = d.synack = NULL
    d.rsts = NULL
    d.n_syn = d.n_synack = d.n_rst = 0
    d.n_ttl = 0
    dm = d.more
    if dm != NULL:
        free(dm.ladder)
        free(dm.keepalives)
        free(dm.ttl_more)
        free(dm)
        d.more = NULL


cdef void conn_free(Conn* c) noexcept nogil:
    cdef int r
    for r in range(2):
        if not (c.ep[r].fs0 & HIST_INLINE):
            free(c.ep[r].hist.heap)
        c.ep[r].hist.heap = NULL
        c.ep[r].fs0 = 0
        c.ep[r].n_hist = 0
    dir_free(&c.client_dir)
    if c.server_dir != &DIR_NONE and c.server_dir != NULL:
        dir_free(c.server_dir)
        free(c.server_dir)
    c.server_dir = &DIR_NONE
    if c.more != NULL:
        free(c.more.icmp)
        free(c.more.anom)
        free(c.more.pend_copy)
        free(c.more.tunnel)
        free(c.more)
        c.more = NULL
    c.pend[0] = c.pend[1] = 0


cdef bint conn_from_client(const Conn* c, const Seg* s) noexcept nogil:
    return s.sport == c.client_port and addr_eq(&s.src, &c.client_addr)


cdef bint conn_any_closed(const Conn* c) noexcept nogil:
    cdef int r
    for r in range(2):
        if conn_dir(c, r).has & H_FIN or conn_dir(c, r).n_rst:
            return True
    return False


cdef bint conn_ended(const Conn* c) noexcept nogil:
    cdef int r, i
    if in_set(FINISHED_ST, c.ep[0].state) and in_set(FINISHED_ST, c.ep[1].state):
        return True
    for r in range(2):
        for i in range(conn_dir(c, r).n_rst):
            if conn_dir(c, r).rsts[i].bits & (R_ACCEPTED | R_FORGED) == R_ACCEPTED:
                return True
    return False


cdef bint conn_new_attempt(const Conn* c, const Seg* s) noexcept nogil:
    return conn_from_client(c, s) and conn_dir(c, 0).has & H_ISN \
        and conn_dir(c, 0).isn != s.seq \
        and conn_dir(c, 1).packets == 0


cdef inline void touch(Conn* c, const Seg* s) noexcept nogil:
    c.packets += 1
    c.last_frame = s.frame
    c.end = s.ts


cdef int conn_observe_icmp(Conn* c, const Seg* s) noexcept nogil:
    cdef ConnMore* m = conn_more(c)
    cdef int n, rc = 0
    cdef IcmpRec* r
    if m == NULL:
        touch(c, s)
        return -1
    n = m.n_icmp
    if n < MAX_KEPT:
        if make_room(<void**>&m.icmp, n, MAX_KEPT, sizeof(IcmpRec)) < 0:
            rc = -1
        else:
            r = &m.icmp[n]
            r.frame = s.frame
            r.ts = s.ts
            r.sender = s.icmp_from
            r.icmp_type = s.icmp_type
            r.icmp_code = s.icmp_code
            r.kind = s.icmp_kind
            r.about = 0 if conn_from_client(c, s) else 1
            m.n_icmp += 1
    touch(c, s)
    return rc


cdef int ttl_add(Dir* d, uint8_t ttl) noexcept nogil:
    """d.ttls |= {ttl}: inline while at most two distinct, a bitmap past that."""
    cdef int i
    cdef DirMore* m
    if d.n_ttl == 3:
        d.more.ttl_more[ttl >> 3] |= 1 << (ttl & 7)
        return 0
    for i in range(d.n_ttl):
        if d.ttl[i] == ttl:
            return 0
    if d.n_ttl < 2:
        d.ttl[d.n_ttl] = ttl
        d.n_ttl += 1
        return 0
    m = dir_more(d)
    if m == NULL:
        return -1
    m.ttl_more = <uint8_t*>malloc(32)
    if m.ttl_more == NULL:
        return -1
    memset(m.ttl_more, 0, 32)
    for i in range(2):
        m.ttl_more[d.ttl[i] >> 3] |= 1 << (d.ttl[i] & 7)
    m.ttl_more[ttl >> 3] |= 1 << (ttl & 7)
    d.n_ttl = 3
    return 0


cdef int new_data(Conn* c, const Seg* s, int role, Dir* me, uint32_t n) noexcept nogil:
    cdef DirMore* m
    me.bytes += n
    if not me.has & H_DATA:
        me.first_data_frame = s.frame
        me.has |= H_DATA
    me.last_data_frame = s.frame
    me.last_data_ts = s.ts
    if not me.has & H_DAPF and in_set(FIN_RECEIVED_ST, c.ep[role].state):
        m = dir_more(me)
        if m == NULL:
            return -1
        m.data_after_peer_fin = s.frame
        me.has |= H_DAPF
    return 0


cdef int track_sequence(Conn* c, const Seg* s, int role, Dir* me) noexcept nogil:
    """snd.max, new bytes, keepalives and retransmissions (not for RSTs)."""
    cdef uint8_t flags = s.flags
    cdef uint32_t seq = s.seq, plen = s.payload_len, end, nxt, new
    cdef DirMore* m
    if flags & F_SYN:
        if not me.has & H_ISN or me.isn != seq:
            me.isn = seq
            me.next_seq = seq + 1u
            me.has |= H_ISN | H_NEXT
    end = seq + plen + (1u if flags & F_SYN else 0u) + (1u if flags & F_FIN else 0u)
    if not me.has & H_NEXT:
        me.next_seq = end
        me.has |= H_NEXT
        if plen:
            return new_data(c, s, role, me, plen)
        return 0
    nxt = me.next_seq
    if plen <= 1 and not flags & (F_SYN | F_FIN) and seq == <uint32_t>(nxt - 1u):
        # keepalive (or window) probe: seq = next - 1
        m = dir_more(me)
        if m == NULL:
            return -1
        if m.n_keep < MAX_KEPT:
            if make_room(<void**>&m.keepalives, m.n_keep, MAX_KEPT, sizeof(int64_t)) < 0:
                return -1
            m.keepalives[m.n_keep] = s.frame
            m.n_keep += 1
        return 0
    if nxt != end and <uint32_t>(end - nxt) < 0x80000000u:
        new = end - nxt
        me.next_seq = end
        if plen:
            return new_data(c, s, role, me, new if new < plen else plen)
    elif plen or (flags & F_FIN and not flags & F_SYN):
        if plen or (me.has & H_FIN and seq == me.fin_seq):
            m = dir_more(me)
            if m == NULL:
                return -1
            m.retransmissions += 1
            if not me.has & H_LADDER or m.ladder_seq != seq:
                m.ladder_seq = seq
                me.has |= H_LADDER
                m.n_ladder = 0
            return keep_frame_ts(&m.ladder, &m.n_ladder, s.frame, s.ts)
    return 0


cdef int retract_forged_rst(Conn* c, int role, const Seg* s) noexcept nogil:
    """`role` keeps sending after "its" RST: that RST was not its own. Undo what it did."""
    cdef RstRec* rst = &conn_dir(c, role).rsts[conn_dir(c, role).n_rst - 1]
    cdef Ep* ep = &c.ep[role]
    rst.bits |= R_FORGED
    if ep.n_hist and hist_state(ep, ep.n_hist - 1) == S_CLOSED \
            and hist_frame(ep, ep.n_hist - 1) == rst.frame:
        hist_pop(ep)
        ep.state = rst.sender_state
    return anom_add(c, s.frame, s.ts, role, ep.state, EV_OWN_RST, rst.frame)


cdef bint fin_crossed(const Conn* c, const Seg* s, int role) noexcept nogil:
    """A FIN from an endpoint we put in CLOSE_WAIT whose ACK does not cover the peer's FIN:
    the two FINs crossed in flight (simultaneous close)."""
    cdef const Dir* peer = conn_dir(c, 1 - role)
    cdef const Ep* ep = &c.ep[role]
    return ep.state == S_CLOSE_WAIT and peer.has & H_FIN and s.flags & F_ACK \
        and seq_lt(s.ack, peer.fin_seq + 1u) \
        and ep.n_hist >= 1 and hist_state(ep, ep.n_hist - 1) == S_CLOSE_WAIT


cdef int apply_sender(Conn* c, const Seg* s, int role, Dir* me) noexcept nogil:
    cdef uint8_t flags = s.flags
    cdef Ep* ep = &c.ep[role]
    cdef int rc = 0
    cdef bint crossed
    if not flags & (F_SYN | F_FIN):
        return ep_apply(c, role, E_SEND_ACK, s.frame, s.ts)
    if flags & F_SYN:
        if flags & F_ACK:
            rc = keep_frame_ts(&me.synack, &me.n_synack, s.frame, s.ts)
            return ep_apply(c, role, E_SEND_SYNACK, s.frame, s.ts) | rc
        rc = keep_syn(me, s.frame, s.ts)
        return ep_apply(c, role, E_SEND_SYN, s.frame, s.ts) | rc
    if not me.has & H_FIN:
        me.fin_frame = s.frame
        me.fin_seq = s.seq + s.payload_len
        me.has |= H_FIN
    crossed = fin_crossed(c, s, role)
    if crossed:
        # it sent its FIN before the peer's FIN reached it: undo the early CLOSE_WAIT
        hist_pop(ep)
        ep.state = hist_state(ep, ep.n_hist - 1) if ep.n_hist else S_MIDSTREAM
    rc |= ep_apply(c, role, E_SEND_FIN, s.frame, s.ts)
    if crossed:  # ... and the peer's FIN arrives right after: CLOSING
        rc |= ep_apply(c, role, E_RECV_FIN, s.frame, s.ts)
    return rc


cdef int apply_receiver(Conn* c, const Seg* s, int rcv, const Dir* sender) noexcept nogil:
    """Events for the receiver `rcv` of `s`; `sender` is what the sender of `s` did."""
    cdef uint8_t flags = s.flags
    cdef const Dir* facts = conn_dir(c, rcv)  # what the receiver itself sent
    cdef Ep* ep = &c.ep[rcv]
    cdef int rc = 0
    if flags & F_SYN:
        if flags & F_ACK and ep.state == S_SYN_SENT and sender.n_syn:
            # simultaneous open: the peer's plain SYN reached it first (SYN_RCVD)
            rc |= ep_apply(c, rcv, E_RECV_SYN, s.frame, s.ts)
        rc |= ep_apply(c, rcv, E_RECV_SYNACK if flags & F_ACK else E_RECV_SYN, s.frame, s.ts)
        return rc
    if flags & F_ACK and rcv == 1 and stalled(c) and ep.state == S_SYN_RCVD:
        c.more.cand_frame, c.more.cand_ts = s.frame, s.ts  # held: ignored, maybe accepted
    elif flags & F_ACK:
        if facts.has & H_ISN and ep.state == S_SYN_RCVD and seq_le(facts.isn + 1u, s.ack):
            rc |= ep_apply(c, rcv, E_RECV_ACK_OF_SYN, s.frame, s.ts)
        if facts.has & H_FIN and seq_le(facts.fin_seq + 1u, s.ack):
            rc |= ep_apply(c, rcv, E_RECV_ACK_OF_FIN, s.frame, s.ts)
        else:
            rc |= ep_apply(c, rcv, E_RECV_ACK, s.frame, s.ts)
    if flags & F_FIN:
        rc |= ep_apply(c, rcv, E_RECV_FIN, s.frame, s.ts)
    return rc


cdef bint rst_acceptable(const Seg* s, uint8_t rcv_state, const Dir* me,
                         const Dir* other) noexcept nogil:
    """Would the receiver act on this RST? (RFC 9293 §3.10.7.4 with RFC 5961 §3.2)."""
    cdef uint32_t seq
    cdef bint has_nxt = other.has & H_MAXACK, has_max = me.has & H_NEXT
    if in_set(UNSYNC_ST, rcv_state):
        return True
    if rcv_state == S_SYN_SENT:
        if not other.has & H_ISN:
            return True
        return s.flags & F_ACK and s.ack == <uint32_t>(other.isn + 1u)
    if not has_nxt and not has_max:
        return True
    seq = s.seq
    if (has_nxt and seq == other.max_ack) or (has_max and seq == me.next_seq):
        return True
    # after a FIN was received, Linux also takes rcv_nxt - 1 (the FIN's own number)
    seq = seq + 1u
    return in_set(FIN_RECEIVED_ST, rcv_state) and (
        (has_nxt and seq == other.max_ack) or (has_max and seq == me.next_seq))


cdef bint ttl_foreign(const Dir* d, uint8_t ttl) noexcept nogil:
    """`d` sent segments, none of them with this TTL."""
    if d.n_ttl == 0:
        return False
    if d.n_ttl == 3:
        return d.more == NULL or d.more.ttl_more == NULL \
            or not (d.more.ttl_more[ttl >> 3] >> (ttl & 7)) & 1
    return d.ttl[0] != ttl and (d.n_ttl < 2 or d.ttl[1] != ttl)


cdef int observe_rst(Conn* c, const Seg* s, int role, Dir* me, const Dir* other,
                     int64_t prev_last) noexcept nogil:
    cdef int peer = 1 - role, i, n_acc, rc = 0
    cdef Ep* rcv = &c.ep[peer]
    cdef RstRec fact
    cdef ConnMore* m
    cdef bint accepted = rst_acceptable(s, rcv.state, me, other)
    cdef bint keep
    memset(&fact, 0, sizeof(RstRec))
    fact.frame = s.frame
    fact.ts = s.ts
    fact.sender = role
    fact.seq = s.seq
    fact.ack = s.ack
    fact.ip_id = s.ip_id
    fact.ttl = s.ttl
    fact.tsval = s.tsval
    fact.sender_state = c.ep[role].state
    fact.receiver_state = rcv.state
    fact.bits = (R_HAS_ACK if s.flags & F_ACK else 0) | (R_HAS_OPTIONS if s.has_options else 0) \
        | (R_HAS_TSVAL if s.has_tsopt else 0) | (R_ACCEPTED if accepted else 0)
    if in_set(HANDSHAKE_ST, rcv.state) or (other.n_synack == 0 and other.n_syn
                                           and me.n_synack == 0):
        fact.bits |= R_ANSWERS_SYN
    if conn_idle_frame(c) != 0 and prev_last < conn_idle_frame(c):
        fact.bits |= R_SILENT_SINCE_GAP
    # a storm of stray RSTs must not crowd out the few that count: accepted ones are kept
    # (each ends a state, so there are few), the others up to MAX_KEPT
    keep = me.n_rst < MAX_KEPT
    if not keep and accepted:
        n_acc = 0
        for i in range(me.n_rst):
            if me.rsts[i].bits & R_ACCEPTED:
                n_acc += 1
        keep = n_acc < RST_ACCEPTED_KEPT
    if keep:
        if make_room(<void**>&me.rsts, me.n_rst, MAX_KEPT + RST_ACCEPTED_KEPT,
                     sizeof(RstRec)) < 0:
            keep = False
            rc = -1
        else:
            me.rsts[me.n_rst] = fact
            me.n_rst += 1
    # A bare RST after an idle gap, from a "sender" silent since the gap and with a TTL it never
    # used, came from a middlebox: the claimed sender's socket did not close (the kernel's
    # trace keeps it ESTABLISHED). Elsewhere a TTL alone is no proof (paths change).
    if s.flags & F_ACK or not ttl_foreign(me, s.ttl) or not fact.bits & R_SILENT_SINCE_GAP:
        rc |= ep_apply(c, role, E_SEND_RST, s.frame, s.ts)
    if accepted:
        rc |= ep_apply(c, peer, E_RECV_RST, s.frame, s.ts)
    elif not in_set(NO_CHALLENGE_ST, rcv.state):
        if keep:
            c.pend[peer] = me.n_rst  # rsts[n_rst - 1], 1-based
        else:
            # not in its list, but still the one a challenge ACK would answer
            m = conn_more(c)
            if m == NULL:
                return -1
            if m.pend_copy == NULL:
                m.pend_copy = <RstRec*>malloc(2 * sizeof(RstRec))
                if m.pend_copy == NULL:
                    return -1
            m.pend_copy[peer] = fact
            c.pend[peer] = PEND_COPY
    return rc


# ------------------------------------------------------------------ a handshake stalled by a full
# accept queue. Linux drops a final ACK that finds the accept queue full (tcp_abort_on_overflow
# 0): the server stays in SYN_RCVD, retransmits its SYN/ACK, and ignores the client's data until
# a later client segment finds room. The evidence comes after the ACK the timeline took for the
# handshake's end, so that entry is taken back; the server's ESTABLISHED then goes to the last
# client segment before the server's first segment that is not a SYN/ACK (the one its kernel
# accepted: it answers nothing else while held).

cdef bint conn_listener_reset(const Conn* c, const Seg* s) noexcept nogil:
    cdef const Dir* sv = conn_dir(c, 1)
    return s.flags & (F_RST | F_ACK) == F_RST | F_ACK and not conn_from_client(c, s) \
        and sv.n_synack and conn_dir(c, 0).n_syn and sv.has & H_ISN and not sv.bytes \
        and not sv.has & H_FIN and s.seq == <uint32_t>(sv.isn + 1u)


cdef bint server_only_synacks(const Conn* c) noexcept nogil:
    return conn_dir(c, 1).packets == conn_dir(c, 1).n_synack and conn_dir(c, 1).n_rst == 0


cdef int stall_hold(Conn* c, uint8_t why) noexcept nogil:
    """Take back the server's ESTABLISHED (the ACK its kernel dropped) and hold it in SYN_RCVD."""
    cdef Ep* ep = &c.ep[1]
    cdef ConnMore* m = conn_more(c)
    if m == NULL:
        return -1
    if m.stall & STALL_ON:
        m.stall |= why
        return 0
    if m.accept_frame or not ep.n_hist or hist_state(ep, ep.n_hist - 1) != S_ESTABLISHED:
        return 0  # (the evidence counts only for a handshake the timeline had taken as done)
    m.stall_frame = hist_frame(ep, ep.n_hist - 1)
    m.stall_ts = hist_ts(ep, ep.n_hist - 1)
    hist_pop(ep)
    ep.state = S_SYN_RCVD
    m.stall |= STALL_ON | why
    return 0


cdef int stall_release(Conn* c, const Seg* s) noexcept nogil:
    """The server sent something other than a SYN/ACK: its kernel accepted the client's last
    segment; ESTABLISHED goes there."""
    cdef ConnMore* m = c.more
    m.stall &= ~STALL_ON
    if m.cand_frame == 0:
        m.cand_frame, m.cand_ts = s.frame, s.ts
    m.accept_frame, m.accept_ts = m.cand_frame, m.cand_ts
    if c.ep[1].state != S_SYN_RCVD:
        return 0
    return ep_apply(c, 1, E_RECV_ACK_OF_SYN, m.cand_frame, m.cand_ts)


cdef inline bint stalled(const Conn* c) noexcept nogil:
    return c.more != NULL and c.more.stall & STALL_ON


cdef int stall_data(Conn* c, const Seg* s, Dir* me) noexcept nogil:
    """track_sequence for the client's data while the server has sent only SYN/ACKs: its second
    retransmission unanswered holds the server (one loss would be repaired by the first)."""
    cdef uint32_t before = me.more.retransmissions if me.more != NULL else 0
    cdef int rc = track_sequence(c, s, 0, me)
    cdef ConnMore* m
    if me.more == NULL or me.more.retransmissions == before or c.ep[1].state != S_ESTABLISHED \
            and not stalled(c):
        return rc
    m = conn_more(c)
    if m == NULL:
        return -1
    m.stall_rtx += 1
    if m.stall_rtx >= 2:
        rc |= stall_hold(c, STALL_DATA)
    return rc


cdef int conn_observe(Conn* c, const Seg* s) noexcept nogil:
    cdef bint client = conn_from_client(c, s)
    cdef int role = 0 if client else 1
    cdef int peer = 1 - role, rc = 0
    cdef Dir* me = conn_dir_own(c, role)
    cdef Dir* other = conn_dir(c, peer)
    cdef uint8_t flags = s.flags, p
    cdef int64_t frame = s.frame
    cdef double ts = s.ts
    cdef DirMore* m
    cdef double gap
    cdef int64_t prev_last
    if me == NULL:
        return -1
    prev_last = me.last_frame if me.packets else 0
    # capture duplicates: the same (seq, ack, flags, payload_len, ip_id, tsval) within the window
    if me.has & H_KEY and me.key_seq == s.seq and me.key_ack == s.ack \
            and me.key_flags == flags and me.key_plen == s.payload_len \
            and me.key_ip_id == s.ip_id and (me.has & H_KEY_TSVAL != 0) == (s.has_tsopt != 0) \
            and (not s.has_tsopt or me.key_tsval == s.tsval) \
            and ts - me.last_ts <= DUPLICATE_WINDOW:
        c.duplicates += 1  # e.g. both copies a packet socket on `lo` sees
        return 0
    me.key_seq = s.seq
    me.key_ack = s.ack
    me.key_flags = flags
    me.key_plen = s.payload_len
    me.key_ip_id = s.ip_id
    me.key_tsval = s.tsval if s.has_tsopt else 0
    me.has = (me.has & ~H_KEY_TSVAL) | H_KEY | (H_KEY_TSVAL if s.has_tsopt else 0)
    gap = ts - c.end if c.packets else 0.0
    if role == 1 and flags & (F_SYN | F_ACK | F_RST) == F_SYN | F_ACK and me.n_synack \
            and server_only_synacks(c) and c.ep[1].state == S_ESTABLISHED \
            and conn_dir(c, 0).has & H_MAXACK:
        rc |= stall_hold(c, STALL_SYNACK)  # a SYN/ACK again, after the client's ACK
    elif role == 1 and not flags & (F_SYN | F_RST) and stalled(c):
        rc |= stall_release(c, s)
    c.packets += 1
    c.last_frame = frame
    c.end = ts
    me.packets += 1
    me.last_frame = frame
    me.last_ts = ts
    if not flags & F_RST:
        rc |= ttl_add(me, s.ttl)  # a RST's own TTL is judged against these
        if s.has_options:
            me.has |= H_OPTIONS
        if me.n_rst and not me.has & H_SAOR:
            m = dir_more(me)
            if m == NULL:
                rc = -1
            else:
                m.sent_after_own_rst = frame
                me.has |= H_SAOR
                rc |= retract_forged_rst(c, role, s)
        if s.window == 0 and flags & F_ACK:
            m = dir_more(me)
            if m == NULL:
                rc = -1
            else:
                m.zero_windows += 1
                if m.zw_frame == 0:
                    m.zw_frame, m.zw_ts = frame, ts
        elif me.more != NULL and me.more.zw_frame:
            me.more.zw_frame = 0  # the window opened again
        p = c.pend[role]
        if p:
            c.pend[role] = 0
            # (a copy's challenge frame is never seen again: only a kept one is updated)
            if p != PEND_COPY and not flags & (F_SYN | F_FIN) and s.payload_len == 0:
                other.rsts[p - 1].challenge_frame = frame
                other.rsts[p - 1].bits |= R_CHALLENGE
        if role == 0 and s.payload_len and server_only_synacks(c) and conn_dir(c, 1).n_synack:
            rc |= stall_data(c, s, me)
        else:
            rc |= track_sequence(c, s, role, me)
        # the longest silence before new data or a first FIN (retransmissions and probes are
        # no end of a silence: they repeat what the silence followed)
        if gap * 1000.0 >= IDLE_MIN_MS and gap > conn_idle_gap(c) \
                and (me.has & H_DATA and me.last_data_frame == frame
                     or flags & F_FIN and not me.has & H_FIN):
            if conn_more(c) == NULL:
                rc = -1
            else:
                c.more.idle_gap = gap
                c.more.idle_frame = frame
    if flags & F_ACK and (not me.has & H_MAXACK or seq_lt(me.max_ack, s.ack)):
        me.max_ack = s.ack
        me.ack_frame = frame
        me.has |= H_MAXACK
    if flags & F_RST:
        return observe_rst(c, s, role, me, other, prev_last) | rc
    rc |= apply_sender(c, s, role, me)
    rc |= apply_receiver(c, s, peer, me)
    return rc


# ------------------------------------------------------------------ export


cdef object opt_frame(int64_t v, bint present):
    return v if present else None


cdef object frame_ts_list(const FrameTs* p, int n, int which):
    """Python's lazily created list: () while empty; which 0 frames, 1 times, 2 pairs."""
    cdef int i
    if n == 0:
        return ()
    if which == 0:
        return [p[i].frame for i in range(n)]
    if which == 1:
        return [p[i].ts for i in range(n)]
    return [(p[i].frame, p[i].ts) for i in range(n)]


cdef object rst_export(const RstRec* r):
    return RstFact(
        r.frame, r.ts, _ROLES[r.sender], r.seq, r.ack, bool(r.bits & R_HAS_ACK),
        bool(r.bits & R_HAS_OPTIONS), r.ttl, r.ip_id,
        r.tsval if r.bits & R_HAS_TSVAL else None, _STATE_NAMES[r.sender_state],
        _STATE_NAMES[r.receiver_state], bool(r.bits & R_ACCEPTED),
        bool(r.bits & R_ANSWERS_SYN),
        r.challenge_frame if r.bits & R_CHALLENGE else None, bool(r.bits & R_FORGED))


cdef object ttls_export(const Dir* d):
    cdef int i
    if d.n_ttl == 3:
        return frozenset([i for i in range(256) if d.more.ttl_more[i >> 3] >> (i & 7) & 1])
    return frozenset([d.ttl[i] for i in range(d.n_ttl)])


cdef DirMore NO_MORE  # (zeroed: what a Dir without its DirMore holds)
memset(&NO_MORE, 0, sizeof(DirMore))


cdef object dir_export(const Dir* d, list rsts):
    cdef uint16_t h = d.has
    cdef int i
    cdef const DirMore* m = d.more if d.more != NULL else &NO_MORE
    cdef FrameTs syn0
    cdef const FrameTs* syn = d.syn.heap
    if d.syn0 & SYN_INLINE:
        syn0.frame = syn_frame(d, 0)
        syn0.ts = syn_ts(d, 0)
        syn = &syn0
    return DirFacts(
        d.isn if h & H_ISN else None,
        frame_ts_list(syn, d.n_syn, 0), frame_ts_list(syn, d.n_syn, 1),
        frame_ts_list(d.synack, d.n_synack, 0), frame_ts_list(d.synack, d.n_synack, 1),
        d.next_seq if h & H_NEXT else None,
        d.max_ack if h & H_MAXACK else None,
        opt_frame(d.ack_frame, h & H_MAXACK),
        opt_frame(d.fin_frame, h & H_FIN),
        d.fin_seq if h & H_FIN else None,
        d.packets, d.bytes,
        opt_frame(d.first_data_frame, h & H_DATA),
        opt_frame(d.last_data_frame, h & H_DATA),
        d.last_data_ts,
        opt_frame(d.last_frame, d.packets > 0),
        d.last_ts, m.retransmissions,
        frame_ts_list(m.ladder, m.n_ladder, 2),
        m.ladder_seq if h & H_LADDER else None,
        [m.keepalives[i] for i in range(m.n_keep)] if m.n_keep else (),
        m.zero_windows, ttls_export(d), bool(h & H_OPTIONS),
        rsts if rsts else (),
        opt_frame(m.data_after_peer_fin, h & H_DAPF),
        opt_frame(m.sent_after_own_rst, h & H_SAOR),
        (d.key_seq, d.key_ack, d.key_flags, d.key_plen, d.key_ip_id,
         d.key_tsval if h & H_KEY_TSVAL else None) if h & H_KEY else None,
        d.last_ts)  # last_key_ts


cdef object ep_export(const Ep* ep, int role):
    cdef int i
    hist = [(_STATE_NAMES[hist_state(ep, i)], hist_frame(ep, i), hist_ts(ep, i))
            for i in range(ep.n_hist)]
    return Endpoint(_ROLES[role], _STATES[ep.state], hist)


cdef object anom_export(const AnomRec* a):
    if a.event == EV_OWN_RST:
        return Anomaly(a.frame, a.ts, _ROLES[a.role], _STATE_NAMES[a.state], _OWN_RST_EVENT,
                       f"the RST of frame {a.note_frame} was not sent by it")
    return Anomaly(a.frame, a.ts, _ROLES[a.role], _STATE_NAMES[a.state], _EVENT_NAMES[a.event])


cdef object icmp_export(const Conn* c, const IcmpRec* r):
    cdef Addr zero
    memset(&zero, 0, sizeof(Addr))
    # seg.icmp_from or "": an all-zero address stands for None (no host sends from it)
    sender = "" if addr_eq(&r.sender, &zero) else addr_text(&r.sender, c.ip_version)
    return IcmpFact(r.frame, r.ts, ICMP_KINDS[r.kind], r.icmp_type if r.icmp_type > 0 else 0,
                    r.icmp_code if r.icmp_code > 0 else 0, _ROLES[r.about], sender)


cdef ConnMore NO_CONN_MORE
memset(&NO_CONN_MORE, 0, sizeof(ConnMore))


cdef object conn_export(const Conn* c):
    cdef int r, i, kept
    cdef Py_ssize_t p
    cdef const ConnMore* cm
    conn = Connection.__new__(Connection)
    conn.conn_id = c.conn_id
    conn.client = (addr_text(&c.client_addr, c.ip_version), c.client_port)
    conn.server = (addr_text(&c.server_addr, c.ip_version), c.server_port)
    conn.ip_version = c.ip_version
    conn.first_frame = c.first_frame
    conn.last_frame = c.last_frame
    conn.start = c.start
    conn.end = c.end
    conn.packets = c.packets
    conn.duplicates = c.duplicates
    conn.ep = {"client": ep_export(&c.ep[0], 0), "server": ep_export(&c.ep[1], 1)}
    rsts = []
    for r in range(2):
        rsts.append([rst_export(&conn_dir(c, r).rsts[i]) for i in range(conn_dir(c, r).n_rst)])
    conn.sent = {"client": dir_export(conn_dir(c, 0), rsts[0]),
                 "server": dir_export(conn_dir(c, 1), rsts[1])}
    cm = c.more if c.more != NULL else &NO_CONN_MORE
    conn.icmp = [icmp_export(c, &cm.icmp[i]) for i in range(cm.n_icmp)] if cm.n_icmp else ()
    kept = cm.n_anom if cm.n_anom < ANOM_KEPT else ANOM_KEPT
    anomalies = [anom_export(&cm.anom[i]) for i in range(kept)]
    for p in range(kept, cm.n_anom):
        anomalies.append(Anomaly(0, 0.0, "", "", _NOT_KEPT))
    conn.anomalies = anomalies
    pending = {}
    for r in range(2):
        i = c.pend[r]
        if i == PEND_COPY:
            pending[_ROLES[r]] = rst_export(&cm.pend_copy[r])
        elif i:
            pending[_ROLES[r]] = rsts[1 - r][i - 1]  # the same object, as in Python
    conn.pending_challenge = pending
    conn.zeek = None
    conn.tunnel = tunnel_export(cm.tunnel)
    return conn


cdef object tunnel_export(const Tunnel* t):
    """pipeline.RECORD_FIELDS["tunnel"] (records.pyx writes the same as JSON)."""
    if t == NULL or t.kind == TUN_NONE:
        return None
    a = addr_text(&t.outer_src, t.outer_version)
    b = addr_text(&t.outer_dst, t.outer_version)
    if t.outer_sport or t.outer_dport:
        a, b = (f"[{a}]:{t.outer_sport}", f"[{b}]:{t.outer_dport}") if t.outer_version == 6 \
            else (f"{a}:{t.outer_sport}", f"{b}:{t.outer_dport}")
    return {"kind": TUNNEL_KINDS[t.kind], "outer_client": a, "outer_server": b,
            "depth": t.depth}


# ------------------------------------------------------------------ Python-visible, for tests


def conn_struct_size():
    """sizeof(Conn): the bytes of one open connection before its lists."""
    return sizeof(Conn)


def dir_struct_size():
    """sizeof(Dir): what the server's first segment allocates."""
    return sizeof(Dir)


def shared_empty_dir_intact():
    """Is DIR_NONE (the Dir of every server not yet heard from) still all zero (tests)?"""
    cdef const uint8_t* p = <const uint8_t*>&DIR_NONE
    cdef size_t i
    for i in range(sizeof(Dir)):
        if p[i]:
            return False
    return True


cdef Py_ssize_t chunk(Py_ssize_t n):
    """What malloc takes for n bytes (glibc: 8 bytes of header, 16-byte multiples, 32 at
    least); 0 for none."""
    if n <= 0:
        return 0
    n = (n + 8 + 15) // 16 * 16
    return n if n > 32 else 32


cdef class ConnProbe:
    """One Conn driven from Python Segments (tests): the Python Connection's interface."""

    def __cinit__(self, conn_id, seg, client, server):
        cdef Seg s
        cdef Addr ca, sa
        memset(&self.c, 0, sizeof(Conn))
        self.c.server_dir = &DIR_NONE
        seg_from_py(seg, &s)
        addr_parse(client[0], &ca)
        addr_parse(server[0], &sa)
        conn_init(&self.c, conn_id, &s, &ca, client[1], &sa, server[1])

    def __dealloc__(self):
        conn_free(&self.c)

    def observe(self, seg):
        cdef Seg s
        cdef int rc
        seg_from_py(seg, &s)
        if s.icmp_kind != ICMP_NONE:
            rc = conn_observe_icmp(&self.c, &s)
        else:
            rc = conn_observe(&self.c, &s)
        if rc < 0:
            raise MemoryError()

    @property
    def ended(self):
        return conn_ended(&self.c)

    @property
    def any_closed(self):
        return conn_any_closed(&self.c)

    def from_client(self, seg):
        cdef Seg s
        seg_from_py(seg, &s)
        return conn_from_client(&self.c, &s)

    def new_attempt(self, seg):
        cdef Seg s
        seg_from_py(seg, &s)
        return conn_new_attempt(&self.c, &s)

    def export(self):
        return conn_export(&self.c)

    def heap_bytes(self, bint malloc_chunks=False):
        """Bytes the lists hold (with malloc_chunks: as glibc's chunks, headers included)."""
        cdef Py_ssize_t total = 0, n
        cdef int r
        cdef const Dir* d
        cdef const DirMore* m
        cdef const ConnMore* cm = self.c.more
        sizes = [sizeof(Dir) if self.c.server_dir != &DIR_NONE else 0]
        for r in range(2):
            sizes.append(self.c.ep[r].n_hist * sizeof(Hist)
                         if not (self.c.ep[r].fs0 & HIST_INLINE) and self.c.ep[r].hist.heap
                         else 0)
            d = conn_dir(&self.c, r)
            sizes.append(0 if d.syn0 & SYN_INLINE else list_cap(d.n_syn, MAX_KEPT)
                         * sizeof(FrameTs))
            sizes.append(list_cap(d.n_synack, MAX_KEPT) * sizeof(FrameTs))
            sizes.append(list_cap(d.n_rst, MAX_KEPT + RST_ACCEPTED_KEPT) * sizeof(RstRec))
            m = d.more
            if m != NULL:
                sizes.append(sizeof(DirMore))
                sizes.append(list_cap(m.n_ladder, MAX_KEPT) * sizeof(FrameTs))
                sizes.append(list_cap(m.n_keep, MAX_KEPT) * sizeof(int64_t))
                sizes.append(32 if m.ttl_more else 0)
        if cm != NULL:
            sizes.append(sizeof(ConnMore))
            sizes.append(list_cap(cm.n_icmp, MAX_KEPT) * sizeof(IcmpRec))
            kept = cm.n_anom if cm.n_anom < ANOM_KEPT else ANOM_KEPT
            sizes.append(list_cap(kept, ANOM_KEPT) * sizeof(AnomRec))
            sizes.append(2 * sizeof(RstRec) if cm.pend_copy else 0)
        for n in sizes:
            total += chunk(n) if malloc_chunks else n
        return total

    def hist_dropped(self):
        return (self.c.ep[0].hist_dropped, self.c.ep[1].hist_dropped)
