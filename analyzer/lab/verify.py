"""Did the scenario do what it claims? Checked from its label alone (calls, kernel, wire).

Each check returns a list of failures; an empty list means verified. Kernel-side checks are
made only when tracefs was available; wire checks use the label's own packet summary.
"""

from __future__ import annotations

from collections.abc import Callable

Check = Callable[[dict], list[str]]
CHECKS: dict[str, Check] = {}


def _check(case: str) -> Callable[[Check], Check]:
    def reg(fn: Check) -> Check:
        CHECKS[case] = fn
        return fn
    return reg


def results(label: dict, side: str, call: str | None = None) -> list[str]:
    return [c["result"] for c in label["calls"]
            if c["side"] == side and (call is None or c["call"] == call)]


def errnos(label: dict) -> list[str]:
    return [c["result"] for c in label["calls"]
            if c["result"].startswith("E") and c["result"] not in ("EOF", "EINPROGRESS")]


def reasons(label: dict) -> list[str]:
    return [e["reason"] for e in label.get("kernel", {}).get("tcp_send_reset", [])]


def states(label: dict, side: str) -> list[str]:
    return label.get("kernel_states", {}).get(side, [])


def wire(label: dict) -> list[list[str]]:
    return [line.split() for line in label.get("wire", [])]


def expect_call(label: dict, side: str, call: str, result: str) -> list[str]:
    got = results(label, side, call)
    return [] if result in got else [f"{side} {call}: expected {result}, got {got}"]


def expect_reason(label: dict, *accepted: str) -> list[str]:
    if not label.get("tracefs"):
        return []
    got = reasons(label)
    if set(accepted) & set(got):
        return []
    return [f"tcp_send_reset: expected {'/'.join(accepted)}, got {got}"]


def expect_state(label: dict, side: str, state: str) -> list[str]:
    if not label.get("tracefs"):
        return []
    got = states(label, side)
    return [] if state in got else [f"{side} states lack {state}: {got}"]


def forged(label: dict) -> list[list[str]]:
    return [w for w in wire(label) if "R" in w[2] and w[-1] != "ttl=64" and w[-1] != "ttl=255"]


@_check("refused")
def _refused(lb):
    return expect_call(lb, "client", "connect", "ECONNREFUSED") + expect_reason(lb, "NO_SOCKET")


@_check("write_after_close")
def _wac(lb):
    # The closer's orphaned socket has become a FIN_WAIT2 timewait mini-socket by then: the
    # kernel reports the bare RST as TCP_TIMEWAIT_SOCKET, or NO_SOCKET once that is gone.
    return (expect_call(lb, "server", "recv", "EOF") + expect_call(lb, "server", "send", "EPIPE")
            + expect_reason(lb, "TCP_TIMEWAIT_SOCKET", "NO_SOCKET"))


@_check("unread_data_reset")
def _unread(lb):
    fins = [w for w in wire(lb) if w[1] == "c>s" and "F" in w[2]]
    return (expect_call(lb, "server", "recv", "ECONNRESET")
            + expect_reason(lb, "TCP_ABORT_ON_CLOSE")
            + (["client sent a FIN"] if fins else []))


@_check("abortive_close")
def _abortive(lb):
    # SO_LINGER {1, 0}: tcp_close() calls tcp_disconnect(), whose RST reason is TCP_STATE
    # (TCP_ABORT_ON_LINGER is the FIN_WAIT2 linger2 timeout, not this).
    return (expect_call(lb, "client", "recv", "ECONNRESET")
            + expect_reason(lb, "TCP_STATE", "TCP_ABORT_ON_LINGER"))


@_check("aborted_before_accept")
def _aborted(lb):
    return (expect_call(lb, "server", "accept", "ok")
            + expect_call(lb, "server", "recv", "ECONNRESET")
            + expect_reason(lb, "TCP_STATE", "TCP_ABORT_ON_LINGER"))


@_check("peer_state_lost")
def _lost(lb):
    server_fin_rst = [w for w in wire(lb) if w[1] == "s>c" and ("F" in w[2] or "R" in w[2])
                      and w is not wire(lb)[-1]]
    bad = expect_call(lb, "client", "recv", "ECONNRESET") + expect_reason(lb, "NO_SOCKET")
    rsts = [w for w in wire(lb) if w[1] == "s>c" and "R" in w[2]]
    if not rsts or rsts[0][2] != "R":
        bad.append(f"expected a bare RST from the server, got {rsts}")
    if len(server_fin_rst) > len(rsts):
        bad.append("server sent a FIN")
    return bad


