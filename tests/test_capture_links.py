"""Link layers down to IP: every supported link type and encapsulation, decoded by the compiled
reader from a pcap whose headers are packed here from the specs (or built by scapy)."""

from __future__ import annotations

import struct

import pytest

from analyzer.segment import ACK, PSH, SYN
from tests.capture_helpers import pcap_bytes, read_all, tcp_ip, write

MAC_A = bytes.fromhex("020000000001")
MAC_B = bytes.fromhex("020000000002")


def v4(payload: bytes = b"hello") -> bytes:
    return bytes(tcp_ip("192.0.2.1", "198.51.100.7", 40001, 443, seq=111, ack=222, flags="PA",
                        payload=payload))


def v6(payload: bytes = b"hello!") -> bytes:
    return bytes(tcp_ip("2001:db8::1", "2001:db8:0:0:1::2", 40002, 22, seq=333, ack=444,
                        flags="S", payload=payload))


def eth(etype: int, rest: bytes) -> bytes:
    return MAC_B + MAC_A + struct.pack("!H", etype) + rest


def tag(tci: int, etype: int) -> bytes:
    return struct.pack("!HH", tci, etype)


def mpls(label: int, bottom: bool, ttl: int = 64) -> bytes:
    return struct.pack("!I", (label << 12) | (int(bottom) << 8) | ttl)


def pppoe(ppp_proto: int, inner: bytes) -> bytes:
    return struct.pack("!BBHHH", 0x11, 0, 0x1234, len(inner) + 2, ppp_proto) + inner


def fabricpath(inner_eth: bytes) -> bytes:
    # outer DA, outer SA (switch ids), ethertype 0x8903, FTag/TTL, then a classic Ethernet frame
    return bytes(6) + bytes(6) + struct.pack("!HH", 0x8903, 0x0001) + inner_eth


def sll(proto: int, inner: bytes) -> bytes:
    return struct.pack("!HHH", 0, 1, 6) + MAC_A + b"\0\0" + struct.pack("!H", proto) + inner


def sll2(proto: int, inner: bytes) -> bytes:
    return (struct.pack("!HHIHBB", proto, 0, 3, 1, 4, 6) + MAC_A + b"\0\0") + inner


V4_EXPECT = ("192.0.2.1", 40001, "198.51.100.7", 443, 111, 222, PSH | ACK, 5, 4)
V6_EXPECT = ("2001:db8::1", 40002, "2001:db8::1:0:0:2", 22, 333, 444, SYN, 6, 6)

CASES = [
    # name, linktype, frame, expected
    ("ethernet", 1, eth(0x0800, v4()), V4_EXPECT),
    ("ethernet-v6", 1, eth(0x86DD, v6()), V6_EXPECT),
    ("vlan", 1, eth(0x8100, tag(10, 0x0800) + v4()), V4_EXPECT),
    ("qinq-88a8", 1, eth(0x88A8, tag(100, 0x8100) + tag(10, 0x86DD) + v6()), V6_EXPECT),
    ("qinq-9100", 1, eth(0x9100, tag(100, 0x8100) + tag(10, 0x0800) + v4()), V4_EXPECT),
    ("three-tags", 1, eth(0x88A8, tag(1, 0x8100) + tag(2, 0x8100) + tag(3, 0x0800) + v4()),
     V4_EXPECT),
    ("mpls-one", 1, eth(0x8847, mpls(16, True) + v4()), V4_EXPECT),
    ("mpls-stack-v6", 1, eth(0x8847, mpls(16, False) + mpls(17, False) + mpls(18, True) + v6()),
     V6_EXPECT),
    ("mpls-multicast", 1, eth(0x8848, mpls(16, True) + v4()), V4_EXPECT),
    ("mpls-in-vlan", 1, eth(0x8100, tag(7, 0x8847) + mpls(16, False) + mpls(99, True) + v4()),
     V4_EXPECT),
    ("pppoe-v4", 1, eth(0x8864, pppoe(0x0021, v4())), V4_EXPECT),
    ("pppoe-v6", 1, eth(0x8864, pppoe(0x0057, v6())), V6_EXPECT),
    ("pppoe-over-qinq", 1, eth(0x88A8, tag(5, 0x8100) + tag(6, 0x8864) + pppoe(0x0021, v4())),
     V4_EXPECT),
    ("fabricpath", 1, fabricpath(eth(0x0800, v4())), V4_EXPECT),
    ("fabricpath-vlan-v6", 1, fabricpath(eth(0x8100, tag(3, 0x86DD) + v6())), V6_EXPECT),
    ("sll", 113, sll(0x0800, v4()), V4_EXPECT),
    ("sll-v6", 113, sll(0x86DD, v6()), V6_EXPECT),
    ("sll2", 276, sll2(0x0800, v4()), V4_EXPECT),
    ("sll2-v6", 276, sll2(0x86DD, v6()), V6_EXPECT),
    ("null-le", 0, struct.pack("<I", 2) + v4(), V4_EXPECT),
    ("null-be-host", 0, struct.pack(">I", 2) + v4(), V4_EXPECT),
    ("null-v6-linux", 0, struct.pack("<I", 10) + v6(), V6_EXPECT),
    ("null-v6-bsd", 0, struct.pack("<I", 24) + v6(), V6_EXPECT),
    ("null-v6-freebsd", 0, struct.pack("<I", 28) + v6(), V6_EXPECT),
    ("null-v6-darwin", 0, struct.pack("<I", 30) + v6(), V6_EXPECT),
    ("loop-v4", 108, struct.pack(">I", 2) + v4(), V4_EXPECT),
    ("loop-v6", 108, struct.pack(">I", 24) + v6(), V6_EXPECT),
    ("raw-v4", 101, v4(), V4_EXPECT),
    ("raw-v6", 101, v6(), V6_EXPECT),
    ("raw-12", 12, v4(), V4_EXPECT),
    ("raw-14-v6", 14, v6(), V6_EXPECT),
    ("ipv4", 228, v4(), V4_EXPECT),
    ("ipv6", 229, v6(), V6_EXPECT),
    # the FCS bits in the upper part of the linktype field; trailing 4-byte FCS in the frame
    ("ethernet-fcs-bits", 1 | (1 << 26) | (2 << 28), eth(0x0800, v4()) + b"\xde\xad\xbe\xef",
     V4_EXPECT),
]


