"""When the observer (``analyzer.core.observer``) finishes a connection that nothing ended."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(slots=True)
class Timeouts:
    """Eviction timeouts, in capture seconds (Zeek's defaults, which suit an observer too)."""

    idle: float = 300.0  # a connection silent this long is over (tcp_inactivity_timeout)
    closed: float = 5.0  # a closed connection lingers this long for its last ACKs / RSTs
    sweep_every: float = 1.0  # look for idle connections at most once per capture second
    # at most this many connections open at once: past it, the least recently active one is
    # finished early (a SYN flood's spoofed attempts go first, being the oldest), so memory has
    # a ceiling whatever the capture holds
    max_active: int = 100_000
