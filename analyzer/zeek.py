"""Zeek's view of a TCP connection: its ``conn_state`` and ``history`` fields.

This re-derives, packet by packet, what Zeek writes in ``conn.log`` for one connection, following
the rules written up in the Zeek oracle's ``SEMANTICS.md`` (our own implementation, no Zeek code):

* each side has a coarse endpoint state (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED,
  CLOSED, RESET), moved by SYN / FIN / RST and by the first packet of a side;
* ``conn_state`` is a pure function of the two endpoint states (plus payload sizes and, for
  RSTOS0, the history string);
* ``history`` is a string of letters, uppercase for the originator, lowercase for the responder,
  with Zeek's repetition rules (once per direction, on a new sequence number, or on a log scale);
* the originator is the sender of the first packet, unless Zeek's "likely server port"
  heuristic flips it (``^``).

The connection *boundaries* (when a 4-tuple starts a new conn.log row) are the tracker's job;
`starts_new_connection` gives it Zeek's rules (SYN reuse, attempt / close / inactivity timers).

Known approximations:

* Content gaps (``G``/``g``) come from a small model of Zeek's reassembler: a gap is reported when
  the peer acknowledges bytes that were never seen (or jumps over a hole), and only while both
  sides are established or cleanly closing. A payload cut by the snap length never reaches
  Zeek's reassembler; `Segment` has no captured length, so this is only honoured when the
  segment object carries an optional ``payload_captured`` attribute.
* ``X`` (an application analyzer hit a limit) is never produced: it needs Zeek's protocol
  analyzers.
* Sequence numbers are compared modulo 2**32 without Zeek's wrap counting, so streams over 2 GiB
  can mis-report gaps and retransmissions.
* ``W`` needs the real advertised window: a hand-built `Segment` with the default ``window=0``
  is a zero-window advertisement.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from analyzer.segment import ACK, FIN, RST, SYN, Segment

__all__ = [
    "BARE_SERVER_PORTS",
    "LIKELY_SERVER_PORTS",
    "ZeekView",
    "starts_new_connection",
]

# Endpoint states (Zeek's TCP_ENDPOINT_*).
INACTIVE = "INACTIVE"
SYN_SENT = "SYN_SENT"
SYN_ACK_SENT = "SYN_ACK_SENT"
PARTIAL = "PARTIAL"
ESTABLISHED = "ESTABLISHED"
CLOSED = "CLOSED"
RESET = "RESET"

# Timers from Zeek's init-bare.zeek (seconds).
TCP_ATTEMPT_DELAY = 5.0
TCP_CLOSE_DELAY = 5.0
TCP_INACTIVITY_TIMEOUT = 300.0
TCP_SYN_TIMEOUT = 5.0  # first expire-timer tick after a connection is created
TCP_SESSION_TIMER = 6.0  # expire-timer period
TCP_CONNECTION_LINGER = 5.0
_EPS = 1e-6  # float slack when comparing capture timestamps with timer deadlines

_TOO_LARGE_SEQ_DELTA = 1048576
_MOD = 1 << 32
_HALF = 1 << 31


def _ports(*items: int | tuple[int, int]) -> frozenset[int]:
    out: set[int] = set()
    for it in items:
        if isinstance(it, tuple):
            out.update(range(it[0], it[1] + 1))
        else:
            out.add(it)
    return frozenset(out)


# TCP ports registered by the analyzers a default (non-bare) Zeek loads: the `likely_server_ports`
# the flip heuristic consults.
LIKELY_SERVER_PORTS = _ports(
    21, 2811,  # FTP, GridFTP
    22,  # SSH
    23,  # Telnet
    25, 587,  # SMTP
    53,  # DNS over TCP
    80, 81, 631, 1080, 3128, 8000, 8080, 8888,  # HTTP (and SOCKS 1080)
    88,  # Kerberos
    110,  # POP3
    111,  # portmapper
    135, 139, 445,  # DCE-RPC, SMB
    143,  # IMAP
    389, 3268,  # LDAP
    443, 465, 563, 585, 614, 636, 989, 990, 992, 993, 995, 5223,  # TLS
    502,  # Modbus
    1433, 1434, 3306,  # SQL Server, MySQL
    1883,  # MQTT
    3389,  # RDP
    5060,  # SIP
    5222, 5269,  # XMPP
    5432,  # PostgreSQL
    6379,  # Redis
    (6660, 6669),  # IRC
    20000,  # DNP3
)

# Under `zeek -b` only the analyzers a test script loads register their ports. Zeek's bare-mode
# baselines only show flips towards port 80 (HTTP, loaded by most tests); 443 stays unflipped.
BARE_SERVER_PORTS = frozenset({80})


def _sdelta(a: int, b: int) -> int:
    """a - b as a signed 32-bit sequence-space difference."""
    d = (a - b) % _MOD
    return d - _MOD if d >= _HALF else d


class _Reassembler:
    """Just enough of Zeek's per-direction reassembler to know when it reports a content gap.

    Positions are relative to the endpoint's start sequence (first data byte = 1).
    """

    __slots__ = ("last_reassem", "trim_seq", "blocks")

    def __init__(self) -> None:
        self.last_reassem = 1  # everything below has been delivered (or skipped as a gap)
        self.trim_seq = 1  # everything below has been acknowledged
        self.blocks: list[tuple[int, int]] = []  # buffered [lo, hi) above a hole, sorted

    def data(self, lo: int, hi: int, acked: int) -> None:
        if lo < acked:
            if hi <= acked:
                return
            lo = acked
        if hi <= self.last_reassem:
            return
        if lo <= self.last_reassem:
            self.last_reassem = hi
            self._absorb()
        else:
            self.blocks.append((lo, hi))
            self.blocks.sort()

    def _absorb(self) -> None:
        keep = []
        for lo, hi in self.blocks:
            if lo <= self.last_reassem:
                self.last_reassem = max(self.last_reassem, hi)
            else:
                keep.append((lo, hi))
        self.blocks = keep

    def ack(self, up_to: int) -> int:
        """Trim to `up_to`; return how many gaps were skipped on the way."""
        if up_to <= self.trim_seq:
            return 0
        self.trim_seq = up_to
        gaps = 0
        if up_to > self.last_reassem:
            keep = []
            for lo, hi in self.blocks:
                if hi <= self.last_reassem:
                    continue
                if lo < up_to:
                    if lo > self.last_reassem:
                        gaps += 1
                    self.last_reassem = max(self.last_reassem, hi)
                else:
                    keep.append((lo, hi))
            self.blocks = keep
            if up_to > self.last_reassem:
                gaps += 1
                self.last_reassem = up_to
            self._absorb()
        self.blocks = [(lo, hi) for lo, hi in self.blocks if hi > up_to]
        return gaps


class _Endpoint:
    """One side of the connection, as Zeek's TCP_Endpoint tracks it."""

    __slots__ = ("state", "prev_state", "start", "last", "ackseq", "did_close", "fin_cnt",
                 "rst_cnt", "fin_seq", "sent_payload", "seen", "last_syn", "last_fin",
                 "last_rst", "scaled", "reasm")

    def __init__(self) -> None:
        self.state = INACTIVE
        self.prev_state = INACTIVE
        self.start: int | None = None  # "initial" sequence number (ISN, or first seq - 1)
        self.last = 0  # highest sequence number sent (one past)
        self.ackseq = 0  # highest acknowledgment received from the peer
        self.did_close = False
        self.fin_cnt = 0
        self.rst_cnt = 0
        self.fin_seq = 0  # relative, one past the FIN
        self.sent_payload = False
        # history kinds already recorded for this direction (a tuple: a set costs 216 bytes, and
        # a SYN flood keeps 100k connections open)
        self.seen: tuple[str, ...] = ()
        self.last_syn: int | None = None
        self.last_fin: int | None = None
        self.last_rst: int | None = None
        # log-scale counters: letter -> [count, next threshold]
        self.scaled: dict[str, list[int]] = {}
        self.reasm = _Reassembler()

    def set_state(self, new: str) -> None:
        if new != self.state:
            self.prev_state = self.state
            self.state = new

    def init_seq(self, start: int, last: int) -> None:
        self.start = start % _MOD
        self.ackseq = self.start
        self.last = last % _MOD

    def rel(self, seq: int) -> int:
        # _sdelta(seq, start), written out: called several times per packet
        d = (seq - (self.start or 0)) % _MOD
        return d - _MOD if d >= _HALF else d

    @property
    def inactive(self) -> bool:
        return self.state in (INACTIVE, PARTIAL)

    @property
    def clean(self) -> bool:
        return self.state == ESTABLISHED or (
            self.state == CLOSED and self.prev_state == ESTABLISHED
        )


