"""Per-endpoint TCP state machine, declared as a transition table (RFC 9293 §3.3.2).

Each observed segment is turned into *events* for its sender (``SEND_*``) and for its receiver
(``RECV_*``); ``TRANSITIONS`` says where each (state, event) pair leads. The compiled observer
(``analyzer.core.conn``) derives its integer table from it at import and is the one place where an
endpoint's state changes; every change is recorded with the frame and time of the segment that
caused it. A pair missing from the table is an *anomaly* (recorded, never raised): an observer
must survive any sequence a capture throws at it. ``Endpoint`` and ``Anomaly`` are the shapes a
finished connection is exported in.

Besides the eleven RFC states there are two observer states: ``UNKNOWN`` (nothing seen from or for
this endpoint yet) and ``MIDSTREAM`` (the capture joined an already synchronised connection).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum


class State(str, Enum):
    UNKNOWN = "UNKNOWN"  # observer: nothing seen yet
    MIDSTREAM = "MIDSTREAM"  # observer: joined a synchronised connection, handshake not seen
    LISTEN = "LISTEN"
    SYN_SENT = "SYN_SENT"
    SYN_RCVD = "SYN_RCVD"
    ESTABLISHED = "ESTABLISHED"
    FIN_WAIT_1 = "FIN_WAIT_1"
    FIN_WAIT_2 = "FIN_WAIT_2"
    CLOSING = "CLOSING"
    TIME_WAIT = "TIME_WAIT"
    CLOSE_WAIT = "CLOSE_WAIT"
    LAST_ACK = "LAST_ACK"
    CLOSED = "CLOSED"


class Event(str, Enum):
    SEND_SYN = "send SYN"
    SEND_SYNACK = "send SYN/ACK"
    SEND_ACK = "send ACK/data"  # any segment without SYN, FIN or RST
    SEND_FIN = "send FIN"
    SEND_RST = "send RST"
    RECV_SYN = "receive SYN"
    RECV_SYNACK = "receive SYN/ACK"
    RECV_ACK_OF_SYN = "receive ACK of our SYN"
    RECV_ACK = "receive ACK/data"  # nothing our state depends on
    RECV_ACK_OF_FIN = "receive ACK of our FIN"
    RECV_FIN = "receive FIN"
    RECV_RST = "receive RST"  # an acceptable RST (exact sequence number)
    GIVE_UP = "give up (timer)"  # retries exhausted: inferred by the classifier, never seen


S, E = State, Event

# (state, event) -> next state. A tuple means the endpoint must have passed through each state in
# turn (e.g. a SYN/ACK from an endpoint we knew nothing of proves it was listening).
# Pairs that change nothing are listed too, so that "missing from the table" means "impossible".
TRANSITIONS: dict[tuple[State, Event], State | tuple[State, ...]] = {
    # --- nothing seen yet: the first segment tells what this endpoint was doing
    (S.UNKNOWN, E.SEND_SYN): S.SYN_SENT,
    (S.UNKNOWN, E.SEND_SYNACK): (S.LISTEN, S.SYN_RCVD),
    (S.UNKNOWN, E.SEND_ACK): S.MIDSTREAM,
    (S.UNKNOWN, E.SEND_FIN): S.FIN_WAIT_1,
    (S.UNKNOWN, E.SEND_RST): S.CLOSED,  # a kernel answering for a port with no socket
    (S.UNKNOWN, E.RECV_SYN): S.UNKNOWN,  # listening, or nothing there: its answer will tell
    (S.UNKNOWN, E.RECV_SYNACK): S.UNKNOWN,
    (S.UNKNOWN, E.RECV_ACK_OF_SYN): S.UNKNOWN,
    (S.UNKNOWN, E.RECV_ACK): S.UNKNOWN,
    (S.UNKNOWN, E.RECV_ACK_OF_FIN): S.UNKNOWN,
    (S.UNKNOWN, E.RECV_FIN): S.UNKNOWN,
    (S.UNKNOWN, E.RECV_RST): S.UNKNOWN,
    # --- passive open
    (S.LISTEN, E.RECV_SYN): S.LISTEN,
    (S.LISTEN, E.SEND_SYNACK): S.SYN_RCVD,
    (S.LISTEN, E.SEND_RST): S.CLOSED,
    # --- active open
    (S.SYN_SENT, E.SEND_SYN): S.SYN_SENT,  # retransmitted SYN
    (S.SYN_SENT, E.RECV_SYNACK): S.ESTABLISHED,
    (S.SYN_SENT, E.RECV_SYN): S.SYN_RCVD,  # simultaneous open: the SYNs crossed
    (S.SYN_SENT, E.RECV_RST): S.CLOSED,  # refused
    (S.SYN_SENT, E.SEND_RST): S.CLOSED,
    (S.SYN_SENT, E.RECV_ACK): S.SYN_SENT,
    (S.SYN_SENT, E.SEND_ACK): S.SYN_SENT,  # the SYN/ACK was not captured; data will tell
    (S.SYN_RCVD, E.SEND_SYNACK): S.SYN_RCVD,  # retransmitted SYN/ACK (or simultaneous open)
    (S.SYN_RCVD, E.RECV_SYN): S.SYN_RCVD,  # retransmitted SYN
    (S.SYN_RCVD, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.SYN_RCVD, E.RECV_SYNACK): S.ESTABLISHED,  # simultaneous open
    (S.SYN_RCVD, E.RECV_ACK): S.SYN_RCVD,
    (S.SYN_RCVD, E.SEND_ACK): S.SYN_RCVD,
    (S.SYN_RCVD, E.SEND_FIN): S.FIN_WAIT_1,
    (S.SYN_RCVD, E.RECV_FIN): S.CLOSE_WAIT,
    (S.SYN_RCVD, E.SEND_RST): S.CLOSED,
    (S.SYN_RCVD, E.RECV_RST): S.CLOSED,
    # --- data transfer
    (S.ESTABLISHED, E.SEND_ACK): S.ESTABLISHED,
    (S.ESTABLISHED, E.RECV_ACK): S.ESTABLISHED,
    (S.ESTABLISHED, E.RECV_ACK_OF_SYN): S.ESTABLISHED,
    (S.ESTABLISHED, E.SEND_SYNACK): S.ESTABLISHED,  # retransmitted SYN/ACK, its ACK was lost
    (S.ESTABLISHED, E.RECV_SYNACK): S.ESTABLISHED,
    (S.ESTABLISHED, E.RECV_SYN): S.ESTABLISHED,  # duplicate SYN: answered by a challenge ACK
    (S.ESTABLISHED, E.SEND_FIN): S.FIN_WAIT_1,
    (S.ESTABLISHED, E.RECV_FIN): S.CLOSE_WAIT,
    (S.ESTABLISHED, E.SEND_RST): S.CLOSED,
    (S.ESTABLISHED, E.RECV_RST): S.CLOSED,
    (S.MIDSTREAM, E.SEND_ACK): S.MIDSTREAM,
    (S.MIDSTREAM, E.RECV_ACK): S.MIDSTREAM,
    (S.MIDSTREAM, E.SEND_FIN): S.FIN_WAIT_1,
    (S.MIDSTREAM, E.RECV_FIN): S.CLOSE_WAIT,
    (S.MIDSTREAM, E.SEND_RST): S.CLOSED,
    (S.MIDSTREAM, E.RECV_RST): S.CLOSED,
    (S.MIDSTREAM, E.RECV_ACK_OF_FIN): S.MIDSTREAM,
    # --- active close
    (S.FIN_WAIT_1, E.SEND_ACK): S.FIN_WAIT_1,
    (S.FIN_WAIT_1, E.SEND_FIN): S.FIN_WAIT_1,  # retransmitted FIN
    (S.FIN_WAIT_1, E.RECV_ACK): S.FIN_WAIT_1,
    (S.FIN_WAIT_1, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_1, E.RECV_FIN): S.CLOSING,  # simultaneous close: FINs crossed
    (S.FIN_WAIT_1, E.SEND_RST): S.CLOSED,
    (S.FIN_WAIT_1, E.RECV_RST): S.CLOSED,
    (S.FIN_WAIT_2, E.SEND_ACK): S.FIN_WAIT_2,
    (S.FIN_WAIT_2, E.RECV_ACK): S.FIN_WAIT_2,  # half close: the peer may go on sending
    (S.FIN_WAIT_2, E.RECV_ACK_OF_FIN): S.FIN_WAIT_2,
    (S.FIN_WAIT_2, E.SEND_FIN): S.FIN_WAIT_2,  # retransmitted FIN, already acknowledged
    (S.FIN_WAIT_2, E.RECV_FIN): S.TIME_WAIT,
    (S.FIN_WAIT_2, E.SEND_RST): S.CLOSED,
    (S.FIN_WAIT_2, E.RECV_RST): S.CLOSED,
    (S.CLOSING, E.SEND_ACK): S.CLOSING,
    (S.CLOSING, E.SEND_FIN): S.CLOSING,
    (S.CLOSING, E.RECV_ACK): S.CLOSING,
    (S.CLOSING, E.RECV_FIN): S.CLOSING,
    (S.CLOSING, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.CLOSING, E.SEND_RST): S.CLOSED,
    (S.CLOSING, E.RECV_RST): S.CLOSED,
    (S.TIME_WAIT, E.SEND_ACK): S.TIME_WAIT,  # re-ACK of a retransmitted FIN
    (S.TIME_WAIT, E.RECV_ACK): S.TIME_WAIT,
    (S.TIME_WAIT, E.RECV_ACK_OF_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.RECV_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.SEND_FIN): S.TIME_WAIT,
    (S.TIME_WAIT, E.SEND_RST): S.CLOSED,
    (S.TIME_WAIT, E.RECV_RST): S.CLOSED,  # Linux honours it (net.ipv4.tcp_rfc1337 = 0)
    # --- passive close
    (S.CLOSE_WAIT, E.SEND_ACK): S.CLOSE_WAIT,  # it may keep sending: a half-closed peer
    (S.CLOSE_WAIT, E.RECV_ACK): S.CLOSE_WAIT,
    (S.CLOSE_WAIT, E.RECV_FIN): S.CLOSE_WAIT,  # retransmitted FIN
    (S.CLOSE_WAIT, E.SEND_FIN): S.LAST_ACK,
    (S.CLOSE_WAIT, E.SEND_RST): S.CLOSED,
    (S.CLOSE_WAIT, E.RECV_RST): S.CLOSED,
    (S.LAST_ACK, E.SEND_ACK): S.LAST_ACK,
    (S.LAST_ACK, E.SEND_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_FIN): S.LAST_ACK,
    (S.LAST_ACK, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.LAST_ACK, E.SEND_RST): S.CLOSED,
    (S.LAST_ACK, E.RECV_RST): S.CLOSED,
    # --- a timer gave up (SYN retries, tcp_retries2 / TCP_USER_TIMEOUT, keepalive, ICMP):
    # the socket is closed without a segment; the classifier infers it from the verdict
    **{(st, E.GIVE_UP): S.CLOSED for st in (
        S.SYN_SENT, S.SYN_RCVD, S.ESTABLISHED, S.MIDSTREAM, S.FIN_WAIT_1, S.FIN_WAIT_2,
        S.CLOSING, S.CLOSE_WAIT, S.LAST_ACK)},
    # --- closed: a kernel with no socket answers anything but a RST with a bare RST
    (S.CLOSED, E.SEND_RST): S.CLOSED,
    (S.CLOSED, E.RECV_ACK): S.CLOSED,
    (S.CLOSED, E.RECV_FIN): S.CLOSED,
    (S.CLOSED, E.RECV_RST): S.CLOSED,
    (S.CLOSED, E.RECV_ACK_OF_FIN): S.CLOSED,
    (S.CLOSED, E.RECV_ACK_OF_SYN): S.CLOSED,
    (S.CLOSED, E.RECV_SYNACK): S.CLOSED,
    (S.CLOSED, E.RECV_SYN): S.CLOSED,
}

# A received segment that only acknowledges is harmless in any state where it is not listed.
_HARMLESS = {E.RECV_ACK, E.RECV_ACK_OF_SYN, E.RECV_ACK_OF_FIN}

#: States after which the endpoint holds no connection any more (TIME_WAIT only waits out 2MSL).
FINISHED = frozenset({S.CLOSED, S.TIME_WAIT})
#: States in which the endpoint has sent its FIN.
FIN_SENT = frozenset({S.FIN_WAIT_1, S.FIN_WAIT_2, S.CLOSING, S.TIME_WAIT, S.LAST_ACK})
#: States in which the endpoint has received the peer's FIN.
FIN_RECEIVED = frozenset({S.CLOSE_WAIT, S.LAST_ACK, S.CLOSING, S.TIME_WAIT})


@dataclass(slots=True)
class Anomaly:
    """Something the observer saw that the table says cannot happen (or should not)."""

    frame: int
    ts: float
    role: str  # "client" or "server"
    state: str  # the endpoint's state when it happened
    event: str  # what happened
    note: str = ""

    def text(self) -> str:
        tail = f": {self.note}" if self.note else ""
        return f"frame {self.frame}: {self.role} in {self.state} cannot {self.event}{tail}"


@dataclass(slots=True)
class Endpoint:
    """One side of a connection, as far as the observer can reconstruct it."""

    role: str  # "client" or "server"
    state: State = S.UNKNOWN
    # every change: (state name, frame, ts); frame 0 means "before the capture began"
    history: list[tuple[str, int, float]] = field(default_factory=list)

    def states(self) -> list[list]:
        """The timeline as INTERFACE.md prints it: [[state, frame], ...]."""
        return [[name, frame] for name, frame, _ in self.history]
