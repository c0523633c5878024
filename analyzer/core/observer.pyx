# cython: language_level=3, boundscheck=False, wraparound=False, cdivision=True
"""The observer: connection tracking over C-level data.

Which connection does each segment belong to, and when is one over. Connections are keyed by
their unordered 4-tuple plus a generation: a SYN on a tuple whose connection has closed (FIN or
RST seen), or a SYN with a new ISN while the old attempt is still unanswered, starts a new
connection (port reuse). Idle ones are finished on the capture's own clock (``Timeouts``), so
memory is bounded by the connections open at once, not by the file, and past ``max_active`` the
least recently active one is finished early.

Open connections live in one array of slots (the endpoints and facts of conn.pyx, Zeek's view of
zeekview.pyx, the LRU links; the flow key is the connection's own endpoints), found through an
open-addressing table of slot numbers with their hashes; no Python object exists for an open
connection. A finished connection is exported once
(``conn_export``) and queued in ``done`` with its Zeek fields and what the capture had shown of
its server so far, for the classifier.
"""

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t, uint64_t
from libc.stdlib cimport free, malloc, qsort, realloc
from libc.string cimport memcmp, memcpy, memset

from analyzer.core.conn cimport (
    Conn,
    Dir,
    conn_dir,
    conn_any_closed,
    conn_ended,
    conn_export,
    conn_free,
    conn_init,
    conn_listener_reset,
    conn_new_attempt,
    conn_observe,
    conn_observe_icmp,
)
from analyzer.core.decode cimport Counts, NativeReader, decode_ip, find_ip
from analyzer.core.columns cimport Columns
from analyzer.core.records cimport JsonLines
from analyzer.core.verdict cimport (
    CTX_BURST,
    CTX_BURST_SHIFT,
    Verdict,
    classify_conn,
    verdict_to_py,
)
from analyzer.core.seg cimport F_ACK, F_RST, F_SYN, ICMP_NONE, Addr, Seg, seg_from_py
from analyzer.core.zeekview cimport (
    ZEEK_BARE,
    ZEEK_IGNORE_CHECKSUMS,
    ZeekConn,
    zeek_conn_state,
    zeek_free,
    zeek_history,
    zeek_init,
    zeek_observe,
    zeek_starts_new,
)

cdef enum:
    NONE = -1  # no slot
    BATCH = 4096  # segments taken from a reader at a time


ctypedef struct Endpoint:
    Addr addr
    uint16_t port
    uint8_t version


# A run of listener resets from one server endpoint (conn_listener_reset): each within
# BURST_GAP of the previous one. A small direct-mapped table: a collision only forgets a run.
ctypedef struct ResetRun:
    Endpoint server
    double first
    double last
    uint32_t n

cdef enum:
    RUNS = 64
    BURST_MIN = 3  # resets in a run that make it a burst

cdef double BURST_GAP = 0.005  # seconds: inet_csk_listen_stop() resets its queue in one loop


# The flow key is not stored: it is the Conn's (client, server) endpoints, in either order, and
# its IP version; `hash` is the key's hash folded to 32 bits (the table has < 2**31 entries).
ctypedef struct Slot:
    Conn conn
    ZeekConn zeek
    uint32_t hash
    int32_t prev  # LRU neighbours (least recently active first); the free list uses next
    int32_t next
    uint8_t in_use
    uint8_t end_reported  # on_end was called
    uint8_t quiet  # in the quiet list (see Observer.sweep), not the LRU one


cdef inline int endpoint_cmp(const Endpoint* a, const Endpoint* b) noexcept nogil:
    cdef int c = memcmp(a.addr.b, b.addr.b, 16)
    if c:
        return c
    return <int>a.port - <int>b.port


cdef inline uint64_t mix(uint64_t h, uint64_t v) noexcept nogil:
    h ^= v
    h *= 0x100000001B3ULL  # FNV-1a prime, over 64-bit words
    return h ^ (h >> 29)


