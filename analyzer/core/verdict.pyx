# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The classifier over the compiled connection (conn.pxd's ``Conn``): one case of the catalog
per connection, with who closed, what each side saw, the frames that decide it, and how sure it
is; no Python object per connection.

Each ``rule_<case>`` below answers only with its case, and says beside it why it sits where it
does. The order they run in is not written here: ``_build`` sorts ``analyzer.cases.CATALOG`` by
precedence at import (the catalog is declared once) and fails unless every case has a rule and
no two share a precedence. Case indices, ``GAVE_UP``, ``NO_CLOSER``, ``WORTH_A_MENTION``, the
ICMP errno map and ``LINEAR_RETRY`` are read from ``analyzer.classify``, which also declares the
``Verdict`` handed to Python; the errno names are ``ERRNO_NAMES`` below.

A rule fills a ``Verdict``'s case-specific fields (errnos, evidence, confidence, rival, reason)
or returns False: the first rule that answers wins, so a connection gets the most specific case
it shows. ``classify_conn`` then adds the mentions (the later rules worth a mention that also
match), the closer, the give_up and the secondary notes. Texts are formatted only when asked for
(``verdict_reason``, ``verdict_secondary``), from the Verdict and its Conn.
"""

from libc.stdint cimport int8_t, int64_t, uint8_t, uint32_t, uintptr_t
from libc.stdio cimport snprintf
from libc.stdlib cimport malloc, realloc, free
from libc.string cimport memset

from analyzer.core.conn cimport (
    conn_dir,
    conn_idle_frame,
    conn_idle_gap,
    ANOM_KEPT,
    EV_OWN_RST,
    H_DAPF,
    H_DATA,
    H_FIN,
    H_ISN,
    H_MAXACK,
    H_NEXT,
    H_SAOR,
    IDLE_MIN_MS,
    STALL_DATA,
    STALL_ON,
    STALL_SYNACK,
    R_ACCEPTED,
    R_ANSWERS_SYN,
    R_CHALLENGE,
    R_SILENT_SINCE_GAP,
    R_FORGED,
    R_HAS_ACK,
    AnomRec,
    Conn,
    ConnProbe,
    ConnMore,
    Dir,
    DirMore,
    Ep,
    Hist,
    IcmpRec,
    hist_append,
    hist_fs,
    hist_state,
    syn_frame,
    syn_ts,
    RstRec,
    conn_ended,
    conn_export,
    conn_free,
    conn_init,
    conn_observe,
    conn_observe_icmp,
)
from analyzer.core.seg cimport ICMP_NONE, Addr, Seg, addr_parse, seg_from_py

from analyzer import cases as _cases
from analyzer import classify as _pyclassify  # the tables the rules read, and Verdict
from analyzer import tcpstate as _pystate
from analyzer.core import conn as _pyconn_core
from analyzer.segment import ICMP_KINDS

cdef extern from "<arpa/inet.h>" nogil:
    const char* inet_ntop(int af, const void* src, char* dst, unsigned int size)

cdef extern from "<sys/socket.h>" nogil:
    int AF_INET
    int AF_INET6

cdef extern from "<time.h>" nogil:
    ctypedef long time_t
    struct timespec:
        time_t tv_sec
        long tv_nsec
    int clock_gettime(int clk, timespec* ts)
    int CLOCK_MONOTONIC

cdef enum:
    MAX_CASES = 32
    MAX_ST = 16

# ------------------------------------------------------------------ reasons

# Reason.tmpl: one per reason text
cdef enum:
    RS_REFUSED
    RS_UNREACHABLE  # idx: the ICMP error
    RS_INJECTED  # n0 RST frame, n1 sent_after_own_rst, role, idx TTL, bits FORGED/TTL_ODD
    RS_BACKLOG_SYNS  # n0 SYNs
    RS_BACKLOG_SYNACK
    RS_BACKLOG_ABORT
    RS_BACKLOG_LINEAR
    RS_WRITE_AFTER_CLOSE  # role: the closer, n0 its FIN, bits ACK
    RS_KEEPALIVE  # role: the prober, n0 probes, bits RST
    RS_ABORTED_BEFORE_ACCEPT
    RS_PEER_STATE_LOST  # role: the RST's sender
    RS_UNREAD  # role: the RST's sender, n0 the peer's last data frame
    RS_ABORTIVE  # role: the RST's sender, bits ACK
    RS_RTO  # role: the sender, n0 rungs
    RS_SYN_TIMEOUT  # n0 SYNs
    RS_CLOSE_WAIT  # role: the side stuck, n0 the FIN
    RS_IGNORED  # n0 RST frame, n1 challenge frame, bits CHALLENGE
    RS_SIM_OPEN
    RS_SIM_CLOSE
    RS_HALF_CLOSE  # role: the first closer
    RS_GRACEFUL
    RS_OPEN
    RS_PARTIAL
    RS_BACKLOG_STALL  # n0 the ignored ACK, n1 the accepted segment, idx ending (EN_*), role
    RS_MIDDLEBOX_RST  # role: the RST's claimed sender, n0 the segment after the gap, n1 RST
    RS_MIDDLEBOX_DROP  # role: the sender, n0 the segment after the gap, n1 rungs
    RS_ZERO_WINDOW  # role: the receiver, n0 its first window 0, n1 the sender's probes
    RS_LISTENER_CLOSED  # n0 the RST, bits DATA: the client had sent data

# how a stalled handshake ended (RS_BACKLOG_STALL's idx)
cdef enum:
    EN_NEVER  # still held in SYN_RCVD when the capture ended
    EN_RST  # role: the RST's sender
    EN_FINS
    EN_FIN  # role: the only side that sent a FIN
    EN_OPEN

cdef enum:
    RB_FORGED = 1
    RB_TTL_ODD = 2
    RB_ACK = 4
    RB_RST = 8
    RB_CHALLENGE = 16
    RB_N0_NONE = 32  # n0 is Python's None (printed "None")
    RB_N1_NONE = 64
    RB_SYNACK = 1  # RS_BACKLOG_STALL: the server retransmitted its SYN/ACK
    RB_READ_UNKNOWN = 2  # RS_ABORTIVE: the sender had received payload (read or not)
    RB_DATA = 1  # RS_LISTENER_CLOSED: the client had sent data


ctypedef bint (*RuleFn)(const Conn* c, int ls, Verdict* v) noexcept nogil

# ------------------------------------------------------------------ tables, filled by _build

cdef int N_CASES = 0
cdef const char* CASE_NAME[MAX_CASES]
cdef RuleFn ORDER_FN[MAX_CASES]  # the rules in precedence order
cdef int8_t ORDER_CASE[MAX_CASES]
cdef uint32_t WORTH_CASES  # bit per case index: classify.WORTH_A_MENTION
cdef uint32_t NO_CLOSER_CASES
cdef int8_t K_REFUSED, K_UNREACHABLE, K_SIMULTANEOUS_CLOSE
cdef int8_t K_RETRANSMISSION_TIMEOUT, K_PEER_STATE_LOST, K_SYN_TIMEOUT, K_ABORTIVE_CLOSE
cdef int8_t K_OPEN, K_GRACEFUL
cdef int8_t K_UNREAD_DATA_RESET, K_INJECTED_RESET, K_LISTENER_CLOSED
cdef const char* ERRNO_NAME[N_ERRNO]
cdef uint32_t GAVE_UP_ERR  # bit per ERR_*
cdef int8_t ICMP_ERR[16][2]  # ICMP kind -> ERR_* for IPv4, IPv6; -1: not an error the rule maps
cdef const char* ICMP_TEXT[16]  # kind with underscores as spaces
cdef int N_ICMP_KINDS = 0
cdef double LINEAR_LO, LINEAR_HI
cdef const char* STATE_NAME[MAX_ST]
cdef const char* EVENT_NAME[MAX_ST]
cdef int N_STATES = 0, N_EVENTS = 0
cdef uint8_t S_UNKNOWN, S_SYN_SENT, S_SYN_RCVD, S_ESTABLISHED, S_CLOSE_WAIT, S_CLOSED
cdef uint8_t S_TIME_WAIT, S_CLOSING
cdef uint32_t LIVE_ST  # rule_ignored_reset's `live` states
cdef uint8_t GU_LEN[MAX_ST]  # TRANSITIONS[(state, GIVE_UP)]: path length (0: not in the table)
cdef uint8_t GU_PATH[MAX_ST][2]
cdef uint8_t E_GIVE_UP
cdef bint GU_HARMLESS

_KEEP = []  # the bytes the C name tables point into
CASE_IDS = ()
ERRNO_NAMES = ("EOF", "EPIPE", "ECONNRESET", "ECONNREFUSED", "ETIMEDOUT", "EHOSTUNREACH",
               "ENETUNREACH", "EACCES", "ENOPROTOOPT", "ENOTCONN")  # ERR_* order (verdict.pxd)
CLOSER_NAMES = (None, "client", "server", "both")
RULE_ORDER = ()  # case ids, in the order classify_conn tries them
_ROLES = ("client", "server")


cdef inline bint bit(uint32_t bits, int i) noexcept nogil:
    return i >= 0 and i < 32 and (bits >> i) & 1


# ------------------------------------------------------------------ reading the Conn


cdef inline bint fin_present(const Dir* d) noexcept nogil:  # fin_frame is not None
    return d.has & H_FIN != 0


cdef inline bint fin_truthy(const Dir* d) noexcept nogil:  # `if d.fin_frame`
    return d.has & H_FIN and d.fin_frame != 0


cdef inline bint dapf_truthy(const Dir* d) noexcept nogil:  # `if d.data_after_peer_fin`
    return d.has & H_DAPF and d.more != NULL and d.more.data_after_peer_fin != 0


cdef inline int n_keep(const Dir* d) noexcept nogil:
    return d.more.n_keep if d.more != NULL else 0


cdef inline int n_ladder(const Dir* d) noexcept nogil:
    return d.more.n_ladder if d.more != NULL else 0


cdef inline bint ttl_in(const Dir* d, uint8_t ttl) noexcept nogil:
    cdef int i
    if d.n_ttl == 3:
        return d.more != NULL and d.more.ttl_more != NULL \
            and (d.more.ttl_more[ttl >> 3] >> (ttl & 7)) & 1
    for i in range(d.n_ttl if d.n_ttl <= 2 else 2):
        if d.ttl[i] == ttl:
            return True
    return False


cdef const RstRec* first_rst(const Conn* c) noexcept nogil:
    """classify._first_rst: the earliest genuine, accepted RST (client's first on a tie)."""
    cdef const RstRec* first = NULL
    cdef const RstRec* r
    cdef int role, i
    for role in range(2):
        for i in range(conn_dir(c, role).n_rst):
            r = &conn_dir(c, role).rsts[i]
            if r.bits & (R_ACCEPTED | R_FORGED) == R_ACCEPTED \
                    and (first == NULL or r.frame < first.frame):
                first = r
    return first


cdef bint fins_crossed(const Conn* c) noexcept nogil:
    """classify._fins_crossed: both timelines passed CLOSING."""
    cdef int role, i
    cdef bint seen
    for role in range(2):
        seen = False
        for i in range(c.ep[role].n_hist):
            if hist_state(&c.ep[role], i) == S_CLOSING:
                seen = True
                break
        if not seen:
            return False
    return True


# ------------------------------------------------------------------ building a verdict


ctypedef struct Frames:  # classify._frames: a set of truthy frames, sorted when put in
    int64_t x[V_EVIDENCE_MAX]
    int n


cdef inline void fr_add(Frames* f, int64_t x, bint present) noexcept nogil:
    cdef int i
    if not present or x == 0:
        return
    for i in range(f.n):
        if f.x[i] == x:
            return
    if f.n < V_EVIDENCE_MAX:
        f.x[f.n] = x
        f.n += 1


cdef void put_frames(Verdict* v, Frames* f) noexcept nogil:
    cdef int i, j
    cdef int64_t t
    for i in range(1, f.n):  # insertion sort: a handful of frames
        t = f.x[i]
        j = i - 1
        while j >= 0 and f.x[j] > t:
            f.x[j + 1] = f.x[j]
            j -= 1
        f.x[j + 1] = t
    for i in range(f.n):
        v.evidence[i] = f.x[i]
    v.n_evidence = f.n


cdef inline void put_frame(Verdict* v, int64_t x) noexcept nogil:  # a raw list (no set)
    if v.n_evidence < V_EVIDENCE_MAX:
        v.evidence[v.n_evidence] = x
        v.n_evidence += 1


cdef inline void see(Verdict* v, int role, int err) noexcept nogil:
    if v.n_sees[role] < V_SEES_MAX:
        v.sees[role][v.n_sees[role]] = err
        v.n_sees[role] += 1


cdef inline void reason(Verdict* v, uint8_t tmpl, uint8_t role, uint8_t bits, int64_t n0,
                        int64_t n1, uint8_t idx) noexcept nogil:
    v.reason.tmpl = tmpl
    v.reason.role = role
    v.reason.bits = bits
    v.reason.n0 = n0
    v.reason.n1 = n1
    v.reason.idx = idx


cdef inline void likely(Verdict* v, int8_t rival) noexcept nogil:
    v.confidence = CONF_LIKELY
    v.rival = rival


cdef inline void clear(Verdict* v) noexcept nogil:
    """What a rule starts from: Verdict's defaults (certain, no rival, nothing seen)."""
    memset(v, 0, sizeof(Verdict))
    v.case = -1
    v.rival = -1


# ------------------------------------------------------------------ the rules: abnormal endings


cdef bint rule_refused(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # First: a RST to a SYN means no connection ever existed, whatever else follows.
    cdef const Dir* cl = conn_dir(c, 0)
    cdef const Dir* sv = conn_dir(c, 1)
    cdef const RstRec* r
    cdef Frames f
    cdef int i
    for i in range(sv.n_rst):
        r = &sv.rsts[i]
        if r.bits & R_ANSWERS_SYN and cl.n_syn and not sv.n_synack and r.bits & R_HAS_ACK:
            see(v, 0, ERR_ECONNREFUSED)
            f.n = 0
            fr_add(&f, syn_frame(cl, cl.n_syn - 1), True)
            fr_add(&f, r.frame, True)
            put_frames(v, &f)
            reason(v, RS_REFUSED, 0, 0, 0, 0, 0)
            return True
    return False


cdef bint rule_unreachable(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before resets and timeouts: an ICMP error explains the silence that follows it.
    cdef const ConnMore* m = c.more
    cdef const IcmpRec* last = NULL
    cdef int i, n_errs = 0, last_i = 0, err
    cdef Frames f
    if m == NULL:
        return False
    f.n = 0
    for i in range(m.n_icmp):
        if m.icmp[i].kind < 16 and ICMP_ERR[m.icmp[i].kind][0] >= 0:
            if n_errs < 3:  # errs[:3]
                fr_add(&f, m.icmp[i].frame, True)
            n_errs += 1
            last = &m.icmp[i]
            last_i = i
    if last == NULL:
        return False
    if conn_ended(c) and first_rst(c) == NULL \
            and (c.ep[0].state == S_CLOSED or c.ep[0].state == S_TIME_WAIT) \
            and (c.ep[1].state == S_CLOSED or c.ep[1].state == S_TIME_WAIT):
        return False  # the connection recovered and closed normally: an anomaly, not its end
    err = ICMP_ERR[last.kind][0 if c.ip_version == 4 else 1]
    see(v, last.about & 1, err)
    if not conn_dir(c, 0).n_syn or conn_dir(c, 1).n_synack:
        likely(v, K_RETRANSMISSION_TIMEOUT)  # soft error on an open connection
    put_frames(v, &f)
    reason(v, RS_UNREACHABLE, last.about & 1, 0, 0, 0, <uint8_t>last_i)
    return True


cdef bint rule_injected_reset(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before every other reset case: a forged RST would otherwise pass for the peer's own.
    cdef int role, victim, i, j, n_peer
    cdef const Dir* d
    cdef const Dir* dv
    cdef const RstRec* r
    cdef bint ttl_odd, forged, saor
    cdef Frames f
    for role in range(2):
        d = conn_dir(c, role)
        for i in range(d.n_rst):
            r = &d.rsts[i]
            ttl_odd = d.n_ttl > 0 and not ttl_in(d, r.ttl)
            forged = r.bits & R_FORGED != 0
            if not r.bits & R_ACCEPTED or not (forged or ttl_odd):
                continue
            victim = 1 - role
            dv = conn_dir(c, victim)
            saor = d.has & H_SAOR and d.more != NULL
            f.n = 0
            fr_add(&f, r.frame, True)
            fr_add(&f, d.more.sent_after_own_rst if saor else 0, saor)
            n_peer = 0
            for j in range(dv.n_rst):
                if dv.rsts[j].frame > r.frame:
                    if n_peer < 2:  # peer_rsts[:2]
                        fr_add(&f, dv.rsts[j].frame, True)
                    n_peer += 1
            see(v, victim, ERR_ECONNRESET)
            if n_peer:
                see(v, role, ERR_ECONNRESET)
            put_frames(v, &f)
            if not forged:
                likely(v, K_PEER_STATE_LOST)
            reason(v, RS_INJECTED, role,
                   (RB_FORGED if forged else 0) | (RB_TTL_ODD if ttl_odd else 0)
                   | (0 if saor else RB_N1_NONE),
                   r.frame, d.more.sent_after_own_rst if saor else 0, r.ttl)
            return True
    return False


cdef bint linear(const Dir* cl) noexcept nogil:
    """classify._linear: two or more gaps between SYNs, each a linear retry's."""
    cdef int i
    cdef double g
    if cl.n_syn < 3:
        return False
    for i in range(1, cl.n_syn):
        g = syn_ts(cl, i) - syn_ts(cl, i - 1)
        if not (LINEAR_LO <= g <= LINEAR_HI):
            return False
    return True


cdef bint backlog_stall(const Conn* c, Verdict* v) noexcept nogil:
    """The client's final ACK met a full accept queue (conn.pyx's stall): backlog_overflow
    whatever the ending, which the reason names. The server retransmitting its SYN/ACK after
    the ACK proves it ignored it; the client's data going unanswered alone could be losses."""
    cdef const ConnMore* m = c.more
    cdef const RstRec* r = first_rst(c)
    cdef uint8_t ending, role = 0
    cdef int8_t rival
    cdef Frames f
    if not m.stall & STALL_SYNACK and (m.stall & STALL_ON or not m.accept_frame):
        # only the client's data unanswered, and the server never spoke again: a server that
        # died after the handshake or a path that drops the request (PMTU black hole) shows
        # the same; retransmission_timeout's (the timeline keeps the server held)
        return False
    f.n = 0
    fr_add(&f, m.stall_frame, True)
    if conn_dir(c, 1).n_synack >= 2:
        fr_add(&f, conn_dir(c, 1).synack[1].frame, True)
    fr_add(&f, m.accept_frame, True)
    if m.stall & STALL_ON or not m.accept_frame:
        ending, rival = EN_NEVER, K_RETRANSMISSION_TIMEOUT
    elif r != NULL:
        ending, rival, role = EN_RST, K_ABORTIVE_CLOSE, r.sender & 1
        if r.receiver_state != S_UNKNOWN and r.receiver_state != S_CLOSED:
            see(v, 1 - role, ERR_ECONNRESET)
        fr_add(&f, r.frame, True)
    elif fin_truthy(conn_dir(c, 0)) and fin_truthy(conn_dir(c, 1)):
        ending, rival = EN_FINS, K_GRACEFUL
        see(v, 0, ERR_EOF)
        see(v, 1, ERR_EOF)
        fr_add(&f, conn_dir(c, 0).fin_frame, True)
        fr_add(&f, conn_dir(c, 1).fin_frame, True)
    elif fin_truthy(conn_dir(c, 0)) or fin_truthy(conn_dir(c, 1)):
        role = 0 if fin_truthy(conn_dir(c, 0)) else 1
        ending, rival = EN_FIN, K_OPEN
        see(v, 1 - role, ERR_EOF)
        fr_add(&f, conn_dir(c, role).fin_frame, True)
    else:
        ending, rival = EN_OPEN, K_OPEN
    put_frames(v, &f)
    if not m.stall & STALL_SYNACK:
        likely(v, rival)
    reason(v, RS_BACKLOG_STALL, role, RB_SYNACK if m.stall & STALL_SYNACK else 0,
           m.stall_frame, m.accept_frame, ending)
    return True


cdef bint rule_backlog_overflow(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before syn_timeout and the reset cases: the same symptoms, but the server is alive.
    cdef const Dir* cl = conn_dir(c, 0)
    cdef const Dir* sv = conn_dir(c, 1)
    cdef const RstRec* r
    cdef Frames f
    cdef int i
    cdef bint two_times = False, acked_synack = False
    if c.more != NULL and c.more.stall & (STALL_SYNACK | STALL_DATA) and backlog_stall(c, v):
        return True
    for i in range(1, cl.n_syn):  # len(set(syn_times)) >= 2: a time unlike the first
        if syn_ts(cl, i) != syn_ts(cl, 0):
            two_times = True
            break
    if two_times and sv.n_synack and sv.synack[0].frame > syn_frame(cl, 1):
        # the first SYN was ignored (no SYN/ACK before its retry), then answered: queue drained
        f.n = 0
        for i in range(cl.n_syn if cl.n_syn < 4 else 4):
            fr_add(&f, syn_frame(cl, i), True)
        fr_add(&f, sv.synack[0].frame, True)
        put_frames(v, &f)
        likely(v, K_SYN_TIMEOUT)
        reason(v, RS_BACKLOG_SYNS, 0, 0, cl.n_syn, 0, 0)
        return True
    if sv.n_synack >= 2 and cl.n_syn == 1 and c.ep[0].state != S_SYN_SENT and not sv.bytes:
        f.n = 0
        for i in range(sv.n_synack if sv.n_synack < 4 else 4):
            fr_add(&f, sv.synack[i].frame, True)
        put_frames(v, &f)
        reason(v, RS_BACKLOG_SYNACK, 0, 0, 0, 0, 0)
        return True
    r = first_rst(c)
    if r != NULL and sv.has & H_MAXACK:
        for i in range(sv.n_synack):  # sv.ack_frame in sv.synack_frames
            if sv.synack[i].frame == sv.ack_frame:
                acked_synack = True
                break
    if r != NULL and r.sender == 1 and not r.bits & R_HAS_ACK and not sv.bytes \
            and not fin_truthy(sv) and sv.n_synack and acked_synack \
            and (r.sender_state == S_SYN_RCVD or r.sender_state == S_ESTABLISHED):
        see(v, 0, ERR_ECONNRESET)
        f.n = 0
        fr_add(&f, sv.synack[0].frame, True)
        fr_add(&f, r.frame, True)
        put_frames(v, &f)
        likely(v, K_PEER_STATE_LOST)
        reason(v, RS_BACKLOG_ABORT, 1, 0, 0, 0, 0)
        return True
    if cl.n_syn and not sv.packets and ls and linear(cl):
        see(v, 0, ERR_ETIMEDOUT)
        for i in range(cl.n_syn if cl.n_syn < 6 else 6):
            put_frame(v, syn_frame(cl, i))
        likely(v, K_SYN_TIMEOUT)
        reason(v, RS_BACKLOG_LINEAR, 0, 0, 0, 0, 0)
        return True
    return False


cdef bint rule_middlebox_idle_timeout(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before injected_reset (a RST the peer did not send) and retransmission_timeout (data
    # never acknowledged): an idle gap before the refused segment names the middlebox.
    cdef const RstRec* r = first_rst(c)
    cdef const Dir* d
    cdef const Dir* peer
    cdef int a, b, p, i, nl
    cdef Frames f
    if conn_idle_gap(c) * 1000.0 < IDLE_MIN_MS or conn_idle_frame(c) == 0:
        return False
    if r != NULL and r.frame > conn_idle_frame(c):
        # reset: a RST whose TTL is not its claimed sender's, its sender's only segment after
        # the gap, answering the other side's first segment after it
        a = r.sender & 1
        b = 1 - a
        d = conn_dir(c, a)
        if d.n_ttl == 0 or ttl_in(d, r.ttl) or d.last_frame != r.frame \
                or not r.bits & R_SILENT_SINCE_GAP \
                or conn_dir(c, b).has & H_DATA == 0 \
                or conn_dir(c, b).first_data_frame > conn_idle_frame(c):
            return False
        see(v, b, ERR_ECONNRESET)
        f.n = 0
        fr_add(&f, conn_idle_frame(c), True)
        fr_add(&f, r.frame, True)
        put_frames(v, &f)
        # a TTL is no proof (a server that lost the connection during the gap, its path changed)
        likely(v, K_PEER_STATE_LOST)
        reason(v, RS_MIDDLEBOX_RST, a, 0, conn_idle_frame(c), r.frame, r.ttl)
        return True
    if r != NULL:
        return False
    for p in range(2):
        # drop: the data sent after the gap retransmitted and never acknowledged, and the peer
        # silent since the gap; a peer that died during the gap looks the same (likely)
        d = conn_dir(c, p)
        peer = conn_dir(c, 1 - p)
        nl = n_ladder(d)
        if nl < 2 or not d.has & H_NEXT or d.more.ladder[0].frame <= conn_idle_frame(c) \
                or peer.packets == 0 or peer.last_frame > conn_idle_frame(c):
            continue
        if peer.has & H_MAXACK and peer.max_ack == d.next_seq:
            continue
        see(v, p, ERR_ETIMEDOUT)
        f.n = 0
        fr_add(&f, conn_idle_frame(c), True)
        for i in range(nl if nl < 5 else 5):
            fr_add(&f, d.more.ladder[i].frame, True)
        put_frames(v, &f)
        likely(v, K_RETRANSMISSION_TIMEOUT)
        reason(v, RS_MIDDLEBOX_DROP, p, 0, conn_idle_frame(c), nl, 0)
        return True
    return False


cdef bint rule_zero_window_stall(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before keepalive_timeout: zero-window probes have the keepalive's form (seq = next-1);
    # the receiver's closed window tells them apart.
    cdef int rcv, snd, i, probes, first_probe
    cdef const DirMore* mr
    cdef const DirMore* ms
    cdef Frames f
    if conn_dir(c, 0).n_rst or conn_dir(c, 1).n_rst:
        return False
    for rcv in range(2):
        snd = 1 - rcv
        mr = conn_dir(c, rcv).more
        ms = conn_dir(c, snd).more
        if mr == NULL or mr.zw_frame == 0 or ms == NULL or fin_present(conn_dir(c, rcv)):
            continue
        probes = 0
        first_probe = -1
        for i in range(ms.n_keep):
            if ms.keepalives[i] > mr.zw_frame:
                probes += 1
                if first_probe < 0:
                    first_probe = i
        if probes == 0:
            continue
        see(v, snd, ERR_ETIMEDOUT)
        f.n = 0
        fr_add(&f, mr.zw_frame, True)
        fr_add(&f, ms.keepalives[first_probe], True)
        fr_add(&f, ms.keepalives[ms.n_keep - 1], True)
        put_frames(v, &f)
        reason(v, RS_ZERO_WINDOW, rcv, 0, mr.zw_frame, probes, 0)
        return True
    return False


cdef inline bint server_never_spoke(const Conn* c, const RstRec* r) noexcept nogil:
    """The server's RST/ACK carries seq = its ISN+1: it sent nothing after its SYN/ACK."""
    cdef const Dir* sv = conn_dir(c, 1)
    return r.sender == 1 and r.bits & R_HAS_ACK and not sv.bytes and not fin_present(sv) \
        and sv.n_synack and conn_dir(c, 0).n_syn and sv.has & H_ISN \
        and r.seq == <uint32_t>(sv.isn + 1u) and r.sender_state != S_SYN_RCVD


cdef bint rule_listener_closed(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before peer_state_lost and abortive_close: the server's RST/ACK after a handshake in
    # which neither side sent data. One connection cannot show the burst of its neighbours: a
    # server that accepted and aborted (SO_LINGER 0) looks the same (likely). With the client's
    # data unread it is unread_data_reset's, likely, naming this case (a lone connection).
    # With a burst (the observer's context: other connections of this listener reset the same
    # way within milliseconds) the client's data no longer argues for unread_data_reset; a
    # crash that killed accepted, unread connections with the listener still could.
    cdef const RstRec* r = first_rst(c)
    cdef bint burst = ls & CTX_BURST != 0
    cdef const Dir* cl = conn_dir(c, 0)
    cdef Frames f
    if r == NULL or (cl.bytes and not burst) or not server_never_spoke(c, r):
        return False
    see(v, 0, ERR_ECONNRESET)
    f.n = 0
    fr_add(&f, conn_dir(c, 1).synack[0].frame, True)
    fr_add(&f, cl.last_data_frame, cl.has & H_DATA)
    fr_add(&f, r.frame, True)
    put_frames(v, &f)
    likely(v, K_UNREAD_DATA_RESET if cl.bytes else K_ABORTIVE_CLOSE)
    reason(v, RS_LISTENER_CLOSED, 1, RB_DATA if cl.bytes else 0, r.frame,
           (ls >> CTX_BURST_SHIFT) if burst else 0, 0)
    return True


cdef bint rule_write_after_close(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before peer_state_lost: the bare RST is the same; the closer's earlier FIN tells it apart.
    cdef int a, b, i
    cdef const Dir* da
    cdef const Dir* db
    cdef const RstRec* rst
    cdef int64_t dapf
    cdef Frames f
    for a in range(2):
        b = 1 - a
        da = conn_dir(c, a)
        db = conn_dir(c, b)
        if not fin_present(da) or not (db.has & H_DAPF and db.more != NULL):
            continue
        dapf = db.more.data_after_peer_fin
        rst = NULL
        for i in range(da.n_rst):
            if da.rsts[i].frame > dapf and not da.rsts[i].bits & R_FORGED:
                rst = &da.rsts[i]
                break
        if rst == NULL:
            continue
        see(v, b, ERR_EOF)
        see(v, b, ERR_EPIPE)
        f.n = 0
        fr_add(&f, da.fin_frame, True)
        fr_add(&f, dapf, True)
        fr_add(&f, rst.frame, True)
        put_frames(v, &f)
        reason(v, RS_WRITE_AFTER_CLOSE, a, RB_ACK if rst.bits & R_HAS_ACK else 0,
               da.fin_frame, 0, 0)
        return True
    return False


cdef bint rule_keepalive_timeout(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before the RST/ACK cases: a prober's own RST/ACK ends it and would pass for an abort.
    cdef int p, i, nk, k0
    cdef const Dir* d
    cdef const Dir* peer
    cdef const RstRec* rst
    cdef int64_t last_probe
    cdef Frames f
    for p in range(2):
        d = conn_dir(c, p)
        nk = n_keep(d)
        if not nk:
            continue
        last_probe = d.more.keepalives[nk - 1]
        peer = conn_dir(c, 1 - p)
        if peer.packets > 0 and peer.last_frame != 0 and peer.last_frame > last_probe:
            continue  # the peer answered the last probe
        rst = NULL
        for i in range(d.n_rst):
            if d.rsts[i].frame > last_probe:
                rst = &d.rsts[i]
                break
        if rst == NULL and conn_ended(c):
            continue
        see(v, p, ERR_ETIMEDOUT)
        f.n = 0
        k0 = nk - 3 if nk > 3 else 0
        for i in range(k0, nk):  # keepalives[-3:]
            fr_add(&f, d.more.keepalives[i], True)
        fr_add(&f, rst.frame if rst != NULL else 0, rst != NULL)
        put_frames(v, &f)
        if rst == NULL:
            likely(v, K_OPEN)
        reason(v, RS_KEEPALIVE, p, RB_RST if rst != NULL else 0, nk, 0, 0)
        return True
    return False


cdef bint rule_aborted_before_accept(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before abortive_close: same RST/ACK, but the server's application never got to speak.
    cdef const RstRec* r = first_rst(c)
    cdef const Dir* cl = conn_dir(c, 0)
    cdef const Dir* sv = conn_dir(c, 1)
    cdef Frames f
    if r == NULL or r.sender != 0 or not r.bits & R_HAS_ACK or sv.bytes or fin_truthy(sv) \
            or fin_truthy(cl) or not cl.n_syn or not sv.n_synack:
        return False
    if r.sender_state != S_ESTABLISHED:
        return False
    # Linux: accept() succeeds, getpeername() -> ENOTCONN, recv() -> any data, then ECONNRESET
    see(v, 1, ERR_ENOTCONN)
    see(v, 1, ERR_ECONNRESET)
    f.n = 0
    fr_add(&f, sv.synack[0].frame, True)
    fr_add(&f, r.frame, True)
    put_frames(v, &f)
    if cl.bytes:
        likely(v, K_ABORTIVE_CLOSE)
    reason(v, RS_ABORTED_BEFORE_ACCEPT, 0, 0, 0, 0, 0)
    return True


cdef bint rule_peer_state_lost(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # After the rules that explain a bare RST otherwise (injection, overflow, write after close).
    cdef const RstRec* r = first_rst(c)
    cdef int a, b
    cdef const Dir* db
    cdef Frames f
    if r == NULL or r.bits & R_HAS_ACK:
        return False
    a = r.sender & 1
    b = 1 - a
    if fin_present(conn_dir(c, a)) or r.receiver_state == S_SYN_SENT \
            or r.receiver_state == S_UNKNOWN:
        return False
    db = conn_dir(c, b)
    see(v, b, ERR_ECONNRESET)
    f.n = 0
    fr_add(&f, db.last_data_frame, db.has & H_DATA)
    fr_add(&f, r.frame, True)
    put_frames(v, &f)
    reason(v, RS_PEER_STATE_LOST, a, 0, 0, 0, 0)
    return True


cdef bint rule_unread_data_reset(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before abortive_close: the order of data decides (CASES.md, "What Linux really does").
    cdef const RstRec* r = first_rst(c)
    cdef int a, b
    cdef const Dir* da
    cdef const Dir* db
    cdef int64_t db_last
    cdef bint db_has, acked
    cdef Frames f
    if r == NULL or not r.bits & R_HAS_ACK:  # classify._rst_abort
        return False
    a = r.sender & 1
    b = 1 - a
    da = conn_dir(c, a)
    db = conn_dir(c, b)
    if fin_present(da) and da.fin_frame < r.frame or not db.bytes:
        return False
    db_has = db.has & H_DATA != 0
    db_last = db.last_data_frame if db_has else 0  # (db.last_data_frame or 0)
    if da.has & H_DATA and da.last_data_frame > db_last:
        return False
    acked = da.has & H_MAXACK and da.ack_frame != 0 and da.ack_frame > db_last
    # If the RST sender never spoke, nothing but unread data explains an abort this early in a
    # dialogue; if it had spoken, a SO_LINGER 0 close after reading the answer looks the same.
    see(v, b, ERR_ECONNRESET)
    f.n = 0
    fr_add(&f, db_last, db_has)
    fr_add(&f, da.ack_frame, acked)
    fr_add(&f, r.frame, True)
    put_frames(v, &f)
    if da.bytes:
        likely(v, K_ABORTIVE_CLOSE)
    elif server_never_spoke(c, r):  # a listener closed under its queue resets the same way
        likely(v, K_LISTENER_CLOSED)  # (a burst of them was listener_closed's, above)
    reason(v, RS_UNREAD, a, 0 if db_has else RB_N0_NONE, db_last, 0, 0)
    return True


cdef bint rule_abortive_close(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Last of the reset cases: any genuine RST no rule above explained is an abort by its sender.
    cdef const RstRec* r = first_rst(c)
    cdef int a, b
    cdef const Dir* da
    cdef Frames f
    if r == NULL:
        return False
    a = r.sender & 1
    b = 1 - a
    da = conn_dir(c, a)
    if r.receiver_state != S_UNKNOWN and r.receiver_state != S_CLOSED:
        see(v, b, ERR_ECONNRESET)
    f.n = 0
    fr_add(&f, da.last_data_frame, da.has & H_DATA)
    fr_add(&f, r.frame, True)
    put_frames(v, &f)
    if not r.bits & R_HAS_ACK:
        likely(v, K_PEER_STATE_LOST)
    elif conn_dir(c, b).bytes:
        # The sender received payload: whether its application read it the wire cannot say
        # (the lab: an answer written without reading the request, then close(), looks the
        # same; the advertised window grew alike, receive autotuning hides the unread bytes).
        likely(v, K_UNREAD_DATA_RESET)
    reason(v, RS_ABORTIVE, a, (RB_ACK if r.bits & R_HAS_ACK else 0)
           | (RB_READ_UNKNOWN if r.bits & R_HAS_ACK and conn_dir(c, b).bytes else 0), 0, 0, 0)
    return True


cdef bint rule_retransmission_timeout(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # After every reset case: a RST, when there is one, explains the ending better than a ladder.
    cdef int p, i, nl
    cdef const Dir* d
    cdef const Dir* peer
    for p in range(2):
        d = conn_dir(c, p)
        nl = n_ladder(d)
        if nl < 2 or not d.has & H_NEXT:
            continue
        peer = conn_dir(c, 1 - p)
        if peer.has & H_MAXACK and peer.max_ack == d.next_seq:
            continue  # it was acknowledged in the end
        see(v, p, ERR_ETIMEDOUT)
        for i in range(nl if nl < 6 else 6):
            put_frame(v, d.more.ladder[i].frame)
        reason(v, RS_RTO, p, 0, nl, 0, 0)
        return True
    return False


cdef bint rule_syn_timeout(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # After backlog_overflow, which tells a full listen queue from a silent host.
    cdef const Dir* cl = conn_dir(c, 0)
    cdef int i
    if not cl.n_syn or conn_dir(c, 1).packets or c.ep[0].state != S_SYN_SENT:
        return False
    see(v, 0, ERR_ETIMEDOUT)
    for i in range(cl.n_syn if cl.n_syn < 6 else 6):
        put_frame(v, syn_frame(cl, i))
    if cl.n_syn < 2:
        likely(v, K_OPEN)
    reason(v, RS_SYN_TIMEOUT, 0, 0, cl.n_syn, 0, 0)
    return True


cdef bint rule_close_wait_stall(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # After the RST and timer cases, before the ordinary endings it would otherwise pass for.
    cdef int a, b
    cdef const Dir* da
    cdef double waited
    for b in range(2):
        a = 1 - b
        da = conn_dir(c, a)
        if c.ep[b].state == S_CLOSE_WAIT and fin_present(da) and not conn_dir(c, b).n_rst:
            waited = c.end - da.last_ts if da.last_ts != 0.0 else 0.0
            put_frame(v, da.fin_frame)
            if not (waited >= 0.5 or c.end - c.start > 1):
                v.confidence = CONF_LIKELY  # too short to tell a stall from a slow close()
                v.rival = K_GRACEFUL
            reason(v, RS_CLOSE_WAIT, b, 0, da.fin_frame, 0, 0)
            return True
    return False


cdef bint rule_ignored_reset(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Last abnormal case: an ignored RST changed nothing, so an ending found above is the real one.
    cdef int role, i
    cdef const RstRec* r
    cdef bint chal
    cdef Frames f
    for role in range(2):
        for i in range(conn_dir(c, role).n_rst):
            r = &conn_dir(c, role).rsts[i]
            if not r.bits & R_ACCEPTED and bit(LIVE_ST, r.receiver_state):
                chal = r.bits & R_CHALLENGE and r.challenge_frame != 0
                f.n = 0
                fr_add(&f, r.frame, True)
                fr_add(&f, r.challenge_frame, r.bits & R_CHALLENGE)
                put_frames(v, &f)
                reason(v, RS_IGNORED, 0, RB_CHALLENGE if chal else 0, r.frame,
                       r.challenge_frame, 0)
                return True
    return False


# ------------------------------------------------------------------ the rules: ordinary endings


cdef bint rule_simultaneous_open(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # First of the ordinary endings: crossed SYNs are the most specific thing they can show.
    cdef Frames f
    if not (conn_dir(c, 0).n_syn and conn_dir(c, 1).n_syn):
        return False
    if fin_truthy(conn_dir(c, 1)):  # classify._eof_pair
        see(v, 0, ERR_EOF)
    if fin_truthy(conn_dir(c, 0)):
        see(v, 1, ERR_EOF)
    f.n = 0
    fr_add(&f, syn_frame(conn_dir(c, 0), 0), True)
    fr_add(&f, syn_frame(conn_dir(c, 1), 0), True)
    put_frames(v, &f)
    reason(v, RS_SIM_OPEN, 0, 0, 0, 0, 0)
    return True


cdef inline void fin_pair(const Conn* c, Verdict* v) noexcept nogil:
    cdef Frames f
    see(v, 0, ERR_EOF)
    see(v, 1, ERR_EOF)
    f.n = 0
    fr_add(&f, conn_dir(c, 0).fin_frame, fin_present(conn_dir(c, 0)))
    fr_add(&f, conn_dir(c, 1).fin_frame, fin_present(conn_dir(c, 1)))
    put_frames(v, &f)


cdef bint rule_simultaneous_close(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before half_close and graceful: crossed FINs are a graceful close, more specifically.
    if not fins_crossed(c):
        return False
    fin_pair(c, v)
    reason(v, RS_SIM_CLOSE, 0, 0, 0, 0, 0)
    return True


cdef bint rule_half_close(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Before graceful: FINs both ways too, with data after the first.
    cdef int a, b
    cdef const Dir* db
    cdef Frames f
    for a in range(2):
        b = 1 - a
        db = conn_dir(c, b)
        if fin_truthy(conn_dir(c, a)) and dapf_truthy(db) and fin_truthy(db):
            see(v, 0, ERR_EOF)
            see(v, 1, ERR_EOF)
            f.n = 0
            fr_add(&f, conn_dir(c, a).fin_frame, True)
            fr_add(&f, db.more.data_after_peer_fin, True)
            fr_add(&f, db.fin_frame, True)
            put_frames(v, &f)
            reason(v, RS_HALF_CLOSE, a, 0, 0, 0, 0)
            return True
    return False


cdef bint rule_graceful(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # After the special closes: any FIN in both directions.
    if not (fin_truthy(conn_dir(c, 0)) and fin_truthy(conn_dir(c, 1))):
        return False
    fin_pair(c, v)
    reason(v, RS_GRACEFUL, 0, 0, 0, 0, 0)
    return True


cdef bint rule_open(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Nothing ended: a connection whose handshake was seen.
    if not (conn_dir(c, 0).n_syn or conn_dir(c, 1).n_synack):
        return False
    reason(v, RS_OPEN, 0, 0, 0, 0, 0)
    return True


cdef bint rule_partial(const Conn* c, int ls, Verdict* v) noexcept nogil:
    # Last: always answers.
    reason(v, RS_PARTIAL, 0, 0, 0, 0, 0)
    return True


# case id -> its rule (the order they run in is the catalog's precedence, see _build)
_RULE_FNS = {
    "refused": <uintptr_t>rule_refused,
    "unreachable": <uintptr_t>rule_unreachable,
    "injected_reset": <uintptr_t>rule_injected_reset,
    "backlog_overflow": <uintptr_t>rule_backlog_overflow,
    "write_after_close": <uintptr_t>rule_write_after_close,
    "keepalive_timeout": <uintptr_t>rule_keepalive_timeout,
    "aborted_before_accept": <uintptr_t>rule_aborted_before_accept,
    "peer_state_lost": <uintptr_t>rule_peer_state_lost,
    "unread_data_reset": <uintptr_t>rule_unread_data_reset,
    "abortive_close": <uintptr_t>rule_abortive_close,
    "retransmission_timeout": <uintptr_t>rule_retransmission_timeout,
    "syn_timeout": <uintptr_t>rule_syn_timeout,
    "close_wait_stall": <uintptr_t>rule_close_wait_stall,
    "ignored_reset": <uintptr_t>rule_ignored_reset,
    "middlebox_idle_timeout": <uintptr_t>rule_middlebox_idle_timeout,
    "zero_window_stall": <uintptr_t>rule_zero_window_stall,
    "listener_closed": <uintptr_t>rule_listener_closed,
    "simultaneous_open": <uintptr_t>rule_simultaneous_open,
    "simultaneous_close": <uintptr_t>rule_simultaneous_close,
    "half_close": <uintptr_t>rule_half_close,
    "graceful": <uintptr_t>rule_graceful,
    "open": <uintptr_t>rule_open,
    "partial": <uintptr_t>rule_partial,
}


# ------------------------------------------------------------------ after the rules


cdef uint8_t closer_of(const Conn* c, int case) noexcept nogil:
    """classify.closer: the first FIN or genuine RST's sender (the client's on a tie)."""
    cdef int role, i, best_role = -1
    cdef int64_t best = 0, x
    if bit(NO_CLOSER_CASES, case):
        return CLOSER_NONE
    if case == K_SIMULTANEOUS_CLOSE or (case != K_REFUSED and fins_crossed(c)):
        return CLOSER_BOTH
    for role in range(2):  # min((frame, role)): by frame, then "client" < "server"
        if fin_truthy(conn_dir(c, role)):
            x = conn_dir(c, role).fin_frame
            if best_role < 0 or x < best or (x == best and role < best_role):
                best, best_role = x, role
        for i in range(conn_dir(c, role).n_rst):
            if not conn_dir(c, role).rsts[i].bits & R_FORGED:
                x = conn_dir(c, role).rsts[i].frame
                if best_role < 0 or x < best or (x == best and role < best_role):
                    best, best_role = x, role
    if best_role < 0:
        return CLOSER_NONE
    return CLOSER_CLIENT if best_role == 0 else CLOSER_SERVER


cdef int make_room(void** p, int n, int bound, size_t size) noexcept nogil:
    """conn.pyx's growth of a bounded list (1, 2, 4, ... items up to bound): the arrays this
    module appends to must stay the sizes conn.pyx expects."""
    cdef int cap
    cdef void* q
    if n == 0:
        cap = 1
    elif n & (n - 1) == 0:
        cap = 2 * n if 2 * n < bound else bound
    else:
        return 0
    q = realloc(p[0], cap * size)
    if q == NULL:
        return -1
    p[0] = q
    return 0


cdef int anom_add(Conn* c, int64_t frame, double ts, uint8_t role, uint8_t state,
                  uint8_t event) noexcept nogil:
    """conn.pyx's anom_add: the first ANOM_KEPT in full, the others counted."""
    cdef int n
    if c.more == NULL:
        c.more = <ConnMore*>malloc(sizeof(ConnMore))
        if c.more == NULL:
            return -1
        memset(c.more, 0, sizeof(ConnMore))
    n = c.more.n_anom
    c.more.n_anom += 1
    if n >= ANOM_KEPT:
        return 0
    if make_room(<void**>&c.more.anom, n, ANOM_KEPT, sizeof(AnomRec)) < 0:
        c.more.n_anom -= 1
        return -1
    c.more.anom[n].frame = frame
    c.more.anom[n].ts = ts
    c.more.anom[n].note_frame = 0
    c.more.anom[n].role = role
    c.more.anom[n].state = state
    c.more.anom[n].event = event
    return 0


cdef int hist_push(Ep* ep, uint8_t state, int64_t frame, double ts) noexcept nogil:
    """One timeline entry, the array grown by one as conn.pyx grows it (the give_up's step is an
    edge of the acyclic table, so the timeline stays within conn.pyx's bound)."""
    if ep.n_hist == 255:
        return -1
    return hist_append(ep, state, frame, ts)


cdef int conn_give_up(Conn* c, int role) noexcept nogil:
    """`role`'s kernel gave up (a timer, not a segment): GIVE_UP applied at the side's last
    segment (the connection's last when it sent none)."""
    cdef const Dir* d = conn_dir(c, role & 1)
    cdef Ep* ep = &c.ep[role & 1]
    cdef int64_t frame, at
    cdef double ts
    cdef int n, i, rc = 0
    cdef uint8_t cur = ep.state, nxt
    if d.packets > 0 and d.last_frame != 0:
        frame, ts = d.last_frame, d.last_ts
    else:
        frame, ts = c.last_frame, c.end
    n = GU_LEN[cur] if cur < MAX_ST else 0
    if n == 0:
        if GU_HARMLESS:
            return 0
        return anom_add(c, frame, ts, role & 1, cur, E_GIVE_UP)
    for i in range(n):
        nxt = GU_PATH[cur][i]
        if nxt == ep.state:
            continue
        at = 0 if (i < n - 1 and ep.n_hist == 0 and ep.hist_dropped == 0) else frame
        ep.state = nxt
        if hist_push(ep, nxt, at, ts if at else 0.0) < 0:
            rc = -1
    return rc


cdef int classify_conn(Conn* c, int listener_seen, Verdict* v) noexcept nogil:
    cdef int i, j, role, rc = 0, hit = N_CASES - 1
    cdef Verdict later
    cdef bint icmp_final
    cdef ConnMore* m = c.more
    clear(v)
    if m != NULL and m.stall & STALL_ON and not m.stall & STALL_SYNACK \
            and c.ep[1].state == S_SYN_RCVD and c.ep[1].n_hist \
            and hist_state(&c.ep[1], c.ep[1].n_hist - 1) == S_SYN_RCVD:
        # held on the client's unanswered data alone, and the server never spoke again: no
        # sign its kernel ignored the ACK (see backlog_stall), so the handshake ended there
        m.stall &= ~STALL_ON
        c.ep[1].state = S_ESTABLISHED
        rc |= hist_push(&c.ep[1], S_ESTABLISHED, m.stall_frame, m.stall_ts)
    for i in range(N_CASES):
        if ORDER_FN[i](c, listener_seen, v):
            hit = i
            break
    v.case = ORDER_CASE[hit]  # (the last rule, partial, always answers)
    for j in range(hit + 1, N_CASES):  # the later rules worth a mention (they only read)
        if bit(WORTH_CASES, ORDER_CASE[j]) and ORDER_CASE[j] != v.case:
            clear(&later)
            if ORDER_FN[j](c, listener_seen, &later) and v.n_mention < V_MENTIONS_MAX:
                v.mention[v.n_mention].case = ORDER_CASE[j]
                v.mention[v.n_mention].reason = later.reason
                v.n_mention += 1
    v.closer = closer_of(c, v.case)
    # A side that got a timer's errno closed without a segment: record it in its timeline (an
    # ICMP error is final only once it is a hard error: a second ICMP)
    icmp_final = v.case != K_UNREACHABLE or (c.more != NULL and c.more.n_icmp >= 2)
    for role in range(2):
        if v.n_sees[role] and bit(GAVE_UP_ERR, v.sees[role][0]) and icmp_final \
                and c.ep[role].state != S_CLOSED and c.ep[role].state != S_UNKNOWN:
            rc |= conn_give_up(c, role)
            v.gave_up |= 1 << role
    if c.more != NULL:
        v.n_anom = c.more.n_anom if c.more.n_anom < V_ANOM_SHOWN else V_ANOM_SHOWN
    for role in range(2):
        if conn_dir(c, role).more != NULL:
            v.retrans[role] = conn_dir(c, role).more.retransmissions
            v.zero_windows[role] = conn_dir(c, role).more.zero_windows
    return rc


# ------------------------------------------------------------------ texts


ctypedef struct Out:  # snprintf-like writer: counts everything, stores what fits
    char* p
    Py_ssize_t cap
    Py_ssize_t n


cdef inline void o_str(Out* o, const char* s) noexcept nogil:
    if s == NULL:
        return
    while s[0]:
        if o.n < o.cap - 1:
            o.p[o.n] = s[0]
        o.n += 1
        s += 1


cdef inline void o_int(Out* o, int64_t x) noexcept nogil:
    cdef char tmp[32]
    snprintf(tmp, sizeof(tmp), "%lld", <long long>x)  # str(int)
    o_str(o, tmp)


cdef inline void o_opt(Out* o, int64_t x, bint none) noexcept nogil:
    if none:
        o_str(o, "None")
    else:
        o_int(o, x)


cdef inline Py_ssize_t o_end(Out* o) noexcept nogil:
    if o.cap > 0:
        o.p[o.n if o.n < o.cap - 1 else o.cap - 1] = 0
    return o.n


cdef inline void o_secs(Out* o, double x) noexcept nogil:
    cdef char tmp[32]
    snprintf(tmp, sizeof(tmp), "%.1f s", x if x > 0 else 0.0)
    o_str(o, tmp)


cdef inline const char* role_name(int role) noexcept nogil:
    return "client" if role == 0 else "server"


cdef void o_ttls(Out* o, const Dir* d) noexcept nogil:
    """sorted(d.ttls) as a Python list prints."""
    cdef int i, first = 1
    o_str(o, "[")
    if d.n_ttl == 3:
        if d.more != NULL and d.more.ttl_more != NULL:
            for i in range(256):
                if (d.more.ttl_more[i >> 3] >> (i & 7)) & 1:
                    if not first:
                        o_str(o, ", ")
                    o_int(o, i)
                    first = 0
    elif d.n_ttl == 2:
        o_int(o, d.ttl[0] if d.ttl[0] < d.ttl[1] else d.ttl[1])
        o_str(o, ", ")
        o_int(o, d.ttl[1] if d.ttl[0] < d.ttl[1] else d.ttl[0])
    elif d.n_ttl == 1:
        o_int(o, d.ttl[0])
    o_str(o, "]")


cdef void o_icmp(Out* o, const Conn* c, int i) noexcept nogil:
    """f"ICMP {kind} (type {t} code {c}) from {sender}" for the connection's ICMP error i."""
    cdef const IcmpRec* r
    cdef char buf[64]
    cdef Addr zero
    cdef int k
    if c.more == NULL or i < 0 or i >= c.more.n_icmp:
        return
    r = &c.more.icmp[i]
    o_str(o, "ICMP ")
    if r.kind < N_ICMP_KINDS:
        o_str(o, ICMP_TEXT[r.kind])
    o_str(o, " (type ")
    o_int(o, r.icmp_type if r.icmp_type > 0 else 0)
    o_str(o, " code ")
    o_int(o, r.icmp_code if r.icmp_code > 0 else 0)
    o_str(o, ") from ")
    for k in range(16):  # an all-zero sender stands for None, printed ""
        if r.sender.b[k]:
            break
    else:
        return
    if inet_ntop(AF_INET6 if c.ip_version == 6 else AF_INET, r.sender.b, buf, sizeof(buf)) \
            != NULL:
        o_str(o, buf)


cdef void o_reason(Out* o, const Reason* rs, const Conn* c) noexcept nogil:
    cdef uint8_t t = rs.tmpl, b = rs.bits
    cdef const char* a = role_name(rs.role)
    cdef const char* other = role_name(1 - (rs.role & 1))
    if t == RS_REFUSED:
        o_str(o, "SYN answered by RST/ACK, no SYN/ACK")
    elif t == RS_UNREACHABLE:
        o_icmp(o, c, rs.idx)
    elif t == RS_INJECTED:
        o_str(o, "RST at frame ")
        o_int(o, rs.n0)
        o_str(o, " claimed by the ")
        o_str(o, a)
        o_str(o, ": ")
        if b & RB_FORGED:
            o_str(o, "the ")
            o_str(o, a)
            o_str(o, " kept sending after it (frame ")
            o_opt(o, rs.n1, b & RB_N1_NONE)
            o_str(o, ")")
            if b & RB_TTL_ODD:
                o_str(o, "; ")
        if b & RB_TTL_ODD:
            o_str(o, "TTL ")
            o_int(o, rs.idx)
            o_str(o, " where the ")
            o_str(o, a)
            o_str(o, "'s other segments had ")
            o_ttls(o, conn_dir(c, rs.role & 1))
    elif t == RS_BACKLOG_SYNS:
        o_int(o, rs.n0)
        o_str(o, " SYNs before the SYN/ACK: ignored while the listen queue was full")
    elif t == RS_BACKLOG_SYNACK:
        o_str(o, "the server retransmitted its SYN/ACK: the client's final ACK was dropped by a "
                 "full accept queue")
    elif t == RS_BACKLOG_ABORT:
        o_str(o, "bare RST from the server right after the handshake (tcp_abort_on_overflow=1)")
    elif t == RS_BACKLOG_LINEAR:
        o_str(o, "SYNs retried every ~1 s to a port that accepted other connections in this "
                 "capture")
    elif t == RS_WRITE_AFTER_CLOSE:
        o_str(o, "the ")
        o_str(o, other)
        o_str(o, " wrote after the ")
        o_str(o, a)
        o_str(o, "'s FIN (frame ")
        o_int(o, rs.n0)
        o_str(o, ") and drew a ")
        o_str(o, "RST/ACK" if b & RB_ACK else "bare RST")
    elif t == RS_KEEPALIVE:
        o_int(o, rs.n0)
        o_str(o, " keepalive probes from the ")
        o_str(o, a)
        o_str(o, " unanswered")
        if b & RB_RST:
            o_str(o, ", then its RST/ACK")
    elif t == RS_ABORTED_BEFORE_ACCEPT:
        o_str(o, "handshake completed, then the client's RST/ACK before the server sent "
                 "anything")
    elif t == RS_PEER_STATE_LOST:
        o_str(o, "bare RST from the ")
        o_str(o, a)
        o_str(o, ", which never closed: its kernel no longer knew the connection")
    elif t == RS_UNREAD:
        o_str(o, "the ")
        o_str(o, a)
        o_str(o, " received data (last at frame ")
        o_opt(o, rs.n0, b & RB_N0_NONE)
        o_str(o, ") it never answered, then sent RST/ACK without a FIN")
    elif t == RS_ABORTIVE:
        o_str(o, "RST/ACK" if b & RB_ACK else "bare RST")
        o_str(o, " from the ")
        o_str(o, a)
        if b & RB_READ_UNKNOWN:
            o_str(o, " after its last payload, which followed the ")
            o_str(o, other)
            o_str(o, "'s: an abortive close (whether it had read the ")
            o_str(o, other)
            o_str(o, "'s data the packets cannot say)")
        else:
            o_str(o, " with no unread data: an abortive close")
    elif t == RS_RTO:
        o_str(o, "the ")
        o_str(o, a)
        o_str(o, "'s data was retransmitted ")
        o_int(o, rs.n0)
        o_str(o, " times and never acknowledged")
    elif t == RS_SYN_TIMEOUT:
        o_int(o, rs.n0)
        o_str(o, " SYN(s), never answered")
    elif t == RS_CLOSE_WAIT:
        o_str(o, "the ")
        o_str(o, a)
        o_str(o, " received the FIN (frame ")
        o_int(o, rs.n0)
        o_str(o, ") and never closed")
    elif t == RS_IGNORED:
        o_str(o, "RST at frame ")
        o_int(o, rs.n0)
        o_str(o, " with an unexpected sequence number: ")
        if b & RB_CHALLENGE:
            o_str(o, "challenge ACK at frame ")
            o_int(o, rs.n1)
        else:
            o_str(o, "no effect")
    elif t == RS_SIM_OPEN:
        o_str(o, "both sides sent a SYN")
    elif t == RS_SIM_CLOSE:
        o_str(o, "the FINs crossed: both sides passed CLOSING")
    elif t == RS_HALF_CLOSE:
        o_str(o, "the ")
        o_str(o, other)
        o_str(o, " kept sending after the ")
        o_str(o, a)
        o_str(o, "'s FIN, then closed")
    elif t == RS_GRACEFUL:
        o_str(o, "FIN in both directions")
    elif t == RS_OPEN:
        o_str(o, "no FIN or RST before the capture ended")
    elif t == RS_PARTIAL:
        o_str(o, "the handshake was not captured")
    elif t == RS_BACKLOG_STALL:
        o_str(o, "the server ignored the client's final ACK (frame ")
        o_int(o, rs.n0)
        o_str(o, "): a full accept queue; ")
        o_str(o, "it retransmitted its SYN/ACK" if b & RB_SYNACK else
              "the client's data went unanswered (retransmitted)")
        if rs.idx == EN_NEVER:
            o_str(o, " and the handshake never completed (")
            o_secs(o, c.end - c.more.stall_ts if c.more != NULL else 0.0)
            o_str(o, " until the capture ended)")
        else:
            o_str(o, "; the handshake stalled ")
            o_secs(o, c.more.accept_ts - c.more.stall_ts if c.more != NULL else 0.0)
            o_str(o, " until frame ")
            o_int(o, rs.n1)
            o_str(o, ", then ")
            if rs.idx == EN_RST:
                o_str(o, "a RST from the ")
                o_str(o, a)
            elif rs.idx == EN_FINS:
                o_str(o, "a normal close (FIN in both directions)")
            elif rs.idx == EN_FIN:
                o_str(o, "a FIN from the ")
                o_str(o, a)
                o_str(o, " only")
            else:
                o_str(o, "it stayed open until the capture ended")
    elif t == RS_MIDDLEBOX_RST:
        o_str(o, "after an idle gap of ")
        o_secs(o, conn_idle_gap(c))
        o_str(o, ", the ")
        o_str(o, other)
        o_str(o, "'s segment (frame ")
        o_int(o, rs.n0)
        o_str(o, ") drew a RST (frame ")
        o_int(o, rs.n1)
        o_str(o, ") claimed by the ")
        o_str(o, a)
        o_str(o, " with TTL ")
        o_int(o, rs.idx)
        o_str(o, " where the ")
        o_str(o, a)
        o_str(o, "'s other segments had ")
        o_ttls(o, conn_dir(c, rs.role & 1))
        o_str(o, ", which sent nothing else after the gap: most likely a middlebox that had "
                 "forgotten the connection (a TTL alone cannot rule out a peer that lost it "
                 "and a path that changed)")
    elif t == RS_MIDDLEBOX_DROP:
        o_str(o, "after an idle gap of ")
        o_secs(o, conn_idle_gap(c))
        o_str(o, ", the ")
        o_str(o, a)
        o_str(o, "'s data (frame ")
        o_int(o, rs.n0)
        o_str(o, ") was retransmitted ")
        o_int(o, rs.n1)
        o_str(o, " times and the ")
        o_str(o, other)
        o_str(o, " sent nothing more: dropped by a middlebox that forgot the idle connection, "
                 "or the ")
        o_str(o, other)
        o_str(o, " died during the gap")
    elif t == RS_ZERO_WINDOW:
        o_str(o, "the ")
        o_str(o, a)
        o_str(o, "'s window was 0 from frame ")
        o_int(o, rs.n0)
        o_str(o, " to its last segment (")
        o_secs(o, c.end - conn_dir(c, rs.role & 1).more.zw_ts
               if conn_dir(c, rs.role & 1).more != NULL else 0.0)
        o_str(o, " closed), through ")
        o_int(o, rs.n1)
        o_str(o, " zero-window probe(s) from the ")
        o_str(o, other)
        o_str(o, ": its application stopped reading")
    elif t == RS_LISTENER_CLOSED:
        o_str(o, "RST/ACK from the server (frame ")
        o_int(o, rs.n0)
        o_str(o, ", seq = its ISN+1) after the handshake, ")
        o_str(o, "the client's data ACKed, the server never having sent any" if b & RB_DATA
              else "no data either way")
        if rs.n1:
            o_str(o, ", one of ")
            o_int(o, rs.n1)
            o_str(o, " such resets from this listening port within milliseconds")
        o_str(o, ": its listening socket closed with the connection in the accept queue")


cdef Py_ssize_t verdict_reason(const Verdict* v, const Conn* c, char* out,
                               Py_ssize_t cap) noexcept nogil:
    cdef Out o
    o.p, o.cap, o.n = out, cap, 0
    o_reason(&o, &v.reason, c)
    return o_end(&o)


cdef int verdict_n_secondary(const Verdict* v, const Conn* c) noexcept nogil:
    cdef int n = v.n_mention + v.n_anom, role
    for role in range(2):
        n += (v.retrans[role] != 0) + (v.zero_windows[role] != 0)
    return n


cdef void o_anomaly(Out* o, const AnomRec* a) noexcept nogil:
    """tcpstate.Anomaly.text()."""
    o_str(o, "frame ")
    o_int(o, a.frame)
    o_str(o, ": ")
    o_str(o, role_name(a.role))
    o_str(o, " in ")
    if a.state < N_STATES:
        o_str(o, STATE_NAME[a.state])
    o_str(o, " cannot ")
    if a.event == EV_OWN_RST:
        o_str(o, "send after its own RST: the RST of frame ")
        o_int(o, a.note_frame)
        o_str(o, " was not sent by it")
    elif a.event < N_EVENTS:
        o_str(o, EVENT_NAME[a.event])


cdef Py_ssize_t verdict_secondary(const Verdict* v, const Conn* c, int i, char* out,
                                  Py_ssize_t cap) noexcept nogil:
    cdef Out o
    cdef int role
    o.p, o.cap, o.n = out, cap, 0
    if i < 0:
        return o_end(&o)
    if i < v.n_mention:
        o_str(&o, "also ")
        o_str(&o, verdict_case_id(v.mention[i].case))
        o_str(&o, ": ")
        o_reason(&o, &v.mention[i].reason, c)
        return o_end(&o)
    i -= v.n_mention
    if i < v.n_anom:
        if c.more != NULL and i < c.more.n_anom and i < ANOM_KEPT:
            o_anomaly(&o, &c.more.anom[i])
        return o_end(&o)
    i -= v.n_anom
    for role in range(2):
        if v.retrans[role]:
            if i == 0:
                o_int(&o, v.retrans[role])
                o_str(&o, " retransmission(s) from the ")
                o_str(&o, role_name(role))
                return o_end(&o)
            i -= 1
        if v.zero_windows[role]:
            if i == 0:
                o_int(&o, v.zero_windows[role])
                o_str(&o, " zero-window advertisement(s) from the ")
                o_str(&o, role_name(role))
                return o_end(&o)
            i -= 1
    return o_end(&o)


cdef const char* verdict_case_id(int case) noexcept nogil:
    return CASE_NAME[case] if 0 <= case < N_CASES else NULL


cdef const char* verdict_errno_name(int err) noexcept nogil:
    return ERRNO_NAME[err] if 0 <= err < N_ERRNO else NULL


cdef const char* verdict_closer_name(int closer) noexcept nogil:
    if closer == CLOSER_CLIENT:
        return "client"
    if closer == CLOSER_SERVER:
        return "server"
    if closer == CLOSER_BOTH:
        return "both"
    return NULL


# ------------------------------------------------------------------ Python views


cdef str text_of(const Verdict* v, const Conn* c, int which):
    """The reason (which -1) or secondary line `which`, as a str."""
    cdef char buf[512]
    cdef char* big
    cdef Py_ssize_t n
    n = verdict_reason(v, c, buf, sizeof(buf)) if which < 0 else \
        verdict_secondary(v, c, which, buf, sizeof(buf))
    if n < <Py_ssize_t>sizeof(buf):
        return buf[:n].decode("utf-8")
    big = <char*>malloc(n + 1)
    if big == NULL:
        raise MemoryError()
    try:
        if which < 0:
            verdict_reason(v, c, big, n + 1)
        else:
            verdict_secondary(v, c, which, big, n + 1)
        return big[:n].decode("utf-8")
    finally:
        free(big)


cdef object verdict_to_py(const Verdict* v, const Conn* c):
    cdef int i, role
    sees = [[ERRNO_NAMES[v.sees[role][i]] for i in range(v.n_sees[role])] for role in range(2)]
    return _pyclassify.Verdict(
        CASE_IDS[v.case], CLOSER_NAMES[v.closer & 3], sees[0], sees[1],
        [v.evidence[i] for i in range(v.n_evidence)],
        "likely" if v.confidence == CONF_LIKELY else "certain",
        CASE_IDS[v.rival] if v.rival >= 0 else None,
        text_of(v, c, -1),
        [text_of(v, c, i) for i in range(verdict_n_secondary(v, c))])


def case_id(int case):
    """The catalog id of case index `case` (CATALOG order)."""
    return CASE_IDS[case]


def errno_name(int err):
    return ERRNO_NAMES[err]


def verdict_struct_size():
    """sizeof(Verdict)."""
    return sizeof(Verdict)


# ------------------------------------------------------------------ tests and timing


cdef class ClassifyProbe(ConnProbe):
    """A conn.ConnProbe (one Conn driven from Python Segments: the twin of a Python
    Connection) that classify_conn classifies (tests)."""

    cdef Verdict v
    cdef bint classified

    def __cinit__(self, *args):
        memset(&self.v, 0, sizeof(Verdict))  # (ConnProbe's __cinit__ has made the Conn)

    def classify(self, bint listener_seen):
        """classify_conn, once: the analyzer.classify.Verdict it gives."""
        if self.classified:
            raise RuntimeError("classified already (the give_up changed the Conn)")
        if classify_conn(&self.c, listener_seen, &self.v) < 0:
            raise MemoryError()
        self.classified = True
        return verdict_to_py(&self.v, &self.c)

    def verdict(self):
        """The last verdict, again (formatted anew from the Conn)."""
        return verdict_to_py(&self.v, &self.c)

    def texts(self):
        """(reason, [secondary lines]) straight from the nogil formatters, byte strings; each
        text formatted into buffers of every size from 0 to its length + 1 (cut ones must be
        the text's prefix, NUL-terminated, and report the full length)."""
        cdef Py_ssize_t i, n, cap, got
        cdef int k
        cdef char* buf
        out = []
        for k in range(-1, verdict_n_secondary(&self.v, &self.c)):
            full = text_of(&self.v, &self.c, k).encode("utf-8")
            n = len(full)
            buf = <char*>malloc(n + 2)
            if buf == NULL:
                raise MemoryError()
            try:
                for cap in range(n + 2):
                    buf[n + 1] = 0x7F  # past every cap: must stay untouched
                    if k < 0:
                        got = verdict_reason(&self.v, &self.c, buf, cap)
                    else:
                        got = verdict_secondary(&self.v, &self.c, k, buf, cap)
                    if got != n or buf[n + 1] != 0x7F:
                        raise AssertionError(f"text {k}: cap {cap}: {got} != {n}")
                    if cap > 0:
                        i = cap - 1 if cap - 1 < n else n
                        if buf[i] != 0 or buf[:i] != full[:i]:
                            raise AssertionError(f"text {k}: cap {cap}: {buf[:i]!r}")
            finally:
                free(buf)
            out.append(full)
        return out[0], out[1:]

def classify_probe(ClassifyProbe probe, bint listener_seen):
    return probe.classify(listener_seen)


def time_classify(list probes, list listeners, int repeat=1):
    """ns per classify_conn over the probes (not yet classified; each keeps its verdict): the
    first pass (the one that counts: it applies the give_ups) and, with repeat > 1, the best of
    repeat - 1 further passes over the same Conns into a scratch Verdict (their endpoints given
    up by then, so some verdicts differ: a rough figure for the rules alone, caches warm)."""
    cdef Py_ssize_t n = len(probes), i
    cdef int k
    cdef ClassifyProbe p
    cdef Conn** cs = <Conn**>malloc((n + 1) * sizeof(Conn*))
    cdef Verdict** vs = <Verdict**>malloc((n + 1) * sizeof(Verdict*))
    cdef bint* ls = <bint*>malloc((n + 1) * sizeof(bint))
    cdef Verdict scratch
    cdef timespec t0, t1
    cdef double first = 0.0, again = 0.0, took
    cdef int64_t sink = 0
    if cs == NULL or vs == NULL or ls == NULL:
        free(cs)
        free(vs)
        free(ls)
        raise MemoryError()
    try:
        for i in range(n):
            p = probes[i]
            if p.classified:
                raise ValueError("probe classified already")
            p.classified = True
            cs[i] = &p.c
            vs[i] = &p.v
            ls[i] = bool(listeners[i])
        with nogil:
            clock_gettime(CLOCK_MONOTONIC, &t0)
            for i in range(n):
                classify_conn(cs[i], ls[i], vs[i])
            clock_gettime(CLOCK_MONOTONIC, &t1)
            first = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)
            for k in range(repeat - 1):  # the best pass: the least disturbed by the machine
                clock_gettime(CLOCK_MONOTONIC, &t0)
                for i in range(n):
                    classify_conn(cs[i], ls[i], &scratch)
                    sink += scratch.case
                clock_gettime(CLOCK_MONOTONIC, &t1)
                took = (t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)
                if k == 0 or took < again:
                    again = took
        return {"connections": n, "ns_first": first / n if n else 0.0,
                "ns_again": again / n if n and repeat > 1 else None, "sink": sink}
    finally:
        free(cs)
        free(vs)
        free(ls)


# ------------------------------------------------------------------ _build


cdef const char* keep_c(str s):
    b = s.encode("utf-8")
    _KEEP.append(b)
    return <const char*>b


def _build():
    """Compile the Python declarations this module follows into its C tables."""
    global N_CASES, CASE_IDS, RULE_ORDER, WORTH_CASES, NO_CLOSER_CASES, GAVE_UP_ERR
    global K_REFUSED, K_UNREACHABLE, K_SIMULTANEOUS_CLOSE, K_RETRANSMISSION_TIMEOUT
    global K_PEER_STATE_LOST, K_SYN_TIMEOUT, K_ABORTIVE_CLOSE, K_OPEN, K_GRACEFUL
    global K_UNREAD_DATA_RESET, K_INJECTED_RESET, K_LISTENER_CLOSED
    global LINEAR_LO, LINEAR_HI, N_ICMP_KINDS, N_STATES, N_EVENTS, LIVE_ST
    global S_UNKNOWN, S_SYN_SENT, S_SYN_RCVD, S_ESTABLISHED, S_CLOSE_WAIT, S_CLOSED
    global S_TIME_WAIT, S_CLOSING, E_GIVE_UP, GU_HARMLESS
    cdef int i, k
    cdef uintptr_t fn
    # cases, in catalog order; the rules in the catalog's precedence order
    CASE_IDS = tuple(c.id for c in _cases.CATALOG)
    if len(CASE_IDS) > MAX_CASES:
        raise ValueError("verdict.pyx: more cases than its tables hold")
    if set(_RULE_FNS) != set(CASE_IDS):
        raise ValueError(f"verdict.pyx: rules {sorted(set(_RULE_FNS) ^ set(CASE_IDS))} "
                         "differ from the catalog")
    N_CASES = len(CASE_IDS)
    for i, cid in enumerate(CASE_IDS):
        CASE_NAME[i] = keep_c(cid)
    by_prec = sorted(_cases.CATALOG, key=lambda c: c.precedence)
    RULE_ORDER = tuple(c.id for c in by_prec)
    if len({c.precedence for c in by_prec}) != len(by_prec):
        raise ValueError("verdict.pyx: two cases of the catalog share a precedence (the rule "
                         "order would be undefined)")
    for i, cid in enumerate(RULE_ORDER):
        fn = _RULE_FNS[cid]
        ORDER_FN[i] = <RuleFn>fn
        ORDER_CASE[i] = CASE_IDS.index(cid)
    if RULE_ORDER[len(RULE_ORDER) - 1] != "partial":
        raise ValueError("verdict.pyx: the last rule must always answer (partial)")
    ix = CASE_IDS.index
    K_REFUSED, K_UNREACHABLE = ix("refused"), ix("unreachable")
    K_SIMULTANEOUS_CLOSE = ix("simultaneous_close")
    K_RETRANSMISSION_TIMEOUT, K_PEER_STATE_LOST = ix("retransmission_timeout"), \
        ix("peer_state_lost")
    K_SYN_TIMEOUT, K_ABORTIVE_CLOSE = ix("syn_timeout"), ix("abortive_close")
    K_OPEN, K_GRACEFUL = ix("open"), ix("graceful")
    K_UNREAD_DATA_RESET, K_INJECTED_RESET = ix("unread_data_reset"), ix("injected_reset")
    K_LISTENER_CLOSED = ix("listener_closed")
    WORTH_CASES = 0
    for cid in _pyclassify.WORTH_A_MENTION:
        WORTH_CASES |= 1 << ix(cid)
    if len(_pyclassify.WORTH_A_MENTION) > V_MENTIONS_MAX:
        raise ValueError("verdict.pyx: more cases worth a mention than a Verdict holds")
    NO_CLOSER_CASES = 0
    for cid in _pyclassify.NO_CLOSER:
        NO_CLOSER_CASES |= 1 << ix(cid)
    # errnos: ERR_* numbers them (verdict.pxd); the tables may name no other
    if len(set(ERRNO_NAMES)) != len(ERRNO_NAMES) or len(ERRNO_NAMES) != N_ERRNO:
        raise ValueError(f"verdict.pyx: ERRNO_NAMES {ERRNO_NAMES} do not match ERR_*")
    named = set(_pyclassify.GAVE_UP).union(*_pyclassify.ICMP_ERRNO.values())
    if named - set(ERRNO_NAMES):
        raise ValueError(f"verdict.pyx: classify.py names errnos "
                         f"{sorted(named - set(ERRNO_NAMES))} that ERRNO_NAMES lacks")
    for i, name in enumerate(ERRNO_NAMES):
        ERRNO_NAME[i] = keep_c(name)
    GAVE_UP_ERR = 0
    for name in _pyclassify.GAVE_UP:
        GAVE_UP_ERR |= 1 << ERRNO_NAMES.index(name)
    # ICMP kinds (seg.pxd numbers them in ICMP_KINDS order)
    if len(ICMP_KINDS) > 16:
        raise ValueError("verdict.pyx: more ICMP kinds than its tables hold")
    N_ICMP_KINDS = len(ICMP_KINDS)
    for i, kind in enumerate(ICMP_KINDS):
        ICMP_TEXT[i] = keep_c(kind.replace("_", " ") if kind else "")
        pair = _pyclassify.ICMP_ERRNO.get(kind)
        for k in range(2):
            ICMP_ERR[i][k] = ERRNO_NAMES.index(pair[k]) if pair else -1
    if set(_pyclassify.ICMP_ERRNO) - set(ICMP_KINDS):
        raise ValueError("verdict.pyx: classify.ICMP_ERRNO names unknown ICMP kinds")
    LINEAR_LO, LINEAR_HI = _pyclassify.LINEAR_RETRY
    # states and events, numbered as conn.pyx numbers them (enum order)
    states, events = tuple(_pystate.State), tuple(_pystate.Event)
    if len(states) > MAX_ST or len(events) > MAX_ST:
        raise ValueError("verdict.pyx: more states or events than its tables hold")
    N_STATES, N_EVENTS = len(states), len(events)
    for i, s in enumerate(states):
        STATE_NAME[i] = keep_c(s.value)
    for i, e in enumerate(events):
        EVENT_NAME[i] = keep_c(e.value)
    S = _pystate.State
    si = states.index
    S_UNKNOWN, S_SYN_SENT, S_SYN_RCVD = si(S.UNKNOWN), si(S.SYN_SENT), si(S.SYN_RCVD)
    S_ESTABLISHED, S_CLOSE_WAIT, S_CLOSED = si(S.ESTABLISHED), si(S.CLOSE_WAIT), si(S.CLOSED)
    S_TIME_WAIT, S_CLOSING = si(S.TIME_WAIT), si(S.CLOSING)
    LIVE_ST = 0  # rule_ignored_reset's `live`
    for name in ("ESTABLISHED", "MIDSTREAM", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT",
                 "CLOSING", "LAST_ACK", "SYN_RCVD"):
        LIVE_ST |= 1 << si(S(name))
    gu = _pystate.Event.GIVE_UP
    E_GIVE_UP = events.index(gu)
    GU_HARMLESS = gu in _pystate._HARMLESS
    memset(GU_LEN, 0, sizeof(GU_LEN))
    for (state, event), target in _pystate.TRANSITIONS.items():
        if event is not gu:
            continue
        path = target if isinstance(target, tuple) else (target,)
        if not 1 <= len(path) <= 2:
            raise ValueError(f"verdict.pyx: paths of 1 or 2 states only, not {path}")
        GU_LEN[si(state)] = len(path)
        for k, st in enumerate(path):
            GU_PATH[si(state)][k] = si(st)
    if _pyconn_core.LONGEST_PATH + 2 > 16:
        raise ValueError("verdict.pyx: timelines longer than conn.pyx keeps")


_build()