class ZeekView:
    """Zeek's view of one connection, fed packet by packet."""

    __slots__ = ("server_ports", "ignore_checksums", "_orig_ep", "_resp_ep", "_o", "_r", "_hist",
                 "_is_partial", "_first_seen", "first_ts", "last_ts", "_last_time",
                 "_attempt_at", "_delete_at", "_expire_grids", "_timers_cancelled")

    def __init__(self, *, bare_mode: bool = False, ignore_checksums: bool = False,
                 server_ports: Iterable[int] | None = None):
        """`bare_mode` is ``zeek -b`` (a much smaller likely-server-port set); `ignore_checksums`
        is ``zeek -C`` (bad checksums are not reported and the packets count); `server_ports`
        overrides the likely-server-port set."""
        if server_ports is not None:
            self.server_ports = frozenset(server_ports)
        else:
            self.server_ports = BARE_SERVER_PORTS if bare_mode else LIKELY_SERVER_PORTS
        self.ignore_checksums = ignore_checksums
        self._orig_ep: tuple[str, int] | None = None
        self._resp_ep: tuple[str, int] | None = None
        self._o = _Endpoint()
        self._r = _Endpoint()
        self._hist: list[str] = []
        self._is_partial = False
        self._first_seen: tuple[bool, ...] = ()  # directions (is_orig) whose first packet was seen
        self.first_ts: float | None = None
        self.last_ts: float | None = None  # last packet fed (any)
        self._last_time = 0.0  # Zeek's Conn LastTime (accepted packets, until both closed)
        self._attempt_at: float | None = None
        self._delete_at: float | None = None
        self._expire_grids: list[float] = []
        self._timers_cancelled = False

    # ------------------------------------------------------------------ public API

    @property
    def orig(self) -> tuple[str, int] | None:
        """(addr, port) Zeek calls the originator, None before the first packet."""
        return self._orig_ep

    @property
    def resp(self) -> tuple[str, int] | None:
        return self._resp_ep

    @property
    def orig_state(self) -> str:
        return self._o.state

    @property
    def resp_state(self) -> str:
        return self._r.state

    @property
    def history(self) -> str:
        return "".join(self._hist)

    @property
    def conn_state(self) -> str:
        o, r = self._o, self._r
        if r.state == RESET:
            if o.state in (SYN_SENT, SYN_ACK_SENT) or (
                o.state == RESET and not o.sent_payload and not r.sent_payload
            ):
                return "REJ"
            return "RSTRH" if o.inactive else "RSTR"
        if o.state == RESET:
            if r.inactive:
                return "RSTOS0" if _rstos0_history(self.history) else "OTH"
            return "RSTO"
        if o.state == CLOSED and r.state == CLOSED:
            return "SF"
        if o.state == CLOSED:
            return "SH" if r.inactive else "S2"
        if r.state == CLOSED:
            return "SHR" if o.inactive else "S3"
        if o.state == SYN_SENT and r.state == INACTIVE:
            return "S0"
        if o.state == ESTABLISHED and r.state == ESTABLISHED:
            return "S1"
        return "OTH"

    def is_closed_for_reuse(self) -> bool:
        """True if either side has FIN'd or RST'd: any new SYN then starts a new connection."""
        return self._o.did_close or self._r.did_close

    def observe(self, seg: Segment) -> None:
        if seg.icmp_kind is not None:
            return
        if self._orig_ep is None:
            self._start(seg)
        self.last_ts = seg.ts
        src = (seg.src, seg.sport)
        is_orig = src == self._orig_ep
        if not is_orig and src != self._resp_ep:
            return  # not this connection's packet
        ep = self._o if is_orig else self._r

        if seg.checksum_ok is False and not self.ignore_checksums:
            self._scaled(ep, is_orig, "C")
            return

        if self._hist == ["H"] and not (seg.flags & (SYN | FIN | RST)) and (
            seg.flags & ACK or seg.payload_len
        ):
            self._rewrite_missing_syn()
            is_orig = src == self._orig_ep
            ep = self._o if is_orig else self._r
        self._process(seg, is_orig, ep)

    # ------------------------------------------------------------------ internals

    def _start(self, seg: Segment) -> None:
        self.first_ts = seg.ts
        self._last_time = seg.ts
        self._expire_grids.append(seg.ts + TCP_SYN_TIMEOUT)
        flip = False
        if not (seg.flags & SYN) or seg.flags & ACK:
            if seg.sport in self.server_ports:
                if seg.dport in self.server_ports:
                    flip = not (seg.flags & SYN) and seg.sport < seg.dport
                else:
                    flip = True
        if flip:
            self._orig_ep, self._resp_ep = (seg.dst, seg.dport), (seg.src, seg.sport)
            self._hist.append("^")
        else:
            self._orig_ep, self._resp_ep = (seg.src, seg.sport), (seg.dst, seg.dport)

    def _flip(self) -> None:
        self._orig_ep, self._resp_ep = self._resp_ep, self._orig_ep
        self._o, self._r = self._r, self._o
        self._first_seen = tuple(not d for d in self._first_seen)
        self._is_partial = False

    def _rewrite_missing_syn(self) -> None:
        # A lone SYN-ACK from the "originator", then an ACK or data: Zeek decides the SYN was
        # missed, swaps the roles and rewrites the history `H` as `^h`. The SYN-ACK sender is
        # then an established responder, as if the connection had been flipped from the start.
        self._flip()
        self._hist = ["^", "h"]
        if self._r.state == SYN_ACK_SENT:
            self._r.set_state(ESTABLISHED)

    def _saw(self, is_orig: bool) -> None:
        if is_orig not in self._first_seen:
            self._first_seen += (is_orig,)

    def _add(self, is_orig: bool, letter: str) -> None:
        self._hist.append(letter if is_orig else letter.lower())

    def _once(self, ep: _Endpoint, is_orig: bool, kind: str, letter: str) -> bool:
        """Record `letter` the first time `kind` occurs in this direction; True if seen before."""
        if kind in ep.seen:
            return True
        ep.seen += (kind,)
        self._add(is_orig, letter)
        return False

    def _scaled(self, ep: _Endpoint, is_orig: bool, letter: str) -> None:
        cnt = ep.scaled.setdefault(letter, [0, 1])
        cnt[0] += 1
        if cnt[0] == cnt[1]:
            self._add(is_orig, letter)
            cnt[1] *= 10

    def _update_history(self, seg: Segment, ep: _Endpoint, is_orig: bool, syn: bool, fin: bool,
                        rst: bool) -> None:
        if not (syn or fin or rst):  # the usual packet: D or A, recorded once per direction
            if seg.payload_len:
                if "D" not in ep.seen:
                    self._once(ep, is_orig, "D", "D")
            elif seg.flags & ACK and "A" not in ep.seen:
                self._once(ep, is_orig, "A", "A")
            return
        if syn + fin + rst > 1:
            if fin and rst:
                self._once(ep, is_orig, "I", "I")
            else:
                self._once(ep, is_orig, "Q", "Q")
        elif syn:
            letter = "H" if seg.flags & ACK else "S"
            if self._once(ep, is_orig, "SYN", letter) and seg.seq != ep.last_syn:
                self._add(is_orig, letter)
            ep.last_syn = seg.seq
        elif fin:
            end = (seg.seq + seg.payload_len) % _MOD
            if self._once(ep, is_orig, "FIN", "F") and end != ep.last_fin:
                self._add(is_orig, "F")
            ep.last_fin = end
        elif rst:
            if self._once(ep, is_orig, "RST", "R") and seg.seq != ep.last_rst:
                self._add(is_orig, "R")
            ep.last_rst = seg.seq

    def _process(self, seg: Segment, is_orig: bool, ep: _Endpoint) -> None:
        peer = self._r if is_orig else self._o
        flags = seg.flags
        # (x != 0 rather than bool(x): a comparison, not a call, per flag per packet)
        syn, fin, rst, ack = flags & SYN != 0, flags & FIN != 0, flags & RST != 0, flags & ACK != 0
        plen = seg.payload_len
        ts = seg.ts

        # Partial-connection status (first packet of each direction).
        if is_orig not in self._first_seen:
            if is_orig:
                self._is_partial = not syn or ack
            elif not self._is_partial:
                self._is_partial = not syn
            self._saw(is_orig)

        seg_len = plen + syn + fin - (plen if rst else 0)
        seq_end = (seg.seq + seg_len) % _MOD

        # Sequence-space initialisation.
        if ep.state == INACTIVE:
            if syn:
                ep.init_seq(seg.seq, seq_end)
            else:
                ep.init_seq(seg.seq - 1, seg.seq)
        elif ep.state in (SYN_SENT, SYN_ACK_SENT):
            if syn and seg.seq != ep.start:
                ep.init_seq(seg.seq, seq_end)
        elif ep.state in (ESTABLISHED, PARTIAL):
            if syn:
                ep.init_seq(seg.seq, seq_end)
        elif ep.state == RESET and syn and ep.prev_state == INACTIVE:
            ep.init_seq(seg.seq, seq_end)

        rel_seq = ep.rel(seg.seq)
        underflow = rel_seq < 0

        self._update_history(seg, ep, is_orig, syn, fin, rst)

        if seg.window == 0 and not rst and peer.state != CLOSED and ep.state != RESET:
            self._scaled(ep, is_orig, "W")

        if not (self._o.did_close and self._r.did_close):
            self._last_time = ts

        if fin:
            ep.fin_cnt += 1
            ep.fin_seq = rel_seq + seg_len
        if rst:
            ep.rst_cnt += 1

        rel_ack = 0
        if ack:
            if peer.state == INACTIVE:
                rel_ack = 1
                peer.init_seq(seg.ack - 1, seg.ack - 1)
            else:
                rel_ack = peer.rel(seg.ack)
                if rel_ack < 0:
                    rel_ack = 0
                elif not rst:
                    d = _sdelta(seg.ack, peer.ackseq)
                    if d > 0 and not (seg.ack == 0 and d > _TOO_LARGE_SEQ_DELTA):
                        peer.ackseq = seg.ack

        # Highest sequence sent; retransmissions.
        delta_last = _sdelta(seq_end, ep.last)
        if (syn or rst) and abs(delta_last) > _TOO_LARGE_SEQ_DELTA:
            pass
        elif fin and ep.last == (ep.start + 1) % _MOD:
            ep.last = seq_end
        elif ep.state == RESET:
            pass
        elif delta_last > 0:
            ep.last = seq_end
        elif plen > 0:
            self._scaled(ep, is_orig, "T")

        # only a SYN, FIN or RST, or an endpoint's first packet, moves an endpoint's state
        do_close = (syn or fin or rst or ep.state == INACTIVE) \
            and self._state_machine(seg, ep, peer, is_orig, ts, syn, fin, rst, ack)

        if ack:
            self._ack_received(peer, not is_orig, rel_ack)

        if plen > 0 and not rst:
            ep.sent_payload = True
            # A payload cut short by the snap length never reaches Zeek's reassembler (so the
            # peer's ACK of it is a gap). `Segment` does not carry the captured length yet; a
            # reader may supply it as `payload_captured`.
            # (a plain Segment has no such slot: no failed look-up per data packet)
            captured = None if type(seg) is Segment else getattr(seg, "payload_captured", None)
            if not underflow and (captured is None or captured >= plen):
                lo = rel_seq + 1 if syn else rel_seq
                ep.reasm.data(lo, lo + plen, ep.rel(ep.ackseq))

        if do_close:
            self._connection_closed(ep, peer)

    def _ack_received(self, ep: _Endpoint, ep_is_orig: bool, up_to: int) -> None:
        """The peer of `ep` acknowledged `ep`'s stream up to relative `up_to`."""
        if ep.fin_cnt > 0 and up_to >= ep.fin_seq:
            up_to = ep.fin_seq - 1
        if up_to <= ep.reasm.trim_seq:
            return
        if up_to <= 2 and self._is_partial and up_to > ep.reasm.last_reassem:
            return  # the faked-up ISN of a partial connection: not a real gap
        gaps = ep.reasm.ack(up_to)
        peer = self._r if ep is self._o else self._o
        if gaps and ep.clean and peer.clean:
            for _ in range(gaps):
                self._scaled(ep, ep_is_orig, "G")

    def _state_machine(self, seg: Segment, ep: _Endpoint, peer: _Endpoint, is_orig: bool,
                       ts: float, syn: bool, fin: bool, rst: bool, ack: bool) -> bool:
        do_close = False
        state = ep.state
        if state == INACTIVE:
            if syn:
                if is_orig:
                    ep.set_state(SYN_ACK_SENT if ack else SYN_SENT)
                    if not self._timers_cancelled and self._attempt_at is None:
                        self._attempt_at = ts + TCP_ATTEMPT_DELAY
                else:
                    if not ack and peer.state == SYN_ACK_SENT:
                        # SYN/SYN-ACK reversal: flip and treat as established.
                        self._flip()
                        self._hist.append("^")
                        self._is_partial = False
                        peer.set_state(ESTABLISHED)
                        self._saw(True)
                    if peer.state == SYN_SENT:
                        peer.set_state(ESTABLISHED)
                    ep.set_state(ESTABLISHED)
            if fin:
                ep.set_state(CLOSED)
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
            if ep.state == INACTIVE:
                if not is_orig and seg.payload_len == 0 and self._o.state == SYN_SENT:
                    pass  # "eccentric TCP": an ACK of the SYN before the SYN-ACK
                elif ack and peer.state == ESTABLISHED:
                    ep.set_state(ESTABLISHED)  # the SYN was missed
                    self._is_partial = False
                    self._saw(is_orig)
                else:
                    ep.set_state(PARTIAL)
        elif state in (SYN_SENT, SYN_ACK_SENT):
            if fin:
                ep.set_state(CLOSED)
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
        elif state in (ESTABLISHED, PARTIAL):
            if syn and state == PARTIAL and peer.state == INACTIVE and not ack:
                ep.set_state(SYN_SENT)
            if fin and not rst:
                ep.set_state(CLOSED)
                if peer.state == RESET and peer.prev_state == CLOSED:
                    peer.set_state(CLOSED)  # FIN, RST, then the peer's FIN: a normal close
                do_close = True
            if rst:
                ep.set_state(RESET)
                do_close = True
        elif state == CLOSED:
            if rst and peer.state != CLOSED:
                ep.set_state(RESET)
                if not ep.did_close:
                    do_close = True
        return do_close

    def _connection_closed(self, ep: _Endpoint, peer: _Endpoint) -> None:
        if ep.did_close:
            return
        ep.did_close = True
        if ep.state == RESET or peer.did_close or peer.state == INACTIVE:
            # Close complete: the record goes tcp_close_delay after the last packet.
            self._timers_cancelled = True
            self._attempt_at = None
            self._expire_grids = []
            self._delete_at = self._last_time + TCP_CLOSE_DELAY
        elif ep.prev_state != INACTIVE and not self._timers_cancelled:
            self._expire_grids.append(self._last_time + TCP_SESSION_TIMER)

    def _removed_by(self, t: float) -> bool:
        """Whether one of Zeek's timers would have removed this connection before time `t`."""
        if self._delete_at is not None and t > self._delete_at + _EPS:
            return True
        o, r = self._o, self._r
        if (self._attempt_at is not None and t > self._attempt_at + _EPS
                and o.state in (SYN_SENT, SYN_ACK_SENT) and r.state == INACTIVE):
            return True
        if t - self._last_time > TCP_INACTIVITY_TIMEOUT + _EPS:
            return True
        closing = (o.did_close or r.did_close) and (
            (o.did_close and r.did_close) or RESET in (o.state, r.state)
            or INACTIVE in (o.state, r.state)
        )
        empty = o.state == INACTIVE and r.state == INACTIVE
        if closing or empty:
            # First expire-timer tick after the connection went quiet for the linger time.
            quiet = self._last_time + TCP_CONNECTION_LINGER
            for start in self._expire_grids:
                k = max(0, math.floor((quiet - start) / TCP_SESSION_TIMER) + 1)
                tick = start + k * TCP_SESSION_TIMER
                if tick <= quiet:
                    tick += TCP_SESSION_TIMER
                if t > tick + _EPS:
                    return True
        return False


