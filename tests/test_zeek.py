"""Hand-built segment sequences for the core's Zeek view (zeekview.pyx: Zeek's conn_state and
history), each expectation reasoned from Zeek's TCP analyzer. Which side Zeek calls the
originator shows in the history: its letters are upper case, the responder's lower case."""

from __future__ import annotations

import pytest
from analyzer.core.zeekview import ZeekProbe

from analyzer.segment import ACK, FIN, PSH, RST, SYN, Segment

CLI = ("10.0.0.1", 40000)
SRV = ("10.0.0.2", 8443)  # not a likely server port: no flip heuristics unless a test wants one
WEB = ("10.0.0.2", 80)

C_ISN = 1000
S_ISN = 5000


class Conv:
    """Builds a conversation between a client and a server, one segment at a time."""

    def __init__(self, client=CLI, server=SRV, t0: float = 100.0):
        self.client, self.server = client, server
        self.t = t0
        self.frame = 0

    def seg(self, frm: str, flags: int, seq: int, ack: int = 0, plen: int = 0, *,
            window: int = 1000, dt: float = 0.01, **kw) -> Segment:
        self.t += dt
        self.frame += 1
        a, b = (self.client, self.server) if frm == "c" else (self.server, self.client)
        return Segment(frame=self.frame, ts=self.t, src=a[0], sport=a[1], dst=b[0], dport=b[1],
                       seq=seq, ack=ack, flags=flags, window=window, payload_len=plen, **kw)


def feed(segs, **kw) -> ZeekProbe:
    view = ZeekProbe(**kw)
    for s in segs:
        view.observe(s)
    return view


def handshake(c: Conv) -> list[Segment]:
    return [
        c.seg("c", SYN, C_ISN),
        c.seg("s", SYN | ACK, S_ISN, C_ISN + 1),
        c.seg("c", ACK, C_ISN + 1, S_ISN + 1),
    ]


def check(view: ZeekProbe, state: str, history: str) -> None:
    assert (view.conn_state, view.history) == (state, history)


# --------------------------------------------------------------------------- conn_state


def test_syn_synack_is_s1():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("s", SYN | ACK, S_ISN, C_ISN + 1)])
    check(v, "S1", "Sh")  # S upper case: the client is the originator


def test_lone_syn_is_s0():
    c = Conv()
    check(feed([c.seg("c", SYN, C_ISN)]), "S0", "S")


def test_syn_ack_data_without_reply_stays_s0():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("c", ACK, C_ISN + 1, S_ISN + 1),
              c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10)])
    check(v, "S0", "SAD")


def test_eccentric_ack_of_syn_keeps_s0():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("s", ACK, S_ISN, C_ISN + 1)])
    check(v, "S0", "Sa")


def test_syn_then_rst_is_rstos0():
    c = Conv()
    check(feed([c.seg("c", SYN, C_ISN), c.seg("c", RST, C_ISN + 1)]), "RSTOS0", "SR")


def test_syn_stuff_then_rst_is_oth():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("s", ACK, S_ISN, C_ISN + 1),
              c.seg("c", FIN | ACK, C_ISN + 1, S_ISN), c.seg("c", RST, C_ISN + 2)])
    check(v, "OTH", "SaFR")


def test_refused_is_rej():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("s", RST | ACK, 0, C_ISN + 1)])
    check(v, "REJ", "Sr")


def test_both_reset_without_payload_is_rej():
    c = Conv()
    v = feed(handshake(c) + [c.seg("c", RST | ACK, C_ISN + 1, S_ISN + 1),
                             c.seg("s", RST | ACK, S_ISN + 1, C_ISN + 1)])
    check(v, "REJ", "ShARr")


def test_normal_close_is_sf():
    c = Conv()
    segs = handshake(c) + [
        c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 100),
        c.seg("s", ACK, S_ISN + 1, C_ISN + 101),
        c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 101, 50),
        c.seg("c", ACK, C_ISN + 101, S_ISN + 51),
        c.seg("c", FIN | ACK, C_ISN + 101, S_ISN + 51),
        c.seg("s", FIN | ACK, S_ISN + 51, C_ISN + 102),
        c.seg("c", ACK, C_ISN + 102, S_ISN + 52),
    ]
    v = feed(segs)
    check(v, "SF", "ShADadFf")
    assert v.is_closed_for_reuse()


