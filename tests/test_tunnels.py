"""The encapsulations Zeek decodes on the way to TCP (analyzer/core/tunnels.pxi), on frames that
scapy builds (hand-crafted: the kernel here makes none of these tunnels), cross-checked with
tshark's reading where it is installed. Each one carries a whole connection (handshake, data,
both FINs) in both directions; the record must name the inner connection, Zeek's SF, and the
tunnel with its outer endpoints on the right sides."""

from __future__ import annotations

import shutil
import struct
import subprocess
from collections.abc import Callable

import pytest
from analyzer.core.decode import open_native
from scapy.contrib.erspan import ERSPAN_II, ERSPAN_III
from scapy.contrib.geneve import GENEVE
from scapy.contrib.gtp import GTP_U_Header
from scapy.layers.inet import GRE, IP, TCP, UDP
from scapy.layers.inet6 import IPv6
from scapy.layers.l2 import LLC, SNAP, Dot1Q, Dot3, Ether
from scapy.layers.vxlan import VXLAN

import analyzer

CLIENT, SERVER = ("10.0.0.1", 40000), ("10.0.0.2", 80)
CLIENT6, SERVER6 = ("2001:0:4136:e378::1", 40000), ("2001:db8::2", 80)
OUT_C, OUT_S = "192.0.2.1", "198.51.100.7"  # outer endpoints: client side, server side
OUT6_C, OUT6_S = "2001:db8:1::1", "2001:db8:2::2"
MAC = dict(src="02:00:00:00:00:01", dst="02:00:00:00:00:02")

Wrap = Callable[[bytes, bool], bytes]  # (inner IP packet, from the client) -> Ethernet frame


def inner_packets(v6: bool = False) -> list[tuple[bytes, bool]]:
    """A whole connection: handshake, a request and its answer, both FINs."""
    (ca, cp), (sa, sp) = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    net = IPv6 if v6 else IP

    def seg(from_client: bool, flags: str, seq: int, ack: int, data: bytes = b"") -> bytes:
        src, dst = ((ca, cp), (sa, sp)) if from_client else ((sa, sp), (ca, cp))
        return bytes(net(src=src[0], dst=dst[0]) / TCP(sport=src[1], dport=dst[1], flags=flags,
                                                      seq=seq, ack=ack) / data)
    return [(seg(True, "S", 100, 0), True), (seg(False, "SA", 500, 101), False),
            (seg(True, "A", 101, 501), True), (seg(True, "PA", 101, 501, b"GET /\r\n"), True),
            (seg(False, "PA", 501, 108, b"OK\r\n"), False), (seg(True, "FA", 108, 505), True),
            (seg(False, "FA", 505, 109), False), (seg(True, "A", 109, 506), True)]


def outer_ip(from_client: bool, proto_layer, v6: bool = False):
    a, b = (OUT6_C, OUT6_S) if v6 else (OUT_C, OUT_S)
    src, dst = (a, b) if from_client else (b, a)
    return (IPv6(src=src, dst=dst) if v6 else IP(src=src, dst=dst)) / proto_layer


def udp(port: int, from_client: bool, client_port: int = 50000):
    return UDP(sport=client_port, dport=port) if from_client else UDP(sport=port,
                                                                      dport=client_port)


def eth_frame(payload) -> bytes:
    return bytes(Ether(**MAC) / payload)


def inner_eth(pkt: bytes) -> bytes:
    return bytes(Ether(**MAC, type=0x0800 if pkt[0] >> 4 == 4 else 0x86DD)) + pkt


def pcap(path, frames: list[bytes], linktype: int = 1) -> str:
    out = [struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, linktype)]
    for i, f in enumerate(frames):
        out.append(struct.pack("<IIII", 1_700_000_000 + i, 0, len(f), len(f)) + f)
    path.write_bytes(b"".join(out))
    return str(path)


def ayiya(inner: bytes) -> bytes:
    """AYIYA: identity length 2**4 = 16 bytes, SHA-1 signature (5 words), opcode 1 (forward)."""
    nxt = 41 if inner[0] >> 4 == 6 else 4
    return bytes([0x42, 0x52, 0x11, nxt]) + struct.pack("!I", 1_700_000_000) + bytes(16) \
        + bytes(20) + inner


