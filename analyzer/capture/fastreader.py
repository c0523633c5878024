"""The fast reader: a pcap file as Segments plus SegmentRuns (see ``columns`` for the kernel).

It yields, in capture order:

- ``Segment`` for every packet that is not plain (decoded by the ordinary Python decoder, so
  these are exactly the Segments ``open_capture`` would give);
- ``SegmentRun`` twice per run: at its first segment (``phase == "start"``; the consumer sets
  ``accepted``) and, if accepted, at its last (``phase == "end"``). A refused run's segments
  are decoded and yielded one by one, in their places;
- ``Ticks``: the times of accepted plain segments since the previous item, for the consumer's
  timeouts;
- with ``share=(lo, hi)``, only connections whose 4-tuple's bucket (``bucket_of``) is in
  [lo, hi) come as above; every other packet is a ``Foreign`` in its place (see
  ``analyzer.scale.share``).

Only plain, uncompressed pcap files on disk qualify (``fast_eligible``); anything irregular (a
truncated or absurd record) ends the fast part, and the ordinary reader continues from that
record with its own damage handling. The file is read in blocks into one reused buffer, so memory
stays flat whatever the file's size.
"""

from __future__ import annotations

import heapq
import os
import socket
from collections.abc import Iterator

import numpy as np

from analyzer.capture import pcap
from analyzer.capture.reader import CaptureReader, open_capture
from analyzer.segment import ACK, SYN, Foreign, RunSide, Segment, SegmentRun, Ticks

BLOCK_BYTES = 8 << 20  # file bytes read per block
BLOCK_PACKETS = 1 << 14  # packets per kernel call (its columns: 2.5 MB, its runs: 3.8 MB)
MIN_FAST_BYTES = 4 << 20  # smaller files: the kernel's start-up is not worth it


SHARE_BUCKETS = 1 << 31  # as columns.SHARE_BUCKETS (not imported: that would load numba)
_M64 = (1 << 64) - 1


def _addr_words(addr: str) -> tuple[int, int]:
    """An address as the kernel holds it: (high, low) signed 64-bit words; IPv4 in the low."""
    if ":" in addr:
        raw = socket.inet_pton(socket.AF_INET6, addr)
        return int.from_bytes(raw[:8], "big", signed=True), int.from_bytes(raw[8:], "big",
                                                                            signed=True)
    return 0, int.from_bytes(socket.inet_aton(addr), "big")


def bucket_of(seg: Segment) -> int:
    """The bucket of ``seg``'s connection, in [0, SHARE_BUCKETS): the kernel's
    ``columns._bucket``, for the segments it leaves to the Python decoder (ICMP errors, IPv6
    extension headers)."""
    a_hi, a_lo = _addr_words(seg.src)
    b_hi, b_lo = _addr_words(seg.dst)
    x = (a_hi ^ a_lo ^ b_hi ^ b_lo ^ ((seg.sport + seg.dport) << 20)) & 0x7FFFFFFFFFFFFFFF
    h = x * 0x9E3779B97F4A7C15 & _M64
    h ^= h >> 29
    h = h * 0xBF58476D1CE4E5B9 & _M64
    return h >> 33


def fast_eligible(path: str, *, min_bytes: int = 0) -> bool:
    """True if ``path`` is an uncompressed pcap file the fast reader can take."""
    try:
        st = os.stat(path)
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return False
    if not os.path.isfile(path) or st.st_size < max(min_bytes, pcap.HEADER_LEN):
        return False
    if head not in pcap.MAGICS:
        return False
    try:
        import numba  # noqa: F401
    except ImportError:
        return False
    return True


