"""Zeek's parameters for its view of a TCP connection (``conn_state`` and ``history``), declared
once: the compiled view (``analyzer.core.zeekview``) reads these at import.

That view re-derives, packet by packet, what Zeek writes in ``conn.log`` for one connection,
following the rules written up in the Zeek oracle's ``SEMANTICS.md`` (our own implementation, no
Zeek code):

* each side has a coarse endpoint state (INACTIVE, SYN_SENT, SYN_ACK_SENT, PARTIAL, ESTABLISHED,
  CLOSED, RESET), moved by SYN / FIN / RST and by the first packet of a side;
* ``conn_state`` is a pure function of the two endpoint states (plus payload sizes and, for
  RSTOS0, the history string);
* ``history`` is a string of letters, uppercase for the originator, lowercase for the responder,
  with Zeek's repetition rules (once per direction, on a new sequence number, or on a log scale);
* the originator is the sender of the first packet, unless Zeek's "likely server port"
  heuristic flips it (``^``).

The connection *boundaries* (when a 4-tuple starts a new conn.log row) are the observer's job;
with ``--zeek-boundaries`` it applies Zeek's rules (SYN reuse, attempt / close / inactivity
timers), ``zeek_starts_new`` in the compiled view.

Known approximations:

* Content gaps (``G``/``g``) come from a small model of Zeek's reassembler: a gap is reported when
  the peer acknowledges bytes that were never seen (or jumps over a hole), and only while both
  sides are established or cleanly closing. A payload cut by the snap length never reaches
  Zeek's reassembler.
* ``X`` (an application analyzer hit a limit) is never produced: it needs Zeek's protocol
  analyzers.
* Sequence numbers are compared modulo 2**32 without Zeek's wrap counting, so streams over 2 GiB
  can mis-report gaps and retransmissions.
* ``W`` needs the real advertised window: a hand-built `Segment` with the default ``window=0``
  is a zero-window advertisement.
* The compiled view's own bounds (history length, out-of-order blocks, counters) are listed in
  ``analyzer/core/zeekview.pyx``.
"""

from __future__ import annotations

# Timers from Zeek's init-bare.zeek (seconds).
TCP_ATTEMPT_DELAY = 5.0
TCP_CLOSE_DELAY = 5.0
TCP_INACTIVITY_TIMEOUT = 300.0
TCP_SYN_TIMEOUT = 5.0  # first expire-timer tick after a connection is created
TCP_SESSION_TIMER = 6.0  # expire-timer period
TCP_CONNECTION_LINGER = 5.0
EPS = 1e-6  # float slack when comparing capture timestamps with timer deadlines

# Zeek's too_large_seq_delta: a SYN or RST this far from the side's highest sequence number does
# not move it, nor does an ACK of 0 this far ahead move the peer's acknowledged point
TOO_LARGE_SEQ_DELTA = 1048576


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