def teredo_origin(inner: bytes) -> bytes:
    return struct.pack("!HH4s", 0, 50000 ^ 0xFFFF, bytes(b ^ 0xFF for b in (203, 0, 113, 9))) \
        + inner


def vntag(etype: int, payload: bytes) -> bytes:
    return struct.pack("!HHH", 0x8000, 0x0001, etype) + payload


# kind reported, outer ports on the client's / server's side (None: IP tunnel), the wrapper
ENCAPS: dict[str, tuple[str | None, tuple[int, int] | None, Wrap]] = {
    "ipip": ("ip", None, lambda p, c: eth_frame(outer_ip(c, IP(p)))),
    "4in6": ("ip", None, lambda p, c: eth_frame(outer_ip(c, IP(p), v6=True))),
    "gre-ip": ("gre", None, lambda p, c: eth_frame(outer_ip(c, GRE() / IP(p)))),
    "gre-key-seq-csum": ("gre", None, lambda p, c: eth_frame(outer_ip(
        c, GRE(chksum_present=1, key_present=1, key=7, seqnum_present=1,
               sequence_number=3) / IP(p)))),
    "gre-eth": ("gre", None, lambda p, c: eth_frame(outer_ip(c, GRE(proto=0x6558)
                                                                / Ether(inner_eth(p))))),
    "erspan-1": ("gre", None, lambda p, c: eth_frame(outer_ip(c, GRE(proto=0x88BE)
                                                                 / Ether(inner_eth(p))))),
    "erspan-2": ("gre", None, lambda p, c: eth_frame(outer_ip(
        c, GRE(proto=0x88BE, seqnum_present=1) / ERSPAN_II(session_id=5)
        / Ether(inner_eth(p))))),
    "erspan-3": ("gre", None, lambda p, c: eth_frame(outer_ip(
        c, GRE(proto=0x22EB) / ERSPAN_III(session_id=5) / Ether(inner_eth(p))))),
    "pptp": ("gre", None, lambda p, c: eth_frame(outer_ip(
        c, GRE(version=1, proto=0x880B, key_present=1) / (b"\xff\x03\x00\x21" + p)))),
    "gre-udp": ("gre", (50000, 4754), lambda p, c: eth_frame(outer_ip(c, udp(4754, c) / GRE()
                                                                       / IP(p)))),
    "vxlan": ("vxlan", (50000, 4789), lambda p, c: eth_frame(outer_ip(
        c, udp(4789, c) / VXLAN(vni=42) / Ether(inner_eth(p))))),
    "vxlan-v6": ("vxlan", (50000, 4789), lambda p, c: eth_frame(outer_ip(
        c, udp(4789, c) / VXLAN(vni=42) / Ether(inner_eth(p)), v6=True))),
    "geneve-eth": ("geneve", (50000, 6081), lambda p, c: eth_frame(outer_ip(
        c, udp(6081, c) / GENEVE(proto=0x6558, vni=9) / Ether(inner_eth(p))))),
    "geneve-ip": ("geneve", (50000, 6081), lambda p, c: eth_frame(outer_ip(
        c, udp(6081, c) / GENEVE(proto=0x0800, vni=9, optionlen=2,
                                 options=bytes(8)) / IP(p)))),
    "gtpu": ("gtpv1", (50000, 2152), lambda p, c: eth_frame(outer_ip(
        c, udp(2152, c) / GTP_U_Header(teid=77, gtp_type=255) / IP(p)))),
    "gtpu-seq": ("gtpv1", (50000, 2152), lambda p, c: eth_frame(outer_ip(
        c, udp(2152, c) / GTP_U_Header(teid=77, gtp_type=255, S=1, seq=9) / IP(p)))),
    "ayiya": ("ayiya", (50000, 5072), lambda p, c: eth_frame(outer_ip(
        c, udp(5072, c) / ayiya(p)))),
    "llc-snap": (None, None, lambda p, c: bytes(Dot3(**MAC) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3)
                                                / SNAP(OUI=0, code=0x0800) / IP(p))),
    "pbb": (None, None, lambda p, c: bytes(Ether(**MAC, type=0x88E7)) + struct.pack("!I", 1234)
            + inner_eth(p)),
    "vntag": (None, None, lambda p, c: bytes(Ether(**MAC, type=0x8926))
              + vntag(0x8100, bytes(Dot1Q(vlan=5, type=0x0800)) + p)),
}
V6_INNER = {
    "teredo": ("teredo", (50000, 3544), lambda p, c: eth_frame(outer_ip(c, udp(3544, c)
                                                                        / IPv6(p)))),
    # detected by its content on a port that is not Teredo's, as Zeek does
    "teredo-any-port": ("teredo", (50000, 40001), lambda p, c: eth_frame(outer_ip(
        c, udp(40001, c) / IPv6(p)))),
    "teredo-origin": ("teredo", (50000, 3544), lambda p, c: eth_frame(outer_ip(
        c, udp(3544, c) / teredo_origin(p)))),
    "ayiya-6": ("ayiya", (50000, 5072), lambda p, c: eth_frame(outer_ip(c, udp(5072, c)
                                                                        / ayiya(p)))),
    "6in4": ("ip", None, lambda p, c: eth_frame(outer_ip(c, IPv6(p)))),
    "6in6": ("ip", None, lambda p, c: eth_frame(outer_ip(c, IPv6(p), v6=True))),
}
ALL = {**{k: (v, False) for k, v in ENCAPS.items()}, **{k: (v, True) for k, v in V6_INNER.items()}}


