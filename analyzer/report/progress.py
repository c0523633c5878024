"""A progress bar on standard error for long reads, only on a terminal (issue 6).

It stays silent for the first second, so quick runs print nothing, and redraws at most ten times
a second. Nothing is printed when standard error is not a terminal (pipes, CI logs, files).
"""

from __future__ import annotations

import os
import sys
import time

WIDTH = 30  # characters of the bar itself


class Progress:
    """Callable with the byte offset reached in ``path``; ``close()`` clears the line."""

    def __init__(self, path: str, total: int | None, stream=None, *, clock=time.monotonic,
                 delay: float = 1.0, interval: float = 0.1, force: bool = False):
        self.stream = stream if stream is not None else sys.stderr
        self.enabled = force or _is_terminal(self.stream)
        self.name = os.path.basename(path) or path
        self.total = total
        self.clock = clock
        self.start = clock()
        self.delay = delay
        self.interval = interval
        self.last_draw = None
        self.drawn = False

    def __call__(self, offset: int) -> None:
        if not self.enabled:
            return
        now = self.clock()
        if now - self.start < self.delay:
            return
        if self.last_draw is not None and now - self.last_draw < self.interval:
            return
        self.last_draw = now
        self.stream.write("\r" + self.line(offset, now - self.start))
        self.stream.flush()
        self.drawn = True

    def line(self, offset: int, elapsed: float) -> str:
        rate = offset / elapsed / 1e6 if elapsed > 0 else 0.0
        if self.total:
            frac = min(1.0, offset / self.total)
            bar = "#" * int(frac * WIDTH)
            eta = (elapsed / frac - elapsed) if frac > 0 else 0.0
            return (f"{self.name} [{bar:<{WIDTH}}] {frac * 100:5.1f}% "
                    f"{offset / 1e6:,.0f}/{self.total / 1e6:,.0f} MB {rate:,.0f} MB/s "
                    f"eta {eta:,.0f} s ")
        return f"{self.name} {offset / 1e6:,.0f} MB {rate:,.0f} MB/s "

    def close(self) -> None:
        if self.drawn:
            self.stream.write("\r\x1b[K")
            self.stream.flush()
            self.drawn = False


def _is_terminal(stream) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError, OSError):
        return False
