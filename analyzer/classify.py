"""The classifier: one case of the catalog per connection, with who closed, what each side saw,
the frames that decide it, and how sure we are.

``RULES`` is ordered by precedence (``analyzer.cases``): the first rule that returns a verdict
wins, so a connection gets the most specific case it shows. Each rule says, beside it, why it sits
where it does. Rules read only the facts ``analyzer.connection`` gathered, never packets.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from analyzer.connection import Connection, RstFact
from analyzer.segment import ACK, SYN, Segment
from analyzer.tcpstate import State

LINEAR_RETRY = (0.7, 1.6)  # s: gaps of a listen queue's linear SYN retries (syn_linear_timeouts)


@dataclass(slots=True)
class Verdict:
    case: str
    closer: str | None  # "client", "server", "both" or None
    client_sees: list[str] = field(default_factory=list)
    server_sees: list[str] = field(default_factory=list)
    evidence: list[int] = field(default_factory=list)
    confidence: str = "certain"  # or "likely"
    rival: str | None = None  # the other case it could be, when likely
    reason: str = ""  # the mark that decided it
    secondary: list[str] = field(default_factory=list)


@dataclass(slots=True)
class Context:
    """What other connections of the same capture tell about this one's server."""

    answered_syns: dict[tuple[str, int], int] = field(default_factory=dict)

    def note(self, seg: Segment) -> None:
        """Called with every segment of the capture, before the tracker sees it."""
        if seg.flags & SYN and seg.flags & ACK and not seg.is_icmp:
            k = (seg.src, seg.sport)
            self.answered_syns[k] = self.answered_syns.get(k, 0) + 1

    def listener_seen(self, server: tuple[str, int]) -> bool:
        return self.answered_syns.get(server, 0) > 0


class KnownListener:
    """A Context already answered: whether the connection's server had answered a SYN by the
    time the connection finished (the compiled observer keeps the capture's SYN/ACKs itself)."""

    __slots__ = ("seen",)

    def __init__(self, seen: bool):
        self.seen = seen

    def listener_seen(self, server: tuple[str, int]) -> bool:
        return self.seen


def _sees(role: str, errs: list[str], other: list[str] | None = None) -> dict:
    peer = Connection.peer(role)
    return {f"{role}_sees": errs, f"{peer}_sees": other or []}


def _first_rst(conn: Connection, *, accepted: bool = True) -> RstFact | None:
    # (a plain loop: several rules ask, for every connection, and most have no RST at all)
    first = None
    for d in conn.sent.values():
        for r in d.rsts:
            if not r.forged and (r.accepted or not accepted) \
                    and (first is None or r.frame < first.frame):
                first = r
    return first


def _frames(*xs) -> list[int]:
    return sorted({x for x in xs if x})


# ------------------------------------------------------------------ abnormal endings

def rule_refused(c: Connection, ctx: Context) -> Verdict | None:
    # First: a RST to a SYN means no connection ever existed, whatever else follows.
    cl, sv = c.sent["client"], c.sent["server"]
    for r in sv.rsts:
        if r.answers_syn and cl.syn_frames and not sv.synack_frames and r.has_ack:
            return Verdict("refused", "server", ["ECONNREFUSED"], [],
                           _frames(cl.syn_frames[-1], r.frame),
                           reason="SYN answered by RST/ACK, no SYN/ACK")
    return None


ICMP_ERRNO = {  # Linux's mapping of destination-unreachable codes for TCP (icmp_err_convert)
    "net_unreachable": ("ENETUNREACH", "ENETUNREACH"),
    "host_unreachable": ("EHOSTUNREACH", "EHOSTUNREACH"),
    "port_unreachable": ("ECONNREFUSED", "ECONNREFUSED"),
    "protocol_unreachable": ("ENOPROTOOPT", "ENOPROTOOPT"),
    "admin_prohibited": ("EHOSTUNREACH", "EACCES"),  # IPv4, IPv6
    "other_unreachable": ("EHOSTUNREACH", "EHOSTUNREACH"),
    "time_exceeded": ("EHOSTUNREACH", "EHOSTUNREACH"),
}