def frames_for(name: str) -> list[bytes]:
    (kind, ports, wrap), v6 = ALL[name]
    return [wrap(p, c) for p, c in inner_packets(v6)]


def records(path: str, **zeek) -> list[dict]:
    return list(analyzer.analyze(path, zeek_options=zeek or None).records())


@pytest.mark.parametrize("name", list(ALL))
def test_inner_connection_and_its_tunnel(tmp_path, name):
    (kind, ports, _), v6 = ALL[name]
    recs = records(pcap(tmp_path / "t.pcap", frames_for(name)))
    assert len(recs) == 1, recs
    r = recs[0]
    (ca, cp), (sa, sp) = (CLIENT6, SERVER6) if v6 else (CLIENT, SERVER)
    fmt = (lambda a, p: f"[{a}]:{p}") if v6 else (lambda a, p: f"{a}:{p}")
    assert (r["client"], r["server"]) == (fmt(ca, cp), fmt(sa, sp))
    assert (r["zeek_state"], r["zeek_history"]) == ("SF", "ShADdFf")
    assert r["case"] == "graceful" and r["packets"] == 8
    if kind is None:  # a link layer, not a tunnel
        assert r["tunnel"] is None
        return
    outer6 = name.endswith("-v6") or name in ("4in6", "6in6")
    oc, os_ = (OUT6_C, OUT6_S) if outer6 else (OUT_C, OUT_S)
    if ports:
        ofmt = (lambda a, p: f"[{a}]:{p}") if outer6 else (lambda a, p: f"{a}:{p}")
        want = (ofmt(oc, ports[0]), ofmt(os_, ports[1]))
    else:
        want = (oc, os_)
    assert r["tunnel"] == {"kind": kind, "outer_client": want[0], "outer_server": want[1],
                           "depth": 1}


def test_server_first_orients_the_outer_endpoints(tmp_path):
    """The capture starts at the SYN/ACK: the outer endpoints still go by the inner roles."""
    frames = frames_for("vxlan")[1:]
    r = records(pcap(tmp_path / "t.pcap", frames))[0]
    assert r["server"] == "10.0.0.2:80"
    assert r["tunnel"]["outer_server"] == f"{OUT_S}:4789"


TSHARK = shutil.which("tshark")


@pytest.mark.skipif(TSHARK is None, reason="tshark not installed")
@pytest.mark.parametrize("name", ["ipip", "6in4", "gre-ip", "gre-eth", "erspan-2", "erspan-3",
                                  "pptp", "vxlan", "geneve-eth", "gtpu", "teredo", "llc-snap",
                                  "pbb", "vntag"])
def test_tshark_reads_the_same_inner_segments(tmp_path, name):
    path = pcap(tmp_path / "t.pcap", frames_for(name))
    out = subprocess.run([TSHARK, "-n", "-r", path, "-Y", "tcp", "-T", "fields",
                          "-e", "tcp.srcport", "-e", "tcp.dstport", "-e", "tcp.seq_raw",
                          "-e", "tcp.flags"], capture_output=True, text=True, timeout=120)
    theirs = [line.split("\t") for line in out.stdout.splitlines()]
    with open_native(path) as reader:
        ours = [[str(s.sport), str(s.dport), str(s.seq), f"0x{s.flags:04x}"] for s in reader]
    assert len(ours) == 8 and ours == theirs