cdef inline bint conn_is(const Conn* c, const Endpoint* lo, const Endpoint* hi) noexcept nogil:
    """Is the flow key (lo, hi) this connection's (its client and server, in either order)?"""
    if c.ip_version != lo.version:
        return False
    if c.client_port == lo.port and c.server_port == hi.port \
            and memcmp(c.client_addr.b, lo.addr.b, 16) == 0 \
            and memcmp(c.server_addr.b, hi.addr.b, 16) == 0:
        return True
    return c.client_port == hi.port and c.server_port == lo.port \
        and memcmp(c.client_addr.b, hi.addr.b, 16) == 0 \
        and memcmp(c.server_addr.b, lo.addr.b, 16) == 0


cdef inline uint32_t fold(uint64_t h) noexcept nogil:
    return <uint32_t>(h ^ (h >> 32))


cdef inline uint64_t endpoint_hash(uint64_t h, const Endpoint* e) noexcept nogil:
    cdef uint64_t w0, w1
    memcpy(&w0, e.addr.b, 8)
    memcpy(&w1, &e.addr.b[8], 8)
    h = mix(h, w0)
    h = mix(h, w1)
    return mix(h, (<uint64_t>e.port << 8) | e.version)


cdef inline void seg_endpoints(const Seg* s, Endpoint* src, Endpoint* dst) noexcept nogil:
    src.addr = s.src
    src.port = s.sport
    src.version = s.ip_version
    dst.addr = s.dst
    dst.port = s.dport
    dst.version = s.ip_version


cdef enum:
    SLOT_BITS = 0xFFFFFFFF
cdef uint64_t EMPTY = 0xFFFFFFFFFFFFFFFFULL  # (a slot number is never 0xFFFFFFFF)


cdef inline uint64_t entry(uint32_t h, int32_t idx) noexcept nogil:
    return (<uint64_t>h << 32) | <uint32_t>idx


cdef int cmp_ids(const void* a, const void* b) noexcept nogil:
    cdef int64_t x = (<const int64_t*>a)[0], y = (<const int64_t*>b)[0]
    return (x > y) - (x < y)


class ZeekFields:
    """Zeek's conn_state and history of a finished connection (what make_record reads)."""

    __slots__ = ("conn_state", "history")

    def __init__(self, conn_state, history):
        self.conn_state = conn_state
        self.history = history


cdef enum:
    MAX_PORTS = 64  # ports a JSON filter can name