@_check("injected_reset")
def _injected(lb):
    bad = expect_call(lb, "client", "recv", "ECONNRESET")
    if not forged(lb):
        bad.append("no RST with a foreign TTL on the wire")
    if not ({"ECONNRESET", "EPIPE"} & set(results(lb, "server"))):
        bad.append("the genuine peer saw no error")
    return bad


@_check("ignored_reset")
def _ignored(lb):
    bad = [] if forged(lb) else ["no RST with a foreign TTL on the wire"]
    if errnos(lb):
        bad.append(f"unexpected errors {errnos(lb)}")
    return bad + expect_call(lb, "client", "recv", "ok:12")


@_check("retransmission_timeout")
def _rto(lb):
    return expect_call(lb, "client", "recv", "ETIMEDOUT")


@_check("syn_timeout")
def _syn(lb):
    syns = [w for w in wire(lb) if w[1] == "c>s" and w[2] == "S"]
    return (expect_call(lb, "client", "connect", "ETIMEDOUT")
            + ([] if len(syns) >= 2 else [f"expected retransmitted SYNs, saw {len(syns)}"]))


@_check("unreachable")
def _unreach(lb):
    want = "EHOSTUNREACH" if lb["family"] == 4 else "EACCES"
    icmp = [w for w in wire(lb) if w[2].startswith("icmp")]
    return expect_call(lb, "client", "connect", want) + ([] if icmp else ["no ICMP captured"])


@_check("backlog_overflow")
def _backlog(lb):
    return (expect_call(lb, "client_queued", "connect", "ok")
            + expect_call(lb, "client", "connect", "ETIMEDOUT"))


@_check("keepalive_timeout")
def _keepalive(lb):
    return (expect_call(lb, "client", "recv", "ETIMEDOUT")
            + expect_reason(lb, "TCP_KEEPALIVE_TIMEOUT"))


@_check("backlog_overflow_recovers")
def _backlog_recovers(lb):
    # the final ACK met a full queue: the server's SYN/ACK again after the client's ACK, and
    # its kernel established the connection only when the queue had drained
    w = wire(lb)
    first_ack = next((i for i, x in enumerate(w) if x[1] == "c>s" and "S" not in x[2]), None)
    again = [x for x in w[first_ack or 0:] if x[1] == "s>c" and x[2] == "SA"]
    bad = (expect_call(lb, "client", "connect", "ok") + expect_call(lb, "server", "accept", "ok")
           + expect_call(lb, "client", "recv", "ok:8") + _no_errors(lb))
    stalled = [x for x in w[(first_ack or 0) + 1:] if x[1] == "c>s" and x[5] != "len=0"]
    if first_ack is None or not (again or len(stalled) >= 2):
        bad.append("neither a SYN/ACK nor the client's data retransmitted after its ACK")
    if lb.get("tracefs"):  # this connection's sockets only (the queued one shares the port)
        cport = int(lb["client"].rsplit(":", 1)[1])
        sport = int(lb["server"].rsplit(":", 1)[1])
        est = {side: [e["t"] for e in lb["kernel"]["inet_sock_set_state"]
                      if (e["sport"], e["dport"]) == ports
                      and e["newstate"] == "TCP_ESTABLISHED"]
               for side, ports in (("client", (cport, sport)), ("server", (sport, cport)))}
        if not est["client"] or not est["server"] or est["server"][0] - est["client"][0] < 1.0:
            bad.append(f"the server did not stall in SYN_RECV: ESTABLISHED at {est}")
    return bad


@_check("listener_closed")
def _listener_closed(lb):
    bad = (expect_call(lb, "client", "recv", "ECONNRESET")
           + expect_call(lb, "client_a", "recv", "ECONNRESET")
           + expect_call(lb, "client_late", "connect", "ECONNREFUSED")
           + expect_reason(lb, "TCP_STATE"))
    if results(lb, "server", "accept"):
        bad.append("the server accepted")
    if [x for x in wire(lb) if x[1] == "s>c" and x[5] != "len=0"]:
        bad.append("the server sent data")
    return bad


@_check("zero_window_stall")
def _zero_window(lb):
    zero = [x for x in wire(lb) if x[1] == "s>c" and "win=0" in x]
    bad = expect_call(lb, "client", "send", "ETIMEDOUT")
    if len(zero) < 3:
        bad.append(f"the server advertised window 0 {len(zero)} times")
    if results(lb, "server", "recv"):
        bad.append("the server read")
    return bad


