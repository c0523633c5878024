"""The one exception hierarchy of rstscope.

Every error the program reports to a user is one of these; ``cli.main`` is the one place that
turns them into messages and exit codes (0 ok, 1 partial input, 2 usage or unreadable, 130
interrupted). An observer never raises on an odd packet sequence: that is an anomaly, recorded on
the connection, not an exception.
"""

from __future__ import annotations


class RstscopeError(Exception):
    """Base of every error rstscope reports to its user."""

    exit_code = 2


class UsageError(RstscopeError):
    """The command line asks for something impossible or contradictory."""

    exit_code = 2


class CaptureError(RstscopeError):
    """A capture file is wrong. ``offset`` is the byte offset, ``frame`` the frame, if known."""

    exit_code = 2

    def __init__(self, path: str, message: str, *, offset: int | None = None,
                 frame: int | None = None):
        self.path = path
        self.message = message
        self.offset = offset
        self.frame = frame
        super().__init__(self.one_line())

    def one_line(self) -> str:
        where = []
        if self.frame is not None:
            where.append(f"frame {self.frame}")
        if self.offset is not None:
            where.append(f"byte {self.offset}")
        loc = f" ({', '.join(where)})" if where else ""
        return f"{self.path}{loc}: {self.message}"

    def __reduce__(self):
        # worker processes send these back (rstscope analyze --jobs / --dask): rebuild from the
        # attributes, since __init__ takes other arguments than the message Exception keeps
        return (_rebuild, (type(self), self.args, self.__dict__))


def _rebuild(cls, args, state):
    obj = cls.__new__(cls)
    obj.args = args
    obj.__dict__.update(state)
    return obj


class UnreadableCapture(CaptureError):
    """Nothing could be read: missing file, not a capture, wrong magic, unsupported format."""

    exit_code = 2


class DamagedCapture(CaptureError):
    """The capture was read up to a point and then found damaged (truncated, corrupted).

    Everything before the damage has been analyzed; the result is partial.
    """

    exit_code = 1


class DamagedFrames(DamagedCapture):
    """Some frames inside an otherwise readable capture are damaged (header lengths that lie, a
    packet block naming an interface nobody described): they were skipped, everything else was
    read and analyzed. One error summarises them all: the first (``frame``, ``offset`` when the
    format gives it exactly, ``problem``) and how many there were (``count``)."""

    exit_code = 1

    def __init__(self, path: str, problem: str, count: int, *, frame: int,
                 offset: int | None = None):
        self.problem = problem
        self.count = count
        more = f", and {count - 1} more damaged frame{'s' if count > 2 else ''} after it" \
            if count > 1 else ""
        super().__init__(path, f"{problem} (frame skipped{more}; the rest was analyzed)",
                         offset=offset, frame=frame)


class PrivilegeError(RstscopeError):
    """Live capture or the lab needs privileges this process does not have."""

    exit_code = 2


class LabError(RstscopeError):
    """A lab scenario could not be set up or run on this machine."""

    exit_code = 2


class OutputExists(RstscopeError):
    """Refusing to overwrite an existing output file without --force."""

    exit_code = 2
