"""A small independent reading of the lab's own pcap, for the label and its verification.

The lab checks what it captured without using the analyzer it is meant to test, so this is a
deliberately minimal pcap/Ethernet/IP/TCP/ICMP decoder (tcpdump on loopback or a veth writes
classic pcap with Ethernet framing).
"""

from __future__ import annotations

import ipaddress
import struct
from pathlib import Path


def _flags(byte: int) -> str:
    # Conventional order, as tcpdump prints them: S, F, R, P, then A.
    names = {0x02: "S", 0x01: "F", 0x04: "R", 0x08: "P", 0x10: "A", 0x20: "U"}
    return "".join(n for bit, n in names.items() if byte & bit)


def read_packets(path: Path, limit: int = 5000) -> list[dict]:
    data = path.read_bytes()
    if len(data) < 24:
        return []
    magic = data[:4]
    if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"):
        endian = "<"
    elif magic in (b"\xa1\xb2\xc3\xd4", b"\xa1\xb2\x3c\x4d"):
        endian = ">"
    else:
        return []
    nano = magic in (b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d")
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    out: list[dict] = []
    off, t_first = 24, None
    while off + 16 <= len(data) and len(out) < limit:
        sec, frac, caplen, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + caplen]
        off += 16 + caplen
        ts = sec + frac / (1e9 if nano else 1e6)
        t_first = ts if t_first is None else t_first
        pkt = decode_frame(frame, linktype)
        if pkt is not None:
            pkt["t"] = round(ts - t_first, 6)
            pkt["epoch"] = ts
            out.append(pkt)
    return out


def decode_frame(frame: bytes, linktype: int) -> dict | None:
    if linktype == 1:
        if len(frame) < 14:
            return None
        ethertype, frame = struct.unpack("!H", frame[12:14])[0], frame[14:]
    elif linktype == 113:  # Linux cooked capture
        ethertype, frame = struct.unpack("!H", frame[14:16])[0], frame[16:]
    else:
        return None
    if ethertype == 0x0800 and len(frame) >= 20:
        ihl = (frame[0] & 0x0F) * 4
        proto, ttl = frame[9], frame[8]
        src, dst = ipaddress.ip_address(frame[12:16]), ipaddress.ip_address(frame[16:20])
        ip_id = struct.unpack("!H", frame[4:6])[0]
        body = frame[ihl:]
    elif ethertype == 0x86DD and len(frame) >= 40:
        proto, ttl = frame[6], frame[7]
        src, dst = ipaddress.ip_address(frame[8:24]), ipaddress.ip_address(frame[24:40])
        ip_id, body = None, frame[40:]
    else:
        return None
    pkt: dict = {"src": str(src), "dst": str(dst), "ttl": ttl}
    if ip_id is not None:
        pkt["ip_id"] = ip_id
    if proto == 6 and len(body) >= 20:
        sport, dport, seq, ack, doff, fl, win = struct.unpack("!HHIIBBH", body[:16])
        hlen = (doff >> 4) * 4
        pkt.update(proto="tcp", sport=sport, dport=dport, seq=seq, ack=ack,
                   flags=_flags(fl), win=win, len=max(0, len(body) - hlen),
                   opts=hlen > 20)
    elif proto in (1, 58) and len(body) >= 4:
        pkt.update(proto="icmp" if proto == 1 else "icmp6", type=body[0], code=body[1])
    else:
        pkt["proto"] = str(proto)
    return pkt


def summarize(packets: list[dict], client: tuple[str, int] | None,
              server: tuple[str, int] | None) -> list[str]:
    """One short line per packet: "0.000123 c>s S seq=.. ack=.. len=0 win=.. ttl=64"."""
    lines = []
    for p in packets:
        if p.get("proto") == "tcp":
            a, b = (p["src"], p["sport"]), (p["dst"], p["dport"])
            if client and server and (a, b) == (client, server):
                d = "c>s"
            elif client and server and (a, b) == (server, client):
                d = "s>c"
            else:
                d = f"{p['sport']}>{p['dport']}"
            lines.append(f"{p['t']:.6f} {d} {p['flags']} seq={p['seq']} ack={p['ack']} "
                         f"len={p['len']} win={p['win']} ttl={p['ttl']}")
        elif p.get("proto") in ("icmp", "icmp6"):
            lines.append(f"{p['t']:.6f} {p['src']}>{p['dst']} {p['proto']} "
                         f"type={p['type']} code={p['code']}")
    return lines
