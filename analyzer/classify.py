"""The classifier's Python side: the ``Verdict`` it gives and the tables its rules read.

The classifier itself is compiled (``analyzer.core.verdict``): one rule per case of the catalog
(``analyzer.cases``), run in the catalog's precedence order, each with the reason for its place
beside it. It reads these tables at import (declared once, here) and hands each finished
connection's verdict over as a ``Verdict``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

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


ICMP_ERRNO = {  # Linux's mapping of destination-unreachable codes for TCP (icmp_err_convert)
    "net_unreachable": ("ENETUNREACH", "ENETUNREACH"),
    "host_unreachable": ("EHOSTUNREACH", "EHOSTUNREACH"),
    "port_unreachable": ("ECONNREFUSED", "ECONNREFUSED"),
    "protocol_unreachable": ("ENOPROTOOPT", "ENOPROTOOPT"),
    "admin_prohibited": ("EHOSTUNREACH", "EACCES"),  # IPv4, IPv6
    "other_unreachable": ("EHOSTUNREACH", "EHOSTUNREACH"),
    "time_exceeded": ("EHOSTUNREACH", "EHOSTUNREACH"),
}

# errnos a socket gets when its own timers give up (the kernel closes it without a segment, and
# the classifier closes that side's timeline at its last segment)
GAVE_UP = frozenset({"ETIMEDOUT", "EHOSTUNREACH", "ENETUNREACH", "EACCES", "ENOPROTOOPT"})

# cases whose ending is not a close by either side: their closer is None
NO_CLOSER = frozenset({"unreachable", "syn_timeout", "retransmission_timeout"})

# Cases that, when they are not the verdict, still say something the reader should know (an
# "also <case>: <reason>" line among the secondary notes).
WORTH_A_MENTION = frozenset({"unreachable", "injected_reset", "ignored_reset", "backlog_overflow",
                             "retransmission_timeout", "keepalive_timeout"})
