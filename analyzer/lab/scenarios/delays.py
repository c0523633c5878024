"""Delay variants (issue 14, "certain means certain"): the same endings as their cases' own
scenarios, with only a delay changed, which a capture shows as a gap and nothing more: the close
long after the last data, the answer written long after the request, the peer's data arriving
just before or just after close(). Labels come from the kernel (socket results, reset reasons).

Each scenario registers its check with the lab's verifier here, next to what it claims.
"""

from __future__ import annotations

from analyzer.lab import verify
from analyzer.lab.context import Lab
from analyzer.lab.model import scenario
from analyzer.lab.scenarios.common import delay_line, exchange, pair, remove_delay_line

LATE = 1.0  # long against loopback's RTT and the delayed-ACK timer (40 ms), short for the lab


def _checks(*ids: str):
    def register(fn):
        for sid in ids:
            verify.CHECKS[sid] = fn
        return fn
    return register


def _gap(lb: dict, seconds: float) -> list[str]:
    """The wire shows the delay: some gap between two segments of at least `seconds`."""
    times = [float(w[0]) for w in verify.wire(lb)]
    gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
    return [] if gaps and max(gaps) >= seconds else [f"no gap of {seconds} s on the wire"]


# -- unread_data_reset -------------------------------------------------------------------------

@scenario("unread_late_close", "close() one second after unread data arrived", """
    As unread_data_reset, but the byte the server wrote sits unread in the client's receive
    queue for 1 s before the client closes: RST/ACK (TCP_ABORT_ON_CLOSE) after an idle gap, the
    byte's ACK having gone out on the delayed-ACK timer.""",
          case="unread_data_reset", variant=True)
def unread_late_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("server", srv, b"1")
    lab.sleep(LATE)
    lab.close("client", cli)
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.send("server", srv, b"2")
    lab.recv("server", srv)


@scenario("unread_answered_late", "the server answers an unread request one second later, then "
          "closes", """
    The client's request arrives and is ACKed; 1 s later the server writes its answer without
    having read the request and closes at once: RST/ACK (TCP_ABORT_ON_CLOSE). On the wire the
    answer follows the request after a long gap, as a slow server's answer would.""",
          case="unread_data_reset", variant=True)