class FastReader:
    """Iterable of Segment / SegmentRun / Ticks for one pcap file. ``stats``, ``problems`` and
    ``notes`` are those of the ordinary reader, filled the same way."""

    def __init__(self, path: str, *, name: str | None = None, check_ip_checksums: bool = True,
                 idle_limit: float = 150.0, progress=None, share: tuple[int, int] | None = None):
        self.reader: CaptureReader = open_capture(path, name=name,
                                                  check_ip_checksums=check_ip_checksums)
        self.path = path
        self.stats = self.reader.stats
        self.problems = self.reader.problems
        self.notes = self.reader.notes
        self.idle_limit = idle_limit  # runs never span this long (the tracker's idle timeout)
        self.progress = progress  # called with the file offset reached, now and then
        self.share = share  # (lo, hi): only buckets in [lo, hi) are tracked; the rest Foreign
        hdr = self.reader._pcap_header
        self._hdr = hdr
        self._limit = pcap.record_limit(hdr)

    def __iter__(self) -> Iterator[object]:
        from analyzer.capture import columns

        self._cols = columns
        table = columns.FlowTable()
        blk = columns.Block(BLOCK_PACKETS)
        decode = self.reader.frame_decoder()
        size = max(BLOCK_BYTES, 2 * (self._limit + pcap.RECORD_LEN))
        buf = np.empty(size, np.uint8)
        senders: dict[int, tuple] = {}  # flow slot -> (sender of direction 0, of direction 1)
        hdr = self._hdr
        div = 1e9 if hdr.nanoseconds else 1e6
        stats = self.stats
        frames = 0
        base = pcap.HEADER_LEN  # file offset of buf[0]
        have = 0  # valid bytes in buf
        pos = 0  # next record in buf
        eof = False
        irregular = False
        share = self.share or (0, SHARE_BUCKETS)
        with open(self.path, "rb", buffering=0) as f:
            f.seek(base)
            while True:
                if not eof and pos and size - have < size // 2:  # make room: keep the tail
                    buf[:have - pos] = buf[pos:have]
                    base += pos
                    have -= pos
                    pos = 0
                if not eof and size - have >= size // 4:
                    n = f.readinto(memoryview(buf)[have:])
                    if not n:
                        eof = True
                    have += n or 0
                if int(table.count[0]) > columns.FLOW_FILL:
                    table.clear()
                    senders.clear()
                npk = columns.walk_block(buf, pos, have, hdr.little_endian, div, self._limit,
                                         hdr.linktype, self.idle_limit, table, blk, share)
                counts = blk.counts
                segments, offloaded = yield from self._block(
                    blk, npk, int(counts[columns.C_RUNS]), buf, base, frames, decode, senders)
                frames += npk
                # segments decoded here (in runs, or built from the kernel's columns); the
                # ones handed to the Python decoder were counted by it
                plain = int(counts[columns.C_PLAIN]) + int(counts[columns.C_FOREIGN]) + segments
                stats.tcp_segments += plain
                stats.offloaded_checksums += int(counts[columns.C_OFFLOAD]) + offloaded
                if plain:
                    lt = hdr.linktype
                    stats.link_types[lt] = stats.link_types.get(lt, 0) + plain
                pos = int(counts[columns.C_END])
                stats.frames = frames
                stats.bytes_read = base + pos
                if self.progress is not None:
                    self.progress(base + pos)
                stop = int(counts[columns.C_STOP])
                if stop == columns.STOP_IRREGULAR:
                    irregular = True
                    break
                if stop == columns.STOP_END and eof:
                    irregular = pos < have  # bytes left that are not a whole record
                    break
        if irregular:
            # the ordinary reader judges the rest: it reports the damage the same way
            rest = self.reader.segments_from(base + pos, frames)
            yield from rest if self.share is None else map(self._sorted, rest)
        else:
            self.reader.finish()

    def _sorted(self, seg: Segment) -> Segment | Foreign:
        """``seg`` if its connection is in our share, else a Foreign carrying it."""
        lo, hi = self.share
        return seg if lo <= bucket_of(seg) < hi else Foreign(seg.ts, seg)

    def _block(self, blk, npk: int, nrun: int, buf, base: int, frames: int, decode,
               senders: dict):
        """Yield the block's items. Returns (segments built here beyond the runs' plain ones,
        of which offloaded): refused plain segments count -1 each, being counted where built."""
        cols = self._cols
        if npk == 0:
            return 0, 0
        pk = blk.pk[:npk]
        kind = pk[:, cols.P_KIND]
        ts = blk.ts[:npk]
        run_of = pk[:, cols.P_RUN]
        share = self.share
        plain = kind == cols.PLAIN
        if share is None:
            clocked = plain
        else:  # in shares, other shares' segments only tick; their SYN/ACKs are items too
            foreign = kind == cols.FOREIGN
            noted = foreign & ((pk[:, cols.P_FLAGS] & (SYN | ACK)) == (SYN | ACK))
            clocked = plain | (foreign & ~noted)
        nonplain = np.flatnonzero(~clocked)
        runs = blk.runs
        keys = np.concatenate((nonplain * 4, runs[:nrun, cols.R_FIRST] * 4 + 1,
                               runs[:nrun, cols.R_LAST] * 4 + 2))
        keys.sort()
        plain_pos = np.flatnonzero(clocked)  # plain (and FOREIGN) segments: the clock's
        plain_ts = ts[plain_pos]
        clock = _Clock(plain_ts, run_of[plain_pos], nrun)
        # how many plain segments precede each item: the clock advances up to there
        uptos = np.searchsorted(plain_pos, keys >> 2).tolist()
        order = keys.tolist()
        pending: dict[int, SegmentRun] = {}
        refused: list[int] = []  # heap of positions of refused runs' segments
        members = None  # positions of each run's segments, built on first refusal
        built = built_offload = 0
        linktype = self._hdr.linktype
        # the non-plain packets' columns as Python ints (the only rows read one by one)
        rows = dict(zip(nonplain.tolist(), pk[nonplain].tolist(), strict=True))
        lts = dict(zip(nonplain.tolist(), ts[nonplain].tolist(), strict=True))

        def segment(i: int, count_plain: bool):
            """Packet i as a Segment: built from the columns when its flow's endpoints are
            known (exactly what the decoder would give), else decoded (and its flow learnt)."""
            nonlocal built, built_offload
            row = rows.get(i) or pk[i].tolist()
            who = senders.get(row[cols.P_SLOT]) if row[cols.P_KIND] != cols.OPAQUE \
                and row[cols.P_KIND] != cols.UNRELATED else None
            if who is not None:
                d = row[cols.P_DIR]
                (src, sport), (dst, dport) = who[d], who[1 - d]
                tsv = row[cols.P_TSVAL]
                if not count_plain:  # kernel-counted plain segments are already in the total
                    built += 1
                    built_offload += row[cols.P_OFFLOAD]
                return Segment(frames + i + 1, lts.get(i) or float(ts[i]),
                               src, sport, dst, dport, row[cols.P_SEQ], row[cols.P_ACK],
                               row[cols.P_FLAGS], row[cols.P_WINDOW], row[cols.P_PLEN],
                               row[cols.P_VERSION], row[cols.P_TTL], row[cols.P_IPID],
                               row[cols.P_HLEN] > 20, None if tsv < 0 else tsv,
                               None if tsv < 0 else row[cols.P_TSECR],
                               True if row[cols.P_CHECKED] else None)
            if count_plain:  # the decoder counts it: take it out of the kernel's count
                built -= 1
                built_offload -= row[cols.P_OFFLOAD]
            at = row[cols.P_OFF]
            data = buf[at:at + row[cols.P_CAPLEN]].tobytes()
            # the record's file offset (its 16-byte header precedes the frame), for messages
            seg = decode(data, linktype, frames + i + 1, float(ts[i]), base + at - 16)
            if seg is not None and row[cols.P_KIND] == cols.KEYED:
                a, b = (seg.src, seg.sport), (seg.dst, seg.dport)
                senders[row[cols.P_SLOT]] = (a, b) if row[cols.P_DIR] == 0 else (b, a)
            return seg

        def item(i: int, count_plain: bool):
            """Packet i for the consumer: a Segment, or (in shares) a Foreign: the kernel's
            FOREIGN SYN/ACKs, and what the decoder finds to be another share's."""
            if share is None:
                return segment(i, count_plain)
            kind_i = rows[i][cols.P_KIND] if i in rows else int(kind[i])
            if kind_i == cols.KEYED or kind_i == cols.PLAIN:
                return segment(i, count_plain)  # the kernel kept only our share's
            seg = segment(i, count_plain or kind_i == cols.FOREIGN)  # (FOREIGN: kernel-counted)
            return seg if seg is None else self._sorted(seg)

        ei = 0
        nev = len(order)
        while ei < nev or refused:
            if refused and (ei >= nev or refused[0] <= order[ei] >> 2):
                p = heapq.heappop(refused)
                t = clock.advance(int(np.searchsorted(plain_pos, p)))
                if t is not None:
                    yield t
                seg = item(p, True)
                if seg is not None:
                    yield seg
                continue
            key = order[ei]
            t = clock.advance(uptos[ei])
            ei += 1
            if t is not None:
                yield t
            p, what = key >> 2, key & 3
            if what == 0:
                seg = item(p, False)
                if seg is not None:
                    yield seg
            elif what == 1:
                r = int(run_of[p])
                run = self._run(blk, r, frames, senders)
                if run is not None:
                    yield run
                if run is not None and run.accepted:
                    clock.accepted[r] = True
                    run.phase = "end"
                    pending[r] = run
                else:
                    if members is None:
                        members = _members(plain_pos, run_of[plain_pos])  # (FOREIGN: run -1)
                    for q in members(r):
                        heapq.heappush(refused, q)
            else:
                run = pending.pop(int(run_of[p]), None)
                if run is not None:
                    yield run
        t = clock.advance(len(plain_pos))
        if t is not None:
            yield t
        return built, built_offload

    def _run(self, blk, r: int, frames: int, senders: dict) -> SegmentRun | None:
        c = self._cols
        rr = blk.runs[r].tolist()
        who = senders.get(rr[c.R_SLOT])
        if who is None:
            return None
        ts, pk = blk.ts, blk.pk
        sides = []
        for d in (0, 1):
            b = c.R_DIR + d * c.NRD
            side = RunSide(who[d], rr[b + c.RD_EXP0])
            n = rr[b + c.RD_N]
            if n:
                side.packets = n
                side.bytes = rr[b + c.RD_BYTES]
                side.end = rr[b + c.RD_END]
                side.ttl = rr[b + c.RD_TTL]
                side.options = bool(rr[b + c.RD_OPTS])
                fd, ld = rr[b + c.RD_FDATA], rr[b + c.RD_LDATA]
                if fd >= 0:
                    side.first_data_frame = frames + fd + 1
                    side.last_data_frame = frames + ld + 1
                    side.last_data_ts = float(ts[ld])
                fp = rr[b + c.RD_FPURE]
                if fp >= 0:
                    side.first_pure_ack_frame = frames + fp + 1
                lp = rr[b + c.RD_LASTP]
                side.last_frame = frames + lp + 1
                side.last_ts = float(ts[lp])
                side.ack_first = rr[b + c.RD_ACK0]
                side.ack_last = rr[b + c.RD_ACKL]
                side.ack_frame = frames + rr[b + c.RD_ACKPOS] + 1
                last = pk[lp].tolist()
                tsv = last[c.P_TSVAL]
                side.last_key = (last[c.P_SEQ], last[c.P_ACK], last[c.P_FLAGS], last[c.P_PLEN],
                                 last[c.P_IPID], None if tsv < 0 else tsv)
            else:
                side.end = side.expect
            sides.append(side)
        first, last = rr[c.R_FIRST], rr[c.R_LAST]
        return SegmentRun("start", frames + first + 1, float(ts[first]), frames + last + 1,
                          float(ts[last]), sides[0].packets + sides[1].packets, tuple(sides),
                          last - first + 1)