def test_midstream_fins_without_handshake_are_sf():
    c = Conv()
    v = feed([
        c.seg("c", ACK | PSH, C_ISN, S_ISN, 20),
        c.seg("s", ACK, S_ISN, C_ISN + 20),
        c.seg("c", FIN | ACK, C_ISN + 20, S_ISN),
        c.seg("s", FIN | ACK, S_ISN, C_ISN + 21),
        c.seg("c", ACK, C_ISN + 21, S_ISN + 1),
    ])
    check(v, "SF", "DaFfA")


def test_rst_after_both_fins_keeps_sf():
    c = Conv()
    segs = handshake(c) + [
        c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
        c.seg("s", ACK, S_ISN + 1, C_ISN + 11),
        c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 11, 10),
        c.seg("c", ACK, C_ISN + 11, S_ISN + 11),
        c.seg("c", FIN | ACK, C_ISN + 11, S_ISN + 11),
        c.seg("c", RST, C_ISN + 12),
        c.seg("s", FIN | ACK, S_ISN + 11, C_ISN + 12),
    ]
    check(feed(segs), "SF", "ShADadFRf")


def test_rst_after_own_fin_before_peer_fin_is_rsto():
    c = Conv()
    segs = handshake(c) + [
        c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
        c.seg("s", ACK, S_ISN + 1, C_ISN + 11),
        c.seg("c", FIN | ACK, C_ISN + 11, S_ISN + 1),
        c.seg("c", RST, C_ISN + 12),
    ]
    check(feed(segs), "RSTO", "ShADaFR")


def test_resp_reset_after_exchange_is_rstr():
    c = Conv()
    segs = handshake(c) + [
        c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
        c.seg("s", RST | ACK, S_ISN + 1, C_ISN + 11),
    ]
    check(feed(segs), "RSTR", "ShADr")


def test_half_closes_s2_s3():
    c = Conv()
    check(feed(handshake(c) + [c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1)]), "S2", "ShAF")
    c = Conv()
    check(feed(handshake(c) + [c.seg("s", FIN | ACK, S_ISN + 1, C_ISN + 1)]), "S3", "ShAf")


def test_syn_then_fin_without_answer_is_sh():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("c", ACK, C_ISN + 1, S_ISN + 1),
              c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 5),
              c.seg("c", FIN | ACK, C_ISN + 6, S_ISN + 1)])
    check(v, "SH", "SADF")


def test_midstream_data_answered_by_rst_is_rstrh():
    c = Conv()
    v = feed([c.seg("c", ACK | PSH, C_ISN, S_ISN, 12), c.seg("s", RST | ACK, S_ISN, C_ISN + 12)])
    check(v, "RSTRH", "Dr")


def test_midstream_without_close_is_oth():
    c = Conv()
    v = feed([c.seg("c", ACK | PSH, C_ISN, S_ISN, 12), c.seg("s", ACK | PSH, S_ISN, C_ISN + 12, 3)])
    check(v, "OTH", "Dd")


# --------------------------------------------------------------------------- direction and flips


def test_lone_rst_from_server_port_is_flipped_rstrh():
    c = Conv(server=WEB)
    v = feed([c.seg("s", RST | ACK, S_ISN, C_ISN)])
    check(v, "RSTRH", "^r")  # flipped: the client is the originator


def test_lone_rst_towards_server_port_is_oth():
    c = Conv(server=WEB)
    check(feed([c.seg("c", RST, C_ISN)]), "OTH", "R")


def test_fin_from_server_port_then_ack_is_shr():
    c = Conv(server=WEB)
    v = feed([c.seg("s", FIN | ACK, S_ISN, C_ISN), c.seg("c", ACK, C_ISN, S_ISN + 1)])
    check(v, "SHR", "^fA")


def test_synack_first_from_server_port_is_flipped():
    c = Conv(server=WEB)
    v = feed([
        c.seg("s", SYN | ACK, S_ISN, C_ISN + 1),
        c.seg("c", ACK, C_ISN + 1, S_ISN + 1),
        c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
        c.seg("s", ACK, S_ISN + 1, C_ISN + 11),
        c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 11, 10),
    ])
    check(v, "S1", "^hADad")


def test_synack_first_then_ack_is_rewritten_as_flip():
    # Neither port is a likely server port: Zeek first calls the SYN-ACK sender the originator
    # (history `H`), then flips when the ACK arrives.
    c = Conv()
    v = ZeekProbe()
    v.observe(c.seg("s", SYN | ACK, S_ISN, C_ISN + 1))
    assert (v.history, v.conn_state) == ("H", "OTH")  # H upper case: the server is orig
    for s in [c.seg("c", ACK, C_ISN + 1, S_ISN + 1),
              c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
              c.seg("s", ACK, S_ISN + 1, C_ISN + 11),
              c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 11, 10)]:
        v.observe(s)
    check(v, "S1", "^hADad")  # flipped: the client is orig


