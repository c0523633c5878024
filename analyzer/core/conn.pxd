# One connection's endpoints and facts as C-level data: both endpoints' TCP state machines
# (the integer table compiled from analyzer.tcpstate.TRANSITIONS at import) and the
# per-direction facts the classifier reads, exported as analyzer/connection.py's classes.
#
# Contract with observer.pyx (the tracker): the fields up to `duplicates` and the functions
# below keep their names and meanings; everything else in the struct is conn.pyx's own.
#
# Memory: counters and optional values are inline (an optional value is a presence bit in
# Dir.has, so a zeroed Conn is "nothing seen"); what few connections need sits in DirMore /
# ConnMore, allocated at its first use; every list is a small malloc'd array, NULL until its
# first item and grown (doubling) up to its bound; the endpoint timelines grow one entry at a
# time. A timeline's first entry and a direction's first SYN sit in the struct (in place of the
# array's pointer) until a second one comes, and the server's Dir is allocated at its first
# segment, so a lone SYN allocates nothing. conn_free releases them all. A typical connection
# (handshake, data, FINs): sizeof(Conn) plus the server's Dir, two timelines (5 and 6 entries of
# 16 bytes) and one SYN/ACK (16 bytes).
#
# Any change to a struct here changes the observer's slot: observer.pyx must be rebuilt.

from libc.stdint cimport int64_t, uint8_t, uint16_t, uint32_t, int16_t

from analyzer.core.seg cimport Addr, Seg, Tunnel

# A kept (frame, ts) pair: a SYN, a SYN/ACK (frames and times are kept together: Python's two
# lists always have the same length) or a rung of a retransmission ladder.
ctypedef struct FrameTs:
    int64_t frame
    double ts

# A direction's SYNs (Dir.syn, read with syn_frame / syn_ts): while it sent one, whose frame is
# below SYN_INLINE_FRAMES, it sits in the struct (its ts in place of the array's pointer, its
# frame in Dir.syn0 shifted left by one, with SYN_INLINE set); past that, in a malloc'd array.
ctypedef union SynStore:
    FrameTs* heap
    double ts0

cdef enum:
    SYN_INLINE = 1
    SYN_INLINE_FRAMES = 1 << 30  # (syn0 holds frame << 1)

# One timeline entry: the state (an index of analyzer.tcpstate.State) in the low 4 bits of
# `fs`, the frame above them (16 bytes rather than 24 per entry).
ctypedef struct Hist:
    double ts
    int64_t fs

# An endpoint's timeline: its last n_hist entries (oldest first), read with hist_ts / hist_fs.
# Most endpoints of a flood hold one entry: while an endpoint holds at most one, whose frame is
# below HIST_INLINE_FRAMES, it sits in the struct (its ts in place of the array's pointer, its fs
# in `fs0` shifted left by one, with HIST_INLINE set); past that, the entries are in a malloc'd
# array `heap`.
ctypedef union HistStore:
    Hist* heap
    double ts0

cdef enum:
    HIST_INLINE = 1  # in Ep.fs0: the entry is in the struct
    HIST_INLINE_FRAMES = 1 << 27  # frames an entry in the struct can hold: fs < 2**31

ctypedef struct Ep:
    HistStore hist
    uint32_t fs0  # the inline entry's fs << 1 | HIST_INLINE, or 0 (then hist.heap, maybe NULL)
    uint16_t hist_dropped  # entries dropped from the front past HIST_MAX (see conn.pyx)
    uint8_t n_hist
    uint8_t state

# RstFact; `bits` holds its booleans and the presence of tsval / challenge_frame.
ctypedef struct RstRec:
    int64_t frame
    double ts
    int64_t challenge_frame
    uint32_t seq
    uint32_t ack
    uint32_t tsval
    uint16_t ip_id
    uint8_t ttl
    uint8_t bits
    uint8_t sender  # 0 client, 1 server
    uint8_t sender_state
    uint8_t receiver_state

ctypedef struct IcmpRec:
    int64_t frame
    double ts
    Addr sender
    int16_t icmp_type
    int16_t icmp_code
    uint8_t kind  # seg.pxd's ICMP_* numbering
    uint8_t about  # 0 client, 1 server

# Anomaly: an event (index of analyzer.tcpstate.Event) impossible in `state`, or EV_OWN_RST
# ("send after its own RST", whose note names note_frame).
ctypedef struct AnomRec:
    int64_t frame
    double ts
    int64_t note_frame
    uint8_t role
    uint8_t state
    uint8_t event

# What few directions need (retransmissions, keepalives, writes after a FIN or a RST, zero
# windows, a third TTL): allocated at the first of them, so the common Dir stays small.
ctypedef struct DirMore:
    FrameTs* ladder
    int64_t* keepalives
    uint8_t* ttl_more  # 256-bit set, once a third distinct TTL appears
    int64_t data_after_peer_fin
    int64_t sent_after_own_rst
    uint32_t ladder_seq
    uint32_t retransmissions
    uint32_t zero_windows
    uint8_t n_ladder
    uint8_t n_keep
    # the run of window-0 advertisements still going at this side's last segment: its first
    # (0: the window is open, or was never closed)
    int64_t zw_frame
    double zw_ts

