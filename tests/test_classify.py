"""The compiled classifier on hand-built segment sequences: one test per catalog case's wire
pattern, each expectation reasoned from what the kernel does."""

from __future__ import annotations

from analyzer import cases
from analyzer.core import verdict as cv
from analyzer.segment import ICMP_HOST_UNREACH
from tests.core_helpers import classify_one, verdicts
from tests.segments import Flow, handshake


def one(f: Flow):
    (v,) = verdicts(f.segments)
    return v


def test_the_core_names_the_catalog_in_its_order():
    assert cv.CASE_IDS == tuple(c.id for c in cases.CATALOG)
    assert [cv.case_id(i) for i in range(len(cases.CATALOG))] == [c.id for c in cases.CATALOG]
    assert set(cv.RULE_ORDER) == set(cases.BY_ID)  # one rule per case, none without a case


def test_refused():
    f = Flow()
    f("c", "S", 1000)
    f("s", "R.", 0, 1001)
    v = one(f)
    assert (v.case, v.closer, v.client_sees, v.evidence) == ("refused", "server",
                                                             ["ECONNREFUSED"], [1, 2])


def test_write_after_close_is_epipe_for_the_writer():
    f = Flow()
    handshake(f)
    f("s", "F.", 5001, 1001)  # the server closes
    f("c", ".", 1001, 5002, dt=0.04)  # delayed ACK of the FIN
    f("c", "P.", 1001, 5002, 20)  # the client writes anyway
    f("s", "R", 5002)  # bare RST from a kernel with no socket
    v = one(f)
    assert v.case == "write_after_close" and v.closer == "server"
    assert v.client_sees == ["EOF", "EPIPE"] and v.server_sees == []
    assert v.evidence == [4, 6, 7]


def test_unread_data_reset_vs_abortive_close_by_order_of_data():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, 10)
    f("s", "P.", 5001, 1011, 30)  # the server answered last ...
    f("c", ".", 1011, 5031)
    f("s", "R.", 5031, 1011, has_options=True)  # ... then aborted: nothing unread
    v = one(f)
    assert v.case == "abortive_close" and v.closer == "server" and v.client_sees == [
        "ECONNRESET"]

    f = Flow()
    handshake(f)
    f("s", "P.", 5001, 1001, 30)
    f("c", "P.", 1001, 5031, 10)  # the client spoke last, the server never read it
    f("s", ".", 5031, 1011)
    f("s", "R.", 5031, 1011, has_options=True)
    v = one(f)
    assert v.case == "unread_data_reset" and v.client_sees == ["ECONNRESET"]


def test_aborted_before_accept():
    f = Flow()
    handshake(f)
    f("c", "R.", 1001, 5001)
    v = one(f)
    # Linux: accept() succeeds, getpeername() -> ENOTCONN, then recv() -> ECONNRESET
    assert (v.case, v.closer, v.server_sees) == ("aborted_before_accept", "client",
                                                 ["ENOTCONN", "ECONNRESET"])


def test_peer_state_lost_bare_rst_from_a_side_that_never_closed():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, 10)
    f("s", ".", 5001, 1011)
    f("c", "P.", 1011, 5001, 10, dt=30)  # after the server's host rebooted
    f("s", "R", 5001)
    v = one(f)
    assert (v.case, v.closer, v.client_sees) == ("peer_state_lost", "server", ["ECONNRESET"])


def test_syn_timeout_and_backlog_overflow_need_a_listener_seen():
    f = Flow()
    for _ in range(3):
        f("c", "S", 1000, dt=1.0)
    assert one(f).case == "syn_timeout"
    # the port accepted another connection in the same capture: the listener exists
    g = Flow(client=("10.0.0.9", 41000), ts=990.0)
    handshake(g)
    v = verdicts(g.segments + f.segments)[1]
    assert v.case == "backlog_overflow" and v.confidence == "likely" and v.rival == "syn_timeout"
    # the same, told directly (the observer's listener knowledge)
    v = classify_one(f.segments, f.ends["c"], f.ends["s"], listener_seen=True)
    assert v.case == "backlog_overflow" and v.rival == "syn_timeout"
    assert classify_one(f.segments, f.ends["c"], f.ends["s"], False).case == "syn_timeout"