def test_bare_mode_has_fewer_server_ports():
    c = Conv(server=("10.0.0.2", 443))
    s = c.seg("s", ACK | PSH, S_ISN, C_ISN, 10)
    assert feed([s]).history == "^d"
    assert feed([s], bare_mode=True).history == "D"


def test_data_from_server_port_flips():
    c = Conv(server=WEB)
    check(feed([c.seg("s", ACK, S_ISN, C_ISN, 1448)]), "OTH", "^d")


# --------------------------------------------------------------------------- repetition rules


def test_retransmitted_syn_adds_nothing():
    c = Conv()
    check(feed([c.seg("c", SYN, C_ISN), c.seg("c", SYN, C_ISN, dt=1.0)]), "S0", "S")


def test_new_isn_adds_second_s():
    c = Conv()
    check(feed([c.seg("c", SYN, C_ISN), c.seg("c", SYN, C_ISN + 7777, dt=1.0)]), "S0", "SS")


def test_fin_repeated_only_on_new_sequence():
    c = Conv()
    base = handshake(c)
    fin = c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1)
    again = c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1)
    assert feed(base + [fin, again]).history == "ShAF"
    # F compares the sequence number at the end of the payload.
    c = Conv()
    segs = handshake(c) + [c.seg("c", FIN | ACK | PSH, C_ISN + 1, S_ISN + 1, 10),
                           c.seg("c", FIN | ACK, C_ISN + 11, S_ISN + 1)]
    assert feed(segs).history == "ShAF"
    c = Conv()
    segs = handshake(c) + [c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1),
                           c.seg("c", FIN | ACK, C_ISN + 50, S_ISN + 1)]
    assert feed(segs).history == "ShAFF"


def test_ack_and_data_once_per_direction():
    c = Conv()
    segs = handshake(c) + [c.seg("c", ACK | PSH, C_ISN + 1 + 10 * i, S_ISN + 1, 10)
                           for i in range(5)] + [c.seg("c", ACK, C_ISN + 51, S_ISN + 1)] * 3
    assert feed(segs).history == "ShAD"


@pytest.mark.parametrize(("n", "expected"), [(1, "ShADT"), (9, "ShADT"), (10, "ShADTT"),
                                             (99, "ShADTT"), (100, "ShADTTT")])
def test_retransmissions_on_log_scale(n, expected):
    c = Conv()
    data = c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 100)
    segs = handshake(c) + [data] + [c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 100)
                                    for _ in range(n)]
    assert feed(segs).history == expected


def test_zero_window_letter():
    c = Conv()
    segs = handshake(c) + [c.seg("s", ACK, S_ISN + 1, C_ISN + 1, window=0),
                           c.seg("s", RST, S_ISN + 1, window=0)]
    assert feed(segs).history == "ShAawr"  # no W on the RST


def test_zero_window_not_counted_after_peer_fin():
    c = Conv()
    segs = handshake(c) + [c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1),
                           c.seg("s", ACK, S_ISN + 1, C_ISN + 2, window=0)]
    assert feed(segs).history == "ShAFa"


def test_fin_rst_and_syn_fin_letters():
    c = Conv()
    assert feed(handshake(c) + [c.seg("c", FIN | RST | ACK, C_ISN + 1, S_ISN + 1)]
                ).history == "ShAI"
    c = Conv()
    assert feed([c.seg("c", SYN | FIN, C_ISN)]).history == "Q"


def test_content_gap_when_peer_acks_unseen_data():
    c = Conv()
    segs = handshake(c) + [
        c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 1, 100),
        # bytes S_ISN+101 .. S_ISN+200 never seen
        c.seg("s", ACK | PSH, S_ISN + 201, C_ISN + 1, 100),
        c.seg("c", ACK, C_ISN + 1, S_ISN + 301),
    ]
    assert feed(segs).history == "ShAdg"


def test_no_gap_when_ack_covers_seen_data():
    c = Conv()
    segs = handshake(c) + [
        c.seg("s", ACK | PSH, S_ISN + 1, C_ISN + 1, 100),
        c.seg("c", ACK, C_ISN + 1, S_ISN + 101),
    ]
    assert feed(segs).history == "ShAd"


