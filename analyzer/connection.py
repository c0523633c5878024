"""One TCP connection as the observer rebuilds it: both endpoints' states and the facts the
classifier needs (what each side sent, its resets, retransmissions, ICMP errors).

``Connection.observe`` turns a segment into events for its sender and its receiver and applies
them through the transition table (``analyzer.tcpstate``). Memory per connection is bounded: only
counters and a bounded number of notable frames are kept, never the segments themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache

from analyzer.segment import ACK, FIN, RST, SYN, Segment
from analyzer.tcpstate import FIN_RECEIVED, FINISHED, Anomaly, Endpoint, Event, State

# the per-segment path's commonest events and states, as globals (cheaper than attributes of
# the Enum classes)
SEND_ACK, RECV_ACK = Event.SEND_ACK, Event.RECV_ACK
SYN_SENT, SYN_RCVD = State.SYN_SENT, State.SYN_RCVD
# state groups the RST path tests (a storm brings one RST after another)
_HANDSHAKE = frozenset({State.SYN_SENT, State.SYN_RCVD})
_UNSYNCHRONISED = frozenset({State.UNKNOWN, State.LISTEN})
_NO_CHALLENGE = frozenset({State.CLOSED, State.UNKNOWN, State.LISTEN})

MAX_KEPT = 32  # bound on every per-connection list of frames
DUPLICATE_WINDOW = 0.001  # s: an identical segment this close is a capture duplicate, not a resend


def seq_lt(a: int, b: int) -> bool:
    """a < b in 32-bit sequence space (RFC 9293 §3.4: comparisons are modulo 2**32)."""
    return a != b and ((b - a) & 0xFFFFFFFF) < 0x80000000


def seq_le(a: int, b: int) -> bool:
    return a == b or seq_lt(a, b)


def _keep(obj, name: str, item) -> None:
    """Append to obj.name up to MAX_KEPT items. Lists start as the shared empty tuple and become
    lists on first use: most connections never need most of them (a SYN flood's attempts need
    one), and an empty list per field per direction is most of a connection's memory."""
    lst = getattr(obj, name)
    if not lst:
        setattr(obj, name, [item])
    elif len(lst) < MAX_KEPT:
        lst.append(item)


@lru_cache(maxsize=1024)
def _with_ttl(ttls: frozenset[int], ttl: int) -> frozenset[int]:
    """ttls | {ttl}, shared: a handful of distinct TTL sets serve every connection."""
    return ttls | {ttl}


@dataclass(slots=True)
class RstFact:
    """One RST and what became of it."""

    frame: int
    ts: float
    sender: str  # role that (claims to have) sent it
    seq: int
    ack: int
    has_ack: bool  # RST/ACK (socket abort) versus bare RST (no socket)
    has_options: bool
    ttl: int
    ip_id: int
    tsval: int | None
    sender_state: str  # sender's state just before
    receiver_state: str  # receiver's state just before
    accepted: bool  # the receiver's TCP would act on it (exact sequence number)
    answers_syn: bool = False  # it answers a SYN (refused) or the handshake's last ACK
    challenge_frame: int | None = None  # the receiver's challenge ACK, RFC 5961 §3.2
    forged: bool = False  # the claimed sender kept sending afterwards


@dataclass(slots=True)
class DirFacts:
    """What one side sent."""

    isn: int | None = None
    syn_frames: Sequence[int] = ()
    syn_times: Sequence[float] = ()
    synack_frames: Sequence[int] = ()
    synack_times: Sequence[float] = ()
    next_seq: int | None = None  # highest sequence number sent + 1 (snd.max)
    max_ack: int | None = None  # highest acknowledgment sent (the peer's data it has)
    ack_frame: int | None = None  # frame of the segment that last raised max_ack
    fin_frame: int | None = None
    fin_seq: int | None = None
    packets: int = 0
    bytes: int = 0  # payload bytes, retransmissions excluded
    first_data_frame: int | None = None
    last_data_frame: int | None = None  # last segment with new payload
    last_data_ts: float = 0.0
    last_frame: int | None = None
    last_ts: float = 0.0
    retransmissions: int = 0
    ladder: Sequence[tuple[int, float]] = ()  # resends of one segment
    ladder_seq: int | None = None
    keepalives: Sequence[int] = ()
    zero_windows: int = 0
    ttls: frozenset[int] = frozenset()  # TTLs of its non-RST segments (rarely more than one)
    options_seen: bool = False  # its ordinary segments carry TCP options
    rsts: Sequence[RstFact] = ()
    data_after_peer_fin: int | None = None  # first new payload sent after the peer's FIN arrived
    sent_after_own_rst: int | None = None  # first non-RST segment after it sent a RST
    last_key: tuple | None = None  # identity of its last segment, to drop capture duplicates
    last_key_ts: float = 0.0


