"""The fast reader's compiled kernel: pcap records -> per-packet columns -> runs of plain segments.

Most packets of a busy capture are "plain": an ACK or in-order data segment in the middle of a
connection, which changes no state the observer tracks beyond counters. The kernel walks the
records of a block with numba, decodes the common encapsulations (Ethernet with VLAN tags, Linux
cooked v1/v2, BSD loopback, raw IP; IPv4 with options, IPv6 without extension headers), keeps a
little state per 4-tuple, and marks each packet:

- ``PLAIN``: part of a *run* of consecutive plain segments of one 4-tuple, summarised per
  direction in the run arrays so the Python side can apply the whole run at once;
- ``KEYED``: a TCP segment it decoded but that is not plain (SYN, FIN, RST, the first packet of a
  direction, a gap, a duplicate, a zero window, ...): Python decodes it again and feeds it;
- ``OPAQUE``: something it cannot decode (ICMP, IPv6 extension headers, MPLS, fragments, bad
  checksums, truncation): Python decodes it; since it may concern any connection, every open run
  is closed before it;
- ``UNRELATED``: certainly not TCP nor ICMP (ARP, UDP, ...): Python only counts it;
- ``FOREIGN``: when the file is read in shares (``analyzer.scale.share``), a TCP segment of a
  connection outside this process's share: it never enters the flow table.

Plainness is judged conservatively from the packets alone; the Python side re-checks each run
against the connection's real state when the run starts (``Connection.accepts_run``), so a wrong
guess here costs speed, never correctness. Forgetting a 4-tuple is always safe: its next packet is
then KEYED. So the flow table is a fixed-size open-addressing table, simply cleared when it fills.
"""

from __future__ import annotations

import numpy as np
from numba import njit

PLAIN = 0  # in a run of plain segments
KEYED = 1  # a decoded TCP segment, not plain: Python decodes and feeds it
OPAQUE = 2  # not decoded here and possibly TCP/ICMP: Python decodes it; all runs close before it
UNRELATED = 3  # certainly not TCP or ICMP: Python only counts it
FOREIGN = 4  # a TCP segment of another share's connection (see walk_block): only its time counts

# walk() stop reasons
STOP_END = 0  # consumed every complete record in the block
STOP_IRREGULAR = 1  # a record the Python reader must judge (truncated, absurd length)
STOP_FULL = 2  # the per-block output arrays are full

FLOW_SLOTS = 1 << 16  # flow table size (power of two)
FLOW_FILL = FLOW_SLOTS // 4  # clear the table past this many flows (keeps probes short)

_FIN, _SYN, _RST, _ACK, _URG = 0x01, 0x02, 0x04, 0x10, 0x20
_M32 = 0xFFFFFFFF
_HALF = 1 << 30  # largest forward step accepted between neighbouring sequence/ack numbers


# Per-packet columns (Block.pk[i, P_*]); times are in Block.ts.
P_OFF = 0  # offset of the frame bytes in the buffer
P_CAPLEN = 1
P_KIND = 2  # PLAIN, KEYED, OPAQUE, UNRELATED
P_SLOT = 3  # flow table slot (KEYED and PLAIN)
P_DIR = 4  # 0: sent by the flow's lower endpoint, 1: by the higher
P_SEQ = 5
P_ACK = 6
P_FLAGS = 7
P_PLEN = 8  # payload length (from the IP length)
P_IPID = 9
P_TSVAL = 10  # TCP timestamp value, -1 without the option
P_OFFLOAD = 11  # checksum field held the pseudo-header sum (counted for PLAIN only)
P_RUN = 12  # run id (PLAIN), else -1
P_WINDOW = 13
P_TTL = 14
P_VERSION = 15  # 4 or 6
P_HLEN = 16  # TCP header length
P_TSECR = 17  # TCP timestamp echo reply (when P_TSVAL >= 0)
P_CHECKED = 18  # 1: checksum verified; 0: not checkable (offloaded, cut by the snap length)
NP = 19