# --------------------------------------------------------------------------- checksums and ICMP


def test_bad_checksum_only_is_oth_c():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN, checksum_ok=False)])
    check(v, "OTH", "C")  # upper case: the sender of the bad segment is orig


def test_bad_checksum_packet_is_ignored_for_state():
    c = Conv()
    v = feed([c.seg("c", SYN, C_ISN), c.seg("s", SYN | ACK, S_ISN, C_ISN + 1, checksum_ok=False)])
    check(v, "S0", "Sc")


def test_ignore_checksums_and_unknown_checksum():
    c = Conv()
    segs = [c.seg("c", SYN, C_ISN, checksum_ok=False),
            c.seg("s", SYN | ACK, S_ISN, C_ISN + 1, checksum_ok=None)]
    check(feed(segs, ignore_checksums=True), "S1", "Sh")


def test_icmp_is_ignored():
    c = Conv()
    icmp = c.seg("c", SYN, C_ISN, icmp_kind="port_unreachable", icmp_from="10.0.0.2")
    v = feed([c.seg("c", SYN, C_ISN), icmp])
    check(v, "S0", "S")
    only = feed([icmp])  # an ICMP error alone starts nothing
    check(only, "OTH", "")


# --------------------------------------------------------------------------- boundaries


def boundaries(segs) -> list[str]:
    """Run segs through Zeek's connection boundaries and return the histories of the
    connections."""
    views: list[ZeekProbe] = []
    last = None
    for s in segs:
        if not views or views[-1].starts_new(s, last):
            views.append(ZeekProbe())
        views[-1].observe(s)
        last = s.ts
    return [v.history for v in views]


def test_syn_after_reject_starts_new_connection():
    c = Conv()
    segs = []
    for _ in range(3):
        segs += [c.seg("c", SYN, C_ISN, dt=1.0), c.seg("s", RST | ACK, 0, C_ISN + 1)]
    assert boundaries(segs) == ["Sr", "Sr", "Sr"]


def test_retransmitted_syn_same_connection_new_isn_new_connection():
    c = Conv()
    assert boundaries([c.seg("c", SYN, C_ISN), c.seg("c", SYN, C_ISN, dt=1.0)]) == ["S"]
    c = Conv()
    assert boundaries([c.seg("c", SYN, C_ISN), c.seg("c", SYN, C_ISN + 99, dt=1.0)]) == ["S", "S"]


def test_attempt_timeout_splits():
    c = Conv()
    segs = [c.seg("c", SYN, C_ISN), c.seg("c", ACK, C_ISN + 1, S_ISN + 1, dt=1.0),
            c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10, dt=6.0),
            c.seg("c", FIN | ACK, C_ISN + 11, S_ISN + 1)]
    assert boundaries(segs) == ["SA", "DF"]


def test_close_delay():
    c = Conv()
    close = handshake(c) + [c.seg("c", RST, C_ISN + 1)]
    late = c.seg("c", ACK | PSH, C_ISN + 1, S_ISN + 1, 10, dt=16.0)
    assert boundaries(close + [late]) == ["ShAR", "D"]
    c = Conv()
    close = handshake(c) + [c.seg("c", FIN | ACK, C_ISN + 1, S_ISN + 1),
                            c.seg("s", FIN | ACK, S_ISN + 1, C_ISN + 2)]
    ack = c.seg("c", ACK, C_ISN + 2, S_ISN + 2, dt=0.5)
    late = c.seg("s", ACK, S_ISN + 2, C_ISN + 2, dt=6.0)
    assert boundaries(close + [ack]) == ["ShAFf"]
    assert boundaries(close + [ack, late]) == ["ShAFf", "A"]


def test_inactivity_timeout():
    c = Conv()
    first = c.seg("c", ACK | PSH, C_ISN, S_ISN, 10)
    exactly = c.seg("c", ACK | PSH, C_ISN, S_ISN, 10, dt=300.0)
    assert boundaries([first, exactly]) == ["DT"]
    c = Conv()
    first = c.seg("c", ACK | PSH, C_ISN, S_ISN, 10)
    later = c.seg("c", ACK | PSH, C_ISN, S_ISN, 10, dt=301.0)
    assert boundaries([first, later]) == ["D", "D"]


def test_is_closed_for_reuse():
    c = Conv()
    v = feed(handshake(c))
    assert not v.is_closed_for_reuse()
    v.observe(c.seg("s", FIN | ACK, S_ISN + 1, C_ISN + 1))
    assert v.is_closed_for_reuse()
