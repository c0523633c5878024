"""Open a capture (pcap, pcapng, gzip-compressed or not, file or stdin) and stream Segments.

The read path is plain Python with precompiled structs: format module (``pcap`` / ``pcapng``)
yields (ts, linktype, frame bytes) per record, ``links`` finds the IP header, ``ip`` builds the
Segment. Nothing is read ahead beyond the buffered file object, so memory stays flat.
"""

from __future__ import annotations

import gzip
import io
import os
import sys
import zlib
from collections.abc import Iterator
from dataclasses import dataclass, field

from analyzer.capture import ip as ip_layer
from analyzer.capture import pcap, pcapng
from analyzer.capture.links import decoder_for
from analyzer.errors import DamagedCapture, DamagedFrames, UnreadableCapture
from analyzer.segment import Segment

GZIP_MAGIC = b"\x1f\x8b"  # gzip member header
BUFFER_SIZE = 1 << 16  # read buffer for files and the decompressor
STDIN = "-"  # path meaning standard input

# What a read error from the decompressor or the OS looks like while iterating.
_READ_ERRORS = (OSError, EOFError, zlib.error)


@dataclass(slots=True)
class ReadStats:
    """Counters, filled while iterating. Every frame lands in exactly one of tcp_segments,
    icmp_errors, non_tcp, bad_ip_checksums, truncated_frames, malformed (when IP checksums are
    not checked, a frame with a bad one is counted there and also where its decoding ends)."""

    format: str = ""  # "pcap" or "pcapng"
    compressed: bool = False  # the input was gzip-compressed
    frames: int = 0  # packet records read (Wireshark frame count)
    tcp_segments: int = 0  # TCP segments yielded
    icmp_errors: int = 0  # ICMP / ICMPv6 errors quoting TCP that were yielded
    non_tcp: int = 0  # frames skipped: not IP, not TCP, other ICMP, non-first fragment, ...
    bad_tcp_checksums: int = 0  # TCP checksum really wrong (segment yielded, checksum_ok=False)
    offloaded_checksums: int = 0  # TCP checksum field holds the pseudo-header sum (offload)
    bad_ip_checksums: int = 0  # IPv4 header checksum wrong: dropped as Zeek does (unless -C)
    truncated_frames: int = 0  # captured too short to hold the IP + TCP headers: skipped
    malformed: int = 0  # impossible header lengths (IHL < 5, TCP data offset < 5 or past IP)
    skipped_blocks: int = 0  # pcapng blocks of types not decoded (statistics, name resolution)
    link_types: dict[int, int] = field(default_factory=dict)  # linktype -> frames
    bytes_read: int = 0  # bytes of (decompressed) capture consumed up to the last good record


class Prefixed(io.RawIOBase):
    """A raw stream that first returns ``prefix`` and then reads from ``stream``."""

    def __init__(self, prefix: bytes, stream):
        self._prefix = prefix
        self._stream = stream

    def readable(self) -> bool:
        return True

    def readinto(self, b) -> int:
        if self._prefix:
            n = min(len(b), len(self._prefix))
            b[:n] = self._prefix[:n]
            self._prefix = self._prefix[n:]
            return n
        data = self._stream.read(len(b))
        n = len(data)
        b[:n] = data
        return n


def _read_exact(f, n: int) -> bytes:
    """Up to ``n`` bytes, looping over short reads (pipes); fewer only at end of file."""
    out = b""
    for _ in range(n + 1):
        if len(out) >= n:
            break
        chunk = f.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


