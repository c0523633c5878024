"""Both endpoints' state machines in the compiled core (derived from tcpstate.TRANSITIONS),
driven by hand-built segments: each expectation reasoned from RFC 9293 and Linux."""

from __future__ import annotations

import pytest
from analyzer.core.observer import Observer

from analyzer.pipeline import Timeouts
from analyzer.tcpstate import TRANSITIONS, Event, State
from tests.core_helpers import connections, states
from tests.segments import Flow, handshake


def run(f: Flow, timeouts: Timeouts | None = None):
    return connections(f.segments, timeouts)


def test_table_only_names_known_states_and_events():
    for (state, event), target in TRANSITIONS.items():
        assert isinstance(state, State) and isinstance(event, Event)
        for t in target if isinstance(target, tuple) else (target,):
            assert isinstance(t, State)


def test_impossible_event_is_an_anomaly_not_an_exception():
    f = Flow()
    handshake(f)
    f("c", "S", 1500)  # a new SYN from an established client (the server has answered: no
    # new attempt): the table has no such edge
    (conn,) = run(f)
    assert states(conn, "client") == ["SYN_SENT", "ESTABLISHED"]
    assert [a.text() for a in conn.anomalies] == ["frame 4: client in ESTABLISHED cannot send SYN"]


def test_handshake_and_graceful_close_active_client():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", ".", 5001, 1002)
    f("s", "F.", 5001, 1002)
    f("c", ".", 1002, 5002)
    (conn,) = run(f)
    assert states(conn, "client") == ["SYN_SENT", "ESTABLISHED", "FIN_WAIT_1", "FIN_WAIT_2",
                                      "TIME_WAIT"]
    assert states(conn, "server") == ["LISTEN", "SYN_RCVD", "ESTABLISHED", "CLOSE_WAIT",
                                      "LAST_ACK", "CLOSED"]
    assert conn.ep["server"].history[0][1] == 0  # LISTEN was before the capture
    assert conn.ep["client"].history[2][1] == 4  # FIN_WAIT_1 at the FIN's frame
    assert not conn.anomalies


def test_fin_piggybacked_with_ack_of_fin_goes_straight_to_time_wait():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", "F.", 5001, 1002)  # ACK of the client's FIN and the server's FIN in one segment
    f("c", ".", 1002, 5002)
    (conn,) = run(f)
    assert states(conn, "client")[-2:] == ["FIN_WAIT_2", "TIME_WAIT"]
    assert states(conn, "server")[-3:] == ["CLOSE_WAIT", "LAST_ACK", "CLOSED"]


def test_simultaneous_close_both_pass_closing():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", "F.", 5001, 1001)  # does not acknowledge the client's FIN: they crossed
    f("c", ".", 1002, 5002)
    f("s", ".", 5002, 1002)
    (conn,) = run(f)
    for role in ("client", "server"):
        assert states(conn, role)[-3:] == ["FIN_WAIT_1", "CLOSING", "TIME_WAIT"], role


def test_simultaneous_open_both_syn_sent_then_syn_rcvd():
    f = Flow(("10.0.0.1", 5000), ("10.0.0.2", 6000))
    f("c", "S", 100)
    f("s", "S", 900)
    f("c", "S.", 100, 901)
    f("s", "S.", 900, 101)
    f("c", ".", 101, 901)
    (conn,) = run(f)
    for role in ("client", "server"):
        assert states(conn, role) == ["SYN_SENT", "SYN_RCVD", "ESTABLISHED"], role


def test_refused():
    f = Flow()
    f("c", "S", 1000)
    f("s", "R.", 0, 1001)
    (conn,) = run(f)
    assert states(conn, "client") == ["SYN_SENT", "CLOSED"]
    assert states(conn, "server") == ["CLOSED"]


def test_rst_with_wrong_sequence_in_syn_sent_is_not_believed():
    f = Flow()
    f("c", "S", 1000)
    f("s", "R.", 0, 4242)  # ack does not cover the SYN: RFC 9293 says ignore it
    (conn,) = run(f)
    assert states(conn, "client") == ["SYN_SENT"]
    assert not conn.sent["server"].rsts[0].accepted