def rule_unreachable(c: Connection, ctx: Context) -> Verdict | None:
    # Before resets and timeouts: an ICMP error explains the silence that follows it.
    errs = [i for i in c.icmp if i.kind in ICMP_ERRNO]
    if not errs:
        return None
    last = errs[-1]
    cl = c.sent["client"]
    if c.ended and _first_rst(c) is None and all(ep.state in (State.CLOSED, State.TIME_WAIT)
                                                 for ep in c.ep.values()):
        return None  # the connection recovered and closed normally: an anomaly, not its end
    errno = ICMP_ERRNO[last.kind][0 if c.ip_version == 4 else 1]
    conf, rival = "certain", None
    if not cl.syn_frames or c.sent["server"].synack_frames:
        conf, rival = "likely", "retransmission_timeout"  # soft error on an open connection
    return Verdict("unreachable", None, **_sees(last.about, [errno]),
                   evidence=_frames(*(i.frame for i in errs[:3])), confidence=conf, rival=rival,
                   reason=f"ICMP {last.kind.replace('_', ' ')} (type {last.icmp_type} code "
                          f"{last.icmp_code}) from {last.sender}")


def rule_injected_reset(c: Connection, ctx: Context) -> Verdict | None:
    # Before every other reset case: a forged RST would otherwise pass for the peer's own.
    for role, d in c.sent.items():
        for r in d.rsts:
            ttl_odd = bool(d.ttls) and r.ttl not in d.ttls
            if not r.accepted or not (r.forged or ttl_odd):
                continue
            victim = Connection.peer(role)
            why = []
            if r.forged:
                why.append(f"the {role} kept sending after it (frame {d.sent_after_own_rst})")
            if ttl_odd:
                why.append(f"TTL {r.ttl} where the {role}'s other segments had "
                           f"{sorted(d.ttls)}")
            peer_rsts = [x.frame for x in c.sent[victim].rsts if x.frame > r.frame]
            return Verdict("injected_reset", victim if peer_rsts else None,
                           **_sees(victim, ["ECONNRESET"],
                                   ["ECONNRESET"] if peer_rsts else []),
                           evidence=_frames(r.frame, d.sent_after_own_rst, *peer_rsts[:2]),
                           confidence="certain" if r.forged else "likely",
                           rival=None if r.forged else "peer_state_lost",
                           reason=f"RST at frame {r.frame} claimed by the {role}: "
                                  + "; ".join(why))
    return None


def _linear(times: list[float]) -> bool:
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return len(gaps) >= 2 and all(LINEAR_RETRY[0] <= g <= LINEAR_RETRY[1] for g in gaps)


def rule_backlog_overflow(c: Connection, ctx: Context) -> Verdict | None:
    # Before syn_timeout and the reset cases: the same symptoms, but the server is alive.
    cl, sv = c.sent["client"], c.sent["server"]
    if len(set(cl.syn_times)) >= 2 and sv.synack_frames \
            and sv.synack_frames[0] > cl.syn_frames[1]:
        # the first SYN was ignored (no SYN/ACK before its retry), then answered: queue drained
        return Verdict("backlog_overflow", None, evidence=_frames(*cl.syn_frames[:4],
                                                                 sv.synack_frames[0]),
                       reason=f"{len(cl.syn_frames)} SYNs before the SYN/ACK: ignored while the "
                              "listen queue was full", confidence="likely", rival="syn_timeout")
    if len(sv.synack_frames) >= 2 and cl.syn_frames and len(cl.syn_frames) == 1 \
            and c.ep["client"].state is not State.SYN_SENT and not sv.bytes:
        return Verdict("backlog_overflow", None, evidence=_frames(*sv.synack_frames[:4]),
                       reason="the server retransmitted its SYN/ACK: the client's final ACK "
                              "was dropped by a full accept queue")
    r = _first_rst(c)
    if r and r.sender == "server" and not r.has_ack and not sv.bytes and not sv.fin_frame \
            and sv.synack_frames and sv.ack_frame in sv.synack_frames \
            and r.sender_state in (State.SYN_RCVD.value, State.ESTABLISHED.value):
        return Verdict("backlog_overflow", "server", ["ECONNRESET"], [],
                       _frames(sv.synack_frames[0], r.frame), confidence="likely",
                       rival="peer_state_lost",
                       reason="bare RST from the server right after the handshake "
                              "(tcp_abort_on_overflow=1)")
    if cl.syn_frames and not sv.packets and ctx.listener_seen(c.server) \
            and _linear(cl.syn_times):
        return Verdict("backlog_overflow", None, ["ETIMEDOUT"], [], cl.syn_frames[:6],
                       confidence="likely", rival="syn_timeout",
                       reason="SYNs retried every ~1 s to a port that accepted other "
                              "connections in this capture")
    return None