class CaptureReader:
    """Iterable of Segments from one capture. Single pass: iterate it once.

    ``path`` is the name used in messages; ``stats`` counts while iterating; ``problems`` gets a
    DamagedCapture when iteration stops early on damage, and one DamagedFrames, first, when frames
    were skipped as damaged (impossible IP/TCP header lengths, a pcapng packet block naming an
    undescribed interface) while reading went on; ``notes`` gets one line per oddity that is not
    damage (an unsupported link type).
    """

    def __init__(self, path: str, stream, close, fmt: str, head: bytes,
                 pcap_header: pcap.PcapHeader | None, compressed: bool,
                 check_ip_checksums: bool = True):
        self.path = path
        self.stats = ReadStats(format=fmt, compressed=compressed)
        self.problems: list[DamagedCapture] = []
        self.notes: list[str] = []
        self._stream = stream
        self._close = close
        self._head = head
        self._pcap_header = pcap_header
        self._started = False
        self._check_ip = check_ip_checksums
        # the first damaged frame: (frame, byte offset of its record or None, what was wrong)
        self._first_damaged: tuple[int, int | None, str] | None = None
        self._exact_offsets = False  # stats.bytes_read ends the frame being decoded (pcap walk)
        self._finished = False

    def damage(self, message: str, offset: int, frame: int | None) -> None:
        """Record damage found at byte ``offset`` (called by the format modules)."""
        self.problems.append(DamagedCapture(self.path, message, offset=offset, frame=frame))

    def close(self) -> None:
        if self._close is not None:
            try:
                self._close()
            except OSError:
                pass
            self._close = None

    def __enter__(self) -> CaptureReader:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __iter__(self) -> Iterator[Segment]:
        if self._started:
            return
        self._started = True
        if self._pcap_header is not None:
            recs = pcap.records(self._stream, self._pcap_header, self)
        else:
            recs = pcapng.records(self._stream, self._head, self)
        try:
            yield from self._segments(recs)
        except _READ_ERRORS as exc:  # decompressor or I/O failure mid-file
            self.damage(f"read error: {exc}", self.stats.bytes_read, self.stats.frames + 1)
        finally:
            self.finish()

    def _segments(self, recs, frame: int = 0) -> Iterator[Segment]:
        stats = self.stats
        self._exact_offsets = stats.format == "pcap"
        decode_frame = self.frame_decoder()
        for ts, linktype, data in recs:
            frame += 1
            stats.frames = frame
            seg = decode_frame(data, linktype, frame, ts)
            if seg is not None:
                yield seg

    def frame_decoder(self):
        """A function (frame bytes, linktype, frame number, ts, offset=None) -> Segment | None
        that counts the frame in ``stats`` (but not in ``stats.frames``, which the record walker
        sets), notes unsupported link types and remembers the first damaged frame; ``offset``,
        the byte offset of the frame's record, names it in the error (without it, it is worked
        out in the pcap walk, else left out). The fast reader uses it for the frames it hands
        back."""
        stats = self.stats
        decode = ip_layer.decode
        link_types = stats.link_types
        decoders: dict[int, object] = {}
        check_ip = self._check_ip

        def decode_frame(data: bytes, linktype: int, frame: int, ts: float,
                         offset: int | None = None) -> Segment | None:
            find_ip = decoders.get(linktype, False)
            if find_ip is False:
                find_ip = decoders[linktype] = decoder_for(linktype) if linktype >= 0 else None
                if find_ip is None:
                    self._note_link(linktype, frame)
            link_types[linktype] = link_types.get(linktype, 0) + 1
            if find_ip is None:
                stats.non_tcp += 1
                if linktype < 0 and self._first_damaged is None:
                    self._first_damaged = (frame, self._record_offset(data, offset),
                                           "pcapng packet block refers to an undescribed "
                                           "interface")
                return None
            off = find_ip(data)
            if off < 0:
                stats.non_tcp += 1
                return None
            seg = decode(data, off, frame, ts, stats, check_ip)
            if seg is None and self._first_damaged is None and stats.malformed:
                self._first_damaged = (frame, self._record_offset(data, offset),
                                       _why_malformed(data, off))
            return seg

        return decode_frame

    def segments_from(self, offset: int, frame: int) -> Iterator[Segment]:
        """Continue a pcap file from record offset ``offset`` (``frame`` records already read),
        with the same damage handling as a full read; used after the fast reader's prefix."""
        self._started = True
        self._stream.seek(offset)
        recs = pcap.records(self._stream, self._pcap_header, self, pos=offset)
        try:
            yield from self._segments(recs, frame)
        except _READ_ERRORS as exc:
            self.damage(f"read error: {exc}", self.stats.bytes_read, self.stats.frames + 1)
        finally:
            self.finish()

    def finish(self) -> None:
        """Close the file and report the damaged frames skipped on the way."""
        self.close()
        if not self._finished:
            self._report_damaged_frames()
        self._finished = True

    def _record_offset(self, data: bytes, given: int | None) -> int | None:
        """Byte offset of the record that held ``data``, the frame being decoded, when known
        exactly: in the pcap walk, a record is its 16-byte header and the frame, and
        ``stats.bytes_read`` ends it. (A pcapng block's length is not visible here: options and
        other blocks may come between two packets. Then None: the frame number alone.)"""
        if given is not None or not self._exact_offsets:
            return given
        return self.stats.bytes_read - pcap.RECORD_LEN - len(data)

    def _report_damaged_frames(self) -> None:
        # Frames lost to damage while reading went on are "something in the input was bad"
        # (exit 1), not a note. One error for all of them, first in the list: every skipped
        # frame precedes the point where reading stopped, if it did.
        if self._first_damaged is None:
            return
        frame, offset, why = self._first_damaged
        count = self.stats.malformed + self.stats.link_types.get(-1, 0)
        self.problems.insert(0, DamagedFrames(self.path, why, count, frame=frame,
                                              offset=offset))

    def _note_link(self, linktype: int, frame: int) -> None:
        if linktype >= 0:  # (-1, an undescribed pcapng interface, is damage: reported as such)
            self.notes.append(f"link type {linktype} is not supported (first: frame {frame}); "
                              "its frames are skipped")


