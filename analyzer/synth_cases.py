"""Scripts of the synthetic generator (``analyzer.synth``): one function per intended case.

A script drives a ``Conn`` (both endpoints, seen from an observer on the path) through the wire
pattern that /work/shared/CASES.md gives for its case; every segment is encoded at once and
handed to the generator, which puts the interleaved connections in time order.
Times are integer microseconds; each segment of a connection comes at least 1 us after the last.
"""

from __future__ import annotations

from math import log

from analyzer.segment import ACK, FIN, PSH, RST, SYN
from analyzer.synth_wire import M32, Side, frame, syn_options

C, S = 0, 1  # client, server
PA = PSH | ACK


class Conn:
    """Both ends of one connection. ``nxt[i]``: side i's next sequence number."""

    __slots__ = ("g", "t", "sides", "nxt", "tsb", "tsv", "ts", "win", "rtt", "rnd", "mss")

    def __init__(self, g, t: int, sides: tuple[Side, Side], ts: bool, rnd):
        self.g, self.t, self.sides, self.ts, self.rnd = g, t, sides, ts, rnd
        self.nxt = [int(rnd() * M32), int(rnd() * M32)]
        self.tsb = [int(rnd() * M32), int(rnd() * M32)]
        self.tsv = [0, 0]
        self.win = [501 + int(rnd() * 24), 509 + int(rnd() * 60)]
        self.rtt = 150 + int(rnd() * rnd() * 60000)
        self.mss = 1448 if ts else 1460

    def tx(self, who: int, dt: int, flags: int, plen: int = 0, seq: int | None = None,
           ack: int | None = None, side: Side | None = None, opts: bool = True) -> None:
        """``who`` sends after ``dt`` us. Defaults: its next seq, ack of all the peer sent."""
        self.t = t = self.t + max(1, dt)
        nxt = self.nxt
        if seq is None:
            seq = nxt[who]
            nxt[who] = (seq + plen + (1 if flags & (SYN | FIN) else 0)) & M32
        if ack is None:
            ack = nxt[1 - who] if flags & ACK else 0
        bare = flags & RST and not flags & ACK
        tsval = None
        if self.ts and opts and not bare:
            tsval = self.tsv[who] = (self.tsb[who] + t // 1000) & M32
        win = 0 if flags & RST else (65535 if flags & SYN else self.win[who])
        so = None
        if flags & SYN:
            so = syn_options(self.mss, tsval, self.tsv[1 - who] if flags & ACK else 0)
        g = self.g
        g.push(t, frame(g.pay, side or self.sides[who], t, flags, seq, ack, win, plen, tsval,
                        self.tsv[1 - who] if tsval is not None else 0, so))

    # ------------------------------------------------------------ building blocks
    def hand(self) -> None:
        r = self.rtt // 2
        self.tx(C, 0, SYN)
        self.tx(S, r, SYN | ACK)
        self.tx(C, r, ACK)

    def request(self, n: int | None = None, ack: bool = False) -> None:
        self.tx(C, 20 + int(self.rnd() * 300), PA, n or 60 + int(self.rnd() * 400))
        if ack:
            self.tx(S, self.rtt // 2, ACK)

    def response(self, segs: int = 1, last: int | None = None) -> None:
        """The server answers in ``segs`` segments; the client ACKs every second one."""
        self.data(S, segs, last or 100 + int(self.rnd() * 1200),
                  first=self.rtt // 2 + int(self.rnd() * 2000))

    def data(self, who: int, segs: int, last: int | None = None, gap: int = 0,
             first: int | None = None, size: int = 0) -> None:
        """``segs`` segments of ``size`` bytes (default: the MSS; ``last`` for the last one)
        ``gap`` us apart, the peer ACKing every second one. The generator's hot loop: it calls
        the encoder directly instead of ``tx``."""
        if segs <= 0:
            return
        g, pay = self.g, self.g.pay
        app = g.buf.append
        nxt, tsv, ts = self.nxt, self.tsv, self.ts
        other = 1 - who
        me, peer = self.sides[who], self.sides[other]
        ba, bb = self.tsb[who], self.tsb[other]
        wa, wb = self.win[who], self.win[other]
        size = size or self.mss
        last = last or 500
        gap = gap or 30 + self.rtt // 50
        t = self.t + (gap if first is None else max(1, first))
        sent = 0
        for i in range(segs):
            end = i == segs - 1
            n = last if end else size
            seq = nxt[who]
            nxt[who] = (seq + n) & M32
            if ts:
                tsv[who] = (ba + t // 1000) & M32
                app((t, frame(pay, me, t, PA if end else ACK, seq, nxt[other], wa, n, tsv[who],
                              tsv[other])))
            else:
                app((t, frame(pay, me, t, PA if end else ACK, seq, nxt[other], wa, n, None, 0)))
            sent += 1
            if i & 1 or end:
                t += 5
                if ts:
                    tsv[other] = (bb + t // 1000) & M32
                    app((t, frame(pay, peer, t, ACK, nxt[other], nxt[who], wb, 0, tsv[other],
                                  tsv[who])))
                else:
                    app((t, frame(pay, peer, t, ACK, nxt[other], nxt[who], wb, 0, None, 0)))
                sent += 1
            t += gap
        self.t = t - gap
        g.generated += sent

    def fin_close(self, closer: int) -> None:
        """FIN, FIN/ACK (the peer's FIN carries the ACK), last ACK."""
        r = self.rtt // 2
        self.tx(closer, 200 + int(self.rnd() * 5000), FIN | ACK)
        if self.rnd() < 0.5:
            self.tx(1 - closer, r, ACK)
        self.tx(1 - closer, r + 10, FIN | ACK)
        self.tx(closer, r, ACK)

    def dialogue(self) -> None:
        self.hand()
        self.request()
        self.response(1 + int(self.rnd() * 3))


# ------------------------------------------------------------------ one script per case

def graceful(c: Conn) -> None:
    c.dialogue()
    c.fin_close(C if c.rnd() < 0.6 else S)


def bulk(c: Conn) -> None:
    """A download: many full segments, delayed ACKs, then a graceful close by the server."""
    c.hand()
    c.request()
    lo, hi = c.g.bulk
    c.data(S, lo + int(c.rnd() * (hi - lo)), gap=12 + int(c.rnd() * 200))
    c.fin_close(S)


def stream(c: Conn) -> None:
    """A long exchange of small messages (RPC, replication, websocket), closed by the client."""
    c.hand()
    lo, hi = c.g.bulk
    c.data(S, lo + int(c.rnd() * (hi - lo)), gap=40 + int(c.rnd() * 400),
           size=40 + int(c.rnd() * 360))
    c.fin_close(C)


def half_close(c: Conn) -> None:
    c.hand()
    c.request()
    r = c.rtt // 2
    c.tx(C, 50, FIN | ACK)  # shutdown(SHUT_WR) after the request
    c.tx(S, r, ACK)
    c.data(S, 2 + int(c.rnd() * 6))  # the server keeps sending, the client ACKs
    c.tx(S, 300, FIN | ACK)
    c.tx(C, r, ACK)


def simultaneous_close(c: Conn) -> None:
    c.dialogue()
    c.tx(C, 1000, FIN | ACK)
    c.tx(S, 3 + c.rtt // 4, FIN | ACK, ack=(c.nxt[C] - 1) & M32)  # sent before the FIN arrived
    c.tx(C, c.rtt // 4, ACK)
    c.tx(S, 2, ACK)


def refused(c: Conn) -> None:
    c.tx(C, 0, SYN)
    c.tx(S, c.rtt // 2, RST | ACK, seq=0, opts=False)


def write_after_close(c: Conn) -> None:
    c.dialogue()
    c.tx(S, 5000 + int(c.rnd() * 200000), FIN | ACK)  # the server closes (idle timeout)
    c.tx(C, 40000, ACK)  # delayed ACK of the FIN
    c.tx(C, 1000 + int(c.rnd() * 100000), PA, 80 + int(c.rnd() * 300))  # late write
    c.tx(S, c.rtt // 2, RST, seq=c.nxt[S], ack=0)  # no socket: bare RST, seq = its ack


def unread_data_reset(c: Conn) -> None:
    c.hand()
    c.request(ack=True)
    if c.rnd() < 0.5:  # a second request the server never reads
        c.tx(S, 400, PA, 200)
        c.tx(C, c.rtt // 2, ACK)
        c.request(ack=True)
    c.tx(S, 2000 + int(c.rnd() * 50000), RST | ACK)  # close() with unread data


def abortive_close(c: Conn) -> None:
    c.dialogue()
    c.tx(S, 300 + int(c.rnd() * 3000), RST | ACK)  # SO_LINGER {1, 0} then close()


def aborted_before_accept(c: Conn) -> None:
    c.hand()
    c.tx(C, 100 + int(c.rnd() * 5000), RST | ACK)


def peer_state_lost(c: Conn) -> None:
    c.dialogue()
    c.tx(C, 500000 + int(c.rnd() * 1500000), PA, 120)  # after the server host rebooted
    c.tx(S, c.rtt // 2, RST, seq=c.nxt[S], ack=0)


def retransmission_timeout(c: Conn) -> None:
    c.dialogue()
    seq = c.nxt[C]
    n = 100 + int(c.rnd() * 900)
    c.tx(C, 10000, PA, n)
    for gap in (200000, 200000, 400000, 800000, 1600000):
        c.tx(C, gap + int(c.rnd() * 5000), PA, n, seq=seq)


def syn_timeout(c: Conn) -> None:
    c.tx(C, 0, SYN)
    c.tx(C, 1000000 + int(c.rnd() * 2000), SYN, seq=(c.nxt[C] - 1) & M32)
    c.tx(C, 2000000 + int(c.rnd() * 4000), SYN, seq=(c.nxt[C] - 1) & M32)


def keepalive_timeout(c: Conn) -> None:
    c.dialogue()
    c.tx(C, 1000000, ACK, seq=(c.nxt[C] - 1) & M32)  # TCP_KEEPIDLE 1 s, then probes 0.5 s apart
    for _ in range(2):
        c.tx(C, 500000, ACK, seq=(c.nxt[C] - 1) & M32)
    c.tx(C, 500000, RST | ACK)  # TCP_KEEPCNT reached


def close_wait_stall(c: Conn) -> None:
    c.dialogue()
    c.tx(S, 2000 + int(c.rnd() * 20000), FIN | ACK)
    c.tx(C, c.rtt // 2, ACK)  # ... and the client never closes


def injected_reset(c: Conn) -> None:
    c.dialogue()
    c.data(S, 4)
    attacker = c.sides[S].forged(c.sides[S].ttl + 17 if c.sides[S].ttl < 200 else 40)
    c.tx(S, 300, RST, seq=c.nxt[S], ack=0, side=attacker)  # exact: the client believes it
    c.tx(S, 200 + c.rtt // 50, ACK, c.mss)  # the real server keeps sending ...
    c.tx(S, 1200, PA, 300)
    c.tx(C, max(1, c.rtt // 2 - 1200), RST, seq=c.nxt[C], ack=0)  # ... to a host without a socket
    c.tx(C, 1200, RST, seq=c.nxt[C], ack=0)


def ignored_reset(c: Conn) -> None:
    c.dialogue()
    attacker = c.sides[S].forged(c.sides[S].ttl + 17 if c.sides[S].ttl < 200 else 40)
    off = 1 + int(c.rnd() * (c.win[C] << 7) * 0.9)  # in the window, not exact
    c.tx(S, 3000, RST, seq=(c.nxt[S] + off) & M32, ack=0, side=attacker)
    c.tx(C, 20, ACK)  # challenge ACK (RFC 5961)
    c.data(S, 2)
    c.fin_close(C if c.rnd() < 0.5 else S)


def open_(c: Conn) -> None:
    c.dialogue()


def storm(c: Conn) -> str:
    """Blind reset attack: RSTs across the client's receive window; the client sends a challenge
    ACK at most every 0.5 s (Linux's per-socket limit); a third of the storms end with the exact
    sequence number (the connection dies)."""
    c.dialogue()
    attacker = c.sides[S].forged(c.sides[S].ttl + 17 if c.sides[S].ttl < 200 else 40)
    k = c.g.storm
    step = max(1, ((c.win[C] << 7) - 1) // k)
    base = c.nxt[S]
    c.t += 3000  # (a challenge ACK within 1 ms of an identical ACK would be a capture duplicate)
    last = -10**9
    for j in range(k, 0, -1):
        c.tx(S, 40, RST, seq=(base + j * step) & M32, ack=0, side=attacker)
        if c.t - last >= 500000:
            last = c.t
            c.tx(C, 5, ACK)
    if c.rnd() < 1 / 3:
        c.tx(S, 40, RST, seq=base, ack=0, side=attacker)
        c.tx(S, 300, ACK, c.mss)
        c.tx(C, c.rtt // 2, RST, seq=c.nxt[C], ack=0)
        return "injected_reset"
    c.data(S, 2)
    c.fin_close(S)
    return "ignored_reset"


def sweep(c: Conn) -> str:
    """Sequence-number games: a blind attacker sends a RST at every sequence number around the
    client's receive window, one apart, in order, the window being small (the client's buffer
    nearly full: 128 or 256 bytes advertised). A third of the sweeps start below the window and
    cross the exact number: the client's socket dies there (the RSTs after it find none) and the
    real server's next segment draws a RST. A third start one past the exact number and run past
    the window's end: the first one in the window draws a challenge ACK (RFC 5961; no other
    within Linux's 0.5 s per-socket limit). A third stay below the window: old numbers, dropped
    without a word. Those two end as the connection goes on."""
    c.dialogue()
    full = c.win[C]
    c.win[C] = 1 + int(c.rnd() * 2)  # 128 or 256 bytes at window scale 7
    w = c.win[C] << 7
    c.tx(C, 3000, ACK)  # window update
    attacker = c.sides[S].forged(c.sides[S].ttl + 17 if c.sides[S].ttl < 200 else 40)
    base, margin = c.nxt[S], 32
    kind = c.rnd()
    if kind < 1 / 3:
        offsets = range(-margin, w + margin)
    elif kind < 2 / 3:
        offsets = range(1, w + margin)
    else:
        offsets = range(-w - margin, 0)
    c.t += 3000  # (a challenge ACK within 1 ms of an identical ACK would be a capture duplicate)
    alive, challenged = True, False
    for off in offsets:
        c.tx(S, 40, RST, seq=(base + off) & M32, ack=0, side=attacker)
        if off == 0:
            alive = False
        elif alive and not challenged and 0 < off < w:
            challenged = True
            c.tx(C, 5, ACK)
    if not alive:
        c.tx(S, 300, PA, w // 2)  # the real server, within the window it was given
        c.tx(C, c.rtt // 2, RST, seq=c.nxt[C], ack=0)
        return "injected_reset"
    c.win[C] = full
    c.tx(C, 20000, ACK)  # the application read: window update
    c.data(S, 2)
    c.fin_close(S)
    return "ignored_reset"


# (script, intended case, weight in the teardowns mix: connections per deck of 100)
SCRIPTS = (
    (graceful, "graceful", 14), (bulk, "graceful", 3), (stream, "graceful", 5), (half_close, "half_close", 5),
    (simultaneous_close, "simultaneous_close", 4), (refused, "refused", 6),
    (write_after_close, "write_after_close", 6), (unread_data_reset, "unread_data_reset", 6),
    (abortive_close, "abortive_close", 6), (aborted_before_accept, "aborted_before_accept", 5),
    (peer_state_lost, "peer_state_lost", 5),
    (retransmission_timeout, "retransmission_timeout", 5), (syn_timeout, "syn_timeout", 5),
    (keepalive_timeout, "keepalive_timeout", 4), (close_wait_stall, "close_wait_stall", 5),
    (injected_reset, "injected_reset", 4), (ignored_reset, "ignored_reset", 4),
    (open_, "open", 8),
)


# ------------------------------------------------------------------ the short mix's own scripts

def http10(c: Conn) -> None:
    """HTTP/1.0: one request, a response of a few segments (heavy-tailed: mostly small objects,
    now and then a large one), and the server closes right after its last write."""
    c.hand()
    c.request()
    segs = 1 + min(60, int(-6 * log(1.0 - c.rnd())))  # exponential: mean ~6.5 segments
    c.data(S, segs, 100 + int(c.rnd() * 1300), first=c.rtt // 2 + int(c.rnd() * 3000))
    c.tx(S, 30 + int(c.rnd() * 200), FIN | ACK)
    r = c.rtt // 2
    if c.rnd() < 0.5:  # the client ACKs the FIN, then its application reads EOF and closes
        c.tx(C, r, ACK)
        c.tx(C, 100 + int(c.rnd() * 2000), FIN | ACK)
    else:  # ... or closes at once: its FIN carries the ACK
        c.tx(C, r, FIN | ACK)
    c.tx(S, r, ACK)


def syn_backoff(c: Conn) -> None:
    """connect() to a host that never answers: the SYN retransmitted after 1, 2 and 4 s (Linux's
    exponential backoff) until the application gives up after one to three retries."""
    c.tx(C, 0, SYN)
    rto = 1_000_000
    for _ in range(1 + int(c.rnd() * 3)):
        c.tx(C, rto + int(c.rnd() * 3000), SYN, seq=(c.nxt[C] - 1) & M32)
        rto *= 2


# (script, intended case, weight: connections per deck of 100) of the short mix: HTTP/1.0-like
# exchanges, and the resets and failures of short connections
SHORT_SCRIPTS = (
    (http10, "graceful", 60), (refused, "refused", 8), (unread_data_reset, "unread_data_reset", 8),
    (abortive_close, "abortive_close", 8), (syn_backoff, "syn_timeout", 8),
    (write_after_close, "write_after_close", 8),
)