def rule_write_after_close(c: Connection, ctx: Context) -> Verdict | None:
    # Before peer_state_lost: the bare RST is the same; the closer's earlier FIN tells it apart.
    for a in ("client", "server"):
        b = Connection.peer(a)
        da, db = c.sent[a], c.sent[b]
        if da.fin_frame is None or db.data_after_peer_fin is None:
            continue
        rst = next((r for r in da.rsts if r.frame > db.data_after_peer_fin and not r.forged),
                   None)
        if rst is None:
            continue
        return Verdict("write_after_close", a, **_sees(b, ["EOF", "EPIPE"]),
                       evidence=_frames(da.fin_frame, db.data_after_peer_fin, rst.frame),
                       reason=f"the {b} wrote after the {a}'s FIN (frame {da.fin_frame}) and "
                              f"drew a {'RST/ACK' if rst.has_ack else 'bare RST'}")
    return None


def rule_keepalive_timeout(c: Connection, ctx: Context) -> Verdict | None:
    for p, d in c.sent.items():
        if not d.keepalives:
            continue
        peer = c.sent[Connection.peer(p)]
        if peer.last_frame and peer.last_frame > d.keepalives[-1]:
            continue  # the peer answered the last probe
        rst = next((r for r in d.rsts if r.frame > d.keepalives[-1]), None)
        if rst is None and c.ended:
            continue
        return Verdict("keepalive_timeout", p if rst else None, **_sees(p, ["ETIMEDOUT"]),
                       evidence=_frames(*d.keepalives[-3:], rst.frame if rst else None),
                       confidence="certain" if rst else "likely",
                       rival=None if rst else "open",
                       reason=f"{len(d.keepalives)} keepalive probes from the {p} unanswered"
                              + (", then its RST/ACK" if rst else ""))
    return None


def rule_aborted_before_accept(c: Connection, ctx: Context) -> Verdict | None:
    # Before abortive_close: same RST/ACK, but the server's application never got to speak.
    r = _first_rst(c)
    cl, sv = c.sent["client"], c.sent["server"]
    if r is None or r.sender != "client" or not r.has_ack or sv.bytes or sv.fin_frame \
            or cl.fin_frame or not cl.syn_frames or not sv.synack_frames:
        return None
    if r.sender_state not in (State.ESTABLISHED.value,):
        return None
    conf = "certain" if not cl.bytes else "likely"
    # Linux: accept() succeeds, getpeername() -> ENOTCONN, recv() -> any data, then ECONNRESET
    return Verdict("aborted_before_accept", "client", [], ["ENOTCONN", "ECONNRESET"],
                   _frames(sv.synack_frames[0], r.frame), confidence=conf,
                   rival=None if conf == "certain" else "abortive_close",
                   reason="handshake completed, then the client's RST/ACK before the server "
                          "sent anything")


