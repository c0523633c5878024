# The one decoder: a captured frame (any link layer the reader knows) -> Seg, every read bounded
# by the captured length.
# decode.pyx owns this header; observer.pyx relies only on NativeReader.fill below (the fields
# are declared here only because Cython wants a cdef class's layout in its .pxd).

from libc.stdint cimport int64_t, uint8_t, uint32_t, uint64_t

from analyzer.core.seg cimport Seg

# The counters of ReadStats (analyzer/capture/stats.py documents each one).
ctypedef struct Counts:
    int64_t frames
    int64_t tcp_segments
    int64_t icmp_errors
    int64_t non_tcp
    int64_t bad_tcp_checksums
    int64_t offloaded_checksums
    int64_t bad_ip_checksums
    int64_t truncated_frames
    int64_t malformed
    int64_t skipped_blocks
    int64_t bytes_read

# A pcapng interface (IDB), as far as timestamps and link layers need it.
ctypedef struct Iface:
    int linktype  # link-layer header type (low 16 bits)
    uint32_t snaplen  # 0: unlimited
    uint64_t units  # timestamp ticks per second, when exact_units
    bint exact_units  # units <= 2**53: C arithmetic gives Python's float exactly
    int64_t offset  # if_tsoffset, seconds

# Decode the IP packet at d[off:n] into *s. 1: a Seg was written; 0: the frame was counted in
# *st as refused (non-TCP, truncated, malformed, bad IP checksum).
cdef int decode_ip(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, bint check_ip, Counts* st,
                   Seg* s) noexcept nogil
# Offset of the IP header in a frame of link type lt, or -1 (not IP, or link type unknown).
cdef Py_ssize_t find_ip(const uint8_t* d, Py_ssize_t n, int lt) noexcept nogil

cdef class NativeReader:
    cdef readonly str path  # the name used in messages
    cdef public list problems  # DamagedCapture / DamagedFrames
    cdef public list notes  # one line per oddity that is not damage
    cdef readonly str format  # "pcap" or "pcapng"
    cdef readonly bint compressed
    cdef object _stream
    cdef object _close
    cdef object _read_exact  # gzip on stdin: read(n), a record at a time
    cdef bint _gzip_blocks  # gzip file: large blocks, replayed exactly on a zlib error
    cdef str _source  # the file's path, to reopen it for the replay
    cdef NativeReader _delegate  # after a replay: the reader that goes on
    cdef int64_t _skip_frames  # frames already handed over before the replay: not again
    cdef object _error  # the read error met by _refill
    cdef bint _interactive  # standard input: return what is decoded before blocking on a read
    cdef bint _check_ip
    cdef bint _pcapng
    cdef bint _done  # no more records (end of input, damage or read error)
    cdef bint _finished
    cdef bint _eof
    # the block buffer: bytes [_pos, _end) of _buf not yet walked; _base: file offset of _buf[0]
    cdef uint8_t* _buf
    cdef Py_ssize_t _cap
    cdef Py_ssize_t _pos
    cdef Py_ssize_t _end
    cdef int64_t _base
    cdef Py_ssize_t _need  # bytes from _pos the walker needs before it can go on
    # pcap
    cdef bint _little
    cdef double _div
    cdef uint32_t _limit
    cdef uint32_t _snaplen
    cdef int _linktype
    # pcapng
    cdef Iface* _ifaces
    cdef Py_ssize_t _n_ifaces
    cdef Py_ssize_t _ifaces_cap
    cdef list _iface_units  # Python int units per interface (inexact ones are computed with it)
    cdef double _last_ts
    # counters
    cdef Counts _c
    cdef int64_t* _link_counts  # 65537 counters: index linktype + 1 (0: undescribed interface)
    cdef uint8_t* _link_ok  # per link type: 0 not seen, 1 supported, 2 unsupported
    cdef list _link_order  # link types in order of first appearance
    cdef int64_t _damaged_frame  # first damaged frame, 0: none
    cdef object _damaged_offset
    cdef str _damaged_why
    cdef object _stats  # the NativeStats view, made on first use

    cdef Py_ssize_t fill(self, Seg* out, Py_ssize_t cap) except -1
    cdef int _next(self, const uint8_t** data, Py_ssize_t* caplen, int* lt, double* ts) except -2
    cdef int _next_pcapng(self, const uint8_t** data, Py_ssize_t* caplen, int* lt,
                          double* ts) except -2
    cdef int _refill(self) except -1
    cdef int _refill_failed(self) except -1
    cdef bint _replay(self) except -1
    cdef int _damage(self, str message, object offset, object frame) except -1
    cdef int _new_link(self, int lt) except -1
    cdef int _add_iface(self, const uint8_t* body, Py_ssize_t body_len) except -1
    cdef double _ts_slow(self, Py_ssize_t i, uint64_t ticks) except? -1.0
# decode_ip for a packet found inside `depth` tunnels (tunnels.pxi recurses through it).
cdef int decode_ip_in(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, bint check_ip, Counts* st,
                      Seg* s, int depth) noexcept nogil
