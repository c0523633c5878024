"""Reading one chunk of a capture, and reading a rotated set as one capture.

A chunk is a byte range of one file that starts on a record boundary (``layout``). Its reader is
the ordinary ``CaptureReader`` over a window of the file, so decoding, statistics and damage are
exactly those of a whole-file read: a pcap chunk continues the file's read at its offset with its
frame count (``CaptureReader.segments_from``), so frame numbers and byte offsets in messages are
the file's own; a pcapng chunk is given its section header and the interface blocks before it,
and its frame numbers and offsets are shifted back afterwards.

In a rotated set, frame numbers count across the files, as in their concatenation (``mergecap
-a``); messages about damage name the file that holds it, with that file's own frame number and
byte offset (what one needs to look at it).
"""

from __future__ import annotations

import copy
import dataclasses
import io
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from analyzer import errors
from analyzer.capture import open_capture, pcap, pcapng
from analyzer.capture.reader import BUFFER_SIZE, CaptureReader, Prefixed, ReadStats
from analyzer.errors import CaptureError, UnreadableCapture


@dataclass
class ChunkSpec:
    """What a worker needs to read one chunk (plain data: it travels to other hosts)."""

    unit: int  # index of the capture (file or rotated set) in the run
    index: int  # position of the chunk in its capture
    path: str  # file to open (absolute, so that workers elsewhere find it on shared storage)
    shown: str  # the file's name in messages
    name: str  # the capture's name in records (``file``)
    fmt: str  # "pcap", "pcapng" or "gzip"
    start: int  # first byte (a record boundary; for gzip, unused)
    end: int  # byte after the chunk
    frames_before: int  # frames of this file before the chunk
    base: int  # frames of the capture before this file (rotated set)
    head: bytes = b""  # pcap: file header; pcapng: the section header block
    prefix: bytes = b""  # pcapng: the section's interface blocks before the chunk
    last_in_file: bool = True


def plan(unit: int, name: str, paths: list[str], layouts: list) -> list[ChunkSpec] | str:
    """The chunks of a capture (a file, or a rotated set's files in order) from their layouts,
    or why it must be read by one reader (frame numbers after a file that cannot be walked to
    its end, or that is compressed, are known only by reading it)."""
    specs: list[ChunkSpec] = []
    base = 0
    for n, (path, lay) in enumerate(zip(paths, layouts, strict=True)):
        last = n == len(paths) - 1
        absolute = os.path.abspath(path)
        if lay.format == "gzip":
            if not last:
                return "the gzip-compressed files of a rotated set are read in one process"
            specs.append(ChunkSpec(unit, len(specs), absolute, path, name, "gzip", 0,
                                   lay.size, 0, base))
            continue
        if not lay.clean and not last:
            return f"{path} is damaged, so the frame numbers after it need one reading"
        heads, idbs = _pcapng_blocks(path, lay) if lay.format == "pcapng" else ({}, {})
        for k, (start, end, before, shb, nidb) in enumerate(lay.chunks()):
            if lay.format == "pcap":
                head, prefix = lay.header, b""
            else:  # the section header, and its interface blocks the chunk does not hold
                head = heads[shb]
                prefix = b"".join(idbs[o] for o in lay.idbs.get(shb, [])[:nidb]) if k else b""
            specs.append(ChunkSpec(unit, len(specs), absolute, path, name, lay.format, start,
                                   end, before, base, head, prefix, k == len(lay.cuts) - 1))
        base += lay.frames or 0
    return specs


def _pcapng_blocks(path: str, lay) -> tuple[dict, dict]:
    with open(path, "rb") as f:
        heads = {shb: read_block(f, shb, shb) for shb in {c[2] for c in lay.cuts}}
        idbs = {off: read_block(f, off, shb) for shb, offs in lay.idbs.items() for off in offs}
    return heads, idbs


def read_block(f, off: int, shb: int) -> bytes:
    """The pcapng block at ``off``, in the section whose header block is at ``shb`` (which
    gives the byte order of its length field)."""
    f.seek(shb + 8)
    order = "little" if f.read(4) == pcapng.BOM_LE else "big"
    f.seek(off + 4)
    length = int.from_bytes(f.read(4), order)
    f.seek(off)
    return f.read(length)


class _Window(io.RawIOBase):
    """A file, readable only up to ``end`` (the chunk's end), seekable to absolute offsets."""

    def __init__(self, raw, end: int):
        self._raw = raw
        self._end = end

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def seek(self, offset: int, whence: int = 0) -> int:
        return self._raw.seek(offset, whence)

    def tell(self) -> int:
        return self._raw.tell()

    def readinto(self, b) -> int:
        room = self._end - self._raw.tell()
        if room <= 0:
            return 0
        view = memoryview(b)[:room]
        return self._raw.readinto(view) or 0


def open_chunk(spec: ChunkSpec, check_ip_checksums: bool
               ) -> tuple[CaptureReader, Iterator, int]:
    """(reader, segments with file frame numbers, frame shift still to apply to the reader's
    messages). Raises UnreadableCapture as ``open_capture`` would."""
    if spec.fmt == "gzip":
        reader = open_capture(spec.path, name=spec.shown, check_ip_checksums=check_ip_checksums)
        return reader, iter(reader), 0
    try:
        raw = open(spec.path, "rb", buffering=0)  # noqa: SIM115 - closed by the reader
    except OSError as exc:
        raise UnreadableCapture(spec.shown, f"cannot open: {exc.strerror or exc}") from None
    window = _Window(raw, spec.end)
    if spec.fmt == "pcap":
        hdr = pcap.parse_header(spec.head)
        stream = io.BufferedReader(window, BUFFER_SIZE)
        reader = CaptureReader(spec.shown, stream, raw.close, "pcap", b"", hdr, False,
                               check_ip_checksums)
        return reader, reader.segments_from(spec.start, spec.frames_before), 0
    raw.seek(spec.start)
    # pcapng: the interface blocks, then the chunk
    stream = io.BufferedReader(Prefixed(spec.prefix, window), BUFFER_SIZE)
    reader = CaptureReader(spec.shown, stream, raw.close, "pcapng", spec.head, None, False,
                           check_ip_checksums)
    return reader, _shifted(iter(reader), spec.frames_before), spec.frames_before