def rule_peer_state_lost(c: Connection, ctx: Context) -> Verdict | None:
    r = _first_rst(c)
    if r is None or r.has_ack:
        return None
    a = r.sender
    b = Connection.peer(a)
    if c.sent[a].fin_frame is not None or r.receiver_state in ("SYN_SENT", "UNKNOWN"):
        return None
    return Verdict("peer_state_lost", a, **_sees(b, ["ECONNRESET"]),
                   evidence=_frames(c.sent[b].last_data_frame, r.frame),
                   reason=f"bare RST from the {a}, which never closed: its kernel no longer "
                          "knew the connection")


def _rst_abort(c: Connection) -> tuple[RstFact, str, str] | None:
    r = _first_rst(c)
    if r is None or not r.has_ack:
        return None
    a = r.sender
    return r, a, Connection.peer(a)


def rule_unread_data_reset(c: Connection, ctx: Context) -> Verdict | None:
    # Before abortive_close: the order of data decides (CASES.md, "What Linux really does").
    got = _rst_abort(c)
    if got is None:
        return None
    r, a, b = got
    da, db = c.sent[a], c.sent[b]
    if da.fin_frame is not None and da.fin_frame < r.frame or not db.bytes:
        return None
    if da.last_data_frame is not None and da.last_data_frame > (db.last_data_frame or 0):
        return None
    acked = da.ack_frame if da.ack_frame and da.ack_frame > db.last_data_frame else None
    # If the RST sender never spoke, nothing but unread data explains an abort this early in a
    # dialogue; if it had spoken, a SO_LINGER 0 close after reading the answer looks the same
    # on the wire (only the kernel's reset reason, TCP_ABORT_ON_CLOSE vs TCP_STATE, differs).
    sure = not da.bytes
    return Verdict("unread_data_reset", a, **_sees(b, ["ECONNRESET"]),
                   evidence=_frames(db.last_data_frame, acked, r.frame),
                   confidence="certain" if sure else "likely",
                   rival=None if sure else "abortive_close",
                   reason=f"the {a} received data (last at frame {db.last_data_frame}) it never "
                          "answered, then sent RST/ACK without a FIN")


def rule_abortive_close(c: Connection, ctx: Context) -> Verdict | None:
    # Last of the reset cases: any genuine RST no rule above explained is an abort by its sender.
    r = _first_rst(c)
    if r is None:
        return None
    a = r.sender
    b = Connection.peer(a)
    kind = "RST/ACK" if r.has_ack else "bare RST"
    return Verdict("abortive_close", a, **_sees(b, ["ECONNRESET"] if r.receiver_state not in
                                               ("UNKNOWN", "CLOSED") else []),
                   evidence=_frames(c.sent[a].last_data_frame, r.frame),
                   confidence="certain" if r.has_ack else "likely",
                   rival=None if r.has_ack else "peer_state_lost",
                   reason=f"{kind} from the {a} with no unread data: an abortive close")


def rule_retransmission_timeout(c: Connection, ctx: Context) -> Verdict | None:
    for p, d in c.sent.items():
        if len(d.ladder) < 2 or d.next_seq is None:
            continue
        peer = c.sent[Connection.peer(p)]
        if peer.max_ack is not None and peer.max_ack == d.next_seq:
            continue  # it was acknowledged in the end
        return Verdict("retransmission_timeout", None, **_sees(p, ["ETIMEDOUT"]),
                       evidence=[f for f, _ in d.ladder[:6]],
                       reason=f"the {p}'s data was retransmitted {len(d.ladder)} times and "
                              "never acknowledged")
    return None


def rule_syn_timeout(c: Connection, ctx: Context) -> Verdict | None:
    cl, sv = c.sent["client"], c.sent["server"]
    if not cl.syn_frames or sv.packets or c.ep["client"].state is not State.SYN_SENT:
        return None
    retried = len(cl.syn_frames) >= 2
    return Verdict("syn_timeout", None, ["ETIMEDOUT"], [], cl.syn_frames[:6],
                   confidence="certain" if retried else "likely",
                   rival=None if retried else "open",
                   reason=f"{len(cl.syn_frames)} SYN(s), never answered")