cdef class Observer:
    """Feeds segments to connections and classifies each one as it finishes (verdict.pyx).
    Finished connections queue in ``done`` as (Connection, Verdict) pairs, in the order they
    finish; or, with ``json_file`` (the records' "file" field), only as JSON Lines in ``json``
    (``json.take()``), and/or with ``columns_file`` as columns (``columns.take()``, a
    columns.Batch), filtered by ``set_filter``. ``on_end(conn, verdict)`` (optional) is
    called once, at the segment that ends a connection (live mode prints it at once), with the
    connection and its verdict as they stand then (the connection stays open for its last
    ACKs; its pair in ``done`` comes when it finishes)."""

    cdef Slot* slots
    cdef Seg* batch  # BATCH segments, filled by a native reader
    cdef int32_t n_slots  # slots ever used (the array's high-water mark)
    cdef int32_t cap_slots
    cdef int32_t free_slot  # head of the free list
    # open addressing, linear probing: (hash << 32 | slot number) or EMPTY, so that probing and
    # deleting read no slot but the one found
    cdef uint64_t* table
    cdef uint64_t mask  # table size - 1 (a power of two)
    cdef int32_t lru_head  # the connections not quiet, least recently active first
    cdef int32_t lru_tail
    # quiet connections (see sweep), in LRU order: all of them before lru_head's
    cdef int32_t quiet_head
    cdef int32_t quiet_tail
    cdef Py_ssize_t n_quiet
    cdef bint quiet_sorted  # their last activities (conn.end) never decrease along the list
    cdef Py_ssize_t n_active
    cdef int64_t next_id
    cdef double last_sweep
    cdef bint swept  # last_sweep is set
    cdef double idle_timeout
    cdef double closed_timeout
    cdef double sweep_every
    cdef Py_ssize_t max_active
    cdef bint zeek_boundaries
    cdef uint8_t zeek_opts
    cdef object on_end
    # servers that answered a SYN so far (the classifier's context): a set of endpoints
    cdef Endpoint* answered
    cdef uint64_t answered_mask
    cdef Py_ssize_t n_answered
    cdef ResetRun runs[RUNS]  # listener resets per server endpoint (zeroed with the object)
    cdef Counts frame_counts  # what feed_frame decoded (live captures)
    cdef public list done
    cdef int64_t* closing  # close_some's order: (conn id, slot) pairs, while closing
    cdef Py_ssize_t n_closing
    cdef Py_ssize_t i_closing
    cdef public JsonLines json
    cdef public Columns columns  # the records as columns (``columns``), or None
    cdef uint64_t keep_cases  # bit per catalog case kept in the JSON (all bits: no filter)
    cdef uint16_t keep_ports[MAX_PORTS]  # either port of a connection kept (none: no filter)
    cdef int n_keep_ports
    cdef public Py_ssize_t peak_active
    cdef public Py_ssize_t evicted_early

    def __cinit__(self):
        self.slots = NULL
        self.batch = NULL
        self.closing = NULL
        self.table = NULL
        self.answered = NULL

    def __init__(self, timeouts=None, zeek_options=None, on_end=None, json_file=None,
                 columns_file=None):
        from analyzer.timeouts import Timeouts

        t = timeouts or Timeouts()
        self.idle_timeout = t.idle
        self.closed_timeout = t.closed
        self.sweep_every = t.sweep_every
        self.max_active = t.max_active
        opts = dict(zeek_options or {})
        self.zeek_boundaries = bool(opts.pop("boundaries", False))
        self.zeek_opts = (ZEEK_BARE if opts.pop("bare_mode", False) else 0) | \
            (ZEEK_IGNORE_CHECKSUMS if opts.pop("ignore_checksums", False) else 0)
        if opts:
            raise TypeError(f"unknown Zeek options: {', '.join(sorted(opts))}")
        self.on_end = on_end
        self.done = []
        self.json = JsonLines(json_file) if json_file is not None else None
        self.columns = Columns(columns_file) if columns_file is not None else None
        self.keep_cases = ~(<uint64_t>0)
        self.n_keep_ports = 0
        self.cap_slots = 1024
        self.slots = <Slot*>malloc(self.cap_slots * sizeof(Slot))
        self.mask = 2048 - 1
        self.table = <uint64_t*>malloc((self.mask + 1) * sizeof(uint64_t))
        self.answered_mask = 256 - 1
        self.answered = <Endpoint*>malloc((self.answered_mask + 1) * sizeof(Endpoint))
        if self.slots == NULL or self.table == NULL or self.answered == NULL:
            raise MemoryError()
        memset(self.table, 0xFF, (self.mask + 1) * sizeof(uint64_t))  # all EMPTY
        memset(self.answered, 0, (self.answered_mask + 1) * sizeof(Endpoint))
        self.n_slots = 0
        self.free_slot = NONE
        self.lru_head = self.lru_tail = NONE
        self.quiet_head = self.quiet_tail = NONE
        self.quiet_sorted = True

    def __dealloc__(self):
        cdef int32_t i
        if self.slots != NULL:
            for i in range(self.n_slots):
                if self.slots[i].in_use:
                    conn_free(&self.slots[i].conn)
                    zeek_free(&self.slots[i].zeek)
            free(self.slots)
        free(self.table)
        free(self.answered)
        free(self.batch)
        free(self.closing)

    def set_filter(self, case_ids=None, ports=None):
        """Keep in the JSON only these cases (indices of analyzer.cases.CATALOG) and only
        connections with one of these ports on either side (None: all)."""
        cdef int i
        if case_ids is None:
            self.keep_cases = ~(<uint64_t>0)
        else:
            self.keep_cases = 0
            for i in case_ids:
                self.keep_cases |= (<uint64_t>1) << i
        if ports is None:
            self.n_keep_ports = 0
        else:
            if not 0 < len(ports) <= MAX_PORTS:
                raise ValueError(f"1 to {MAX_PORTS} ports")
            for i, port in enumerate(ports):
                self.keep_ports[i] = port
            self.n_keep_ports = len(ports)

    cdef bint kept(self, const Conn* c, const Verdict* v) noexcept:
        cdef int i
        if not (self.keep_cases >> v.case) & 1:
            return False
        if self.n_keep_ports == 0:
            return True
        for i in range(self.n_keep_ports):
            if c.client_port == self.keep_ports[i] or c.server_port == self.keep_ports[i]:
                return True
        return False

    @property
    def open_connections(self):
        """Connections open now."""
        return self.n_active

    # ------------------------------------------------------------------ feeding

    def feed_segment(self, seg):
        """Feed one Python Segment (readers that are not native yet, and tests)."""
        cdef Seg s
        seg_from_py(seg, &s)
        self.feed(&s)

    def feed_reader(self, NativeReader reader):
        """Feed the next batch of a native reader's segments; how many (0 at the end)."""
        cdef Py_ssize_t n, i
        if self.batch == NULL:
            self.batch = <Seg*>malloc(BATCH * sizeof(Seg))
            if self.batch == NULL:
                raise MemoryError()
        n = reader.fill(self.batch, BATCH)
        for i in range(n):
            self.feed(&self.batch[i])
        return n

    def feed_frame(self, const uint8_t[::1] data, int linktype, int64_t frame, double ts):
        """Decode one captured frame (live capture: frames fed as they arrive) and feed it.
        True if it held a TCP segment or an ICMP error quoting one."""
        cdef Seg s
        cdef Py_ssize_t n = data.shape[0], off
        self.frame_counts.frames += 1
        self.frame_counts.bytes_read += n
        if n == 0:  # (no byte to point at) nothing the link layer could name
            self.frame_counts.non_tcp += 1
            return False
        off = find_ip(&data[0], n, linktype)
        if off < 0:
            self.frame_counts.non_tcp += 1
            return False
        if not decode_ip(&data[0], n, off, False, &self.frame_counts, &s):
            return False
        s.frame = frame
        s.ts = ts
        self.feed(&s)
        return True

    @property
    def frame_stats(self):
        """The counters of feed_frame (ReadStats' names)."""
        return dict(self.frame_counts)

    def sweep_to(self, double now):
        """Sweep now (live capture: the wall clock advances the capture clock when idle)."""
        self.sweep(now)

    cdef int feed(self, const Seg* s) except -1:
        cdef Endpoint src, dst
        cdef Endpoint* lo
        cdef Endpoint* hi
        cdef uint32_t h
        cdef int32_t idx
        cdef Slot* slot
        cdef bint icmp = s.icmp_kind != ICMP_NONE
        seg_endpoints(s, &src, &dst)
        if s.flags & F_SYN and s.flags & F_ACK and not icmp:
            self.note_answered(&src)
        if endpoint_cmp(&src, &dst) <= 0:
            lo, hi = &src, &dst
        else:
            lo, hi = &dst, &src
        h = fold(endpoint_hash(endpoint_hash(0xCBF29CE484222325ULL, lo), hi))
        idx = self.find(lo, hi, h)
        if idx != NONE and self.starts_new(&self.slots[idx], s):
            self.finish(idx)
            idx = NONE
        if idx == NONE:
            idx = self.open(s, h, &src, &dst)
        else:
            self.lru_unlink(idx)
            self.lru_append(idx)
        slot = &self.slots[idx]
        if icmp:
            if conn_observe_icmp(&slot.conn, s) < 0:
                raise MemoryError()
        else:
            if conn_observe(&slot.conn, s) < 0 or zeek_observe(&slot.zeek, s, &slot.conn.client_addr,
                                                                &slot.conn.server_addr) < 0:
                raise MemoryError()
            if s.flags & F_RST and conn_listener_reset(&slot.conn, s):
                self.note_reset(&src, s.ts)
        if self.on_end is not None and not slot.end_reported and conn_ended(&slot.conn):
            slot.end_reported = 1
            self.report_end(slot)
        self.tick(s.ts)
        return 0

    cdef bint starts_new(self, Slot* slot, const Seg* s) noexcept:
        """Does `s` begin a new connection on this slot's 4-tuple (Zeek's boundaries when asked;
        idle past the timeout; ended and quiet past `closed`; a SYN after a FIN or RST, or a
        new attempt)?"""
        cdef bint icmp = s.icmp_kind != ICMP_NONE
        cdef double idle
        if self.zeek_boundaries and not icmp and \
                zeek_starts_new(&slot.zeek, s, slot.conn.end):
            return True
        idle = s.ts - slot.conn.end
        if idle > self.idle_timeout:
            return True
        if icmp:
            return False
        if idle > self.closed_timeout and conn_ended(&slot.conn):
            return True
        if not s.flags & F_SYN or s.flags & (F_ACK | F_RST):
            return False
        if conn_any_closed(&slot.conn):
            return True
        return conn_new_attempt(&slot.conn, s)

    cdef int32_t open(self, const Seg* s, uint32_t h, const Endpoint* src,
                      const Endpoint* dst) except -2:
        cdef int32_t idx = self.take_slot()
        cdef Slot* slot = &self.slots[idx]
        cdef const Endpoint* client
        cdef const Endpoint* server
        guess_roles(s, src, dst, &client, &server)
        slot.hash = h
        slot.quiet = 0
        slot.in_use = 1
        slot.end_reported = 0
        if conn_init(&slot.conn, self.next_id, s, &client.addr, client.port, &server.addr,
                     server.port) < 0:
            raise MemoryError()
        zeek_init(&slot.zeek, self.zeek_opts)
        self.next_id += 1
        self.insert(idx)
        self.lru_append(idx)
        self.n_active += 1
        if self.n_active > self.max_active:
            self.evicted_early += 1
            self.finish(self.quiet_head if self.quiet_head != NONE else self.lru_head)
        if self.n_active > self.peak_active:
            self.peak_active = self.n_active
        return idx

    # ------------------------------------------------------------------ time

    cdef int tick(self, double ts) except -1:
        """The capture clock reached `ts`: sweep at most once per sweep_every."""
        if not self.swept:
            self.swept = True
            self.last_sweep = ts
        elif ts - self.last_sweep >= self.sweep_every:
            self.sweep(ts)
        return 0

    def tick_to(self, double ts):
        self.tick(ts)

    cdef int sweep(self, double now) except -1:
        """Finish connections idle past their timeout, or ended and quiet for `closed`, in order
        of last activity: the walk stops at the first one active less
        than `closed` ago. One it leaves open becomes quiet: it stays as it is until touched (its
        idle time only grows, its `ended` does not change), so later sweeps do not walk it
        again but take from the quiet ones only those now idle past the timeout, in their LRU
        order, before the walk's. The quiet list is in LRU order; while its last activities
        never decrease along it (a capture in time order), those are a prefix of it, taken
        from its head; otherwise (a timestamp went back) the whole list is looked through,
        until it empties."""
        cdef int32_t idx, nxt
        cdef double quiet
        cdef Slot* slot
        self.last_sweep = now
        idx = self.quiet_head
        while idx != NONE:
            slot = &self.slots[idx]
            nxt = slot.next
            if now - slot.conn.end > self.idle_timeout:
                self.finish(idx)
            elif self.quiet_sorted:
                break
            idx = nxt
        idx = self.lru_head
        while idx != NONE:
            slot = &self.slots[idx]
            nxt = slot.next
            quiet = now - slot.conn.end
            if quiet < self.closed_timeout:
                break
            if quiet > self.idle_timeout or conn_ended(&slot.conn):
                self.finish(idx)
            else:
                self.make_quiet(idx)
            idx = nxt
        return 0

    cdef void make_quiet(self, int32_t idx) noexcept:
        """Move `idx` (not quiet) from the LRU list to the quiet one's tail."""
        cdef Slot* slot
        self.lru_unlink(idx)
        slot = &self.slots[idx]
        if self.quiet_tail != NONE:
            if slot.conn.end < self.slots[self.quiet_tail].conn.end:
                self.quiet_sorted = False
            self.slots[self.quiet_tail].next = idx
        else:
            self.quiet_head = idx
            self.quiet_sorted = True
        slot.prev = self.quiet_tail
        slot.next = NONE
        self.quiet_tail = idx
        self.n_quiet += 1
        slot.quiet = 1

    def close(self):
        """End of input: every connection still open is finished, in order of first frame."""
        while self.close_some(1 << 62):
            pass

    def close_some(self, Py_ssize_t most):
        """``close`` a part at a time: finish at most `most` of the connections still open (in
        order of first frame; the order is taken at the first call, when the input has ended),
        so that what they give (JSON, pairs) can be taken in between. True while some remain."""
        cdef Py_ssize_t n = 0, stop
        cdef int32_t idx
        cdef int k
        if self.closing == NULL:
            self.closing = <int64_t*>malloc((self.n_active + 1) * 2 * sizeof(int64_t))
            if self.closing == NULL:
                raise MemoryError()
            for k in range(2):
                idx = self.quiet_head if k == 0 else self.lru_head
                while idx != NONE:
                    self.closing[2 * n] = self.slots[idx].conn.conn_id
                    self.closing[2 * n + 1] = idx
                    n += 1
                    idx = self.slots[idx].next
            qsort(self.closing, n, 2 * sizeof(int64_t), cmp_ids)
            self.n_closing = n
            self.i_closing = 0
        stop = self.n_closing if self.n_closing - self.i_closing <= most \
            else self.i_closing + most
        while self.i_closing < stop:
            self.i_closing += 1
            self.finish(<int32_t>self.closing[2 * (self.i_closing - 1) + 1])
        if self.i_closing < self.n_closing:
            return True
        free(self.closing)
        self.closing = NULL
        return False

    # ------------------------------------------------------------------ finishing

    cdef object export(self, Slot* slot):
        conn = conn_export(&slot.conn)
        conn.zeek = ZeekFields(zeek_conn_state(&slot.zeek), zeek_history(&slot.zeek))
        return conn

    cdef int report_end(self, Slot* slot) except -1:
        """on_end(conn, verdict) for a connection that has just ended but stays open. The
        classifier's give_up closes a timed-out side's timeline in the Conn it classifies; the
        pair handed over shows it (as at the finish), then the slot's endpoints and anomaly
        count are put back, so the open connection goes on as if unclassified (the give_up only
        appends: its timeline entries, within conn.pyx's bound, and at most one anomaly)."""
        cdef Verdict v
        cdef Conn* c = &slot.conn
        cdef int r, rc
        cdef uint8_t state[2]
        cdef uint8_t n_hist[2]
        cdef uint32_t n_anom = c.more.n_anom if c.more != NULL else 0
        for r in range(2):
            state[r], n_hist[r] = c.ep[r].state, c.ep[r].n_hist
        # (the burst so far: live mode cannot wait for the resets still to come)
        rc = classify_conn(c, self.was_answered_by_server(slot) | self.reset_burst(slot), &v)
        try:
            if rc < 0:
                raise MemoryError()
            verdict = verdict_to_py(&v, c)
            conn = self.export(slot)
        finally:
            for r in range(2):
                c.ep[r].state, c.ep[r].n_hist = state[r], n_hist[r]
            if c.more != NULL:
                c.more.n_anom = n_anom
        self.on_end(conn, verdict)
        return 0

    cdef bint was_answered_by_server(self, const Slot* slot) noexcept:
        cdef Endpoint server
        server.addr = slot.conn.server_addr
        server.port = slot.conn.server_port
        server.version = slot.conn.ip_version
        return self.was_answered(&server)

    cdef int finish(self, int32_t idx) except -1:
        cdef Slot* slot = &self.slots[idx]
        cdef Verdict v
        if classify_conn(&slot.conn, self.was_answered_by_server(slot)
                         | self.reset_burst(slot), &v) < 0:
            raise MemoryError()
        if self.json is not None or self.columns is not None:
            if self.kept(&slot.conn, &v):
                if self.json is not None:
                    self.json.add(&slot.conn, &slot.zeek, &v)
                if self.columns is not None:
                    self.columns.add(&slot.conn, &slot.zeek, &v)
        else:  # (exported after the classifier: its give_up is in the timelines)
            self.done.append((self.export(slot), verdict_to_py(&v, &slot.conn)))
        self.remove(idx)
        self.lru_unlink(idx)
        conn_free(&slot.conn)
        zeek_free(&slot.zeek)
        slot.in_use = 0
        slot.next = self.free_slot
        self.free_slot = idx
        self.n_active -= 1
        return 0

    # ------------------------------------------------------------------ slots and LRU

    cdef int32_t take_slot(self) except -1:
        cdef int32_t idx
        cdef Slot* grown
        if self.free_slot != NONE:
            idx = self.free_slot
            self.free_slot = self.slots[idx].next
        else:
            if self.n_slots == self.cap_slots:
                grown = <Slot*>realloc(self.slots, 2 * self.cap_slots * sizeof(Slot))
                if grown == NULL:
                    raise MemoryError()
                self.slots = grown
                self.cap_slots *= 2
            idx = self.n_slots
            self.n_slots += 1
        return idx

    cdef inline void lru_append(self, int32_t idx) noexcept:
        cdef Slot* slot = &self.slots[idx]
        slot.prev = self.lru_tail
        slot.next = NONE
        if self.lru_tail != NONE:
            self.slots[self.lru_tail].next = idx
        else:
            self.lru_head = idx
        self.lru_tail = idx

    cdef inline void lru_unlink(self, int32_t idx) noexcept:
        """Take `idx` out of its list (the LRU one, or the quiet one: it is no longer quiet)."""
        cdef Slot* slot = &self.slots[idx]
        if slot.quiet:
            slot.quiet = 0
            self.n_quiet -= 1
            if slot.prev != NONE:
                self.slots[slot.prev].next = slot.next
            else:
                self.quiet_head = slot.next
            if slot.next != NONE:
                self.slots[slot.next].prev = slot.prev
            else:
                self.quiet_tail = slot.prev
            return
        if slot.prev != NONE:
            self.slots[slot.prev].next = slot.next
        else:
            self.lru_head = slot.next
        if slot.next != NONE:
            self.slots[slot.next].prev = slot.prev
        else:
            self.lru_tail = slot.prev

    # ------------------------------------------------------------------ the flow table

    cdef int32_t find(self, const Endpoint* lo, const Endpoint* hi, uint32_t h) noexcept:
        cdef uint64_t i = h & self.mask, e
        cdef int32_t idx
        while True:
            e = self.table[i]
            if e == EMPTY:
                return NONE
            if <uint32_t>(e >> 32) == h:
                idx = <int32_t>(e & SLOT_BITS)
                if conn_is(&self.slots[idx].conn, lo, hi):
                    return idx
            i = (i + 1) & self.mask

    cdef int insert(self, int32_t idx) except -1:
        cdef uint64_t i
        cdef uint32_t h
        # at most 3/4 full: 11 to 21 bytes per open connection (probing reads only the table,
        # whose entries carry the hash)
        if (self.n_active + 1) * 4 > 3 * <Py_ssize_t>(self.mask + 1):
            self.rehash((self.mask + 1) * 2)
        h = self.slots[idx].hash
        i = h & self.mask
        while self.table[i] != EMPTY:
            i = (i + 1) & self.mask
        self.table[i] = entry(h, idx)
        return 0

    cdef int rehash(self, uint64_t size) except -1:
        cdef uint64_t* old = self.table
        cdef uint64_t old_size = self.mask + 1, j, i, e
        self.table = <uint64_t*>malloc(size * sizeof(uint64_t))
        if self.table == NULL:
            self.table = old
            raise MemoryError()
        memset(self.table, 0xFF, size * sizeof(uint64_t))
        self.mask = size - 1
        for j in range(old_size):
            e = old[j]
            if e != EMPTY:
                i = (e >> 32) & self.mask
                while self.table[i] != EMPTY:
                    i = (i + 1) & self.mask
                self.table[i] = e
        free(old)
        return 0

    cdef void remove(self, int32_t idx) noexcept:
        """Delete slot `idx` from the table, shifting later entries of its cluster back (linear
        probing without tombstones)."""
        cdef uint64_t e = entry(self.slots[idx].hash, idx)
        cdef uint64_t i = self.slots[idx].hash & self.mask, j, home
        cdef uint64_t other
        while self.table[i] != e:
            i = (i + 1) & self.mask
        j = i
        while True:
            j = (j + 1) & self.mask
            other = self.table[j]
            if other == EMPTY:
                break
            home = (other >> 32) & self.mask
            # move `other` into the hole at i unless its home lies cyclically in (i, j]
            if (j > i and (home <= i or home > j)) or (j < i and (home <= i and home > j)):
                self.table[i] = other
                i = j
        self.table[i] = EMPTY

    # ------------------------------------------------------------------ the classifier's context

    cdef void note_answered(self, const Endpoint* server) noexcept:
        """`server` answered a SYN (a SYN/ACK): remember it, once."""
        cdef uint64_t i, h = endpoint_hash(0xCBF29CE484222325ULL, server)
        cdef Endpoint* old
        cdef uint64_t old_size, j
        if (self.n_answered + 1) * 2 > <Py_ssize_t>(self.answered_mask + 1):
            old, old_size = self.answered, self.answered_mask + 1
            self.answered = <Endpoint*>malloc(old_size * 2 * sizeof(Endpoint))
            if self.answered == NULL:  # keep what we have: the context only grows weaker
                self.answered = old
                return
            memset(self.answered, 0, old_size * 2 * sizeof(Endpoint))
            self.answered_mask = old_size * 2 - 1
            self.n_answered = 0
            for j in range(old_size):
                if old[j].version:
                    self.note_answered(&old[j])
            free(old)
        i = h & self.answered_mask
        while self.answered[i].version:
            if self.answered[i].version == server.version and \
                    endpoint_cmp(&self.answered[i], server) == 0:
                return
            i = (i + 1) & self.answered_mask
        self.answered[i] = server[0]
        self.n_answered += 1

    cdef void note_reset(self, const Endpoint* server, double ts) noexcept:
        """A listener reset from `server` at `ts`: extend its run, or start one."""
        cdef ResetRun* run = &self.runs[endpoint_hash(0xCBF29CE484222325ULL, server) % RUNS]
        if run.n and run.server.version == server.version \
                and endpoint_cmp(&run.server, server) == 0 and 0 <= ts - run.last <= BURST_GAP:
            run.last = ts
            if run.n < 65535:
                run.n += 1
            return
        run.server = server[0]
        run.first = run.last = ts
        run.n = 1

    cdef int reset_burst(self, const Slot* slot) noexcept:
        """CTX_BURST and the run's size when the server's first RST is in a burst of its
        endpoint's listener resets; else 0."""
        cdef Endpoint server
        cdef const ResetRun* run
        cdef const Dir* sv = conn_dir(&slot.conn, 1)
        cdef double ts
        if sv.n_rst == 0:
            return 0
        server.addr = slot.conn.server_addr
        server.port = slot.conn.server_port
        server.version = slot.conn.ip_version
        run = &self.runs[endpoint_hash(0xCBF29CE484222325ULL, &server) % RUNS]
        ts = sv.rsts[0].ts
        if run.n < BURST_MIN or run.server.version != server.version \
                or endpoint_cmp(&run.server, &server) != 0 or not run.first <= ts <= run.last:
            return 0
        return CTX_BURST | <int>(run.n << CTX_BURST_SHIFT)

    cdef bint was_answered(self, const Endpoint* server) noexcept:
        cdef uint64_t i = endpoint_hash(0xCBF29CE484222325ULL, server) & self.answered_mask
        while self.answered[i].version:
            if self.answered[i].version == server.version and \
                    endpoint_cmp(&self.answered[i], server) == 0:
                return True
            i = (i + 1) & self.answered_mask
        return False

    def slot_size(self):
        """Bytes of one open connection's slot, and of one flow-table entry (the table is
        kept at most 3/4 full: 11 to 21 bytes per open connection)."""
        return sizeof(Slot), sizeof(uint64_t)

    def quiet_stats(self):
        """(quiet connections, whether their last activities are in order): the sweep's
        bookkeeping (tests)."""
        return self.n_quiet, bool(self.quiet_sorted)


cdef void guess_roles(const Seg* s, const Endpoint* src, const Endpoint* dst,
                      const Endpoint** client, const Endpoint** server) noexcept:
    """(client, server) for the first segment seen of a connection."""
    cdef uint8_t flags = s.flags
    cdef bint src_client
    if flags & F_SYN and not flags & F_ACK:
        src_client = True
    elif flags & F_SYN:  # a SYN/ACK comes from the server
        src_client = False
    elif s.icmp_kind != ICMP_NONE:  # the quoted segment's sender gets the error: the client
        src_client = True
    elif flags & F_RST and not flags & F_ACK:
        src_client = False  # a bare RST usually answers a client's stray segment
    elif (s.sport < 1024) != (s.dport < 1024):  # mid-stream: the well-known port serves
        src_client = not s.sport < 1024
    else:
        src_client = not s.sport < s.dport
    if src_client:
        client[0], server[0] = src, dst
    else:
        client[0], server[0] = dst, src