def _middlebox(lb, errno_: str) -> list[str]:
    bad = expect_call(lb, "client", "recv", errno_)
    if [c for c in lb["calls"] if c["side"] == "server" and c["call"] != "accept"
            and c["result"].startswith("E")]:
        bad.append("the server saw an error")
    server_ttls = {x[-1] for x in wire(lb) if x[1] == "s>c" and "R" not in x[2]}
    rsts = [x for x in wire(lb) if x[1] == "s>c" and "R" in x[2]]
    return bad, server_ttls, rsts


@_check("middlebox_idle_timeout")
def _middlebox_reset(lb):
    bad, ttls, rsts = _middlebox(lb, "ECONNRESET")
    if not rsts or rsts[0][-1] in ttls:
        bad.append(f"no RST with a TTL unlike the server's {sorted(ttls)}: {rsts}")
    return bad


@_check("middlebox_idle_timeout_drop")
def _middlebox_drop(lb):
    bad, _ttls, rsts = _middlebox(lb, "ETIMEDOUT")
    return bad + ([f"a RST on the wire: {rsts}"] if rsts else [])


@_check("unread_answered_small")
@_check("unread_answered_large")
def _unread_answered(lb):
    return (expect_call(lb, "client", "recv", "ECONNRESET")
            + expect_reason(lb, "TCP_ABORT_ON_CLOSE"))


@_check("abortive_read_large")
def _abortive_read(lb):
    return (expect_call(lb, "client", "recv", "ECONNRESET")
            + expect_reason(lb, "TCP_STATE", "TCP_ABORT_ON_LINGER"))


def _no_errors(lb) -> list[str]:
    return [f"unexpected errors {errnos(lb)}"] if errnos(lb) else []


def _no_fin_rst(lb) -> list[str]:
    ends = [w for w in wire(lb) if "F" in w[2] or "R" in w[2]]
    return [f"FIN/RST on the wire: {ends}"] if ends else []


@_check("close_wait_stall")
def _cws(lb):
    bad = expect_call(lb, "server", "recv", "EOF") + _no_errors(lb)
    if results(lb, "server", "close"):
        bad.append("server closed")
    if lb.get("tracefs") and states(lb, "server")[-1:] != ["TCP_CLOSE_WAIT"]:
        bad.append(f"server's last state is not CLOSE_WAIT: {states(lb, 'server')}")
    return bad


@_check("graceful")
def _graceful(lb):
    return (_no_errors(lb) + expect_call(lb, "server", "recv", "EOF")
            + expect_state(lb, "client", "TCP_FIN_WAIT1")
            + expect_state(lb, "server", "TCP_LAST_ACK"))


@_check("half_close")
def _half(lb):
    after = [c for c in lb["calls"] if c["side"] == "client"]
    idx = next((i for i, c in enumerate(after) if c["call"] == "shutdown"), None)
    got = [c["result"] for c in after[idx + 1:]] if idx is not None else []
    bad = _no_errors(lb)
    if sum(r.startswith("ok:") for r in got) < 3:
        bad.append(f"client did not keep receiving after shutdown: {got}")
    return bad


@_check("simultaneous_close")
def _simclose(lb):
    return (_no_errors(lb) + expect_state(lb, "client", "TCP_CLOSING")
            + expect_state(lb, "server", "TCP_CLOSING"))


@_check("simultaneous_open")
def _simopen(lb):
    return (_no_errors(lb) + expect_call(lb, "client", "connect", "ok")
            + expect_call(lb, "server", "connect", "ok")
            + expect_state(lb, "client", "TCP_SYN_RECV")
            + expect_state(lb, "server", "TCP_SYN_RECV"))


@_check("open")
def _open(lb):
    return _no_errors(lb) + _no_fin_rst(lb)


@_check("partial")
def _partial(lb):
    syns = [w for w in wire(lb) if "S" in w[2]]
    return _no_errors(lb) + ([f"SYN captured: {syns}"] if syns else []) + (
        [] if wire(lb) else ["nothing captured"])


def verify(case: str, label: dict) -> tuple[bool, str]:
    check = CHECKS.get(case)
    if check is None:
        return False, "no check for this case"
    if label.get("hand_crafted"):
        return False, "hand-crafted"
    failures = check(label)
    return (not failures), ("; ".join(failures) if failures else "as expected")