def rule_close_wait_stall(c: Connection, ctx: Context) -> Verdict | None:
    for b, ep in c.ep.items():
        a = Connection.peer(b)
        if ep.state is State.CLOSE_WAIT and c.sent[a].fin_frame is not None \
                and not c.sent[b].rsts:
            waited = c.end - c.sent[a].last_ts if c.sent[a].last_ts else 0.0
            return Verdict("close_wait_stall", a, **_sees(b, [])
                           , evidence=[c.sent[a].fin_frame],
                           confidence="certain" if waited >= 0.5 or c.end - c.start > 1
                           else "likely", rival="graceful",
                           reason=f"the {b} received the FIN (frame {c.sent[a].fin_frame}) and "
                                  "never closed")
    return None


def rule_ignored_reset(c: Connection, ctx: Context) -> Verdict | None:
    live = {"ESTABLISHED", "MIDSTREAM", "FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "CLOSING",
            "LAST_ACK", "SYN_RCVD"}
    for d in c.sent.values():
        for r in d.rsts:
            if not r.accepted and r.receiver_state in live:
                mark = (f"challenge ACK at frame {r.challenge_frame}" if r.challenge_frame
                        else "no effect")
                return Verdict("ignored_reset", None,
                               evidence=_frames(r.frame, r.challenge_frame),
                               reason=f"RST at frame {r.frame} with an unexpected sequence "
                                      f"number: {mark}")
    return None


# ------------------------------------------------------------------ ordinary endings

def rule_simultaneous_open(c: Connection, ctx: Context) -> Verdict | None:
    if c.sent["client"].syn_frames and c.sent["server"].syn_frames:
        return Verdict("simultaneous_open", None, *_eof_pair(c),
                       evidence=_frames(c.sent["client"].syn_frames[0],
                                        c.sent["server"].syn_frames[0]),
                       reason="both sides sent a SYN")
    return None


def rule_simultaneous_close(c: Connection, ctx: Context) -> Verdict | None:
    if _fins_crossed(c):
        return Verdict("simultaneous_close", "both", ["EOF"], ["EOF"],
                       _frames(c.sent["client"].fin_frame, c.sent["server"].fin_frame),
                       reason="the FINs crossed: both sides passed CLOSING")
    return None


def rule_half_close(c: Connection, ctx: Context) -> Verdict | None:
    for a, d in c.sent.items():
        b = Connection.peer(a)
        if d.fin_frame and c.sent[b].data_after_peer_fin and c.sent[b].fin_frame:
            return Verdict("half_close", a, ["EOF"], ["EOF"],
                           _frames(d.fin_frame, c.sent[b].data_after_peer_fin,
                                   c.sent[b].fin_frame),
                           reason=f"the {b} kept sending after the {a}'s FIN, then closed")
    return None


def rule_graceful(c: Connection, ctx: Context) -> Verdict | None:
    if all(d.fin_frame for d in c.sent.values()):
        return Verdict("graceful", None, ["EOF"], ["EOF"],
                       _frames(c.sent["client"].fin_frame, c.sent["server"].fin_frame),
                       reason="FIN in both directions")
    return None


def rule_open(c: Connection, ctx: Context) -> Verdict | None:
    if c.sent["client"].syn_frames or c.sent["server"].synack_frames:
        return Verdict("open", None, reason="no FIN or RST before the capture ended")
    return None


def rule_partial(c: Connection, ctx: Context) -> Verdict:
    return Verdict("partial", None, reason="the handshake was not captured")


# errnos a socket gets when its own timers give up (the kernel closes it without a segment)
GAVE_UP = frozenset({"ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EACCES", "ENOPROTOOPT"})

NO_CLOSER = frozenset({"unreachable", "syn_timeout", "retransmission_timeout"})