def _rstos0_history(history: str) -> bool:
    """Zeek's /^\\^?S[^HAFGIQ]*R.*/ test on the history."""
    h = history[1:] if history.startswith("^") else history
    if not h.startswith("S"):
        return False
    for ch in h[1:]:
        if ch == "R":
            return True
        if ch in "HAFGIQ":
            return False
    return False


def starts_new_connection(view: ZeekView, seg: Segment, last_ts: float) -> bool:
    """Whether Zeek would log the current connection and start a new one with `seg` (SEMANTICS §4:
    SYN reuse after close or with a different ISN, the 5 s attempt timeout, the 5 s close delay,
    the 300 s inactivity timeout)."""
    if view.orig is None or seg.icmp_kind is not None:
        return False
    if seg.ts - last_ts > TCP_INACTIVITY_TIMEOUT + _EPS:
        return True
    if view._removed_by(seg.ts):
        return True
    if not seg.flags & SYN:
        return False
    conn_orig = view._o
    if seg.flags & ACK:
        if view._o.state != INACTIVE:
            return False  # not a half connection
        conn_orig = view._r
    if not view.is_closed_for_reuse():
        if seg.seq == conn_orig.start:
            return False  # a retransmitted SYN
        if (not seg.flags & ACK and conn_orig.state == SYN_ACK_SENT
                and view._r.state == INACTIVE and seg.seq == view._r.start):
            return False  # the SYN of a SYN/SYN-ACK reversal
    return True