# Flow table: FlowTable.state[slot, F_*], then per direction d at F_DIR + d * NFD + FD_*.
F_USED = 0
F_LAST_FLAGS = 1  # flags of the flow's last packet, either direction
F_RUN = 2  # open run id within the current block, -1
F_DIR = 3
FD_SEEN = 0
FD_EXPECT = 1  # sequence number after its last segment
FD_SEQ = 2  # the rest: its last segment, to spot capture duplicates and changes
FD_ACK = 3
FD_FLAGS = 4
FD_PLEN = 5
FD_IPID = 6
FD_TSVAL = 7
FD_TTL = 8
NFD = 9
NF = F_DIR + 2 * NFD
T_LAST = 0  # FlowTable.times[slot, T_*]: the flow's last packet
T_ANCHOR = 1  # the last packet before its open run

# Runs: Block.runs[r, R_*], then per direction d at R_DIR + d * NRD + RD_*.
R_SLOT = 0
R_FIRST = 1  # position of its first / last segment in the block
R_LAST = 2
R_DIR = 3
RD_N = 0  # segments
RD_BYTES = 1
RD_EXP0 = 2  # sequence number the direction continues from
RD_END = 3  # ... and reaches
RD_TTL = 4
RD_OPTS = 5
RD_FDATA = 6  # positions: first / last segment with payload, first pure ACK, last segment
RD_LDATA = 7
RD_FPURE = 8
RD_LASTP = 9
RD_ACK0 = 10
RD_ACKL = 11
RD_ACKPOS = 12  # first segment carrying the final ack
NRD = 13
NR = R_DIR + 2 * NRD

# Block.counts
C_PACKETS, C_RUNS, C_STOP, C_END, C_PLAIN, C_OFFLOAD, C_FOREIGN = range(7)
SHARE_BUCKETS = 1 << 31  # a connection's bucket: 31 bits of a symmetric mix of its 4-tuple


class FlowTable:
    """Per-4-tuple state kept between blocks (numpy arrays the kernel updates in place)."""

    def __init__(self) -> None:
        self.keys = np.zeros((FLOW_SLOTS, 6), np.int64)  # version, a_hi, a_lo, b_hi, b_lo, ports
        self.state = np.zeros((FLOW_SLOTS, NF), np.int64)
        self.times = np.zeros((FLOW_SLOTS, 2), np.float64)
        self.count = np.zeros(1, np.int64)

    def clear(self) -> None:
        self.state[:, F_USED] = 0
        self.count[0] = 0


class Block:
    """Output arrays for one kernel call of at most ``cap`` packets."""

    def __init__(self, cap: int) -> None:
        self.cap = cap
        self.pk = np.zeros((cap, NP), np.int64)
        self.ts = np.zeros(cap, np.float64)
        self.runs = np.zeros((cap, NR), np.int64)
        self.counts = np.zeros(8, np.int64)
        self.open_slots = np.zeros(cap, np.int64)


def walk_block(buf, pos: int, nvalid: int, little: bool, div: float, limit: int, linktype: int,
               idle_limit: float, table: FlowTable, blk: Block,
               share: tuple[int, int] = (0, SHARE_BUCKETS)) -> int:
    """Walk the records of buf[pos:nvalid] into ``blk``; returns the packets walked. With
    ``share=(lo, hi)``, TCP segments of connections whose bucket is outside [lo, hi) are
    FOREIGN."""
    return _walk(buf, pos, nvalid, little, div, limit, linktype, idle_limit, table.keys,
                 table.state, table.times, table.count, blk.pk, blk.ts, blk.runs, blk.counts,
                 blk.open_slots, share[0], share[1])


def warm_up() -> None:
    """Load the compiled kernel now (from numba's cache, or compiling it): a process about to
    fork shares it with its children instead of each loading its own."""
    walk_block(np.zeros(16, np.uint8), 0, 0, True, 1e6, 0, 1, 1.0, FlowTable(), Block(1))


@njit(cache=True, inline="always")
def _bucket(a_hi, a_lo, b_hi, b_lo, sport, dport):
    """The bucket of a 4-tuple, the same in either direction (``fastreader.bucket_of`` computes
    it from a Segment's addresses: keep the two in step; tests/test_share.py checks)."""
    x = (a_hi ^ a_lo ^ b_hi ^ b_lo ^ ((sport + dport) << 20)) & 0x7FFFFFFFFFFFFFFF
    # captures hold few servers and dense client ranges: multiply-xorshift mixing spreads them
    h = np.uint64(x) * np.uint64(0x9E3779B97F4A7C15)
    h ^= h >> np.uint64(29)
    h = h * np.uint64(0xBF58476D1CE4E5B9)
    return np.int64(h >> np.uint64(33))