def test_not_tunnels(tmp_path):
    """UDP on other ports, a VXLAN header without its I flag, GRE with routing, an AYIYA
    packet that is not a forward, a SNAP header with a vendor OUI: no segment."""
    inner = inner_packets()[0][0]
    frames = [
        eth_frame(outer_ip(True, udp(53, True) / IP(inner))),
        eth_frame(outer_ip(True, udp(4789, True) / VXLAN(flags=0) / Ether(inner_eth(inner)))),
        eth_frame(outer_ip(True, GRE(routing_present=1) / IP(inner))),
        eth_frame(outer_ip(True, udp(5072, True) / (bytes([0x42, 0x52, 0x12, 4]) + bytes(44)
                                                    + inner))),
        bytes(Dot3(**MAC) / LLC(dsap=0xAA, ssap=0xAA, ctrl=3) / SNAP(OUI=0x00000C, code=0x0800)
              / IP(inner)),
    ]
    path = pcap(tmp_path / "t.pcap", frames)
    with open_native(path) as reader:
        assert list(reader) == []
        assert reader.stats.non_tcp == len(frames)


def nest(inner: bytes, times: int):
    pkt = IP(inner)
    for _ in range(times):
        pkt = IP(src=OUT_C, dst=OUT_S) / pkt
    return pkt


def test_nesting_is_bounded(tmp_path):
    """Four tunnels are followed (Zeek's Tunnel::max_depth), the fifth is not; the record says
    how deep the connection was."""
    syn = inner_packets()[0][0]
    path = pcap(tmp_path / "t.pcap", [eth_frame(nest(syn, 4)), eth_frame(nest(syn, 5))])
    with open_native(path) as reader:
        segs = list(reader)
        assert len(segs) == 1 and reader.stats.non_tcp == 1
    r = records(path)[0]
    assert r["tunnel"]["depth"] == 4 and r["tunnel"]["kind"] == "ip"


def test_vxlan_in_gre_names_the_innermost(tmp_path):
    frames = [eth_frame(outer_ip(c, GRE() / IP(src="172.16.0.1", dst="172.16.0.2")
                                 / udp(4789, c) / VXLAN(vni=1) / Ether(inner_eth(p))))
              for p, c in inner_packets()]
    r = records(pcap(tmp_path / "t.pcap", frames))[0]
    assert r["tunnel"] == {"kind": "vxlan", "outer_client": "172.16.0.1:50000",
                           "outer_server": "172.16.0.2:4789", "depth": 2}


def test_bad_outer_udp_checksum(tmp_path):
    """Zeek drops a UDP datagram with a bad checksum before its tunnel analyzers (a C for the
    inner connection here), unless run with -C."""
    frames = []
    for p, c in inner_packets():
        f = bytearray(eth_frame(outer_ip(c, udp(4789, c) / VXLAN(vni=1)
                                         / Ether(inner_eth(p)))))
        if not c:
            f[14 + 20 + 6] ^= 0x55  # the server's datagrams: UDP checksum wrong
        frames.append(bytes(f))
    path = pcap(tmp_path / "t.pcap", frames)
    r = records(path)[0]
    assert r["zeek_history"] == "ScADF" and r["zeek_state"] == "SH"
    r = records(path, ignore_checksums=True)[0]
    assert r["zeek_history"] == "ShADdFf"


@pytest.mark.parametrize("name", list(ALL))
def test_every_cut_is_read_safely(tmp_path, name):
    """The SYN's frame cut at every length: the decoder refuses or reads it, never more."""
    frame = frames_for(name)[0]
    cuts = [frame[:n] for n in range(len(frame) + 1)]
    path = pcap(tmp_path / "t.pcap", cuts)
    with open_native(path) as reader:
        segs = list(reader)
        stats = reader.stats
    assert stats.frames == len(cuts)
    whole = [s for s in segs if s.frame == len(cuts)]
    assert len(whole) == 1 and whole[0].flags == 0x02
    assert all(s.sport == 40000 and s.dport == 80 for s in segs)