def _why_malformed(data: bytes, off: int) -> str:
    """What ``ip.decode`` found impossible in the IP packet at ``data[off:]``, in words (for the
    first such frame only, so that the decoder's hot path keeps a bare counter)."""
    try:
        n = len(data)
        if data[off] >> 4 == 4:
            ihl = (data[off] & 15) * 4
            if ihl < 20:
                return f"IPv4 header length {ihl} is less than the minimum 20"
            total = int.from_bytes(data[off + 2:off + 4], "big")
            if total and total < ihl:
                return f"IPv4 total length {total} is less than its header length {ihl}"
            t, end = off + ihl, off + (total or n - off)
        else:
            plen = int.from_bytes(data[off + 4:off + 6], "big")
            end = off + 40 + (plen or n - off - 40)
            t = ip_layer._ip6_upper(data, data[off + 6], off + 40, min(n, end))[1]
        hlen = (data[t + 12] >> 4) * 4
        if hlen < 20:
            return f"TCP data offset {hlen // 4} ({hlen} bytes) is less than the minimum 5"
        return f"TCP header length {hlen} exceeds the {end - t} bytes left in the IP packet"
    except IndexError:  # (the decoder read these bytes: not expected)
        return "impossible IP/TCP header lengths"


def open_capture(path: str, *, name: str | None = None,
                 check_ip_checksums: bool = True) -> CaptureReader:
    """Open ``path`` (or "-" for standard input) and check it is a pcap or pcapng capture.

    ``name`` replaces ``path`` in messages. With ``check_ip_checksums=False`` (Zeek's ``-C``)
    IPv4 packets with a wrong header checksum are decoded instead of dropped (still counted).
    Raises UnreadableCapture when nothing can be read.
    """
    shown = name or path
    if path == STDIN:
        raw = sys.stdin.buffer
        close = None
        if _is_tty(raw):
            raise UnreadableCapture(shown, "standard input is a terminal, not a capture")
    else:
        try:
            raw = open(path, "rb", buffering=BUFFER_SIZE)  # noqa: SIM115 - closed by the reader
        except FileNotFoundError:
            raise UnreadableCapture(shown, "no such file") from None
        except IsADirectoryError:
            raise UnreadableCapture(shown, "is a directory, not a capture file") from None
        except OSError as exc:
            raise UnreadableCapture(shown, f"cannot open: {exc.strerror or exc}") from None
        close = raw.close
    try:
        return _open_stream(shown, raw, close, check_ip_checksums)
    except BaseException:
        if close is not None:
            close()
        raise