@njit(cache=True, inline="always")
def _u16(b, i):
    return (np.int64(b[i]) << 8) | np.int64(b[i + 1])


@njit(cache=True, inline="always")
def _u32(b, i):
    return (np.int64(b[i]) << 24) | (np.int64(b[i + 1]) << 16) | (np.int64(b[i + 2]) << 8) \
        | np.int64(b[i + 3])


@njit(cache=True, inline="always")
def _u32le(b, i):
    return (np.int64(b[i + 3]) << 24) | (np.int64(b[i + 2]) << 16) | (np.int64(b[i + 1]) << 8) \
        | np.int64(b[i])


@njit(cache=True)
def _words(b, lo, hi):
    """Sum of the big-endian 16-bit words of b[lo:hi] (odd length: zero-padded), mod 0xFFFF."""
    s = np.int64(0)
    i = lo
    while i + 1 < hi:
        s += (np.int64(b[i]) << 8) | np.int64(b[i + 1])
        i += 2
    if i < hi:
        s += np.int64(b[i]) << 8
    return s % 0xFFFF


@njit(cache=True)
def _ip_offset(b, p, n, linktype):
    """Offset of the IP header in the frame b[p:p+n]: >= 0; -1 opaque; -2 certainly not IP."""
    if linktype == 1 or linktype == 113 or linktype == 276:  # Ethernet, SLL, SLL2
        if linktype == 1:
            if n < 14:
                return -2
            etype, off = _u16(b, p + 12), 14
            if etype < 0x0600:
                return -2  # 802.3 length: LLC follows
        elif linktype == 113:
            if n < 16:
                return -2
            etype, off = _u16(b, p + 14), 16
        else:
            if n < 20:
                return -2
            etype, off = _u16(b, p), 20
        for _ in range(16):
            if etype == 0x0800 or etype == 0x86DD:
                return off
            if etype == 0x8100 or etype == 0x88A8 or etype == 0x9100:
                if n < off + 4:
                    return -2
                etype = _u16(b, p + off + 2)
                off += 4
            elif etype == 0x8847 or etype == 0x8848 or etype == 0x8864 or etype == 0x8903:
                return -1  # MPLS, PPPoE, FabricPath: the Python decoder follows these
            else:
                return -2
        return -1
    if linktype == 0 or linktype == 108:  # BSD loopback: address family first
        if n < 4:
            return -2
        fam = _u32le(b, p) if linktype == 0 else _u32(b, p)
        if linktype == 0 and fam > 0xFFFF:
            fam = _u32(b, p)
        if fam == 2 or fam == 10 or fam == 24 or fam == 28 or fam == 30:
            return 4
        return -2
    if linktype == 12 or linktype == 14 or linktype == 101 or linktype == 228 \
            or linktype == 229:
        return 0
    return -1


@njit(cache=True)
def _slot_for(keys, state, count, k0, k1, k2, k3, k4, k5):
    """(slot, new) for a key, inserting it if new; slot -1 if the table is full."""
    mask = np.int64(keys.shape[0] - 1)
    h = (np.int64(k0) * 0x9E3779B1 + np.int64(k1) * 0x85EBCA77 + np.int64(k2) * 0xC2B2AE3D
         + np.int64(k3) * 0x27D4EB2F + np.int64(k4) * 0x165667B1 + np.int64(k5) * 0x61C88647)
    h = h ^ (h >> 29)
    i = h & mask
    for _ in range(keys.shape[0]):
        if state[i, F_USED] == 0:
            if count[0] >= mask // 2:
                return -1, False
            state[i, F_USED] = 1
            count[0] += 1
            keys[i, 0], keys[i, 1], keys[i, 2] = k0, k1, k2
            keys[i, 3], keys[i, 4], keys[i, 5] = k3, k4, k5
            return i, True
        if keys[i, 0] == k0 and keys[i, 1] == k1 and keys[i, 2] == k2 and keys[i, 3] == k3 \
                and keys[i, 4] == k4 and keys[i, 5] == k5:
            return i, False
        i = (i + 1) & mask
    return -1, False


