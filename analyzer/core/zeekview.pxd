# Zeek's view of one connection (conn_state and history) as C-level data. Semantics: documented
# in analyzer/zeek_params.py (Zeek's rules, as the oracle's SEMANTICS.md writes them up), within
# the bounds below.
#
# Contract with observer.pyx: the functions below keep their names and meanings; the struct's
# fields are zeekview.pyx's own.

from libc.stdint cimport int32_t, int64_t, uint8_t, uint16_t, uint32_t

from analyzer.core.seg cimport Addr, Seg

cdef enum:
    ZEEK_BARE = 1  # zeek -b: the bare-mode likely-server-port set
    ZEEK_IGNORE_CHECKSUMS = 2  # zeek -C: bad checksums are not reported and the packets count
    # Honour Seg.payload_captured (a payload cut by the snap length never reaches the
    # reassembler). Off (the observer's setting), a segment counts as fully captured.
    ZEEK_SNAPLEN_GAPS = 4

cdef enum:
    ZEEK_HIST_INLINE = 16  # history letters held in the struct (Zeek's are ~10 long)
    # history letters kept in all (later ones are dropped): past ZEEK_HIST_INLINE they move to
    # the heap, doubling from 64 (a RST storm writes one `r` per new sequence number)
    ZEEK_HIST_MAX = 65536
    ZEEK_MAX_BLOCKS = 16  # buffered out-of-order blocks per direction (disjoint, coalesced)
    ZEEK_MAX_GRIDS = 2  # expire-timer grids: the first packet's, and at most one half-close

# A buffered [lo, hi) of one direction's stream above a hole (positions relative to its ISN).
ctypedef struct ZeekBlock:
    int64_t lo
    int64_t hi

# One side, as Zeek's TCP endpoint (rst_cnt, never read, is not kept; fin_cnt is a bit).
ctypedef struct ZeekEp:
    int64_t fin_seq  # relative, one past the FIN (with ZE_FIN_SEEN)
    int64_t last_reassem  # reassembler: everything below delivered (or skipped as a gap)
    int32_t trim_seq  # reassembler: everything below acknowledged (always in [1, 2**31))
    uint32_t start  # ISN (with ZE_HAS_START; Python's None otherwise)
    uint32_t last  # highest sequence number sent (one past)
    uint32_t ackseq  # highest acknowledgment received from the peer
    uint32_t last_syn  # with ZE_HAS_SYN
    uint32_t last_fin  # with ZE_HAS_FIN
    uint32_t last_rst  # with ZE_HAS_RST
    uint32_t scaled[4]  # log-scale letter counts: C, W, T, G
    uint8_t state  # ZS_* (Zeek's TCP_ENDPOINT_*)
    uint8_t prev_state
    uint8_t bits  # ZE_* flags
    uint8_t seen  # ZK_* history kinds already recorded in this direction

# The history: its letters in the struct, or (hist_len > ZEEK_HIST_INLINE) on the heap.
ctypedef union ZeekHist:
    char chars[ZEEK_HIST_INLINE]
    char* heap

ctypedef struct ZeekConn:
    # physical sides (0 sent the first packet; `orig` says which is the originator): side 0 in
    # the struct, side 1 malloc'd at the first segment that may write it (one that is not a
    # bare SYN from side 0: a flood's SYN never gets one), until then zeekview.pyx's EP1_NONE
    # (side 1 as zeek_init leaves it, never written). Read with _ep (zeekview.pyx).
    ZeekEp ep0
    ZeekEp* ep1
    double last_time  # Zeek's Conn LastTime
    double deadline  # attempt_at (ZC_ATTEMPT) until the close completes, then delete_at
    double grid[2]  # expire-timer grid starts (ngrids of them)
    ZeekBlock* blocks  # ZEEK_MAX_BLOCKS per side, malloc'd at the first hole; NULL before
    uint16_t port[2]
    uint8_t options  # ZEEK_* bits
    uint8_t ip_version
    uint8_t orig  # index of the originator in ep / addr / port
    uint8_t flags  # ZC_* bits
    uint8_t swap  # ep[0]'s address is zeek_observe's `b` (0: its `a`)
    uint8_t ngrids
    uint8_t nblocks[2]
    uint32_t hist_len
    ZeekHist hist

cdef void zeek_init(ZeekConn* z, uint8_t options) noexcept nogil
cdef void zeek_free(ZeekConn* z) noexcept nogil
# Observe one segment (ICMP errors are ignored, as Zeek's TCP analyzer never sees them). 0, or -1 when memory ran out (an
# out-of-order block or a history letter was then dropped). `a` and `b`: the connection's two
# addresses (the struct does not hold them), always the same two in the same order; the first
# segment observed goes from one of them to the other.
cdef int zeek_observe(ZeekConn* z, const Seg* s, const Addr* a, const Addr* b) noexcept nogil
# Does `s` start a new Zeek connection on this 4-tuple (Zeek's boundaries: SYN reuse, attempt,
# close and inactivity timers)? `last_ts`: the connection's last packet.
cdef bint zeek_starts_new(const ZeekConn* z, const Seg* s, double last_ts) noexcept nogil
# Zeek's closed-for-reuse test (a SYN on the tuple then starts a new connection)
cdef bint zeek_closed_for_reuse(const ZeekConn* z) noexcept nogil
# conn_state and history, as str
cdef object zeek_conn_state(const ZeekConn* z)
cdef object zeek_history(const ZeekConn* z)