def _open_stream(shown: str, raw, close, check_ip: bool) -> CaptureReader:
    try:
        head = _read_exact(raw, 4)
    except OSError as exc:
        raise UnreadableCapture(shown, f"cannot read: {exc.strerror or exc}", offset=0) from None
    if not head:
        raise UnreadableCapture(shown, "empty file", offset=0)
    compressed = head[:2] == GZIP_MAGIC
    stream = raw
    if compressed:
        stream = gzip.GzipFile(fileobj=io.BufferedReader(Prefixed(head, raw), BUFFER_SIZE),
                               mode="rb")
        try:
            head = _read_exact(stream, 4)
        except (*_READ_ERRORS, gzip.BadGzipFile) as exc:
            raise UnreadableCapture(shown, f"gzip data cannot be decompressed: {exc}",
                                    offset=0) from None
        if not head:
            raise UnreadableCapture(shown, "empty file (after gzip decompression)", offset=0)
    what = "gzip-compressed data is" if compressed else "file is"
    if len(head) < 4:
        raise UnreadableCapture(shown, f"{what} too short to be a capture ({len(head)} bytes)",
                                offset=0)
    if head in pcap.MAGICS:
        try:
            rest = _read_exact(stream, pcap.HEADER_LEN - 4)
        except _READ_ERRORS as exc:
            raise UnreadableCapture(shown, f"cannot read: {exc}", offset=4) from None
        hdr = pcap.parse_header(head + rest)
        if hdr is None:
            raise UnreadableCapture(shown, "pcap file header is truncated", offset=0)
        return CaptureReader(shown, stream, close, "pcap", b"", hdr, compressed, check_ip)
    if head == pcapng.SHB_MAGIC:
        try:
            head += _read_exact(stream, 8)
        except _READ_ERRORS as exc:
            raise UnreadableCapture(shown, f"cannot read: {exc}", offset=4) from None
        if head[8:12] not in (pcapng.BOM_LE, pcapng.BOM_BE):
            raise UnreadableCapture(shown, "pcapng section header has no valid byte-order magic"
                                    f" (found {head[8:12].hex(' ') or 'nothing'})", offset=8)
        head += _first_shb(shown, stream, head)
        return CaptureReader(shown, stream, close, "pcapng", head, None, compressed, check_ip)
    found = head.hex(" ")
    raise UnreadableCapture(shown, f"not a pcap or pcapng file (starts with {found})", offset=0)


def _first_shb(shown: str, stream, head: bytes) -> bytes:
    """The rest of the first pcapng section header block (``head``: its first 12 bytes), read and
    checked: damage there means nothing can be read, as for a pcap file header."""
    order = "little" if head[8:12] == pcapng.BOM_LE else "big"
    blen = int.from_bytes(head[4:8], order)
    if blen < pcapng.MIN_SHB or blen % 4 or blen > pcapng.MAX_BLOCK:
        raise UnreadableCapture(shown, f"pcapng section header has impossible length {blen}",
                                offset=0)
    try:
        rest = _read_exact(stream, blen - len(head))
    except _READ_ERRORS as exc:
        raise UnreadableCapture(shown, f"cannot read: {exc}", offset=len(head)) from None
    if len(rest) < blen - len(head):
        raise UnreadableCapture(shown, "pcapng section header is truncated "
                                f"({len(head) + len(rest)} of {blen} bytes present)", offset=0)
    trailer = int.from_bytes(rest[-4:], order)
    if trailer != blen:
        raise UnreadableCapture(shown, f"pcapng section header: trailing length {trailer} differs "
                                f"from leading length {blen}", offset=0)
    problem = pcapng.shb_problem(blen, rest, order == "little")
    if problem:
        raise UnreadableCapture(shown, problem, offset=0)
    return rest


def _is_tty(stream) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError, AttributeError):
        return False
