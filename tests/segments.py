"""Hand-built segment sequences for tests: a tiny DSL so a test reads like a tcpdump trace."""

from __future__ import annotations

from analyzer.segment import ACK, FIN, PSH, RST, SYN, Segment

FLAGS = {"S": SYN, "F": FIN, "R": RST, "P": PSH, ".": ACK}

C = ("10.0.0.1", 40000)
S = ("10.0.0.2", 80)


class Flow:
    """Builds segments between a client C and a server S with automatic frame numbers."""

    def __init__(self, client=C, server=S, ts=1000.0, ttl=64):
        self.ends = {"c": client, "s": server}
        self.frame = 0
        self.ts = ts
        self.ttl = ttl
        self.segments: list[Segment] = []

    def __call__(self, who: str, flags: str, seq: int, ack: int = 0, length: int = 0,
                 dt: float = 0.001, **kw) -> Segment:
        self.frame += 1
        self.ts += dt
        src, dst = (self.ends["c"], self.ends["s"]) if who == "c" else (self.ends["s"],
                                                                         self.ends["c"])
        bits = 0
        for ch in flags:
            bits |= FLAGS[ch]
        kw.setdefault("ttl", self.ttl)
        kw.setdefault("window", 512)
        seg = Segment(frame=self.frame, ts=self.ts, src=src[0], sport=src[1], dst=dst[0],
                      dport=dst[1], seq=seq & 0xFFFFFFFF, ack=ack & 0xFFFFFFFF, flags=bits,
                      payload_len=length, **kw)
        self.segments.append(seg)
        return seg


def handshake(f: Flow, cisn: int = 1000, sisn: int = 5000) -> None:
    f("c", "S", cisn)
    f("s", "S.", sisn, cisn + 1)
    f("c", ".", cisn + 1, sisn + 1)