def closer(c: Connection, case: str) -> str | None:
    """The endpoint that sent the first FIN or (genuine) RST; "both" when the FINs crossed;
    None when neither did or the ending was not a close (timeouts, ICMP errors)."""
    if case in NO_CLOSER:
        return None
    if case == "simultaneous_close" or (case != "refused" and _fins_crossed(c)):
        return "both"
    marks = [(d.fin_frame, role) for role, d in c.sent.items() if d.fin_frame]
    marks += [(r.frame, role) for role, d in c.sent.items() for r in d.rsts if not r.forged]
    return min(marks)[1] if marks else None


def _fins_crossed(c: Connection) -> bool:
    """Both sides passed CLOSING (plain loops: asked twice of every connection)."""
    for ep in c.ep.values():
        for h in ep.history:
            if h[0] == "CLOSING":
                break
        else:
            return False
    return True


def _eof_pair(c: Connection) -> tuple[list[str], list[str]]:
    return (["EOF"] if c.sent["server"].fin_frame else [],
            ["EOF"] if c.sent["client"].fin_frame else [])


Rule = Callable[[Connection, Context], "Verdict | None"]

RULES: tuple[Rule, ...] = (
    rule_refused, rule_unreachable, rule_injected_reset, rule_backlog_overflow,
    rule_write_after_close, rule_keepalive_timeout, rule_aborted_before_accept,
    rule_peer_state_lost, rule_unread_data_reset, rule_abortive_close,
    rule_retransmission_timeout, rule_syn_timeout, rule_close_wait_stall, rule_ignored_reset,
    rule_simultaneous_open, rule_simultaneous_close, rule_half_close, rule_graceful,
    rule_open, rule_partial,
)


# Cases that, when they are not the verdict, still say something the reader should know.
WORTH_A_MENTION = frozenset({"unreachable", "injected_reset", "ignored_reset", "backlog_overflow",
                             "retransmission_timeout", "keepalive_timeout"})


# Each rule_<case> answers only with <case> (test_rules_cover_the_catalog holds the names to the
# catalog). Once the verdict is found, only the later rules whose case is worth a mention can
# still add anything: the others are not asked (rules only read). _MENTIONS_AFTER[rule]: those
# rules, after `rule`.
_MENTIONS_AFTER = {
    rule: tuple(r for r in RULES[i + 1:] if r.__name__.removeprefix("rule_") in WORTH_A_MENTION)
    for i, rule in enumerate(RULES)}


def classify(conn: Connection, ctx: Context | None = None) -> Verdict:
    """The verdict of the first rule that matches; the others that match become secondary."""
    ctx = ctx or Context()
    verdict: Verdict | None = None
    for rule in RULES:
        verdict = rule(conn, ctx)
        if verdict is not None:
            break
    assert verdict is not None  # rule_partial always answers
    for later in _MENTIONS_AFTER[rule]:
        v = later(conn, ctx)
        if v is not None and v.case in WORTH_A_MENTION and v.case != verdict.case:
            verdict.secondary.append(f"also {v.case}: {v.reason}")
    verdict.closer = closer(conn, verdict.case)
    # A side that got a timer's errno closed without a segment: record it in its timeline.
    # An ICMP error is final only once it is a hard error: Linux keeps a socket whose connect()
    # got one ICMP host-unreachable in SYN_SENT (the lab measured it); a soft error, a retry,
    # then a second ICMP closes it.
    icmp_final = verdict.case != "unreachable" or len(conn.icmp) >= 2
    for role in ("client", "server"):
        sees = verdict.client_sees if role == "client" else verdict.server_sees
        if sees and sees[0] in GAVE_UP and icmp_final \
                and conn.ep[role].state.value not in ("CLOSED", "UNKNOWN"):
            conn.give_up(role)
    verdict.secondary.extend(a.text() for a in conn.anomalies[:10])
    for role, d in conn.sent.items():
        if d.retransmissions:
            verdict.secondary.append(f"{d.retransmissions} retransmission(s) from the {role}")
        if d.zero_windows:
            verdict.secondary.append(f"{d.zero_windows} zero-window advertisement(s) from the "
                                     f"{role}")
    return verdict
