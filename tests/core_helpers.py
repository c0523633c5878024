"""Driving the compiled core from hand-built segments and reading captures through it (the
tests' one way in: no second engine to compare with, expectations come from reasoning, lab
labels, Zeek's baselines and the generator's labels)."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

from analyzer.core.observer import Observer
from analyzer.core.verdict import ClassifyProbe
from analyzer.core.zeekview import ZeekProbe

from analyzer.pipeline import FileReport, Timeouts, iter_connections, make_record, state_events

ROOT = Path(__file__).resolve().parent.parent
ORACLE = Path("/work/shared/zeek-oracle/traces")


def observe(segments, timeouts: Timeouts | None = None, zeek_options: dict | None = None,
            on_end=None) -> list:
    """Feed `segments` to an Observer, close it: the (Connection, Verdict) pairs in the order
    the connections finished."""
    obs = Observer(timeouts, zeek_options, on_end=on_end)
    for seg in segments:
        obs.feed_segment(seg)
    obs.close()
    return list(obs.done)


def connections(segments, timeouts: Timeouts | None = None, zeek_options=None) -> list:
    """The finished connections, by connection number."""
    return sorted((c for c, _v in observe(segments, timeouts, zeek_options)),
                  key=lambda c: c.conn_id)


def verdicts(segments, timeouts: Timeouts | None = None) -> list:
    """The verdicts, by connection number."""
    pairs = sorted(observe(segments, timeouts), key=lambda p: p[0].conn_id)
    return [v for _c, v in pairs]


def states(conn, role: str) -> list[str]:
    return [s for s, _frame, _ts in conn.ep[role].history]


def classify_one(segments, client, server, listener_seen: bool):
    """The classifier on one connection made of all `segments`, told whether its server was
    seen answering a SYN elsewhere in the capture (the observer's listener knowledge)."""
    probe = ClassifyProbe(0, segments[0], client, server)
    for seg in segments:
        probe.observe(seg)
    return probe.classify(listener_seen)


def zeek_view(segments, **options) -> ZeekProbe:
    """Zeek's view of one connection made of all `segments`."""
    probe = ZeekProbe(**options)
    for seg in segments:
        probe.observe(seg)
    return probe


def read(path, timeouts: Timeouts | None = None, zeek_options: dict | None = None):
    """(records, state events, FileReport) of a capture read by the core."""
    rep = FileReport(str(path))
    recs, events = [], []
    for conn, verdict in iter_connections(str(path), rep, timeouts, zeek_options=zeek_options):
        recs.append(make_record(conn, verdict, str(path)))
        events.extend(state_events(conn, str(path)))
    return recs, events, rep


def bundled_captures() -> list[Path]:
    return sorted(p for p in (ROOT / "captures").iterdir() if p.suffix in (".pcap", ".pcapng"))


def oracle_traces() -> list[Path]:
    return sorted(p for p in ORACLE.rglob("*") if p.is_file()) if ORACLE.is_dir() else []


# ------------------------------------------------------------------ small captures, packed here


def _checksum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack(f"!{len(data) // 2}H", data))
    while total >> 16:
        total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def tcp_frame(src: str, sport: int, dst: str, dport: int, seq: int, ack: int, flags: int,
              payload: bytes = b"", window: int = 512, ip_id: int = 1) -> bytes:
    """An Ethernet frame holding an IPv4 TCP segment, checksums right (RFC 791, RFC 9293)."""
    s, d = socket.inet_aton(src), socket.inet_aton(dst)
    tcp = struct.pack("!HHIIBBHHH", sport, dport, seq & 0xFFFFFFFF, ack & 0xFFFFFFFF, 5 << 4,
                      flags, window, 0, 0) + payload
    csum = _checksum(s + d + struct.pack("!BBH", 0, 6, len(tcp)) + tcp)
    tcp = tcp[:16] + struct.pack("!H", csum) + tcp[18:]
    ip = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(tcp), ip_id, 0, 64, 6, 0, s, d)
    ip = ip[:10] + struct.pack("!H", _checksum(ip)) + ip[12:]
    return b"\x02\0\0\0\0\x02" + b"\x02\0\0\0\0\x01" + b"\x08\x00" + ip + tcp


def pcap(frames: list[tuple[float, bytes]]) -> bytes:
    """A classic little-endian microsecond pcap of Ethernet frames."""
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 1)]
    for ts, data in frames:
        sec = int(ts)
        out.append(struct.pack("<IIII", sec, round((ts - sec) * 1e6), len(data), len(data)))
        out.append(data)
    return b"".join(out)