@njit(cache=True)
def _addr64(b, i):
    v = np.int64(0)
    for k in range(8):
        v = (v << 8) | np.int64(b[i + k])
    return v


@njit(cache=True)
def _timestamps(b, lo, hi):
    """(tsval, tsecr) from the TCP options in b[lo:hi], tsval -1 if absent (as ip.py walks)."""
    i = lo
    while i < hi:
        kind = b[i]
        if kind == 0:
            return np.int64(-1), np.int64(0)
        if kind == 1:
            i += 1
            continue
        if i + 1 >= hi:
            return np.int64(-1), np.int64(0)
        length = np.int64(b[i + 1])
        if length < 2 or i + length > hi:
            return np.int64(-1), np.int64(0)
        if kind == 8 and length == 10:
            return _u32(b, i + 2), _u32(b, i + 6)
        i += length
    return np.int64(-1), np.int64(0)


@njit(cache=True)
def _walk(buf, pos, nvalid, little, div, limit, linktype, idle_limit, keys, state, times, count,
          pk, pts, runs, counts, open_slots, share_lo, share_hi):
    cap = pk.shape[0]
    npk = 0
    nrun = 0
    nplain = 0
    nforeign = 0
    noffload = 0
    nopen = 0
    stop = STOP_END
    while True:
        if npk >= cap:
            stop = STOP_FULL
            break
        if pos + 16 > nvalid:
            break
        if little:
            sec, frac, caplen = _u32le(buf, pos), _u32le(buf, pos + 4), _u32le(buf, pos + 8)
        else:
            sec, frac, caplen = _u32(buf, pos), _u32(buf, pos + 4), _u32(buf, pos + 8)
        if caplen > limit:
            stop = STOP_IRREGULAR
            break
        if pos + 16 + caplen > nvalid:
            break
        p = pos + 16
        n = caplen
        pos = p + caplen
        ts = np.float64(sec) + np.float64(frac) / div
        i = npk
        npk += 1
        pk[i, P_OFF] = p
        pk[i, P_CAPLEN] = n
        pts[i] = ts
        pk[i, P_RUN] = -1
        pk[i, P_OFFLOAD] = 0
        kind = OPAQUE
        ipo = _ip_offset(buf, p, n, linktype)
        if ipo == -2:
            kind = UNRELATED
        elif ipo >= 0:
            o = p + ipo
            end_frame = p + n
            version = np.int64(buf[o] >> 4) if n > ipo else np.int64(0)
            t = -1
            tend = 0
            ttl = 0
            ipid = 0
            a_hi = a_lo = b_hi = b_lo = np.int64(0)
            addr_sum = np.int64(0)
            if version == 4 and end_frame >= o + 20:
                ihl = (np.int64(buf[o]) & 15) << 2
                total = _u16(buf, o + 2)
                frag = _u16(buf, o + 6)
                proto = buf[o + 9]
                if ihl >= 20 and end_frame >= o + ihl and _words(buf, o, o + ihl) == 0:
                    if frag & 0x1FFF:
                        kind = UNRELATED  # non-first fragment: never decoded
                    elif proto != 6 and proto != 1:
                        kind = UNRELATED
                    elif proto == 6 and not (frag & 0x2000) and total >= ihl:
                        t = o + ihl
                        tend = o + total
                        ttl = np.int64(buf[o + 8])
                        ipid = _u16(buf, o + 4)
                        a_lo = _u32(buf, o + 12)
                        b_lo = _u32(buf, o + 16)
                        addr_sum = _words(buf, o + 12, o + 20)
            elif version == 6 and end_frame >= o + 40:
                plen6 = _u16(buf, o + 4)
                nxt = buf[o + 6]
                if nxt == 6 and plen6 > 0:
                    t = o + 40
                    tend = o + 40 + plen6
                    ttl = np.int64(buf[o + 7])
                    a_hi, a_lo = _addr64(buf, o + 8), _addr64(buf, o + 16)
                    b_hi, b_lo = _addr64(buf, o + 24), _addr64(buf, o + 32)
                    addr_sum = _words(buf, o + 8, o + 40)
                elif nxt != 0 and nxt != 43 and nxt != 44 and nxt != 51 and nxt != 60 \
                        and nxt != 58:
                    kind = UNRELATED
            elif version != 4 and version != 6 and n > ipo:
                kind = UNRELATED
            if t >= 0 and end_frame >= t + 20:
                hlen = (np.int64(buf[t + 12]) >> 4) << 2
                if hlen >= 20 and t + hlen <= tend and end_frame >= t + hlen:
                    tcp_len = tend - t
                    good = True
                    offloaded = False
                    if end_frame >= tend:
                        pseudo = (addr_sum + 6 + tcp_len) % 0xFFFF
                        if (_words(buf, t, tend) + pseudo) % 0xFFFF != 0:
                            csum = _u16(buf, t + 16)
                            if csum % 0xFFFF == pseudo or (0xFFFF - csum) % 0xFFFF == pseudo:
                                offloaded = True
                            else:
                                good = False  # a bad checksum: Python counts it, Zeek marks it
                    if good:
                        pk[i, P_CHECKED] = 1 if end_frame >= tend and not offloaded else 0
                        pk[i, P_OFFLOAD] = 1 if offloaded else 0
                        kind = _segment(buf, t, hlen, tcp_len, ts, ttl, ipid, a_hi, a_lo, b_hi,
                                        b_lo, version, i, idle_limit, keys, state, times, count,
                                        pk, runs, nrun, share_lo, share_hi)
                        if kind == FOREIGN:  # counted here, like PLAIN
                            nforeign += 1
                            if offloaded:
                                noffload += 1
                        elif kind == PLAIN:
                            nplain += 1
                            if pk[i, P_RUN] == nrun:  # it opened a run
                                nrun += 1
                                open_slots[nopen] = pk[i, P_SLOT]
                                nopen += 1
                            if offloaded:  # the driver counts KEYED segments itself
                                noffload += 1
        if kind == OPAQUE:  # may concern any connection: no run may span it
            for k in range(nopen):
                state[open_slots[k], F_RUN] = -1
            nopen = 0
        pk[i, P_KIND] = kind
    for k in range(nopen):
        state[open_slots[k], F_RUN] = -1
    counts[C_PACKETS], counts[C_RUNS], counts[C_STOP], counts[C_END] = npk, nrun, stop, pos
    counts[C_PLAIN], counts[C_OFFLOAD], counts[C_FOREIGN] = nplain, noffload, nforeign
    return npk