def test_rst_in_window_but_not_exact_is_ignored_with_challenge_ack():
    f = Flow()
    handshake(f)
    f("s", "P.", 5001, 1001, 100)
    f("c", ".", 1001, 5101)
    f("s", "R", 5050)  # not rcv_nxt (5101)
    f("c", ".", 1001, 5101)  # challenge ACK
    (conn,) = run(f)
    rst = conn.sent["server"].rsts[0]
    assert not rst.accepted and rst.challenge_frame == 7
    assert states(conn, "client")[-1] == "ESTABLISHED"


def test_half_close_peer_keeps_sending():
    f = Flow()
    handshake(f)
    f("c", "F.", 1001, 5001)
    f("s", ".", 5001, 1002)
    f("s", "P.", 5001, 1002, 500)
    f("c", ".", 1002, 5501)
    f("s", "F.", 5501, 1002)
    f("c", ".", 1002, 5502)
    (conn,) = run(f)
    assert conn.sent["server"].data_after_peer_fin == 6
    assert states(conn, "client")[-2:] == ["FIN_WAIT_2", "TIME_WAIT"]


def test_retransmission_does_not_count_bytes_twice():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, 100)
    f("c", "P.", 1001, 5001, 100, dt=0.2)
    f("c", "P.", 1001, 5001, 100, dt=0.4)
    (conn,) = run(f)
    assert conn.sent["client"].bytes == 100
    assert conn.sent["client"].retransmissions == 2
    assert [fr for fr, _ in conn.sent["client"].ladder] == [5, 6]


def test_capture_duplicate_is_dropped():
    f = Flow()
    handshake(f)
    f("c", "P.", 1001, 5001, 100, ip_id=7)
    f("c", "P.", 1001, 5001, 100, ip_id=7, dt=0.00001)  # the second copy on `lo`
    (conn,) = run(f)
    assert conn.duplicates == 1 and conn.sent["client"].retransmissions == 0


def test_sequence_wraparound():
    f = Flow()
    handshake(f, cisn=0xFFFFFF00, sisn=0xFFFFFFF0)
    f("c", "P.", 0xFFFFFF01, 0xFFFFFFF1, 0x200)  # crosses 2**32
    f("s", ".", 0xFFFFFFF1, 0x101)
    f("c", "F.", 0x101, 0xFFFFFFF1)
    f("s", "F.", 0xFFFFFFF1, 0x102)
    f("c", ".", 0x102, 0xFFFFFFF2)
    (conn,) = run(f)
    assert conn.sent["client"].bytes == 0x200
    assert states(conn, "client")[-1] == "TIME_WAIT"
    assert states(conn, "server")[-1] == "CLOSED"
    assert not conn.anomalies


def test_midstream_join():
    f = Flow(("10.0.0.1", 50123), ("10.0.0.2", 443))
    f("s", "P.", 7000, 3000, 10)
    f("c", ".", 3000, 7010)
    f("c", "F.", 3000, 7010)
    f("s", "F.", 7010, 3001)
    f("c", ".", 3001, 7011)
    (conn,) = run(f)
    assert conn.client == ("10.0.0.1", 50123)  # the well-known port is the server's
    assert states(conn, "client")[0] == "MIDSTREAM"
    assert states(conn, "client")[-1] == "TIME_WAIT"


def test_port_reuse_new_syn_after_close_is_a_new_connection():
    f = Flow()
    handshake(f)
    f("c", "R.", 1001, 5001)
    handshake(f, cisn=77777, sisn=88888)
    conns = run(f)
    assert [c.conn_id for c in conns] == [0, 1]
    assert conns[1].first_frame == 5
    assert states(conns[1], "client") == ["SYN_SENT", "ESTABLISHED"]


def test_retransmitted_syn_same_isn_is_not_a_new_connection():
    f = Flow()
    f("c", "S", 1000)
    f("c", "S", 1000, dt=1.0)
    f("c", "S", 1000, dt=1.0)
    (conn,) = run(f)
    assert len(conn.sent["client"].syn_frames) == 3