@dataclass(slots=True)
class IcmpFact:
    frame: int
    ts: float
    kind: str
    icmp_type: int
    icmp_code: int
    about: str  # role whose segment the ICMP quotes (the one that gets the error)
    sender: str  # address of the router/host that sent it


class Connection:
    """Both endpoints of one connection (one generation of a 4-tuple)."""

    __slots__ = ("conn_id", "client", "server", "ip_version", "first_frame", "last_frame",
                 "start", "end", "packets", "duplicates", "ep", "sent", "icmp", "anomalies",
                 "pending_challenge", "zeek", "tunnel")

    def __init__(self, conn_id: int, seg: Segment, client: tuple[str, int],
                 server: tuple[str, int]):
        self.conn_id = conn_id
        self.client = client
        self.server = server
        self.ip_version = seg.ip_version
        self.first_frame = seg.frame
        self.last_frame = seg.frame
        self.tunnel = None  # pipeline.RECORD_FIELDS["tunnel"] (the compiled core fills it)
        self.start = seg.ts
        self.end = seg.ts
        self.packets = 0
        self.duplicates = 0
        self.ep = {"client": Endpoint("client"), "server": Endpoint("server")}
        self.sent = {"client": DirFacts(), "server": DirFacts()}
        self.icmp: Sequence[IcmpFact] = ()
        self.anomalies: list[Anomaly] = []
        self.pending_challenge: dict[str, RstFact] = {}
        self.zeek = None  # a ZeekView, attached by the tracker

    # ---------------------------------------------------------------- queries
    def role_of(self, seg: Segment) -> str:
        return "client" if (seg.src, seg.sport) == self.client else "server"

    @staticmethod
    def peer(role: str) -> str:
        return "server" if role == "client" else "client"

    @property
    def any_closed(self) -> bool:
        """Either side has sent a FIN or a RST (Zeek's rule for SYN reuse)."""
        return any(d.fin_frame is not None or d.rsts for d in self.sent.values())

    @property
    def ended(self) -> bool:
        """Nothing more is expected: both ends finished, or a reset was acted on."""
        # written out: sweeps ask this of every quiet connection, every capture second
        ep, sent = self.ep, self.sent
        if ep["client"].state in FINISHED and ep["server"].state in FINISHED:
            return True
        cl, sv = sent["client"].rsts, sent["server"].rsts
        if not (cl or sv):
            return False  # the usual answer: no RST at all
        for rsts in (cl, sv):
            for r in rsts:
                if r.accepted and not r.forged:
                    return True
        return False

    # ---------------------------------------------------------------- updates
    def observe_icmp(self, seg: Segment) -> None:
        about = self.role_of(seg)
        _keep(self, "icmp", IcmpFact(seg.frame, seg.ts, seg.icmp_kind, seg.icmp_type or 0,
                                  seg.icmp_code or 0, about, seg.icmp_from or ""))
        self._touch(seg)

    def observe(self, seg: Segment) -> None:
        # written for speed (every segment outside a run comes here): role_of and _touch inline,
        # each attribute read once, the endpoints and facts handed on rather than found again
        if (seg.src, seg.sport) == self.client:
            role, peer = "client", "server"
        else:
            role, peer = "server", "client"
        sent = self.sent
        me, other = sent[role], sent[peer]
        frame, ts, flags = seg.frame, seg.ts, seg.flags
        key = (seg.seq, seg.ack, flags, seg.payload_len, seg.ip_id, seg.tsval)
        if key == me.last_key and ts - me.last_key_ts <= DUPLICATE_WINDOW:
            self.duplicates += 1  # e.g. both copies a packet socket on `lo` sees
            return
        me.last_key, me.last_key_ts = key, ts
        self.packets += 1
        self.last_frame = frame
        self.end = ts
        me.packets += 1
        me.last_frame, me.last_ts = frame, ts
        if not flags & RST:
            if seg.ttl not in me.ttls:  # a RST's own TTL is judged against these
                me.ttls = _with_ttl(me.ttls, seg.ttl)
            me.options_seen = me.options_seen or seg.has_options
            if me.rsts and me.sent_after_own_rst is None:
                me.sent_after_own_rst = frame
                self._retract_forged_rst(role, seg)
            if seg.window == 0 and flags & ACK:
                me.zero_windows += 1
            if self.pending_challenge:
                pending = self.pending_challenge.pop(role, None)
                if pending is not None and not flags & (SYN | FIN) and seg.payload_len == 0:
                    pending.challenge_frame = frame
            self._track_sequence(seg, role, me)
        if flags & ACK and (me.max_ack is None or seq_lt(me.max_ack, seg.ack)):
            me.max_ack = seg.ack
            me.ack_frame = frame
        if flags & RST:
            self._observe_rst(seg, role, peer, me, other)
            return
        ep = self.ep
        self._apply_sender(seg, role, ep[role], me)
        self._apply_receiver(seg, ep[peer], other, me)

    def _touch(self, seg: Segment) -> None:
        self.packets += 1
        self.last_frame = seg.frame
        self.end = seg.ts

    def _track_sequence(self, seg: Segment, role: str, me: DirFacts) -> None:
        """snd.max, new bytes, keepalives and retransmissions (not for RSTs)."""
        flags, seq, plen = seg.flags, seg.seq, seg.payload_len
        if flags & SYN:
            if me.isn is None or me.isn != seq:
                me.isn = seq
                me.next_seq = (seq + 1) & 0xFFFFFFFF
        # seg.seq_space, written out: the payload, plus one each for SYN and FIN
        end = (seq + plen + (1 if flags & SYN else 0) + (flags & FIN)) & 0xFFFFFFFF
        next_seq = me.next_seq
        if next_seq is None:
            me.next_seq = end
            if plen:
                self._new_data(seg, role, me, plen)
            return
        if plen <= 1 and not flags & (SYN | FIN) and seq == (next_seq - 1) & 0xFFFFFFFF:
            _keep(me, "keepalives", seg.frame)  # keepalive (or window) probe: seq = next - 1
            return
        if next_seq != end and ((end - next_seq) & 0xFFFFFFFF) < 0x80000000:  # seq_lt, inline
            new = (end - next_seq) & 0xFFFFFFFF
            me.next_seq = end
            if plen:
                self._new_data(seg, role, me, min(new, plen))
        elif plen or flags & FIN and not flags & SYN:
            if plen or (me.fin_seq is not None and seq == me.fin_seq):
                me.retransmissions += 1
                if me.ladder_seq != seq:
                    me.ladder_seq = seq
                    me.ladder = ()
                _keep(me, "ladder", (seg.frame, seg.ts))

    def _new_data(self, seg: Segment, role: str, me: DirFacts, n: int) -> None:
        me.bytes += n
        if me.first_data_frame is None:
            me.first_data_frame = seg.frame
        me.last_data_frame, me.last_data_ts = seg.frame, seg.ts
        if me.data_after_peer_fin is None and self.ep[role].state in FIN_RECEIVED:
            me.data_after_peer_fin = seg.frame

    def _apply_sender(self, seg: Segment, role: str, ep: Endpoint, me: DirFacts) -> None:
        """Events for the sender of `seg` (`ep`, whose facts are `me`)."""
        flags = seg.flags
        if not flags & (SYN | FIN):  # the usual segment: one event, no bookkeeping
            ep.apply(SEND_ACK, seg.frame, seg.ts, self.anomalies)
            return
        if flags & SYN:
            if flags & ACK:
                _keep(me, "synack_frames", seg.frame)
                _keep(me, "synack_times", seg.ts)
                ep.apply(Event.SEND_SYNACK, seg.frame, seg.ts, self.anomalies)
            else:
                _keep(me, "syn_frames", seg.frame)
                _keep(me, "syn_times", seg.ts)
                ep.apply(Event.SEND_SYN, seg.frame, seg.ts, self.anomalies)
            return
        if me.fin_frame is None:
            me.fin_frame = seg.frame
            me.fin_seq = (seg.seq + seg.payload_len) & 0xFFFFFFFF
        crossed = self._fin_crossed(seg, role)
        if crossed:
            # it sent its FIN before the peer's FIN reached it: undo the early CLOSE_WAIT
            ep.history.pop()
            ep.state = State(ep.history[-1][0]) if ep.history else State.MIDSTREAM
        ep.apply(Event.SEND_FIN, seg.frame, seg.ts, self.anomalies)
        if crossed:  # ... and the peer's FIN arrives right after: CLOSING
            ep.apply(Event.RECV_FIN, seg.frame, seg.ts, self.anomalies)

    def _fin_crossed(self, seg: Segment, role: str) -> bool:
        """A FIN from an endpoint we put in CLOSE_WAIT whose ACK does not cover the peer's FIN:
        the two FINs crossed in flight (simultaneous close, RFC 9293 figure 13)."""
        peer_fin = self.sent[self.peer(role)].fin_seq
        ep = self.ep[role]
        return (ep.state is State.CLOSE_WAIT and peer_fin is not None and bool(seg.flags & ACK)
                and seq_lt(seg.ack, (peer_fin + 1) & 0xFFFFFFFF)
                and len(ep.history) >= 1 and ep.history[-1][0] == State.CLOSE_WAIT.value)

    def _apply_receiver(self, seg: Segment, ep: Endpoint, facts: DirFacts,
                        sender: DirFacts) -> None:
        """Events for the receiver of `seg` (`ep`); `facts` is what that receiver itself sent,
        `sender` what the sender of `seg` did."""
        flags, frame, ts = seg.flags, seg.frame, seg.ts
        if flags & SYN:
            if flags & ACK and ep.state is SYN_SENT and sender.syn_frames:
                # simultaneous open: the peer's plain SYN reached it first (SYN_RCVD)
                ep.apply(Event.RECV_SYN, frame, ts, self.anomalies)
            ev = Event.RECV_SYNACK if flags & ACK else Event.RECV_SYN
            ep.apply(ev, frame, ts, self.anomalies)
            return
        if flags & ACK:
            if facts.isn is not None and ep.state is SYN_RCVD \
                    and seq_le((facts.isn + 1) & 0xFFFFFFFF, seg.ack):
                ep.apply(Event.RECV_ACK_OF_SYN, frame, ts, self.anomalies)
            if facts.fin_seq is not None and seq_le((facts.fin_seq + 1) & 0xFFFFFFFF, seg.ack):
                ep.apply(Event.RECV_ACK_OF_FIN, frame, ts, self.anomalies)
            else:
                ep.apply(RECV_ACK, frame, ts, self.anomalies)
        if flags & FIN:
            ep.apply(Event.RECV_FIN, frame, ts, self.anomalies)

    def _observe_rst(self, seg: Segment, role: str, peer: str, me: DirFacts,
                     other: DirFacts) -> None:
        rcv = self.ep[peer]
        accepted = self._rst_acceptable(seg, rcv.state, me, other)
        fact = RstFact(
            seg.frame, seg.ts, role, seg.seq, seg.ack, bool(seg.flags & ACK), seg.has_options,
            seg.ttl, seg.ip_id, seg.tsval, self.ep[role].state.value, rcv.state.value, accepted,
            answers_syn=rcv.state in _HANDSHAKE or not other.synack_frames
            and bool(other.syn_frames) and not me.synack_frames,
        )
        # a storm of stray RSTs must not crowd out the few that count: accepted ones are kept
        # (each ends a state, so there are few), the others up to MAX_KEPT
        if not me.rsts:
            me.rsts = [fact]
        elif len(me.rsts) < MAX_KEPT or (accepted and sum(r.accepted for r in me.rsts) < 8):
            me.rsts.append(fact)
        self.ep[role].apply(Event.SEND_RST, seg.frame, seg.ts, self.anomalies)
        if accepted:
            rcv.apply(Event.RECV_RST, seg.frame, seg.ts, self.anomalies)
        elif rcv.state not in _NO_CHALLENGE:
            self.pending_challenge[peer] = fact

    @staticmethod
    def _rst_acceptable(seg: Segment, rcv_state: State, me: DirFacts, other: DirFacts) -> bool:
        """Would the receiver act on this RST? (RFC 9293 §3.10.7.4 with RFC 5961 §3.2)."""
        if rcv_state in _UNSYNCHRONISED:
            return True  # no synchronised state to protect: the RST only ends its sender
        if rcv_state is SYN_SENT:
            # only a RST that acknowledges the SYN is believed in SYN-SENT
            if other.isn is None:
                return True
            return bool(seg.flags & ACK) and seg.ack == (other.isn + 1) & 0xFFFFFFFF
        # the numbers it expects: what it acknowledged, and what the sender sent up to
        rcv_nxt, snd_max = other.max_ack, me.next_seq
        if rcv_nxt is None and snd_max is None:
            return True  # nothing known of the receiver's window: believe it
        seq = seg.seq
        if seq == rcv_nxt or seq == snd_max:
            return True
        # after a FIN was received, Linux also takes rcv_nxt - 1 (the FIN's own number)
        seq = (seq + 1) & 0xFFFFFFFF
        return rcv_state in FIN_RECEIVED and (seq == rcv_nxt or seq == snd_max)

    def give_up(self, role: str) -> None:
        """`role`'s kernel gave up on the connection (a timer, not a segment): it is CLOSED
        from its last segment on, the moment the observer last saw it alive."""
        d = self.sent[role]
        frame, ts = (d.last_frame, d.last_ts) if d.last_frame else (self.last_frame, self.end)
        self.ep[role].apply(Event.GIVE_UP, frame, ts, self.anomalies)

    def _retract_forged_rst(self, role: str, seg: Segment) -> None:
        """`role` keeps sending after "its" RST: that RST was not its own. Undo what it did."""
        rst = self.sent[role].rsts[-1]
        rst.forged = True
        ep = self.ep[role]
        if ep.history and ep.history[-1][0] == State.CLOSED.value and \
                ep.history[-1][1] == rst.frame:
            ep.history.pop()
            ep.state = State(rst.sender_state)
        self.anomalies.append(Anomaly(seg.frame, seg.ts, role, ep.state.value,
                                      "send after its own RST",
                                      f"the RST of frame {rst.frame} was not sent by it"))
