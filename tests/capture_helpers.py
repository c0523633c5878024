"""Small writers for crafting pcap / pcapng test captures byte by byte, and scapy packet helpers.

Independent of the reader's code on purpose: headers are packed here from the file format specs,
so a test's expected values come from the specs and from scapy, never from the reader.
"""

from __future__ import annotations

import struct
from pathlib import Path

from analyzer.core.decode import open_native

LE = "<"
BE = ">"


def pcap_bytes(records, *, linktype: int = 1, endian: str = LE, nanos: bool = False,
               snaplen: int = 65535) -> bytes:
    """A classic pcap file. records: (sec, frac, data) or (sec, frac, data, wirelen)."""
    magic = 0xA1B23C4D if nanos else 0xA1B2C3D4
    out = [struct.pack(endian + "IHHiIII", magic, 2, 4, 0, 0, snaplen, linktype)]
    for rec in records:
        sec, frac, data = rec[:3]
        wirelen = rec[3] if len(rec) > 3 else len(data)
        out.append(struct.pack(endian + "IIII", sec, frac, len(data), wirelen))
        out.append(bytes(data))
    return b"".join(out)


def write(path: Path, blob: bytes) -> str:
    path.write_bytes(blob)
    return str(path)


def _pad4(b: bytes) -> bytes:
    return b + b"\0" * (-len(b) % 4)


def ng_block(btype: int, body: bytes, endian: str = LE) -> bytes:
    body = _pad4(body)
    total = 12 + len(body)
    return struct.pack(endian + "II", btype, total) + body + struct.pack(endian + "I", total)


def ng_option(code: int, value: bytes, endian: str = LE) -> bytes:
    return struct.pack(endian + "HH", code, len(value)) + _pad4(value)


def ng_shb(endian: str = LE) -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, 1, 0, -1)
    return ng_block(0x0A0D0D0A, body, endian)


def ng_idb(linktype: int, *, snaplen: int = 0, tsresol: int | None = None,
           tsoffset: int | None = None, endian: str = LE) -> bytes:
    body = struct.pack(endian + "HHI", linktype, 0, snaplen)
    opts = b""
    if tsresol is not None:
        opts += ng_option(9, bytes([tsresol]), endian)
    if tsoffset is not None:
        opts += ng_option(14, struct.pack(endian + "q", tsoffset), endian)
    if opts:
        opts += ng_option(0, b"", endian)
    return ng_block(1, body + opts, endian)


def ng_epb(iface: int, ticks: int, data: bytes, *, origlen: int | None = None,
           endian: str = LE) -> bytes:
    body = struct.pack(endian + "IIIII", iface, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data) if origlen is None else origlen) + bytes(data)
    return ng_block(6, body, endian)


def ng_spb(data: bytes, *, endian: str = LE) -> bytes:
    return ng_block(3, struct.pack(endian + "I", len(data)) + bytes(data), endian)


def ng_pb(iface: int, ticks: int, data: bytes, *, endian: str = LE) -> bytes:
    body = struct.pack(endian + "HHIIII", iface, 0, ticks >> 32, ticks & 0xFFFFFFFF, len(data),
                       len(data)) + bytes(data)
    return ng_block(2, body, endian)


def tcp_ip(src: str = "10.0.0.1", dst: str = "10.0.0.2", sport: int = 40000, dport: int = 80,
           seq: int = 1000, ack: int = 0, flags: str = "S", payload: bytes = b"", **tcp_kw):
    """An IPv4 or IPv6 (by the address) TCP packet, as a scapy object with checksums filled."""
    from scapy.all import IP, TCP, IPv6

    ip = IPv6(src=src, dst=dst) if ":" in src else IP(src=src, dst=dst)
    return ip / TCP(sport=sport, dport=dport, seq=seq, ack=ack, flags=flags, **tcp_kw) / payload


def read_all(path: str, check_ip_checksums: bool = True, **kw):
    """(segments, reader) after iterating the whole capture with the compiled reader (IPv4
    header checksums checked unless told otherwise)."""
    reader = open_native(path, check_ip_checksums=check_ip_checksums, **kw)
    segs = list(reader)
    return segs, reader