@pytest.mark.parametrize("linktype,frame,expect", [c[1:] for c in CASES],
                         ids=[c[0] for c in CASES])
def test_link_type_decoded(tmp_path, linktype, frame, expect):
    path = write(tmp_path / "l.pcap", pcap_bytes([(100, 5, frame), (101, 6, frame)],
                                                 linktype=linktype))
    segs, reader = read_all(path)
    assert not reader.problems and not reader.notes
    assert [s.frame for s in segs] == [1, 2]
    s = segs[0]
    src, sport, dst, dport, seq, ack, flags, payload_len, version = expect
    assert (s.src, s.sport, s.dst, s.dport) == (src, sport, dst, dport)
    assert (s.seq, s.ack, s.flags, s.payload_len, s.ip_version) == (seq, ack, flags,
                                                                   payload_len, version)
    assert s.checksum_ok is True
    assert s.ts == pytest.approx(100.000005, abs=1e-9)
    assert reader.stats.link_types == {linktype & 0xFFFF: 2}
    assert reader.stats.tcp_segments == 2 and reader.stats.non_tcp == 0


def test_scapy_built_encapsulations(tmp_path):
    """The same encapsulations as scapy writes them (cross-check of the hand-made headers)."""
    from scapy.all import PPP, Dot1AD, Dot1Q, Ether, PPPoE
    from scapy.contrib.mpls import MPLS

    pkt = tcp_ip("10.1.1.1", "10.2.2.2", 1111, 2222, seq=5, flags="F")
    frames = [
        Ether() / Dot1AD(vlan=100) / Dot1Q(vlan=200) / pkt,
        Ether() / MPLS(label=16, s=0) / MPLS(label=17, s=1) / pkt,
        Ether() / Dot1Q(vlan=3) / PPPoE(sessionid=7) / PPP(proto=0x0021) / pkt,
    ]
    path = write(tmp_path / "s.pcap", pcap_bytes([(1, 0, bytes(f)) for f in frames]))
    segs, reader = read_all(path)
    assert [(s.frame, s.src, s.sport, s.dst, s.dport, s.seq) for s in segs] == [
        (i, "10.1.1.1", 1111, "10.2.2.2", 2222, 5) for i in (1, 2, 3)]
    assert reader.stats.non_tcp == 0


def test_non_ip_frames_are_non_tcp(tmp_path):
    from scapy.all import ARP, IP, UDP, Ether

    llc = MAC_B + MAC_A + struct.pack("!H", 46) + b"\xaa\xaa\x03" + bytes(43)  # 802.3 length
    arp = bytes(Ether() / ARP())
    udp = eth(0x0800, bytes(IP(src="10.0.0.1", dst="10.0.0.2") / UDP(sport=53, dport=53)))
    mpls_eth_pw = eth(0x8847, mpls(16, True) + bytes(20))  # not IP after the bottom label
    pppoe_lcp = eth(0x8864, pppoe(0xC021, bytes(10)))
    frames = [llc, arp, udp, mpls_eth_pw, pppoe_lcp, eth(0x0800, v4())]
    path = write(tmp_path / "n.pcap", pcap_bytes([(1, 0, f) for f in frames]))
    segs, reader = read_all(path)
    assert [s.frame for s in segs] == [6]
    assert reader.stats.non_tcp == 5
    assert reader.stats.frames == 6


def test_unsupported_link_type_gives_one_note(tmp_path):
    path = write(tmp_path / "u.pcap", pcap_bytes([(1, 0, v4())] * 3, linktype=105))
    segs, reader = read_all(path)
    assert segs == []
    assert reader.stats.non_tcp == 3 and reader.stats.link_types == {105: 3}
    assert len(reader.notes) == 1 and "105" in reader.notes[0]
    assert reader.problems == []