def _shifted(segments: Iterator, shift: int) -> Iterator:
    for seg in segments:
        seg.frame += shift
        yield seg


def chunk_frames(spec: ChunkSpec, reader: CaptureReader) -> int:
    """Frames the chunk held (a pcap chunk's reader counts on from the frames before it)."""
    n = reader.stats.frames
    if spec.fmt == "pcap" and n:
        n -= spec.frames_before
    return n


def fix_messages(spec: ChunkSpec, reader: CaptureReader, shift: int) -> None:
    """Give a pcapng chunk's problems and notes the file's frame numbers and byte offsets."""
    if spec.fmt == "pcap":
        reader.stats.frames = chunk_frames(spec, reader)
        return
    if not shift and spec.start == len(spec.head) and not spec.prefix:
        return  # the file's first chunk: its reader already counts as the file's would
    local0 = len(spec.head) + len(spec.prefix)  # where the chunk's bytes begin in its stream
    fixed = []
    for p in reader.problems:
        q = copy.copy(p)
        if q.frame is not None:
            q.frame += shift
        if q.offset is not None:
            q.offset = spec.start + q.offset - local0 if q.offset >= local0 else None
        q.args = (q.one_line(),)
        fixed.append(q)
    reader.problems[:] = fixed
    reader.notes[:] = [_FRAME.sub(lambda m: f"frame {int(m.group(1)) + shift}", n)
                       for n in reader.notes]
    if reader.stats.bytes_read >= local0:
        reader.stats.bytes_read = spec.start + reader.stats.bytes_read - local0


_FRAME = re.compile(r"frame (\d+)")


# ------------------------------------------------------------------ reports of several parts


def merge_stats(parts: list[ReadStats]) -> ReadStats:
    """One file's (or set's) statistics from those of its chunks, in order: counters add up,
    ``bytes_read`` is the last part's, format and compression the first's."""
    out = ReadStats()
    for f in dataclasses.fields(ReadStats):
        vals = [getattr(p, f.name) for p in parts]
        if not vals:
            continue
        if f.name == "bytes_read":
            setattr(out, f.name, vals[-1])
        elif isinstance(vals[0], bool) or isinstance(vals[0], str):
            setattr(out, f.name, vals[0])
        elif isinstance(vals[0], int):
            setattr(out, f.name, sum(vals))
        elif isinstance(vals[0], dict):
            merged: dict = {}
            for d in vals:
                for k, v in d.items():
                    merged[k] = merged.get(k, 0) + v
            setattr(out, f.name, merged)
    return out


def merge_problems(parts: list[list[CaptureError]]) -> list[CaptureError]:
    """One file's problems from its chunks'. Skipped damaged frames are summarised once per
    file (the first, and how many): chunks' summaries are added up into one, placed first."""
    summary_type = getattr(errors, "DamagedFrames", None)
    summaries, rest = [], []
    for probs in parts:
        for p in probs:
            (summaries if summary_type and isinstance(p, summary_type) else rest).append(p)
    if len(summaries) > 1:
        first = copy.copy(summaries[0])
        total = sum(s.count for s in summaries)
        summaries = [summary_type(first.path, first.problem, total, frame=first.frame,
                                  offset=first.offset)]
    return summaries + rest


def merge_notes(parts: list[list[str]]) -> list[str]:
    """One file's notes from its chunks': a note the file's reader would give once (the first
    frame of an unsupported link type) is kept from the first chunk that gave it."""
    out, seen = [], set()
    for notes in parts:
        for n in notes:
            k = _FRAME.sub("frame #", n)
            if k not in seen:
                seen.add(k)
                out.append(n)
    return out


class SetReader:
    """The files of a rotated set read one after the other as one capture: frame numbers go on
    from file to file. Damage ends the file it is in (as it would end a single file's read),
    and reading goes on with the next file. Quacks like ``CaptureReader`` for the pipeline."""

    def __init__(self, paths: list[str], shown: list[str], check_ip_checksums: bool):
        self.paths, self.shown = paths, shown
        self.check_ip = check_ip_checksums
        self.stats = ReadStats()
        self.problems: list[CaptureError] = []
        self.notes: list[str] = []

    def __iter__(self) -> Iterator:
        base = 0
        parts = []
        for path, shown in zip(self.paths, self.shown, strict=True):
            try:
                reader = open_capture(path, name=shown, check_ip_checksums=self.check_ip)
            except UnreadableCapture as exc:
                self.problems.append(exc)
                continue
            for seg in reader:
                seg.frame += base
                yield seg
            base += reader.stats.frames
            parts.append(reader.stats)
            self.problems.extend(reader.problems)
            self.notes.extend(f"{shown}: {n}" for n in reader.notes)
            merged = merge_stats(parts)
            for f in dataclasses.fields(ReadStats):
                setattr(self.stats, f.name, getattr(merged, f.name))
