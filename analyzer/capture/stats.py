"""What reading a capture counted: the one statistics type (``ReadStats``).

The compiled reader (``analyzer.core.decode``) keeps these counters in C and shows them live as a
``NativeStats`` with the same fields; a finished read is handed on as a ``ReadStats``.
"""

from __future__ import annotations

from dataclasses import dataclass, field, fields


@dataclass(slots=True)
class ReadStats:
    """Counters of one read. Every frame lands in exactly one of tcp_segments, icmp_errors,
    non_tcp, bad_ip_checksums, truncated_frames, malformed (when IP checksums are not checked,
    a frame with a bad one is counted there and also where its decoding ends)."""

    format: str = ""  # "pcap" or "pcapng" ("live" for a live capture)
    compressed: bool = False  # the input was gzip-compressed
    frames: int = 0  # packet records read (Wireshark frame count)
    tcp_segments: int = 0  # TCP segments handed on
    icmp_errors: int = 0  # ICMP / ICMPv6 errors quoting TCP that were handed on
    non_tcp: int = 0  # frames skipped: not IP, not TCP, other ICMP, non-first fragment, ...
    bad_tcp_checksums: int = 0  # TCP checksum really wrong (segment kept, checksum_ok=False)
    offloaded_checksums: int = 0  # TCP checksum field holds the pseudo-header sum (offload)
    bad_ip_checksums: int = 0  # IPv4 header checksum wrong: dropped as Zeek does (unless -C)
    truncated_frames: int = 0  # captured too short to hold the IP + TCP headers: skipped
    malformed: int = 0  # impossible header lengths (IHL < 5, TCP data offset < 5 or past IP)
    skipped_blocks: int = 0  # pcapng blocks of types not decoded (statistics, name resolution)
    link_types: dict[int, int] = field(default_factory=dict)  # linktype -> frames
    bytes_read: int = 0  # bytes of (decompressed) capture consumed up to the last good record


STAT_FIELDS = tuple(f.name for f in fields(ReadStats))  # in declaration order
# the fields that are plain counters (the rest: format, compressed, link_types)
COUNTER_NAMES = frozenset(name for name in STAT_FIELDS
                          if name not in ("format", "compressed", "link_types"))
