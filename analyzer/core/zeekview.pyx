# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""Zeek's view of one connection (conn_state, history, Zeek's connection boundaries) over
C-level data. Its rules and known approximations are documented in analyzer/zeek_params.py,
which declares the timers and port sets read here at import.

Endpoints are kept by physical side (0: sender of the first packet) and `orig` names the
originator, so a role flip swaps one index and the per-side facts (did_close, first packet
seen, counters, reassembler) stay with their side.

Bounds (zeekview.pxd), beyond those approximations:
* the history keeps its first ZEEK_HIST_MAX (65536) letters (16 in the struct, then a heap
  buffer);
* a direction buffers at most ZEEK_MAX_BLOCKS disjoint out-of-order blocks (touching or
  overlapping ones are coalesced, which the gap rules cannot tell apart from Python's list);
  a block past that is not buffered, so its bytes count as missing (a later gap count may be
  off by one);
* the log-scale counters are 32-bit and stop at 2**32 - 1 (the letter for the 10**10th event
  of one kind in one direction is never written).
"""

from libc.math cimport floor
from libc.stdint cimport UINT32_MAX, uint64_t
from libc.stdlib cimport free, malloc, realloc
from libc.string cimport memcmp, memcpy, memset

from analyzer.core.seg cimport (CSUM_BAD, F_ACK, F_FIN, F_RST, F_SYN, ICMP_NONE, addr_eq,
                                seg_from_py)

from analyzer import zeek_params as _py

cdef enum:  # endpoint states (Zeek's TCP_ENDPOINT_*); 0 so that a zeroed endpoint is a new one
    ZS_INACTIVE, ZS_SYN_SENT, ZS_SYN_ACK_SENT, ZS_PARTIAL, ZS_ESTABLISHED, ZS_CLOSED, ZS_RESET

cdef enum:  # ZeekEp.bits
    ZE_DID_CLOSE = 1, ZE_SENT_PAYLOAD = 2, ZE_HAS_START = 4, ZE_HAS_SYN = 8, ZE_HAS_FIN = 16
    ZE_HAS_RST = 32
    ZE_FIN_SEEN = 64  # fin_cnt > 0
    ZE_FIRST_SEEN = 128  # this direction's first packet was processed

cdef enum:  # ZeekEp.seen: the kinds recorded once per direction
    ZK_D = 1, ZK_A = 2, ZK_I = 4, ZK_Q = 8, ZK_SYN = 16, ZK_FIN = 32, ZK_RST = 64

cdef enum:  # ZeekEp.scaled indexes (the letters of _SCALED_LETTERS)
    SC_C, SC_W, SC_T, SC_G

cdef enum:  # ZeekConn.flags
    ZC_STARTED = 1  # orig / resp known
    ZC_PARTIAL = 2
    ZC_CANCELLED = 4  # timers cancelled: `deadline` is delete_at
    ZC_ATTEMPT = 8  # `deadline` is attempt_at (the attempt timer is set)
    ZC_NOMEM = 16  # an allocation failed during this zeek_observe

cdef char* _SCALED_LETTERS = b"CWTG"

# Timers and limits, read once from analyzer.zeek_params (never written twice).
cdef double ATTEMPT_DELAY = _py.TCP_ATTEMPT_DELAY
cdef double CLOSE_DELAY = _py.TCP_CLOSE_DELAY
cdef double INACTIVITY_TIMEOUT = _py.TCP_INACTIVITY_TIMEOUT
cdef double SYN_TIMEOUT = _py.TCP_SYN_TIMEOUT
cdef double SESSION_TIMER = _py.TCP_SESSION_TIMER
cdef double CONNECTION_LINGER = _py.TCP_CONNECTION_LINGER
cdef double EPS = _py.EPS
cdef int64_t TOO_LARGE_SEQ_DELTA = _py.TOO_LARGE_SEQ_DELTA

# The likely-server-port sets as bitmaps (bit p of byte p >> 3), filled from the frozensets.
cdef uint8_t _likely_ports[8192]
cdef uint8_t _bare_ports[8192]


cdef void _fill_ports(uint8_t* bitmap, ports) except *:
    cdef long p
    memset(bitmap, 0, 8192)
    for p in ports:
        if 0 <= p <= 65535:
            bitmap[p >> 3] |= 1 << (p & 7)


_fill_ports(_likely_ports, _py.LIKELY_SERVER_PORTS)
_fill_ports(_bare_ports, _py.BARE_SERVER_PORTS)


cdef inline bint _server_port(const ZeekConn* z, uint16_t p) noexcept nogil:
    if z.options & ZEEK_BARE:
        return (_bare_ports[p >> 3] >> (p & 7)) & 1
    return (_likely_ports[p >> 3] >> (p & 7)) & 1


# ---------------------------------------------------------------------- the two sides

cdef ZeekEp EP1_NONE  # side 1 until zeek_ep1_own: as zeek_init leaves a side; never written
memset(&EP1_NONE, 0, sizeof(ZeekEp))
EP1_NONE.last_reassem = 1
EP1_NONE.trim_seq = 1


cdef inline ZeekEp* _ep(const ZeekConn* z, int side) noexcept nogil:
    return <ZeekEp*>&z.ep0 if side == 0 else z.ep1


cdef bint _ep1_own(ZeekConn* z) noexcept nogil:
    """Give side 1 its own ZeekEp (a copy of EP1_NONE) if it has none. False: out of memory."""
    cdef ZeekEp* e
    if z.ep1 != &EP1_NONE and z.ep1 != NULL:
        return True
    e = <ZeekEp*>malloc(sizeof(ZeekEp))
    if e == NULL:
        return False
    e[0] = EP1_NONE
    z.ep1 = e
    return True


# ---------------------------------------------------------------------- sequence space

cdef inline int32_t _sdelta(uint32_t a, uint32_t b) noexcept nogil:
    # (a - b) mod 2**32, as a signed 32-bit value (two's complement wrap)
    return <int32_t>(a - b)


cdef inline int32_t _rel(const ZeekEp* e, uint32_t seq) noexcept nogil:
    # seq relative to the ISN, signed (no ISN: a zeroed start, the sequence number itself)
    return <int32_t>(seq - e.start)


cdef inline void _init_seq(ZeekEp* e, uint32_t start, uint32_t last) noexcept nogil:
    e.start = start
    e.ackseq = start
    e.last = last
    e.bits |= ZE_HAS_START


cdef inline void _set_state(ZeekEp* e, uint8_t new) noexcept nogil:
    if new != e.state:
        e.prev_state = e.state
        e.state = new


cdef inline bint _inactive(const ZeekEp* e) noexcept nogil:
    return e.state == ZS_INACTIVE or e.state == ZS_PARTIAL


cdef inline bint _clean(const ZeekEp* e) noexcept nogil:
    return e.state == ZS_ESTABLISHED or (e.state == ZS_CLOSED and e.prev_state == ZS_ESTABLISHED)


# ---------------------------------------------------------------------- reassembler
# Blocks of side i: z.blocks[i * ZEEK_MAX_BLOCKS ...], sorted, disjoint, not touching, and all
# above last_reassem (data() and ack() below keep these).

cdef void _absorb(ZeekConn* z, int side) noexcept nogil:
    cdef ZeekEp* e = _ep(z, side)
    cdef ZeekBlock* b = z.blocks + side * ZEEK_MAX_BLOCKS
    cdef int n = z.nblocks[side], i = 0, j
    while i < n and b[i].lo <= e.last_reassem:
        if b[i].hi > e.last_reassem:
            e.last_reassem = b[i].hi
        i += 1
    if i:
        for j in range(n - i):
            b[j] = b[j + i]
        z.nblocks[side] = n - i


cdef void _insert_block(ZeekConn* z, int side, int64_t lo, int64_t hi) noexcept nogil:
    cdef ZeekBlock* b
    cdef int n, i, j, k
    if z.blocks == NULL:
        z.blocks = <ZeekBlock*>malloc(2 * ZEEK_MAX_BLOCKS * sizeof(ZeekBlock))
        if z.blocks == NULL:
            z.flags |= ZC_NOMEM
            return
    b = z.blocks + side * ZEEK_MAX_BLOCKS
    n = z.nblocks[side]
    i = 0
    while i < n and b[i].hi < lo:  # blocks wholly before, not touching
        i += 1
    j = i
    while j < n and b[j].lo <= hi:  # blocks touching or overlapping [lo, hi): merged
        if b[j].lo < lo:
            lo = b[j].lo
        if b[j].hi > hi:
            hi = b[j].hi
        j += 1
    if i == j:  # a new disjoint block
        if n >= ZEEK_MAX_BLOCKS:
            return  # past the bound: not buffered (module docstring)
        k = n
        while k > i:
            b[k] = b[k - 1]
            k -= 1
        n += 1
    else:  # b[i:j] collapse into b[i]
        for k in range(j, n):
            b[k - (j - i - 1)] = b[k]
        n -= j - i - 1
    b[i].lo = lo
    b[i].hi = hi
    z.nblocks[side] = n


cdef void _data(ZeekConn* z, int side, int64_t lo, int64_t hi, int64_t acked) noexcept nogil:
    cdef ZeekEp* e = _ep(z, side)
    if lo < acked:
        if hi <= acked:
            return
        lo = acked
    if hi <= e.last_reassem:
        return
    if lo <= e.last_reassem:
        e.last_reassem = hi
        _absorb(z, side)
        return
    _insert_block(z, side, lo, hi)


cdef int64_t _reasm_ack(ZeekConn* z, int side, int64_t up_to) noexcept nogil:
    """Trim to `up_to`; the gaps skipped on the way."""
    cdef ZeekEp* e = _ep(z, side)
    cdef ZeekBlock* b = z.blocks + side * ZEEK_MAX_BLOCKS
    cdef int n = z.nblocks[side], i = 0, j
    cdef int64_t gaps = 0
    if up_to <= e.trim_seq:
        return 0
    e.trim_seq = <int32_t>up_to  # < 2**31: a relative ack, or below one
    if up_to > e.last_reassem:
        while i < n and b[i].lo < up_to:  # sorted: these are the ones the ack jumps over
            if b[i].hi > e.last_reassem:
                if b[i].lo > e.last_reassem:
                    gaps += 1
                e.last_reassem = b[i].hi
            i += 1
        if i:
            for j in range(n - i):
                b[j] = b[j + i]
            z.nblocks[side] = n - i
        if up_to > e.last_reassem:
            gaps += 1
            e.last_reassem = up_to
        _absorb(z, side)
    # (only blocks ending above up_to remain: all left are above last_reassem >= up_to or,
    # when up_to <= last_reassem, above last_reassem)
    return gaps


# ---------------------------------------------------------------------- history

cdef inline const char* _hist_buf(const ZeekConn* z) noexcept nogil:
    if z.hist_len > ZEEK_HIST_INLINE:
        return z.hist.heap
    return z.hist.chars


cdef void _add_raw(ZeekConn* z, char c) noexcept nogil:
    cdef uint32_t n = z.hist_len
    cdef char* buf
    if n < ZEEK_HIST_INLINE:
        z.hist.chars[n] = c
    elif n >= ZEEK_HIST_MAX:
        return
    elif n == ZEEK_HIST_INLINE:  # move to the heap (capacity 64)
        buf = <char*>malloc(64)
        if buf == NULL:
            z.flags |= ZC_NOMEM
            return
        memcpy(buf, z.hist.chars, n)
        buf[n] = c
        z.hist.heap = buf
    else:
        if n >= 64 and n & (n - 1) == 0:  # the capacity is the power of two n reached
            buf = <char*>realloc(z.hist.heap, 2 * n)
            if buf == NULL:
                z.flags |= ZC_NOMEM
                return
            z.hist.heap = buf
        z.hist.heap[n] = c
    z.hist_len = n + 1


cdef inline void _add(ZeekConn* z, bint is_orig, char letter) noexcept nogil:
    _add_raw(z, letter if is_orig else letter + 32)  # lowercase (letters only)


cdef inline bint _once(ZeekConn* z, ZeekEp* e, bint is_orig, uint8_t kind,
                       char letter) noexcept nogil:
    if e.seen & kind:
        return True
    e.seen |= kind
    _add(z, is_orig, letter)
    return False


cdef inline void _scaled(ZeekConn* z, ZeekEp* e, bint is_orig, int which) noexcept nogil:
    # the letter at counts 1, 10, 100, ... (Zeek's log-scale threshold, times ten each time)
    cdef uint32_t c
    if e.scaled[which] == UINT32_MAX:
        return
    e.scaled[which] += 1
    c = e.scaled[which]
    while c % 10 == 0:
        c //= 10
    if c == 1:
        _add(z, is_orig, _SCALED_LETTERS[which])


cdef void _update_history(ZeekConn* z, const Seg* s, ZeekEp* e, bint is_orig, bint syn,
                          bint fin, bint rst) noexcept nogil:
    cdef char letter
    cdef uint32_t end
    if not (syn or fin or rst):
        if s.payload_len:
            _once(z, e, is_orig, ZK_D, b'D')
        elif s.flags & F_ACK:
            _once(z, e, is_orig, ZK_A, b'A')
        return
    if syn + fin + rst > 1:
        if fin and rst:
            _once(z, e, is_orig, ZK_I, b'I')
        else:
            _once(z, e, is_orig, ZK_Q, b'Q')
    elif syn:
        letter = b'H' if s.flags & F_ACK else b'S'
        if _once(z, e, is_orig, ZK_SYN, letter) and not (e.bits & ZE_HAS_SYN
                                                         and s.seq == e.last_syn):
            _add(z, is_orig, letter)
        e.last_syn = s.seq
        e.bits |= ZE_HAS_SYN
    elif fin:
        end = s.seq + s.payload_len
        if _once(z, e, is_orig, ZK_FIN, b'F') and not (e.bits & ZE_HAS_FIN
                                                       and end == e.last_fin):
            _add(z, is_orig, b'F')
        e.last_fin = end
        e.bits |= ZE_HAS_FIN
    else:
        if _once(z, e, is_orig, ZK_RST, b'R') and not (e.bits & ZE_HAS_RST
                                                       and s.seq == e.last_rst):
            _add(z, is_orig, b'R')
        e.last_rst = s.seq
        e.bits |= ZE_HAS_RST


# ---------------------------------------------------------------------- connection

cdef void zeek_init(ZeekConn* z, uint8_t options) noexcept nogil:
    memset(z, 0, sizeof(ZeekConn))
    z.options = options
    z.ep0 = EP1_NONE  # (the same start as side 1's)
    z.ep1 = &EP1_NONE


cdef void zeek_free(ZeekConn* z) noexcept nogil:
    if z.ep1 != &EP1_NONE:
        free(z.ep1)
    z.ep1 = &EP1_NONE
    free(z.blocks)
    z.blocks = NULL
    z.nblocks[0] = z.nblocks[1] = 0
    if z.hist_len > ZEEK_HIST_INLINE:
        free(z.hist.heap)
    z.hist_len = 0


cdef inline void _flip(ZeekConn* z) noexcept nogil:
    z.orig ^= 1
    z.flags &= ~ZC_PARTIAL


cdef void _start(ZeekConn* z, const Seg* s, const Addr* a) noexcept nogil:
    cdef bint flip = False
    z.flags |= ZC_STARTED
    z.last_time = s.ts
    z.grid[0] = s.ts + SYN_TIMEOUT
    z.ngrids = 1
    # side 0's address is s.src, side 1's s.dst: the caller's `a` and `b` (or `b` and `a`)
    z.swap = 0 if addr_eq(&s.src, a) else 1
    z.port[0] = s.sport
    z.port[1] = s.dport
    z.ip_version = s.ip_version
    if not (s.flags & F_SYN) or s.flags & F_ACK:
        if _server_port(z, s.sport):
            if _server_port(z, s.dport):
                flip = not (s.flags & F_SYN) and s.sport < s.dport
            else:
                flip = True
    z.orig = 1 if flip else 0
    if flip:
        _add_raw(z, b'^')


cdef void _connection_closed(ZeekConn* z, ZeekEp* e, ZeekEp* peer) noexcept nogil:
    if e.bits & ZE_DID_CLOSE:
        return
    e.bits |= ZE_DID_CLOSE
    if e.state == ZS_RESET or peer.bits & ZE_DID_CLOSE or peer.state == ZS_INACTIVE:
        # close complete: the record goes close_delay after the last packet
        z.flags = (z.flags | ZC_CANCELLED) & ~ZC_ATTEMPT
        z.ngrids = 0
        z.deadline = z.last_time + CLOSE_DELAY
    elif e.prev_state != ZS_INACTIVE and not (z.flags & ZC_CANCELLED):
        # each side closes once and the second close completes: one such grid at most
        if z.ngrids < ZEEK_MAX_GRIDS:
            z.grid[z.ngrids] = z.last_time + SESSION_TIMER
            z.ngrids += 1


cdef void _ack_received(ZeekConn* z, int side, bint ep_is_orig, int64_t up_to) noexcept nogil:
    cdef ZeekEp* e = _ep(z, side)
    cdef int64_t gaps
    if e.bits & ZE_FIN_SEEN and up_to >= e.fin_seq:
        up_to = e.fin_seq - 1
    if up_to <= e.trim_seq:
        return
    if up_to <= 2 and z.flags & ZC_PARTIAL and up_to > e.last_reassem:
        return  # the faked-up ISN of a partial connection: not a real gap
    gaps = _reasm_ack(z, side, up_to)
    if gaps and _clean(e) and _clean(_ep(z, 1 - side)):
        while gaps > 0:
            _scaled(z, e, ep_is_orig, SC_G)
            gaps -= 1


cdef bint _state_machine(ZeekConn* z, const Seg* s, int side, bint is_orig, bint syn, bint fin,
                         bint rst, bint ack) noexcept nogil:
    cdef ZeekEp* e = _ep(z, side)
    cdef ZeekEp* peer = _ep(z, 1 - side)
    cdef bint do_close = False
    cdef uint8_t state = e.state
    if state == ZS_INACTIVE:
        if syn:
            if is_orig:
                _set_state(e, ZS_SYN_ACK_SENT if ack else ZS_SYN_SENT)
                if not (z.flags & (ZC_CANCELLED | ZC_ATTEMPT)):
                    z.deadline = s.ts + ATTEMPT_DELAY
                    z.flags |= ZC_ATTEMPT
            else:
                if not ack and peer.state == ZS_SYN_ACK_SENT:
                    # SYN/SYN-ACK reversal: flip and treat as established
                    _flip(z)
                    _add_raw(z, b'^')
                    z.flags &= ~ZC_PARTIAL
                    _set_state(peer, ZS_ESTABLISHED)
                    _ep(z, z.orig).bits |= ZE_FIRST_SEEN
                if peer.state == ZS_SYN_SENT:
                    _set_state(peer, ZS_ESTABLISHED)
                _set_state(e, ZS_ESTABLISHED)
        if fin:
            _set_state(e, ZS_CLOSED)
            do_close = True
        if rst:
            _set_state(e, ZS_RESET)
            do_close = True
        if e.state == ZS_INACTIVE:
            if not is_orig and s.payload_len == 0 and _ep(z, z.orig).state == ZS_SYN_SENT:
                pass  # "eccentric TCP": an ACK of the SYN before the SYN-ACK
            elif ack and peer.state == ZS_ESTABLISHED:
                _set_state(e, ZS_ESTABLISHED)  # the SYN was missed
                z.flags &= ~ZC_PARTIAL
                _ep(z, z.orig if is_orig else 1 - z.orig).bits |= ZE_FIRST_SEEN
            else:
                _set_state(e, ZS_PARTIAL)
    elif state == ZS_SYN_SENT or state == ZS_SYN_ACK_SENT:
        if fin:
            _set_state(e, ZS_CLOSED)
            do_close = True
        if rst:
            _set_state(e, ZS_RESET)
            do_close = True
    elif state == ZS_ESTABLISHED or state == ZS_PARTIAL:
        if syn and state == ZS_PARTIAL and peer.state == ZS_INACTIVE and not ack:
            _set_state(e, ZS_SYN_SENT)
        if fin and not rst:
            _set_state(e, ZS_CLOSED)
            if peer.state == ZS_RESET and peer.prev_state == ZS_CLOSED:
                _set_state(peer, ZS_CLOSED)  # FIN, RST, then the peer's FIN: a normal close
            do_close = True
        if rst:
            _set_state(e, ZS_RESET)
            do_close = True
    elif state == ZS_CLOSED:
        if rst and peer.state != ZS_CLOSED:
            _set_state(e, ZS_RESET)
            if not (e.bits & ZE_DID_CLOSE):
                do_close = True
    return do_close


cdef void _process(ZeekConn* z, const Seg* s, bint is_orig, int side) noexcept nogil:
    # `is_orig` stays the value at entry even if the state machine flips
    cdef ZeekEp* e = _ep(z, side)
    cdef ZeekEp* peer = _ep(z, 1 - side)
    cdef bint syn = s.flags & F_SYN != 0, fin = s.flags & F_FIN != 0
    cdef bint rst = s.flags & F_RST != 0, ack = s.flags & F_ACK != 0
    cdef uint32_t plen = s.payload_len
    cdef int64_t seg_len = (0 if rst else <int64_t>plen) + syn + fin
    cdef uint32_t seq_end = <uint32_t>(s.seq + <uint64_t>seg_len)
    cdef int32_t rel_seq, d
    cdef int64_t rel_ack = 0, delta_last, lo
    cdef bint underflow, do_close = False

    if not (e.bits & ZE_FIRST_SEEN):  # partial-connection status
        if is_orig:
            if not syn or ack:
                z.flags |= ZC_PARTIAL
            else:
                z.flags &= ~ZC_PARTIAL
        elif not (z.flags & ZC_PARTIAL) and not syn:
            z.flags |= ZC_PARTIAL
        e.bits |= ZE_FIRST_SEEN

    if e.state == ZS_INACTIVE:  # sequence-space initialisation
        if syn:
            _init_seq(e, s.seq, seq_end)
        else:
            _init_seq(e, s.seq - 1, s.seq)
    elif e.state == ZS_SYN_SENT or e.state == ZS_SYN_ACK_SENT:
        if syn and not (e.bits & ZE_HAS_START and s.seq == e.start):
            _init_seq(e, s.seq, seq_end)
    elif e.state == ZS_ESTABLISHED or e.state == ZS_PARTIAL:
        if syn:
            _init_seq(e, s.seq, seq_end)
    elif e.state == ZS_RESET and syn and e.prev_state == ZS_INACTIVE:
        _init_seq(e, s.seq, seq_end)

    rel_seq = _rel(e, s.seq)
    underflow = rel_seq < 0

    _update_history(z, s, e, is_orig, syn, fin, rst)

    if s.window == 0 and not rst and peer.state != ZS_CLOSED and e.state != ZS_RESET:
        _scaled(z, e, is_orig, SC_W)

    if not (_ep(z, 0).bits & _ep(z, 1).bits & ZE_DID_CLOSE):
        z.last_time = s.ts

    if fin:
        e.bits |= ZE_FIN_SEEN
        e.fin_seq = rel_seq + seg_len

    if ack:
        if peer.state == ZS_INACTIVE:
            rel_ack = 1
            _init_seq(peer, s.ack - 1, s.ack - 1)
        else:
            rel_ack = _rel(peer, s.ack)
            if rel_ack < 0:
                rel_ack = 0
            elif not rst:
                d = _sdelta(s.ack, peer.ackseq)
                if d > 0 and not (s.ack == 0 and d > TOO_LARGE_SEQ_DELTA):
                    peer.ackseq = s.ack

    # highest sequence sent; retransmissions
    delta_last = _sdelta(seq_end, e.last)
    if (syn or rst) and (delta_last > TOO_LARGE_SEQ_DELTA or -delta_last > TOO_LARGE_SEQ_DELTA):
        pass
    elif fin and e.last == <uint32_t>(e.start + 1):
        e.last = seq_end
    elif e.state == ZS_RESET:
        pass
    elif delta_last > 0:
        e.last = seq_end
    elif plen > 0:
        _scaled(z, e, is_orig, SC_T)

    # only a SYN, FIN or RST, or an endpoint's first packet, moves an endpoint's state
    if syn or fin or rst or e.state == ZS_INACTIVE:
        do_close = _state_machine(z, s, side, is_orig, syn, fin, rst, ack)

    if ack:
        _ack_received(z, 1 - side, not is_orig, rel_ack)

    if plen > 0 and not rst:
        e.bits |= ZE_SENT_PAYLOAD
        if not underflow and not (z.options & ZEEK_SNAPLEN_GAPS and s.payload_captured >= 0
                                  and s.payload_captured < plen):
            lo = <int64_t>rel_seq + syn  # (64-bit: rel_seq + 1 may pass 2**31 - 1)
            _data(z, side, lo, lo + plen, _rel(e, e.ackseq))

    if do_close:
        _connection_closed(z, e, peer)


cdef int zeek_observe(ZeekConn* z, const Seg* s, const Addr* a, const Addr* b) noexcept nogil:
    _observe(z, s, a, b)
    if z.flags & ZC_NOMEM:
        z.flags &= ~ZC_NOMEM
        return -1
    return 0


cdef void _observe(ZeekConn* z, const Seg* s, const Addr* a, const Addr* b) noexcept nogil:
    cdef int side
    cdef bint is_orig
    if s.icmp_kind != ICMP_NONE:
        return
    if not (z.flags & ZC_STARTED):
        _start(z, s, a)
    if s.ip_version != z.ip_version:
        return  # (an address of the other family is another endpoint)
    if z.swap:
        a, b = b, a
    if addr_eq(&s.src, a) and s.sport == z.port[0]:
        side = 0
    elif addr_eq(&s.src, b) and s.sport == z.port[1]:
        side = 1
    else:
        return  # not this connection's packet
    is_orig = side == z.orig
    # side 1 is written by any segment but a bare SYN from side 0 as the originator (the
    # state machine, the acks and the checksum count below touch only side 0 then)
    if not (side == 0 and is_orig and s.flags & (F_SYN | F_ACK | F_FIN | F_RST) == F_SYN) \
            and not _ep1_own(z):
        z.flags |= ZC_NOMEM  # (the segment is dropped from Zeek's view)
        return

    if s.checksum == CSUM_BAD and not (z.options & ZEEK_IGNORE_CHECKSUMS):
        _scaled(z, _ep(z, side), is_orig, SC_C)
        return

    if (z.hist_len == 1 and z.hist.chars[0] == b'H'
            and not (s.flags & (F_SYN | F_FIN | F_RST)) and (s.flags & F_ACK or s.payload_len)):
        # a lone SYN-ACK, then an ACK or data: the SYN was missed; rewrite `H` as `^h`
        _flip(z)
        z.hist.chars[0] = b'^'
        z.hist.chars[1] = b'h'
        z.hist_len = 2
        if _ep(z, 1 - z.orig).state == ZS_SYN_ACK_SENT:
            _set_state(_ep(z, 1 - z.orig), ZS_ESTABLISHED)
        is_orig = side == z.orig
    _process(z, s, is_orig, side)


cdef bint zeek_closed_for_reuse(const ZeekConn* z) noexcept nogil:
    return (_ep(z, 0).bits | _ep(z, 1).bits) & ZE_DID_CLOSE != 0


cdef bint _removed_by(const ZeekConn* z, double t) noexcept nogil:
    cdef const ZeekEp* o = _ep(z, z.orig)
    cdef const ZeekEp* r = _ep(z, 1 - z.orig)
    cdef bint o_closed = o.bits & ZE_DID_CLOSE != 0, r_closed = r.bits & ZE_DID_CLOSE != 0
    cdef bint closing, empty
    cdef double quiet, start, k, tick
    cdef int i
    if z.flags & ZC_CANCELLED and t > z.deadline + EPS:
        return True
    if (z.flags & ZC_ATTEMPT and t > z.deadline + EPS
            and (o.state == ZS_SYN_SENT or o.state == ZS_SYN_ACK_SENT)
            and r.state == ZS_INACTIVE):
        return True
    if t - z.last_time > INACTIVITY_TIMEOUT + EPS:
        return True
    closing = (o_closed or r_closed) and (
        (o_closed and r_closed) or o.state == ZS_RESET or r.state == ZS_RESET
        or o.state == ZS_INACTIVE or r.state == ZS_INACTIVE)
    empty = o.state == ZS_INACTIVE and r.state == ZS_INACTIVE
    if closing or empty:
        # first expire-timer tick after the connection went quiet for the linger time
        quiet = z.last_time + CONNECTION_LINGER
        for i in range(z.ngrids if z.ngrids <= ZEEK_MAX_GRIDS else ZEEK_MAX_GRIDS):
            start = z.grid[i]
            k = floor((quiet - start) / SESSION_TIMER) + 1
            if k < 0:
                k = 0
            tick = start + k * SESSION_TIMER
            if tick <= quiet:
                tick += SESSION_TIMER
            if t > tick + EPS:
                return True
    return False


cdef bint zeek_starts_new(const ZeekConn* z, const Seg* s, double last_ts) noexcept nogil:
    cdef const ZeekEp* conn_orig = _ep(z, z.orig)
    cdef const ZeekEp* r = _ep(z, 1 - z.orig)
    if not (z.flags & ZC_STARTED) or s.icmp_kind != ICMP_NONE:
        return False
    if s.ts - last_ts > INACTIVITY_TIMEOUT + EPS:
        return True
    if _removed_by(z, s.ts):
        return True
    if not (s.flags & F_SYN):
        return False
    if s.flags & F_ACK:
        if conn_orig.state != ZS_INACTIVE:
            return False  # not a half connection
        conn_orig = r
    if not zeek_closed_for_reuse(z):
        if conn_orig.bits & ZE_HAS_START and s.seq == conn_orig.start:
            return False  # a retransmitted SYN
        if (not (s.flags & F_ACK) and conn_orig.state == ZS_SYN_ACK_SENT
                and r.state == ZS_INACTIVE and r.bits & ZE_HAS_START and s.seq == r.start):
            return False  # the SYN of a SYN/SYN-ACK reversal
    return True


# ---------------------------------------------------------------------- Python side

cdef bint _rstos0_history(const ZeekConn* z) noexcept nogil:
    """Zeek's /^\\^?S[^HAFGIQ]*R.*/ test on the history."""
    cdef const char* h = _hist_buf(z)
    cdef uint32_t first = 1 if z.hist_len and h[0] == b'^' else 0
    cdef uint32_t i
    cdef char c
    if first >= z.hist_len or h[first] != b'S':
        return False
    for i in range(first + 1, z.hist_len):
        c = h[i]
        if c == b'R':
            return True
        if c == b'H' or c == b'A' or c == b'F' or c == b'G' or c == b'I' or c == b'Q':
            return False
    return False


cdef object zeek_conn_state(const ZeekConn* z):
    cdef const ZeekEp* o = _ep(z, z.orig)
    cdef const ZeekEp* r = _ep(z, 1 - z.orig)
    if r.state == ZS_RESET:
        if o.state == ZS_SYN_SENT or o.state == ZS_SYN_ACK_SENT or (
                o.state == ZS_RESET and not ((o.bits | r.bits) & ZE_SENT_PAYLOAD)):
            return "REJ"
        return "RSTRH" if _inactive(o) else "RSTR"
    if o.state == ZS_RESET:
        if _inactive(r):
            return "RSTOS0" if _rstos0_history(z) else "OTH"
        return "RSTO"
    if o.state == ZS_CLOSED and r.state == ZS_CLOSED:
        return "SF"
    if o.state == ZS_CLOSED:
        return "SH" if _inactive(r) else "S2"
    if r.state == ZS_CLOSED:
        return "SHR" if _inactive(o) else "S3"
    if o.state == ZS_SYN_SENT and r.state == ZS_INACTIVE:
        return "S0"
    if o.state == ZS_ESTABLISHED and r.state == ZS_ESTABLISHED:
        return "S1"
    return "OTH"


cdef object zeek_history(const ZeekConn* z):
    return _hist_buf(z)[:z.hist_len].decode("ascii")


def zeek_struct_size():
    """sizeof(ZeekConn): the bytes each open connection holds inline."""
    return sizeof(ZeekConn)


def shared_side1_intact():
    """Is EP1_NONE (side 1 of every connection it has not written) still as zeek_init leaves a
    side (tests)?"""
    cdef ZeekEp fresh
    memset(&fresh, 0, sizeof(ZeekEp))
    fresh.last_reassem = 1
    fresh.trim_seq = 1
    return memcmp(&fresh, &EP1_NONE, sizeof(ZeekEp)) == 0


cdef class ZeekProbe:
    """One ZeekConn driven from Python Segments (tests)."""

    cdef ZeekConn z
    cdef Addr addr[2]  # the first TCP segment's source and destination (the connection's)

    def __cinit__(self):
        zeek_init(&self.z, 0)

    def __init__(self, bare_mode=False, ignore_checksums=False):
        # ZEEK_SNAPLEN_GAPS: seg_from_py sets payload_captured only from a segment carrying
        # it, so a plain Segment counts as fully captured
        zeek_free(&self.z)
        zeek_init(&self.z, (ZEEK_BARE if bare_mode else 0)
                  | (ZEEK_IGNORE_CHECKSUMS if ignore_checksums else 0) | ZEEK_SNAPLEN_GAPS)

    def __dealloc__(self):
        zeek_free(&self.z)

    def observe(self, segment):
        cdef Seg s
        seg_from_py(segment, &s)
        if not (self.z.flags & ZC_STARTED) and s.icmp_kind == ICMP_NONE:
            self.addr[0] = s.src
            self.addr[1] = s.dst
        if zeek_observe(&self.z, &s, &self.addr[0], &self.addr[1]) < 0:
            raise MemoryError()

    def starts_new(self, segment, double last_ts):
        cdef Seg s
        seg_from_py(segment, &s)
        return zeek_starts_new(&self.z, &s, last_ts)

    def is_closed_for_reuse(self):
        return zeek_closed_for_reuse(&self.z)

    @property
    def conn_state(self):
        return zeek_conn_state(&self.z)

    @property
    def history(self):
        return zeek_history(&self.z)

    @property
    def blocks(self):
        """Buffered out-of-order blocks per physical side (tests of the bound)."""
        return tuple(self.z.nblocks[i] for i in range(2))

    def internals(self):
        """The view's state, in Zeek's terms (tests)."""
        cdef const ZeekConn* z = &self.z
        cdef const ZeekEp* e
        cdef int side, i
        names = ("INACTIVE", "SYN_SENT", "SYN_ACK_SENT", "PARTIAL", "ESTABLISHED", "CLOSED",
                 "RESET")
        kinds = ((ZK_D, "D"), (ZK_A, "A"), (ZK_I, "I"), (ZK_Q, "Q"), (ZK_SYN, "SYN"),
                 (ZK_FIN, "FIN"), (ZK_RST, "RST"))
        eps = []
        for side in (z.orig, 1 - z.orig):
            e = _ep(z, side)
            eps.append({
                "state": names[e.state], "prev_state": names[e.prev_state],
                "start": e.start if e.bits & ZE_HAS_START else None, "last": e.last,
                "ackseq": e.ackseq, "did_close": bool(e.bits & ZE_DID_CLOSE),
                "fin_cnt": bool(e.bits & ZE_FIN_SEEN), "fin_seq": e.fin_seq,
                "sent_payload": bool(e.bits & ZE_SENT_PAYLOAD),
                "seen": frozenset(k for bit, k in kinds if e.seen & bit),
                "last_syn": e.last_syn if e.bits & ZE_HAS_SYN else None,
                "last_fin": e.last_fin if e.bits & ZE_HAS_FIN else None,
                "last_rst": e.last_rst if e.bits & ZE_HAS_RST else None,
                "scaled": {chr(_SCALED_LETTERS[i]): e.scaled[i] for i in range(4)
                           if e.scaled[i]},
                "last_reassem": e.last_reassem, "trim_seq": e.trim_seq,
                "blocks": [(z.blocks[side * ZEEK_MAX_BLOCKS + i].lo,
                            z.blocks[side * ZEEK_MAX_BLOCKS + i].hi)
                           for i in range(z.nblocks[side])],
                "first_seen": bool(e.bits & ZE_FIRST_SEEN),
            })
        return {
            "started": bool(z.flags & ZC_STARTED), "orig": eps[0], "resp": eps[1],
            "partial": bool(z.flags & ZC_PARTIAL), "last_time": z.last_time,
            "attempt_at": z.deadline if z.flags & ZC_ATTEMPT else None,
            "delete_at": z.deadline if z.flags & ZC_CANCELLED else None,
            "cancelled": bool(z.flags & ZC_CANCELLED),
            "grids": [z.grid[i] for i in range(z.ngrids)],
        }