class _Clock:
    """Times of the block's plain segments, handed out as Ticks up to a point; only those of
    accepted runs count (a refused run's segments are fed, and timed, one by one)."""

    def __init__(self, plain_ts, plain_run, nrun: int):
        self.ts = plain_ts
        self.run = plain_run
        self.accepted = np.zeros(nrun + 1, np.bool_)
        self.accepted[nrun] = True  # run -1: FOREIGN segments, always counted
        self.cursor = 0
        # within a block capture time rarely goes back: then the last time is the latest
        self.monotonic = bool(len(plain_ts) < 2 or (np.diff(plain_ts) >= 0).all())

    def advance(self, upto: int) -> _Ticks | None:
        lo = self.cursor
        if upto <= lo:
            return None
        self.cursor = upto
        latest = float(self.ts[upto - 1]) if self.monotonic else float(self.ts[lo:upto].max())
        return _Ticks(latest, self, lo, upto)


class _Ticks(Ticks):
    """Ticks whose times are picked out only if the consumer asks (a sweep may be due)."""

    __slots__ = ("_clock", "_lo", "_hi")

    def __init__(self, latest: float, clock: _Clock, lo: int, hi: int):
        self.latest = latest  # an upper bound when some runs were refused: still safe
        self._clock, self._lo, self._hi = clock, lo, hi

    @property
    def times(self):
        c = self._clock
        sel = c.ts[self._lo:self._hi]
        return sel[c.accepted[c.run[self._lo:self._hi]]]


def _members(plain_pos, plain_run):
    """A function run id -> positions of its segments (for refused runs)."""
    order = np.argsort(plain_run, kind="stable")
    by_run = plain_run[order]
    pos = plain_pos[order]

    def members(r: int) -> list[int]:
        lo = int(np.searchsorted(by_run, r, "left"))
        hi = int(np.searchsorted(by_run, r, "right"))
        return pos[lo:hi].tolist()

    return members
