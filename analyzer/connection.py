"""One TCP connection as the compiled observer (``analyzer.core.conn``) exports it: both
endpoints' states and the facts the classifier read (what each side sent, its resets,
retransmissions, ICMP errors).

These classes are the record shape only: ``conn_export`` fills them from a finished connection's
C struct, and conn.pyx checks their fields at import. The constants below are read by conn.pyx
at import too (declared once, here). Memory per connection is bounded: only counters and at most
MAX_KEPT notable frames per list are kept, never the segments themselves.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from analyzer.tcpstate import Anomaly, Endpoint, State

# state groups the RST path tests (conn.pyx compiles them into bit sets)
_HANDSHAKE = frozenset({State.SYN_SENT, State.SYN_RCVD})
_UNSYNCHRONISED = frozenset({State.UNKNOWN, State.LISTEN})
_NO_CHALLENGE = frozenset({State.CLOSED, State.UNKNOWN, State.LISTEN})

MAX_KEPT = 32  # bound on every per-connection list of frames
DUPLICATE_WINDOW = 0.001  # s: an identical segment this close is a capture duplicate, not a resend


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


@dataclass(slots=True)
class Connection:
    """Both endpoints of one connection (one generation of a 4-tuple), as exported."""

    conn_id: int
    client: tuple[str, int]  # (address, port) of the side that sent the first SYN
    server: tuple[str, int]
    ip_version: int
    first_frame: int
    last_frame: int
    start: float  # capture time of its first and last packets
    end: float
    packets: int  # capture duplicates included (``duplicates`` counts them)
    duplicates: int
    ep: dict[str, Endpoint]  # "client" / "server": state and timeline
    sent: dict[str, DirFacts]  # "client" / "server": what that side sent
    icmp: Sequence[IcmpFact]
    anomalies: list[Anomaly]
    pending_challenge: dict[str, RstFact]  # receiver role -> a RST awaiting its challenge ACK
    zeek: object = None  # Zeek's conn_state and history (observer.ZeekFields)
    tunnel: object = None  # pipeline.RECORD_FIELDS["tunnel"]: the tunnel it came through