@njit(cache=True)
def _segment(buf, t, hlen, tcp_len, ts, ttl, ipid, a_hi, a_lo, b_hi, b_lo, version, i,
             idle_limit, keys, state, times, count, pk, runs, nrun, share_lo, share_hi):
    """Judge one decoded TCP segment (packet i): KEYED or PLAIN (then extend or open a run), or
    FOREIGN."""
    sport = _u16(buf, t)
    dport = _u16(buf, t + 2)
    if share_hi - share_lo < SHARE_BUCKETS and not (
            share_lo <= _bucket(a_hi, a_lo, b_hi, b_lo, sport, dport) < share_hi):
        pk[i, P_FLAGS] = np.int64(buf[t + 13])  # a SYN/ACK still tells who answers
        pk[i, P_SLOT] = -1
        return FOREIGN
    seq = _u32(buf, t + 4)
    ack = _u32(buf, t + 8)
    flags = np.int64(buf[t + 13])
    window = _u16(buf, t + 14)
    plen = tcp_len - hlen
    tsval, tsecr = np.int64(-1), np.int64(0)
    if hlen > 20:
        tsval, tsecr = _timestamps(buf, t + 20, t + hlen)
    # the flow key: endpoints in a fixed order, d = which of them sent this packet
    if a_hi < b_hi or (a_hi == b_hi and (a_lo < b_lo or (a_lo == b_lo and sport <= dport))):
        d = 0
        slot, new = _slot_for(keys, state, count, version, a_hi, a_lo, b_hi, b_lo,
                              (sport << 16) | dport)
    else:
        d = 1
        slot, new = _slot_for(keys, state, count, version, b_hi, b_lo, a_hi, a_lo,
                              (dport << 16) | sport)
    if slot < 0:
        return OPAQUE  # table full (the driver clears it between calls)
    me = F_DIR + d * NFD  # this direction's columns in the flow state
    peer = F_DIR + (1 - d) * NFD
    st = state[slot]
    pk[i, P_SLOT], pk[i, P_DIR], pk[i, P_SEQ], pk[i, P_ACK] = slot, d, seq, ack
    pk[i, P_FLAGS], pk[i, P_PLEN], pk[i, P_IPID], pk[i, P_TSVAL] = flags, plen, ipid, tsval
    pk[i, P_WINDOW], pk[i, P_TTL], pk[i, P_VERSION] = window, ttl, version
    pk[i, P_HLEN], pk[i, P_TSECR] = hlen, tsecr
    if new:
        st[F_DIR + FD_SEEN] = 0
        st[F_DIR + NFD + FD_SEEN] = 0
        st[F_RUN] = -1
        st[F_LAST_FLAGS] = 0
        times[slot, T_LAST] = ts
        times[slot, T_ANCHOR] = ts
    plain = (
        not new and st[me + FD_SEEN] == 1 and st[peer + FD_SEEN] == 1
        and (flags & (_SYN | _FIN | _RST | _URG)) == 0 and (flags & _ACK) != 0
        and (st[F_LAST_FLAGS] & (_SYN | _FIN | _RST)) == 0
        and (st[me + FD_FLAGS] & _ACK) != 0
        and window != 0 and ack != 0
        and seq == st[me + FD_EXPECT]
        and ((ack - st[me + FD_ACK]) & _M32) < _HALF  # acks never go back within a run
        and ((st[peer + FD_EXPECT] - ack) & _M32) < _HALF  # nothing acked that was not seen
        and ttl == st[me + FD_TTL]
        and ts >= times[slot, T_LAST]
        and not (seq == st[me + FD_SEQ] and ack == st[me + FD_ACK]
                 and flags == st[me + FD_FLAGS] and plen == st[me + FD_PLEN]
                 and ipid == st[me + FD_IPID] and tsval == st[me + FD_TSVAL])
    )
    r = st[F_RUN]
    if plain:
        if r < 0:
            r = nrun
            st[F_RUN] = r
            times[slot, T_ANCHOR] = times[slot, T_LAST]
            rr = runs[r]
            rr[R_SLOT], rr[R_FIRST] = slot, i
            for k in range(2):
                b = R_DIR + k * NRD
                rr[b:b + NRD] = 0
                rr[b + RD_EXP0] = st[F_DIR + k * NFD + FD_EXPECT]
                rr[b + RD_END] = rr[b + RD_EXP0]
                rr[b + RD_FDATA] = -1
                rr[b + RD_LDATA] = -1
                rr[b + RD_FPURE] = -1
                rr[b + RD_LASTP] = -1
                rr[b + RD_ACKPOS] = -1
        if ts - times[slot, T_ANCHOR] >= idle_limit:
            plain = False  # the observer's idle timeout must be judged packet by packet
    if plain:
        rr = runs[r]
        b = R_DIR + d * NRD
        pk[i, P_RUN] = r
        rr[R_LAST] = i
        if rr[b + RD_N] == 0:
            rr[b + RD_TTL] = ttl
            rr[b + RD_ACK0] = ack
        rr[b + RD_N] += 1
        rr[b + RD_BYTES] += plen
        rr[b + RD_END] = (seq + plen) & _M32
        if hlen > 20:
            rr[b + RD_OPTS] = 1
        if plen > 0:
            if rr[b + RD_FDATA] < 0:
                rr[b + RD_FDATA] = i
            rr[b + RD_LDATA] = i
        elif rr[b + RD_FPURE] < 0:
            rr[b + RD_FPURE] = i
        rr[b + RD_LASTP] = i
        if rr[b + RD_ACKPOS] < 0 or ack != rr[b + RD_ACKL]:
            rr[b + RD_ACKPOS] = i
            rr[b + RD_ACKL] = ack
    else:
        st[F_RUN] = -1
    space = plen + (1 if flags & _SYN else 0) + (1 if flags & _FIN else 0)
    st[me + FD_SEEN] = 1
    st[me + FD_EXPECT] = (seq + space) & _M32
    st[me + FD_SEQ], st[me + FD_ACK], st[me + FD_FLAGS] = seq, ack, flags
    st[me + FD_PLEN], st[me + FD_IPID], st[me + FD_TSVAL], st[me + FD_TTL] = plen, ipid, tsval, ttl
    st[F_LAST_FLAGS] = flags
    times[slot, T_LAST] = ts
    return PLAIN if plain else KEYED