def test_a_listener_seen_only_later_in_the_capture_counts_at_the_end_only():
    # the classifier runs when a connection finishes; a SYN/ACK from the server after that
    # cannot change it: an unanswered attempt finished by the idle timeout before the port
    # answered anyone is a syn_timeout
    from analyzer.pipeline import Timeouts

    f = Flow()
    for _ in range(3):
        f("c", "S", 1000, dt=1.0)
    g = Flow(client=("10.0.0.9", 41000), ts=f.ts + 100.0)
    handshake(g)
    first, _second = verdicts(f.segments + g.segments, Timeouts(idle=10.0))
    assert first.case == "syn_timeout"


def test_backlog_overflow_syns_ignored_then_answered():
    f = Flow()
    f("c", "S", 1000)
    f("c", "S", 1000, dt=1.0)
    f("s", "S.", 5000, 1001, dt=1.0)
    f("c", ".", 1001, 5001)
    assert one(f).case == "backlog_overflow"


def test_retransmission_timeout():
    f = Flow()
    handshake(f)
    for dt in (0.0, 0.2, 0.4, 0.8, 1.6):
        f("c", "P.", 1001, 5001, 100, dt=dt)
    v = one(f)
    assert v.case == "retransmission_timeout" and v.client_sees == ["ETIMEDOUT"]
    assert v.closer is None


def test_keepalive_timeout():
    f = Flow()
    handshake(f)
    f("c", ".", 1000, 5001, dt=1.0)  # probes: seq = next - 1
    f("c", ".", 1000, 5001, dt=1.0)
    f("c", "R.", 1001, 5001, dt=1.0)
    v = one(f)
    assert (v.case, v.closer, v.client_sees) == ("keepalive_timeout", "client", ["ETIMEDOUT"])


def test_unreachable_maps_icmp_code_to_errno():
    f = Flow()
    f("c", "S", 1000)
    f("c", "S", 1000, icmp_kind=ICMP_HOST_UNREACH, icmp_type=3, icmp_code=1,
      icmp_from="10.0.0.254")
    v = one(f)
    assert (v.case, v.client_sees, v.closer) == ("unreachable", ["EHOSTUNREACH"], None)


def test_injected_reset():
    f = Flow()
    handshake(f)
    f("s", "P.", 5001, 1001, 10)
    f("c", ".", 1001, 5011)
    f("s", "R", 5011, ttl=40)
    f("s", "P.", 5011, 1001, 10)
    f("c", "R", 1001)
    v = one(f)
    assert v.case == "injected_reset" and v.confidence == "certain"
    assert v.client_sees == ["ECONNRESET"] and v.server_sees == ["ECONNRESET"]


def test_ignored_reset_then_graceful():
    f = Flow()
    handshake(f)
    f("s", "R", 7777)
    f("c", ".", 1001, 5001)
    f("c", "F.", 1001, 5001)
    f("s", "F.", 5001, 1002)
    f("c", ".", 1002, 5002)
    v = one(f)
    assert v.case == "ignored_reset" and v.closer == "client"


def test_close_wait_stall():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", ".", 5001, 1002)
    f("s", "P.", 5001, 1002, 10, dt=2.0)
    f("c", ".", 1002, 5011)
    v = one(f)
    assert v.case == "close_wait_stall" and v.closer == "client"


def test_ordinary_endings():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", "F.", 5001, 1002)
    f("c", ".", 1002, 5002)
    v = one(f)
    assert (v.case, v.closer, v.client_sees, v.server_sees) == ("graceful", "client", ["EOF"],
                                                                ["EOF"])
    f = Flow()
    handshake(f)
    assert one(f).case == "open"
    f = Flow()
    f("c", "P.", 1001, 5001, 10)
    assert one(f).case == "partial"
