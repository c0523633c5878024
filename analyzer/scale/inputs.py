"""From command-line arguments to captures: files, directories, globs, and rotated sets.

A *rotated set* is what ``tcpdump -C`` / ``-G`` / ``-W`` writes: files whose names differ only in
their numbers (``cap.pcap``, ``cap.pcap1``, ``cap.pcap2``, ... or ``cap-20240101-1200.pcap``,
...), with the same link-layer header, each one's packets after the previous one's. Such a set
is read as one capture (``analyzer.scale.sets``). Files of one directory or one glob
argument are grouped into sets automatically; files named one by one are read one by one, as
always, unless ``--rotated`` says they too form sets.

Rules, so that unrelated captures are never stitched together:

- same name once every run of digits is replaced by ``#`` (a first file without the number,
  ``cap.pcap`` beside ``cap.pcap1``, or ``cap.pcap.gz`` beside ``cap.pcap1.gz``, belongs with
  them);
- same format and link-layer header (pcap: the 24-byte file header, as tcpdump writes it
  identically into each file; pcapng: the first interface's link type);
- ordered by first packet time, no file starting before the previous one ends.

A group that fails the last two rules is read file by file, with a note saying why.
"""

from __future__ import annotations

import glob as globbing
import gzip
import os
import re
from dataclasses import dataclass, field
from itertools import pairwise

from analyzer.capture.formats import PCAP_HEADER_LEN, PCAP_MAGICS, SHB_MAGIC, pcap_header
from analyzer.errors import UnreadableCapture
from analyzer.scale.walk import Layout, walk

MAGICS = PCAP_MAGICS | {SHB_MAGIC}
GZIP_MAGIC = b"\x1f\x8b"
GLOB_CHARS = re.compile(r"[*?\[]")
DIGITS = re.compile(r"\d+")


@dataclass
class Unit:
    """One capture to analyze: a file, a rotated set, or an argument that named nothing."""

    name: str  # as records' ``file`` shows it: the file, or the set's first (oldest) file
    paths: list[str] = field(default_factory=list)  # the files, in capture order
    error: UnreadableCapture | None = None  # the argument gave no capture at all
    note: str | None = None  # told on stderr before the unit is read

    @property
    def rotated(self) -> bool:
        return len(self.paths) > 1


def expand(args: list[str], *, rotated: bool = False) -> list[Unit]:
    """The captures the arguments name, in order."""
    units: list[Unit] = []
    loose: list[str] = []  # files named one by one, grouped together under --rotated

    def flush() -> None:
        if loose:
            units.extend(group(loose))
            loose.clear()

    for arg in args:
        if arg != "-" and os.path.isdir(arg):
            flush()
            files = [os.path.join(arg, f) for f in sorted(os.listdir(arg))
                     if not f.startswith(".") and os.path.isfile(os.path.join(arg, f))]
            files = [f for f in files if _is_capture(f)]
            if not files:
                units.append(Unit(arg, error=UnreadableCapture(
                    arg, "directory holds no pcap or pcapng file")))
            else:
                units.extend(group(files))
        elif arg != "-" and not os.path.exists(arg) and GLOB_CHARS.search(arg):
            flush()
            files = sorted(f for f in globbing.glob(arg) if os.path.isfile(f))
            if not files:
                units.append(Unit(arg, error=UnreadableCapture(arg, "no file matches")))
            else:
                units.extend(group(files))
        elif rotated and arg != "-":
            loose.append(arg)
        else:
            flush()
            units.append(Unit(arg, [arg]))
    flush()
    return units


def _is_capture(path: str) -> bool:
    try:
        with open(path, "rb") as f:
            head = f.read(4)
    except OSError:
        return True  # let the reader say what is wrong with it
    return head in MAGICS or head[:2] == GZIP_MAGIC


def _stem(path: str) -> str:
    d, base = os.path.split(path)
    return os.path.join(d, DIGITS.sub("#", base))


def _number(path: str) -> tuple:
    return tuple(int(x) for x in DIGITS.findall(os.path.basename(path)))


def _signature(path: str, lay: Layout) -> tuple | None:
    """What must be equal across a set's files, or None if the file is not readable so."""
    if lay.format == "pcap":
        return ("pcap", lay.header)
    if lay.format == "pcapng":
        return ("pcapng", lay.linktype)
    try:
        with gzip.open(path, "rb") as f:
            head = f.read(PCAP_HEADER_LEN)
    except (OSError, EOFError):
        return None
    return ("pcap", head) if pcap_header(head) is not None else None


def group(files: list[str]) -> list[Unit]:
    """Files (sorted by name) as units: rotated sets where the rules above allow, else one
    unit per file, in the order of each unit's first file name."""
    stems: dict[str, list[str]] = {}
    for f in files:
        stems.setdefault(_stem(f), []).append(f)
    for stem in list(stems):  # tcpdump -C: "cap.pcap" goes with "cap.pcap1", "cap.pcap2", ...
        base = stem.replace("#", "")  # (and "cap.pcap.gz" with "cap.pcap1.gz", ... after -z)
        if os.path.basename(stem).count("#") == 1 and base in stems:
            stems[stem] = stems.pop(base) + stems[stem]
    units: list[tuple[str, Unit]] = []
    for members in stems.values():
        if len(members) == 1:
            units.append((members[0], Unit(members[0], [members[0]])))
            continue
        units.extend((min(u.paths), u) for u in _as_set(sorted(members, key=_number)))
    return [u for _, u in sorted(units, key=lambda x: files.index(x[0]))]


def _as_set(members: list[str]) -> list[Unit]:
    try:
        lays = [walk(f) for f in members]
    except (OSError, ValueError) as exc:
        return _apart(members, f"not read as a rotated set ({exc})")
    sigs = [_signature(f, lay) for f, lay in zip(members, lays, strict=True)]
    if None in sigs or len(set(sigs)) > 1:
        return _apart(members, "not read as a rotated set: their link-layer headers differ")
    order = sorted(range(len(members)), key=lambda i: (
        lays[i].first_ts is None, lays[i].first_ts or 0.0, _number(members[i])))
    for a, b in pairwise(order):
        end, start = lays[a].last_ts, lays[b].first_ts
        if end is not None and start is not None and start < end:
            return _apart(members, f"not read as a rotated set: {members[b]} starts before "
                                   f"{members[a]} ends")
    paths = [members[i] for i in order]
    return [Unit(paths[0], paths)]


def _apart(members: list[str], why: str) -> list[Unit]:
    units = [Unit(f, [f]) for f in members]
    units[0].note = f"{', '.join(members)}: {why}"
    return units