def test_idle_eviction_bounds_memory():
    f = Flow()
    for i in range(50):  # 50 refused connects on distinct ports, 10 s apart
        f.ends["c"] = ("10.0.0.1", 30000 + i)
        f("c", "S", 1000 + i, dt=10.0)
        f("s", "R.", 0, 1001 + i)
    obs = Observer(Timeouts(idle=300, closed=5))
    for seg in f.segments:
        obs.feed_segment(seg)
        assert obs.open_connections <= 2
    obs.close()
    assert len(obs.done) == 50 and obs.open_connections == 0


def test_injected_rst_is_retracted_when_the_claimed_sender_keeps_sending():
    f = Flow()
    handshake(f)
    f("s", "P.", 5001, 1001, 10)
    f("c", ".", 1001, 5011)
    f("s", "R", 5011, ttl=40)  # forged: exact sequence number, odd TTL
    f("s", "P.", 5011, 1001, 10)  # the real server keeps sending
    f("c", "R", 1001)  # the client's kernel no longer knows the connection
    (conn,) = run(f)
    rst = conn.sent["server"].rsts[0]
    assert rst.accepted and rst.forged
    # the forged RST's CLOSED (frame 6) was retracted; the client's real RST closes it at 8
    assert [(s, fr) for s, fr, _ in conn.ep["server"].history][-2:] == [("ESTABLISHED", 3),
                                                                          ("CLOSED", 8)]
    assert states(conn, "client")[-1] == "CLOSED"


def _server_in(state: str) -> tuple[Flow, int]:
    """A connection whose server is in `state` (the client's next sequence number with it)."""
    f = Flow()
    handshake(f)
    if state == "CLOSE_WAIT":
        f("c", "F.", 1001, 5001)
        f("s", ".", 5001, 1002)
        return f, 1002
    if state == "LAST_ACK":
        f("c", "F.", 1001, 5001)
        f("s", "F.", 5001, 1002)
        return f, 1002
    if state == "FIN_WAIT_1":
        f("s", "F.", 5001, 1001)
        return f, 1001
    if state == "FIN_WAIT_2":
        f("s", "F.", 5001, 1001)
        f("c", ".", 1001, 5002)
        return f, 1001
    if state == "CLOSING":
        f("s", "F.", 5001, 1001)
        f("c", "F.", 1001, 5001)  # crossed: does not acknowledge the server's FIN
        return f, 1002
    if state == "TIME_WAIT":
        f("s", "F.", 5001, 1001)
        f("c", "F.", 1001, 5002)
        f("s", ".", 5002, 1002)
        return f, 1002
    return f, 1001  # ESTABLISHED


@pytest.mark.parametrize("state_before", ["FIN_WAIT_1", "FIN_WAIT_2", "CLOSE_WAIT", "LAST_ACK",
                                          "CLOSING", "TIME_WAIT", "ESTABLISHED"])
def test_every_synchronised_state_closes_on_an_accepted_rst(state_before):
    f, nxt = _server_in(state_before)
    (before,) = run(f)
    assert states(before, "server")[-1] == state_before
    f("c", "R", nxt)  # exactly at the server's rcv_nxt: accepted
    (conn,) = run(f)
    assert states(conn, "server")[-2:] == [state_before, "CLOSED"]
    assert conn.sent["client"].rsts[-1].accepted


def test_max_active_caps_the_table_and_finishes_the_oldest_first():
    f = Flow()
    for i in range(30):  # a flood of spoofed SYNs, one per 4-tuple
        f.ends["c"] = ("10.9.0.1", 20000 + i)
        f("c", "S", 1000 + i)
    obs = Observer(Timeouts(max_active=10))
    for seg in f.segments:
        obs.feed_segment(seg)
        assert obs.open_connections <= 10
    assert [c.client[1] for c, _v in obs.done] == list(range(20000, 20020))
    assert obs.evicted_early == 20 and obs.peak_active == 10
    obs.close()
    assert len(obs.done) == 30


def test_an_rst_storm_does_not_crowd_out_the_exact_rst():
    f = Flow()
    handshake(f)
    for i in range(40):  # stray in-window RSTs, none exact
        f("s", "R", 5001 + 100 + i, ttl=40)
    f("s", "R", 5001, ttl=40)  # the exact one
    (conn,) = run(f)
    rsts = conn.sent["server"].rsts
    assert len(rsts) <= 33 and rsts[-1].accepted and rsts[-1].frame == 44
    assert states(conn, "client")[-1] == "CLOSED"