# DirFacts: what one side sent.
ctypedef struct Dir:
    int64_t packets
    int64_t bytes
    int64_t ack_frame  # present with max_ack
    int64_t fin_frame  # present with fin_seq
    int64_t first_data_frame  # present (with last_data_frame) once data was sent
    int64_t last_data_frame
    int64_t last_frame  # present iff packets > 0
    double last_data_ts
    double last_ts  # also last_key_ts: Python sets both to the ts of every non-duplicate
    uint32_t isn
    uint32_t next_seq
    uint32_t max_ack
    uint32_t fin_seq
    # last_key: (seq, ack, flags, payload_len, ip_id, tsval)
    uint32_t key_seq
    uint32_t key_ack
    uint32_t key_plen
    uint32_t key_tsval
    uint16_t key_ip_id
    uint16_t has  # H_* presence bits (conn.pyx)
    uint8_t key_flags
    uint8_t ttl[2]  # ttls while at most two distinct (n_ttl <= 2)
    uint8_t n_ttl  # 0..2, or 3: all of them are in the bitmap more.ttl_more
    uint8_t n_syn
    uint8_t n_synack
    uint8_t n_rst
    uint32_t syn0  # the SYN in the struct: frame << 1 | SYN_INLINE; or 0 (then syn.heap)
    SynStore syn
    FrameTs* synack
    RstRec* rsts
    DirMore* more  # NULL until needed

# ICMP errors and anomalies (rare): allocated at the first of them.
ctypedef struct ConnMore:
    IcmpRec* icmp
    AnomRec* anom  # the first ANOM_KEPT anomalies
    RstRec* pend_copy  # [2]: a pending challenge's RST that its sender's list did not keep
    uint32_t n_anom  # all anomalies, kept or not
    uint8_t n_icmp
    Tunnel* tunnel  # the first segment's tunnel, outer_src on the client's side; NULL: none
    # A handshake stalled by a full accept queue (STALL_* bits in `stall`): the client's ACK of
    # the SYN/ACK that the server's kernel ignored, the client segment it accepted in the end
    # (0 while the server is held in SYN_RCVD), and the client's latest segment meanwhile.
    int64_t stall_frame
    double stall_ts
    int64_t accept_frame
    double accept_ts
    int64_t cand_frame
    double cand_ts
    uint32_t stall_rtx  # the client's data retransmitted while the server sent only SYN/ACKs
    uint8_t stall
    # the connection's longest silence of at least IDLE_MIN_MS (seconds between two segments)
    # and the segment after it (shorter ones are never asked for: no ConnMore for them)
    double idle_gap
    int64_t idle_frame

ctypedef struct Conn:
    int64_t conn_id
    Addr client_addr  # the side that sent the first SYN (or the tracker's guess)
    Addr server_addr
    uint16_t client_port
    uint16_t server_port
    uint8_t ip_version
    # pending_challenge, per receiving role: 0 none, i + 1 the sender's rsts[i], PEND_COPY
    # (conn.pyx's own: here to fill the padding after ip_version)
    uint8_t pend[2]
    int64_t first_frame
    int64_t last_frame
    double start
    double end
    int64_t packets  # capture duplicates included (as Connection.packets)
    int64_t duplicates
    # ---- conn.pyx's own state below (endpoints, facts, ICMP, anomalies, ...)
    Ep ep[2]  # client, server
    Dir client_dir  # what the client sent
    # what the server sent: malloc'd at its first segment (a flood's SYN never gets one); until
    # then conn.pyx's DIR_NONE, all zero and never written. Read both with conn_dir.
    Dir* server_dir
    ConnMore* more  # NULL until needed

# What `role` (0 client, 1 server) sent. Only conn.pyx writes through it (and only after
# conn_dir_own has given the server its own Dir).
cdef inline Dir* conn_dir(const Conn* c, int role) noexcept nogil:
    return <Dir*>&c.client_dir if role == 0 else c.server_dir

cdef inline double hist_ts(const Ep* ep, int i) noexcept nogil:
    if ep.fs0 & HIST_INLINE:
        return ep.hist.ts0
    return ep.hist.heap[i].ts


cdef inline int64_t hist_fs(const Ep* ep, int i) noexcept nogil:
    if ep.fs0 & HIST_INLINE:
        return ep.fs0 >> 1
    return ep.hist.heap[i].fs

cdef inline uint8_t hist_state(const Ep* ep, int i) noexcept nogil:
    return <uint8_t>(hist_fs(ep, i) & 15)


cdef inline int64_t hist_frame(const Ep* ep, int i) noexcept nogil:
    return hist_fs(ep, i) >> 4


cdef inline int64_t syn_frame(const Dir* d, int i) noexcept nogil:
    if d.syn0 & SYN_INLINE:
        return d.syn0 >> 1
    return d.syn.heap[i].frame