def unread_answered_late(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /slow\r\n")
    lab.sleep(LATE)
    lab.send("server", srv, b"200 OK\r\n")
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.recv("client", cli)


@scenario("unread_answered_close_late", "the server answers an unread request, closes one "
          "second later", """
    The request arrives; the server answers at once without reading it, then closes 1 s later
    (a process that lingers before exiting): RST/ACK (TCP_ABORT_ON_CLOSE) long after the last
    data, the client having read the answer.""",
          case="unread_data_reset", variant=True)
def unread_answered_close_late(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /slow\r\n")
    lab.sleep(0.05)
    lab.send("server", srv, b"200 OK\r\n")
    lab.recv("client", cli)
    lab.sleep(LATE)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)


@scenario("data_just_before_close", "the peer's data arrives just before close()", """
    The server writes its answer and the client, which had sent its request, closes a moment
    later without reading: the answer is already in its receive queue (loopback delivers
    within send()), so close() finds unread data and resets (TCP_ABORT_ON_CLOSE), no FIN.
    The twin of data_just_after_close, where the same answer arrives just after close().""",
          case="unread_data_reset", variant=True)
def data_just_before_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /report\r\n")
    lab.recv("server", srv)
    lab.send("server", srv, b"200 OK\r\n")
    lab.close("client", cli)
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.send("server", srv, b"more\r\n")


@_checks("unread_late_close")
def _unread_late(lb):
    return verify.CHECKS["unread_data_reset"](lb) + _gap(lb, LATE * 0.9)


@_checks("unread_answered_late", "unread_answered_close_late")
def _unread_answered_late(lb):
    return (verify.expect_call(lb, "client", "recv", "ECONNRESET")
            + verify.expect_reason(lb, "TCP_ABORT_ON_CLOSE") + _gap(lb, LATE * 0.9))


@_checks("data_just_before_close")
def _before_close(lb):
    fins = [w for w in verify.wire(lb) if w[1] == "c>s" and "F" in w[2]]
    return (verify.expect_call(lb, "server", "recv", "ECONNRESET")
            + verify.expect_reason(lb, "TCP_ABORT_ON_CLOSE")
            + (["client sent a FIN"] if fins else []))


# -- abortive_close ----------------------------------------------------------------------------

@scenario("abortive_late_close", "SO_LINGER 0 and close() one second after the exchange", """
    As abortive_close, but the server, having read the request and answered, waits 1 s before
    setting SO_LINGER {1, 0} and closing: RST/ACK (reason TCP_STATE) after an idle gap.""",
          case="abortive_close", variant=True)
def abortive_late_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    exchange(lab, cli, srv)
    lab.sleep(LATE)
    lab.linger0(srv)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.send("client", cli, b"late")


@scenario("abortive_answered_late", "the server reads, answers one second later, SO_LINGER 0", """
    The server reads the request, answers 1 s later (a slow handler), then sets SO_LINGER
    {1, 0} and closes: RST/ACK (TCP_STATE). The wire: request, long gap, answer, RST, as in
    unread_answered_late where the request was never read.""",
          case="abortive_close", variant=True)
def abortive_answered_late(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /slow\r\n")
    lab.recv("server", srv)
    lab.sleep(LATE)
    lab.send("server", srv, b"200 OK\r\n")
    lab.linger0(srv)
    lab.close("server", srv)
    lab.sleep(0.05)
    lab.recv("client", cli)
    lab.recv("client", cli)


@_checks("abortive_late_close", "abortive_answered_late")
def _abortive_late(lb):
    return (verify.expect_call(lb, "client", "recv", "ECONNRESET")
            + verify.expect_reason(lb, "TCP_STATE", "TCP_ABORT_ON_LINGER") + _gap(lb, LATE * 0.9))


# -- write_after_close -------------------------------------------------------------------------

@scenario("write_after_close_late", "the peer writes one second after the other side closed", """
    As write_after_close, but the server writes its reply 1 s after reading EOF: the client's
    orphaned socket (a FIN_WAIT2 time-wait socket by then) answers with a bare RST; the
    server's next write fails with EPIPE.""",
          case="write_after_close", variant=True)
def write_after_close_late(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /report\r\n")
    lab.recv("server", srv)
    lab.close("client", cli)
    lab.sleep(0.05)
    lab.recv("server", srv)
    lab.sleep(LATE)
    lab.send("server", srv, b"200 OK, here is the report\r\n")
    lab.sleep(0.05)
    lab.send("server", srv, b"more of the report\r\n")
    lab.recv("server", srv)


@scenario("data_just_after_close", "the peer's data arrives just after close()", """
    The client sends its request and closes; the server, which read the request, writes its
    answer at the same moment. A delay line on the namespace's loopback makes the client's FIN
    and the server's answer cross: the answer (whose ACK does not cover the FIN) reaches the
    client's orphaned socket still in FIN_WAIT1, which resets (reason TCP_ABORT_ON_DATA): a
    bare RST. The server read EOF, its next write fails.""",
          case="write_after_close", variant=True)
def data_just_after_close(lab: Lab) -> None:
    _, cli, srv = pair(lab)
    lab.send("client", cli, b"GET /report\r\n")
    lab.recv("server", srv)
    delay_line(lab)
    lab.close("client", cli)
    lab.send("server", srv, b"200 OK, here is the report\r\n")
    lab.sleep(0.4)  # both segments and the answers they draw pass the delay line
    remove_delay_line(lab)
    lab.recv("server", srv)
    lab.send("server", srv, b"more of the report\r\n")
    lab.sleep(0.05)
    lab.send("server", srv, b"and more\r\n")
    lab.recv("server", srv)


@_checks("write_after_close_late")
def _wac_late(lb):
    return verify.CHECKS["write_after_close"](lb) + _gap(lb, LATE * 0.9)


@_checks("data_just_after_close")
def _after_close(lb):
    w = verify.wire(lb)
    fin = next((int(x[3].split("=")[1]) for x in w if x[1] == "c>s" and "F" in x[2]), None)
    crossed = [x for x in w if x[1] == "s>c" and x[5] != "len=0" and fin is not None
               and int(x[4].split("=")[1]) <= fin]  # the answer does not ACK the FIN
    bad = (verify.expect_call(lb, "server", "recv", "EOF")
           + verify.expect_reason(lb, "TCP_ABORT_ON_DATA", "TCP_TIMEWAIT_SOCKET", "NO_SOCKET"))
    if not {"EPIPE", "ECONNRESET"} & set(verify.results(lb, "server")):
        bad.append("the server saw no error")
    return bad + ([] if crossed else ["the answer did not cross the FIN"])