cdef inline double syn_ts(const Dir* d, int i) noexcept nogil:
    if d.syn0 & SYN_INLINE:
        return d.syn.ts0
    return d.syn.heap[i].ts

# Append an entry to ep's timeline (no bound: the callers keep theirs). 0, or -1 out of memory.
cdef int hist_append(Ep* ep, uint8_t state, int64_t frame, double ts) noexcept nogil

# Set up `c` for the first segment `s` (not yet observed) with the given roles.
cdef int conn_init(Conn* c, int64_t conn_id, const Seg* s, const Addr* client_addr,
                   uint16_t client_port, const Addr* server_addr,
                   uint16_t server_port) noexcept nogil
# Release what conn_init and the observe calls allocated.
cdef void conn_free(Conn* c) noexcept nogil
# Observe one TCP segment / one ICMP error quoting one. Return 0, or -1 when memory ran out.
cdef int conn_observe(Conn* c, const Seg* s) noexcept nogil
cdef int conn_observe_icmp(Conn* c, const Seg* s) noexcept nogil
# Nothing more is expected (both ends finished, or a reset acted on) / either side has sent a
# FIN or a RST.
cdef bint conn_ended(const Conn* c) noexcept nogil
cdef bint conn_any_closed(const Conn* c) noexcept nogil
# `s` was sent by the client
cdef bint conn_from_client(const Conn* c, const Seg* s) noexcept nogil
# The observer's last test of whether `s` starts a new connection (starts_new): a SYN from the client with another ISN while
# the server has sent nothing (a new attempt on the same ports). `s` is a SYN without ACK/RST.
cdef bint conn_new_attempt(const Conn* c, const Seg* s) noexcept nogil
# The connection as an analyzer.connection.Connection (zeek is left None for the observer to
# fill).
cdef object conn_export(const Conn* c)
cdef object tunnel_export(const Tunnel* t)  # pipeline.RECORD_FIELDS["tunnel"]

# The layout's bits, shared by the modules that read a Conn (conn.pyx, verdict.pyx, records.pyx).
cdef enum:
    ANOM_KEPT = 10  # anomalies kept in full: the classifier shows conn.anomalies[:10]
    EV_OWN_RST = 255  # the anomaly "send after its own RST" (not a table event)

# Dir.has: presence of the optional values
cdef enum:
    H_ISN = 1 << 0
    H_NEXT = 1 << 1
    H_MAXACK = 1 << 2  # max_ack and ack_frame
    H_FIN = 1 << 3  # fin_frame and fin_seq
    H_LADDER = 1 << 4  # ladder_seq
    H_KEY = 1 << 5  # last_key
    H_KEY_TSVAL = 1 << 6  # last_key's tsval is not None
    H_DATA = 1 << 7  # first_data_frame and last_data_frame
    H_DAPF = 1 << 8  # data_after_peer_fin
    H_SAOR = 1 << 9  # sent_after_own_rst
    H_OPTIONS = 1 << 10  # options_seen (a bool, not optional, but it fits here)

# RstRec.bits
cdef enum:
    R_HAS_ACK = 1 << 0
    R_HAS_OPTIONS = 1 << 1
    R_HAS_TSVAL = 1 << 2
    R_ACCEPTED = 1 << 3
    R_ANSWERS_SYN = 1 << 4
    R_FORGED = 1 << 5
    R_CHALLENGE = 1 << 6  # challenge_frame is not None
    R_SILENT_SINCE_GAP = 1 << 7  # its sender had sent nothing since the idle gap (conn_idle_frame)

# ConnMore.stall
cdef enum:
    STALL_ON = 1 << 0  # the server is held in SYN_RCVD until a client segment is accepted
    STALL_SYNACK = 1 << 1  # the server retransmitted its SYN/ACK after the client's ACK
    STALL_DATA = 1 << 2  # the client's data was retransmitted, the server sent only SYN/ACKs

# A silence at least this long (ms) before new data is an idle gap a middlebox may have timed
# out (conn.pyx: the claimed sender of a RST after it; verdict.pyx: middlebox_idle_timeout).
cdef enum:
    IDLE_MIN_MS = 1000

cdef inline double conn_idle_gap(const Conn* c) noexcept nogil:
    return c.more.idle_gap if c.more != NULL else 0.0

cdef inline int64_t conn_idle_frame(const Conn* c) noexcept nogil:
    return c.more.idle_frame if c.more != NULL else 0

# `s` (just observed) is the server's RST/ACK with seq = its ISN+1 after a handshake in which
# the server sent nothing else: what a listener closing under its accept queue sends (the
# observer counts them per listening endpoint: a burst is the listener_closed mark).
cdef bint conn_listener_reset(const Conn* c, const Seg* s) noexcept nogil

# One Conn driven from Python Segments (tests): the Python Connection's interface. Declared here
# so that other modules' test probes (verdict.ClassifyProbe) extend it.
cdef class ConnProbe:
    cdef Conn c
