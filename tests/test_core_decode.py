"""The compiled decoder and record walker (analyzer/core/decode.pyx), the project's only one,
against truth.

Truth here is what does not come from the reader: frames built with scapy or packed from the
format specs (tests/capture_helpers.py), whose fields and header lengths are known; tshark, an
independent decoder, reading the same files; the record and block boundaries of the files the
tests write; and the same records in another container (gzip, pcapng of either byte order,
big-endian or nanosecond pcap), which must read the same. Frames are also decoded in memory that
ends at a guard page, so a read past the captured length crashes.
"""

from __future__ import annotations

import ctypes
import gzip
import io
import math
import mmap
import os
import pickle
import random
import shutil
import struct
import subprocess
import sys
import threading
from fractions import Fraction
from pathlib import Path

import pytest
from analyzer.core.decode import (
    count_segments,
    decode_frame,
    idb_interface,
    ip_offset,
    open_native,
    open_stream,
)

from analyzer import fuzz
from analyzer.capture.stats import ReadStats
from analyzer.errors import DamagedCapture, DamagedFrames, UnreadableCapture
from analyzer.segment import ACK
from tests.capture_helpers import (
    BE,
    LE,
    ng_block,
    ng_epb,
    ng_idb,
    ng_option,
    ng_pb,
    ng_shb,
    ng_spb,
    pcap_bytes,
    tcp_ip,
    write,
)
from tests.test_zeek_conformance import oracle_dir

REPO = Path(__file__).resolve().parent.parent
CAPTURES = sorted((REPO / "captures").glob("*.pcap"))
ORACLE_TRACES = sorted(p for p in (oracle_dir() / "traces").rglob("*") if p.is_file()) \
    if (oracle_dir() / "traces").is_dir() else []
FATES = ("tcp_segments", "icmp_errors", "non_tcp", "bad_ip_checksums", "truncated_frames",
         "malformed")  # every frame lands in exactly one
FUZZ_SEED = 2026  # analyzer.fuzz inputs (seed, index): deterministic
FUZZ_INPUTS = 1500
TSHARK = shutil.which("tshark")


def read(path: str, **kw):
    """(segments, reader) after reading the whole capture."""
    reader = open_native(path, **kw)
    return list(reader), reader


def assert_stats_add_up(reader, segs=None):
    st = reader.stats
    assert st.frames == sum(getattr(st, f) for f in FATES)
    if segs is not None:
        assert len(segs) == st.tcp_segments + st.icmp_errors


def assert_one_line(problem, path: str):
    text = str(problem)
    assert "\n" not in text and text.startswith(path), text


# --- frames -------------------------------------------------------------------------------------

def ether(ip: bytes, etype: int | None = None, tags: bytes = b"") -> bytes:
    if etype is None:
        etype = 0x0800 if ip[0] >> 4 == 4 else 0x86DD
    return b"\x02\0\0\0\0\x02\x02\0\0\0\0\x01" + tags + struct.pack("!H", etype) + ip


def vlan(tpid: int, vid: int) -> bytes:
    return struct.pack("!HH", tpid, vid)


def ip4_tcp(**kw) -> bytes:
    return bytes(tcp_ip(**kw))


def ip6_tcp(**kw) -> bytes:
    kw.setdefault("src", "2001:db8::1")
    kw.setdefault("dst", "2001:db8::2")
    return bytes(tcp_ip(**kw))


def _frames_by_link() -> list[tuple[str, int, bytes]]:
    """(name, link type, frame): every link layer and encapsulation the reader knows, and some
    it refuses."""
    from scapy.all import (
        ICMP,
        IP,
        TCP,
        UDP,
        ICMPv6DestUnreach,
        ICMPv6PacketTooBig,
        ICMPv6TimeExceeded,
        IPOption_Router_Alert,
        IPOption_RR,
        IPv6,
        IPv6ExtHdrDestOpt,
        IPv6ExtHdrFragment,
        IPv6ExtHdrHopByHop,
        IPv6ExtHdrRouting,
    )
    from scapy.layers.ipsec import AH

    v4 = ip4_tcp(seq=1, flags="PA", payload=b"hello", options=[("NOP", None), ("NOP", None),
                                                              ("Timestamp", (7, 8))])
    v6 = ip6_tcp(seq=2, flags="S", options=[("MSS", 1460), ("SAckOK", b""),
                                            ("Timestamp", (9, 10)), ("NOP", None),
                                            ("WScale", 7)])
    odd = ip4_tcp(seq=3, flags="A", payload=b"odd", options=[("WScale", 2), ("NOP", None),
                                                            ("Timestamp", (11, 12))])
    opts4 = bytes(IP(src="10.0.0.1", dst="10.0.0.2",
                     options=[IPOption_RR(routers=["1.2.3.4"]), IPOption_Router_Alert()])
                  / TCP(sport=1, dport=2, seq=4, flags="S") / b"xyz")
    frag1 = bytes(IP(src="10.0.0.1", dst="10.0.0.2", flags="MF") / TCP(seq=5, flags="PA")
                  / (b"a" * 40))
    frag2 = bytes(IP(src="10.0.0.1", dst="10.0.0.2", proto=6, frag=6) / (b"b" * 40))
    base6 = dict(src="fe80::1", dst="2001:db8:1::ff")
    chain = bytes(IPv6(**base6) / IPv6ExtHdrHopByHop() / IPv6ExtHdrFragment(offset=0, m=0, id=9)
                  / IPv6ExtHdrDestOpt() / TCP(sport=7, dport=8, seq=9, flags="F") / b"12345")
    routed = bytes(IPv6(**base6) / IPv6ExtHdrRouting(addresses=["2001:db8::99", "2001:db8::98"])
                   / TCP(sport=7, dport=8, seq=10, flags="S"))
    tcp_only = ip6_tcp(seq=11, flags="R", **base6)[40:]
    ah = bytes(IPv6(**base6, nh=51)) + bytes(AH(nh=6, payloadlen=4, spi=1, seq=1,
                                                icv=b"\0" * 12)) + tcp_only
    ah = ah[:4] + struct.pack("!H", len(ah) - 40) + ah[6:]
    frag6 = bytes(IPv6(**base6) / IPv6ExtHdrFragment(offset=0, m=1, id=10)
                  / TCP(sport=7, dport=8, seq=12, flags="PA") / (b"z" * 16))
    later6 = bytes(IPv6(**base6) / IPv6ExtHdrFragment(offset=4, m=0, nh=6, id=10) / (b"z" * 16))
    quoted4 = ip4_tcp(src="10.0.0.1", dst="10.0.0.2", sport=40000, dport=80, seq=5000, ack=6000,
                      flags="PA", payload=b"q" * 100, window=999)
    quoted6 = bytes(IPv6(src="2001:db8::1", dst="2001:db8::2") / IPv6ExtHdrDestOpt()
                    / TCP(sport=40001, dport=443, seq=7000, ack=8000, flags="A") / (b"r" * 200))
    icmps = [
        bytes(IP(src="192.0.2.254", dst="10.0.0.1", ttl=250) / ICMP(type=3, code=3)
              / quoted4[:28]),
        bytes(IP(src="192.0.2.254", dst="10.0.0.1") / ICMP(type=11, code=0) / quoted4[:60]),
        bytes(IP(src="192.0.2.254", dst="10.0.0.1") / ICMP(type=3, code=13) / quoted4),
        bytes(IP(src="192.0.2.254", dst="10.0.0.1") / ICMP(type=3, code=3) / bytes(
            IP(src="10.0.0.1", dst="10.0.0.3") / UDP(sport=1, dport=2))[:28]),
        bytes(IPv6(src="2001:db8:ff::1", dst="2001:db8::1") / ICMPv6DestUnreach(code=1)
              / quoted6[:88]),
        bytes(IPv6(src="2001:db8:ff::1", dst="2001:db8::1") / ICMPv6PacketTooBig(mtu=1280)
              / quoted6),
        bytes(IPv6(src="2001:db8:ff::1", dst="2001:db8::1") / ICMPv6TimeExceeded()
              / quoted6[:70]),
    ]
    frames = [
        ("eth-v4", 1, ether(v4)), ("eth-v6", 1, ether(v6)), ("eth-odd", 1, ether(odd)),
        ("eth-ipopts", 1, ether(opts4)), ("eth-frag1", 1, ether(frag1)),
        ("eth-frag2", 1, ether(frag2)), ("eth-v6chain", 1, ether(chain)),
        ("eth-routed", 1, ether(routed)), ("eth-ah", 1, ether(ah)),
        ("eth-frag6", 1, ether(frag6)), ("eth-later6", 1, ether(later6)),
        ("vlan", 1, ether(v4, tags=vlan(0x8100, 5))),
        ("qinq", 1, ether(v6, tags=vlan(0x88A8, 100) + vlan(0x8100, 5))),
        ("qinq-old", 1, ether(v4, tags=vlan(0x9100, 100) + vlan(0x8100, 5))),
        ("mpls", 1, ether(b"\x00\x01\x41\x40" + v4, etype=0x8847)),
        ("mpls2", 1, ether(b"\x00\x01\x40\x40\x00\x02\x01\x40" + v6, etype=0x8848)),
        ("mpls-nonip", 1, ether(b"\x00\x01\x41\x40" + b"\x00" * 40, etype=0x8847)),
        ("vlan-mpls", 1, ether(b"\x00\x01\x41\x40" + v4, tags=vlan(0x8100, 7), etype=0x8847)),
        ("pppoe", 1, ether(b"\x11\x00\x00\x01" + struct.pack("!HH", len(v4) + 2, 0x21) + v4,
                           etype=0x8864)),
        ("pppoe6", 1, ether(b"\x11\x00\x00\x01" + struct.pack("!HH", len(v6) + 2, 0x57) + v6,
                            etype=0x8864)),
        ("pppoe-lcp", 1, ether(b"\x11\x00\x00\x01\x00\x00\xc0\x21" + v4, etype=0x8864)),
        ("fabricpath", 1, ether(b"\x00\x01" + ether(v4), etype=0x8903)),
        ("802.3", 1, ether(v4, etype=0x0040)), ("arp", 1, ether(b"\0" * 28, etype=0x0806)),
        ("sll", 113, b"\0\0\0\1\0\6\2\0\0\0\0\1\0\0\x08\x00" + v4),
        ("sll-vlan", 113, b"\0\0\0\1\0\6\2\0\0\0\0\1\0\0\x81\x00" + vlan(0x86DD, 3)[2:]
         + b"\x86\xdd" + v6),
        ("sll2", 276, b"\x86\xdd\0\0\0\0\0\2\0\1\4\6\2\0\0\0\0\1\0\0" + v6),
        ("null-le", 0, struct.pack("<I", 2) + v4), ("null-be", 0, struct.pack(">I", 2) + v4),
        ("null-v6-24", 0, struct.pack("<I", 24) + v6),
        ("null-v6-30", 0, struct.pack(">I", 30) + v6),
        ("null-v6-10", 0, struct.pack("<I", 10) + v6),
        ("null-other", 0, struct.pack("<I", 7) + v4),
        ("loop", 108, struct.pack(">I", 2) + v4), ("loop-le", 108, struct.pack("<I", 28) + v6),
        ("raw", 101, v4), ("raw6", 101, v6), ("raw12", 12, v6), ("raw14", 14, v4),
        ("ipv4", 228, v4), ("ipv6", 229, v6), ("raw-junk", 101, b"\x10" + v4[1:]),
        ("unsupported", 105, v4), ("fcs-bits", 0x10000001, ether(v4)),
    ]
    frames += [(f"icmp{i}", 1, ether(f)) for i, f in enumerate(icmps)]
    return frames


FRAMES = _frames_by_link()


class Guarded:
    """A frame placed so that it ends where an inaccessible page begins: one byte read past its
    captured length is a segmentation fault."""

    def __init__(self):
        self.page = mmap.PAGESIZE
        self.mem = mmap.mmap(-1, 2 * self.page)
        addr = ctypes.addressof(ctypes.c_char.from_buffer(self.mem))
        libc = ctypes.CDLL(None, use_errno=True)
        libc.mprotect.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        if libc.mprotect(addr + self.page, self.page, 0) != 0:  # PROT_NONE
            pytest.skip("mprotect failed")

    def view(self, frame: bytes) -> memoryview:
        assert len(frame) <= self.page
        start = self.page - len(frame)
        self.mem[start:self.page] = frame
        return memoryview(self.mem)[start:self.page]


@pytest.fixture(scope="module")
def guarded():
    return Guarded()


# names of FRAMES that hold no TCP segment (and why), all others do
NOT_TCP = {
    "eth-frag2": "a later IPv4 fragment", "eth-later6": "a later IPv6 fragment",
    "mpls-nonip": "not IP after the bottom label", "pppoe-lcp": "PPP LCP",
    "802.3": "an 802.3 length, not an ethertype", "arp": "ARP",
    "null-other": "address family 7", "loop-le": "LOOP is network order: family 0x1c000000",
    "raw-junk": "IP version 1", "unsupported": "link type 105 is not decoded",
    "icmp3": "an ICMP error quoting UDP",
}


# frames where tshark's decoding differs from the reader's, and why
TSHARK_DIFFERS = {
    "null-v6-10": "tshark's NULL dissector knows the BSDs' AF_INET6 values, not Linux's 10",
    "fabricpath": "tshark takes a FabricPath frame's last 4 bytes as its FCS (this one has none)",
}


def test_frame_names_cover_not_tcp():
    assert set(NOT_TCP) <= {name for name, _, _ in FRAMES}


@pytest.mark.parametrize("name,linktype,frame", FRAMES, ids=[f[0] for f in FRAMES])
def test_frame_cut_at_every_length(guarded, name, linktype, frame):
    """Each frame, captured up to every length, read from memory that ends at a guard page:
    one fate per frame; no segment until the headers are all there (for TCP: exactly the
    frame less its payload), then the full frame's segment at every longer cut, only its
    checksum unknown."""
    for check in (False, True):
        full, counts = decode_frame(guarded.view(frame), linktype, check)
        assert sum(counts.get(f, 0) for f in FATES) == 1, (name, counts)
        if name in NOT_TCP:
            assert full is None and counts == {"non_tcp": 1}, (name, NOT_TCP[name])
            continue
        assert full is not None, name
        first = None
        for cut in range(len(frame)):
            seg, counts = decode_frame(guarded.view(frame[:cut]), linktype, check)
            assert sum(counts.get(f, 0) for f in FATES) == 1, (name, cut, counts)
            if seg is None:
                assert first is None, (name, cut, "a segment at a shorter cut")
                assert set(counts) <= {"truncated_frames", "non_tcp"}, (name, cut, counts)
                continue
            first = cut if first is None else first
            if full.icmp_kind is None:
                assert seg.checksum_ok is None and counts == {"tcp_segments": 1}
                seg.checksum_ok = full.checksum_ok
                assert seg == full, (name, cut)
            else:
                quoted = ("src", "sport", "dst", "dport", "seq", "icmp_kind", "icmp_from")
                assert [getattr(seg, k) for k in quoted] == [getattr(full, k) for k in quoted]
        if full.icmp_kind is None:
            # the headers end where the payload (its length from the IP header) begins
            assert (first if first is not None else len(frame)) == len(frame) \
                - full.payload_len, name


def test_ip_offset():
    v4 = ip4_tcp(seq=1)
    assert ip_offset(ether(v4), 1) == 14
    assert ip_offset(ether(v4, tags=vlan(0x8100, 5)), 1) == 18
    assert ip_offset(b"\0\0\0\1\0\6\2\0\0\0\0\1\0\0\x08\x00" + v4, 113) == 16
    assert ip_offset(struct.pack("<I", 2) + v4, 0) == 4
    assert ip_offset(v4, 101) == 0
    assert ip_offset(v4, 105) == ip_offset(b"", 1) == ip_offset(ether(b"\0" * 28, 0x0806), 1) \
        == -1


def _tshark_fields(path: str) -> dict[int, dict]:
    """tshark's decoding, per frame holding TCP (the innermost header: the quoted one of an
    ICMP error)."""
    names = ["frame.number", "ip.src", "ip.dst", "ipv6.src", "ipv6.dst", "tcp.srcport",
             "tcp.dstport", "tcp.seq_raw", "tcp.ack_raw", "tcp.flags", "tcp.len",
             "frame.protocols"]
    # (no reassembly: a first fragment's TCP header is shown as it is)
    cmd = [TSHARK, "-n", "-o", "ip.defragment:FALSE", "-o", "ipv6.defragment:FALSE", "-r", path,
           "-T", "fields", "-E", "separator=\t", "-E", "occurrence=l"]
    for n in names:
        cmd += ["-e", n]
    out = subprocess.run(cmd, capture_output=True, text=True, timeout=120, check=True).stdout
    view = {}
    for line in out.splitlines():
        f = dict(zip(names, line.split("\t"), strict=True))
        if not f["tcp.srcport"]:
            continue
        view[int(f["frame.number"])] = f
    return view


def _agrees(seg, f, payload: bool = True) -> list[str]:
    """Where a segment differs from tshark's fields of its frame (those tshark shows: of a
    quoted header cut short, the ports alone)."""
    v6 = seg.ip_version == 6
    pairs = [(seg.src, f["ipv6.src" if v6 else "ip.src"]),
             (seg.dst, f["ipv6.dst" if v6 else "ip.dst"]),
             (seg.sport, int(f["tcp.srcport"])), (seg.dport, int(f["tcp.dstport"]))]
    if f["tcp.seq_raw"]:
        pairs.append((seg.seq, int(f["tcp.seq_raw"])))
    if f["tcp.flags"]:
        pairs.append((seg.flags, int(f["tcp.flags"], 16) & 0xFF))
        if seg.flags & ACK and f["tcp.ack_raw"]:
            pairs.append((seg.ack, int(f["tcp.ack_raw"])))
    if payload and seg.icmp_kind is None and f["tcp.len"]:  # (not shown for a first fragment)
        pairs.append((seg.payload_len, int(f["tcp.len"])))
    got, want = [p[0] for p in pairs], [p[1] for p in pairs]
    return [] if got == want else [f"frame {seg.frame}: {got} != tshark {want}"]


needs_tshark = pytest.mark.skipif(TSHARK is None, reason="tshark not installed")


@needs_tshark
def test_frames_against_tshark(tmp_path):
    """Every full frame, one pcapng interface per link type: the reader finds a segment in
    exactly the frames where tshark finds TCP (its not-TCP frames named above), with tshark's
    fields."""
    lts = sorted({lt & 0xFFFF for _, lt, _ in FRAMES})
    blob = ng_shb() + b"".join(ng_idb(lt) for lt in lts)
    blob += b"".join(ng_epb(lts.index(lt & 0xFFFF), 1000 + i, f)
                     for i, (_, lt, f) in enumerate(FRAMES))
    path = write(tmp_path / "all.pcapng", blob)
    segs, reader = read(path)
    assert_stats_add_up(reader, segs)
    view = _tshark_fields(path)
    names = {i + 1: name for i, (name, _, _) in enumerate(FRAMES)}
    # tshark shows the fields of the TCP header an ICMP error quotes, and decodes link type
    # 105 (802.11) its own way: neither is a TCP segment of the capture
    assert {s.frame for s in segs} == {n for n in names if names[n] not in NOT_TCP}
    assert {n for n in view if names[n] not in NOT_TCP} == {
        s.frame for s in segs if names[s.frame] != "null-v6-10"}
    bad = [d for s in segs if names[s.frame] not in TSHARK_DIFFERS
           for d in _agrees(s, view[s.frame])]
    assert bad == [], bad


@needs_tshark
@pytest.mark.parametrize("path", CAPTURES, ids=[p.name for p in CAPTURES])
def test_captures_against_tshark(path):
    """The lab's captures: a segment for each frame where tshark finds TCP, with its fields."""
    segs, reader = read(str(path))
    assert segs and reader.problems == [] and reader.notes == []
    assert_stats_add_up(reader, segs)
    view = _tshark_fields(str(path))
    icmp = {s.frame for s in segs if s.icmp_kind is not None}
    assert {s.frame for s in segs} - icmp == set(view) - icmp
    assert [d for s in segs for d in _agrees(s, view[s.frame])] == []


# traces where tshark's payload lengths differ from the reader's, and why
PAYLOAD_DIFFERS = {
    "pppoe-over-qinq.pcap": "PPPoE's length field (42) is 6 bytes short of the IP total length "
                            "(46): tshark cuts the IP packet at PPPoE's length, the reader "
                            "takes the IP header's",
}


@needs_tshark
@pytest.mark.skipif(not ORACLE_TRACES, reason="zeek oracle traces absent")
def test_oracle_traces_against_tshark():
    """Zeek's regression traces (many link layers, damage, tunnels): every segment the reader
    gives is the TCP header tshark shows in that frame (for a tunnel, the reader's is the
    outer one, which tshark shows only when nothing inside is TCP)."""
    bad = []
    checked = 0
    for path in ORACLE_TRACES:
        try:
            segs, reader = read(str(path), check_ip_checksums=True)
        except UnreadableCapture as exc:
            assert_one_line(exc, str(path))
            continue
        assert_stats_add_up(reader, segs)
        for p in reader.problems:
            assert_one_line(p, str(path))
        try:
            view = _tshark_fields(str(path))
        except subprocess.CalledProcessError:
            continue  # (tshark refuses a damaged file that the reader reads up to the damage)
        payload = path.name not in PAYLOAD_DIFFERS
        for s in segs:
            if s.frame in view and not _agrees(s, view[s.frame], payload):
                checked += 1
            elif s.frame in view and s.icmp_kind is None and not _tunnelled(view[s.frame]):
                bad.append((path.name, _agrees(s, view[s.frame], payload)[0]))
            elif s.frame not in view and "tunnels" not in path.parts:
                # (tshark takes Teredo and AYIYA only on their ports, Zeek and the reader also
                # by content: tests/test_tunnels.py holds the tunnels to scapy and tshark)
                bad.append((path.name, f"frame {s.frame}: tshark finds no TCP"))
    assert checked > 3000  # segments compared field by field
    assert bad == [], bad


def _tunnelled(f) -> bool:
    """tshark sees more than one IP header in the frame (a tunnel)."""
    layers = f["frame.protocols"].split(":")
    return layers.count("ip") + layers.count("ipv6") > 1


# --- the same records in another container ------------------------------------------------------

def _conversion_seeds() -> list[Path]:
    small = [p for p in ORACLE_TRACES if p.stat().st_size < 400_000]
    return CAPTURES[::4] + small[::3]


def _rewritten(data: bytes, endian: str, nanos: bool) -> bytes | None:
    lay = fuzz.pcap_layout(data)
    if lay is None:
        return None
    recs = fuzz.pcap_records(data, lay)
    if nanos and not lay.nanos:
        recs = [(s, f * 1000, fr) for s, f, fr in recs]
    return fuzz.pcap_file(recs, lay.linktype, nanos or lay.nanos, endian, lay.snaplen)


@pytest.mark.parametrize("path", _conversion_seeds(), ids=lambda p: p.name)
def test_conversions(tmp_path, path):
    """gzip, pcapng (both byte orders), big-endian and nanosecond pcap, and gzip of pcapng, of
    real captures, read the same segments (timestamps included) and counters as the original;
    gzip cut short reads a prefix of them, then one line of damage."""
    data = path.read_bytes()
    try:
        want, ref = read(str(path))
    except UnreadableCapture:
        pytest.skip("the original does not open")
    counts = {f: getattr(ref.stats, f) for f in (*FATES, "frames", "link_types",
                                                 "bad_tcp_checksums", "offloaded_checksums")}
    variants = {"gz": gzip.compress(data)}
    if data[:4] in fuzz.PCAP_MAGICS and not ref.problems:
        variants["ng"] = fuzz.pcap_to_pcapng(data)
        variants["ng-be"] = fuzz.pcap_to_pcapng(data, big_endian=True)
        variants["ng-gz"] = gzip.compress(variants["ng"])
        variants["be"] = _rewritten(data, BE, False)
        variants["be-ns"] = _rewritten(data, BE, True)
        variants["le-ns"] = _rewritten(data, LE, True)
    for name, blob in variants.items():
        segs, reader = read(write(tmp_path / f"{name}.bin", blob))
        assert segs == want, name
        assert {f: getattr(reader.stats, f) for f in counts} == counts, name
        assert reader.stats.compressed == name.endswith("gz")
        assert reader.stats.format == ("pcapng" if name.startswith("ng") else ref.stats.format)
        assert [type(p) for p in reader.problems] == [type(p) for p in ref.problems], name
    z = variants["gz"]
    for cut in (len(z) - 1, len(z) - 8, len(z) * 2 // 3, len(z) // 3, 30, 11):
        p = write(tmp_path / "cut.gz", z[:max(cut, 2)])
        try:
            segs, reader = read(p)
        except UnreadableCapture as exc:
            assert_one_line(exc, p)
            continue
        assert segs == want[:len(segs)], cut
        assert reader.problems and isinstance(reader.problems[-1], DamagedCapture), cut
        for problem in reader.problems:
            assert_one_line(problem, p)


# --- pcapng and pcap structure ------------------------------------------------------------------

def syn(seq: int, **kw) -> bytes:
    return ether(ip4_tcp(seq=seq, flags="S", **kw))


def _exact_ts(ticks: int, units: int, offset: int = 0) -> Fraction:
    return Fraction(ticks, units) + offset


def _close(ts: float, exact: Fraction) -> bool:
    """``ts`` is ``exact`` to within the rounding of a double (a few ulps)."""
    return abs(Fraction(ts) - exact) <= 4 * Fraction(math.ulp(float(exact)))


def test_pcapng_interfaces_resolutions_and_blocks(tmp_path):
    """Interfaces with every kind of if_tsresol (powers of 10 and of 2, up to 10**127 and
    2**60 ticks a second), if_tsoffset positive and negative, simple and obsolete packet
    blocks, unknown blocks skipped, a packet of an interface never described."""
    a, c, d, e = syn(1), syn(3), syn(4), syn(5)
    b = ip6_tcp(seq=2, flags="S")
    tsopt = ng_option(14, struct.pack("<q", -1_000_000_000))
    idb_neg = ng_block(1, struct.pack("<HHI", 1, 0, 0) + ng_option(9, b"\x80\x14") + tsopt
                       + ng_option(0, b""))
    # interfaces 0..10: (link type, ticks per second, seconds added)
    ifaces = [(1, 10**6, 0), (101, 10**9, 1000), (1, 2**20, 0), (1, 10**19, 0), (1, 2**60, 0),
              (1, 1, 0), (1, 10**16, 0), (1, 10**127, 0),
              (1, 1, -1_000_000_000),  # (if_tsresol's first byte 0x80: 2**0)
              (1, 10**6, 0)]
    packets = [(0, 1_500_000_250_000, a), (1, 7_000_000_001, b), (2, 3 * 2**20 + 2**19, d),
               (3, 2**64 - 1, a), (4, 2**64 - 12345, a), (5, 1_700_000_000, a),
               (6, 2**63 + 2**40 + 77, a), (7, 2**64 - 3, a), (8, 123_456_789, a),
               (9, 5, a), (3, 98_765_432_123_456_789, a), (1, 2**53 + 1, b)]
    blob = b"".join([
        ng_shb(), ng_idb(1), ng_idb(101, tsresol=9, tsoffset=1000), ng_idb(1, tsresol=0x80 | 20),
        ng_idb(1, tsresol=19), ng_idb(1, tsresol=0x80 | 60), ng_idb(1, tsresol=0),
        ng_idb(1, tsresol=16), ng_idb(1, tsresol=127), idb_neg, ng_idb(1, snaplen=40),
        ng_epb(*packets[0]), ng_block(0x0BAD0BAD, b"custom"),
        ng_epb(*packets[1]), ng_block(5, b"\0" * 8), ng_spb(c),
        ng_epb(*packets[2]), ng_pb(0, 2_000_000, e),
        *[ng_epb(*p) for p in packets[3:]],
        ng_epb(11, 5, a), ng_spb(a),
    ])
    path = write(tmp_path / "f.pcapng", blob)
    segs, reader = read(path)
    # frames: 1 a, 2 b, 3 spb c, 4 d, 5 pb e, 6..14 the rest, 15 interface 11, 16 spb a
    assert [s.frame for s in segs] == [1, 2, 3, 4, 5, *range(6, 15), 16]
    assert [s.seq for s in segs] == [1, 2, 3, 4, 5, *[p[2] == a and 1 or 2
                                                      for p in packets[3:]], 1]
    exact = {}
    for frame, (iface, ticks, _) in zip([1, 2, 4, *range(6, 15)],
                                        [packets[0], packets[1], *packets[2:]], strict=True):
        _, units, offset = ifaces[iface]
        exact[frame] = _exact_ts(ticks, units, offset)
    exact[5] = _exact_ts(2_000_000, 10**6)
    by_frame = {s.frame: s for s in segs}
    for frame, ts in exact.items():
        assert _close(by_frame[frame].ts, ts), (frame, by_frame[frame].ts, float(ts))
    assert by_frame[3].ts == by_frame[2].ts  # a simple packet block: the last time seen
    assert by_frame[16].ts == by_frame[14].ts  # (the undescribed interface's frame has none)
    assert reader.stats.skipped_blocks == 2 and reader.notes == []
    assert reader.stats.link_types == {1: 13, 101: 2, -1: 1}
    [p] = reader.problems  # interface 11 was never described: a damaged frame, reading goes on
    assert isinstance(p, DamagedFrames) and (p.frame, p.count, p.offset) == (15, 1, None)
    assert "undescribed interface" in p.message


def test_pcapng_sections_byte_orders_and_snaplen(tmp_path):
    """A big-endian section with a snaplen (it cuts the simple packet block, not the others),
    a little-endian one at millisecond resolution, a third one whose packets come before its
    interfaces, an unsupported link type."""
    v4 = ip4_tcp(seq=10)
    blob = b"".join([
        ng_shb(BE), ng_idb(1, endian=BE, snaplen=50), ng_epb(0, 1_000_000, syn(9), endian=BE),
        ng_spb(syn(11), endian=BE), ng_pb(0, 5, syn(12), endian=BE),
        ng_shb(LE), ng_idb(228, tsresol=3), ng_epb(0, 2500, v4), ng_epb(1, 1, v4),
        ng_shb(LE), ng_spb(syn(13)), ng_epb(0, 7, syn(14)), ng_idb(105), ng_epb(0, 8, v4),
        ng_idb(1), ng_epb(1, 9, syn(15)),
    ])
    segs, reader = read(write(tmp_path / "s.pcapng", blob))
    assert [(s.frame, s.seq, s.ts) for s in segs] == [(1, 9, 1.0), (3, 12, 5e-6), (4, 10, 2.5),
                                                      (9, 15, 9e-6)]
    st = reader.stats
    assert (st.frames, st.truncated_frames, st.non_tcp) == (9, 1, 4)
    assert st.link_types == {1: 4, 228: 1, -1: 3, 105: 1}
    [p] = reader.problems  # frames 5 (interface 1 of two), 6 and 7 (before any interface)
    assert isinstance(p, DamagedFrames) and (p.frame, p.count) == (5, 3)
    [note] = reader.notes
    assert "link type 105" in note and "frame 8" in note


def test_idb_interface():
    """An IDB body as the reader takes it: link type (low 16 bits), snaplen, if_tsresol and
    if_tsoffset (the first of each), in either byte order."""
    for endian, little in ((LE, True), (BE, False)):
        block = ng_idb(113, snaplen=96, tsresol=0x80 | 10, tsoffset=-7, endian=endian)
        body = block[8:-4]
        assert idb_interface(body, little) == (113, 96, 1024, -7)
        assert idb_interface(ng_idb(1, endian=endian)[8:-4], little) == (1, 0, 10**6, 0)
    with pytest.raises(ValueError):
        idb_interface(b"\1\0\0", True)


def _shb_raw(endian: str, major: int = 1, minor: int = 0, extra: bytes = b"") -> bytes:
    body = struct.pack(endian + "IHHq", 0x1A2B3C4D, major, minor, -1) + extra
    return ng_block(0x0A0D0D0A, body, endian)


def _pcapng_damages() -> dict[str, tuple[bytes, list[int], str | None]]:
    """name -> (file, sequence numbers read, what the one damage line says; None: none). The
    damage is in the block after the first packet: byte len(head), frame 2."""
    head = ng_shb() + ng_idb(1) + ng_epb(0, 1, syn(1))
    good = ng_epb(0, 2, syn(2))
    out = {}

    def mutate(name, fn, needle, tail=True):
        bad = bytearray(good)
        fn(bad)
        out[name] = (head + bytes(bad) + (ng_epb(0, 3, syn(3)) if tail else b""), [1], needle)

    n = len(good)
    mutate("trailer", lambda b: struct.pack_into("<I", b, n - 4, n + 4),
           f"trailing length {n + 4} differs from leading length {n}")
    mutate("len-not-4", lambda b: struct.pack_into("<I", b, 4, n + 2), f"impossible length {n + 2}")
    mutate("len-small", lambda b: struct.pack_into("<I", b, 4, 8), "impossible length 8")
    mutate("len-huge", lambda b: struct.pack_into("<I", b, 4, 17 * 1024 * 1024),
           f"impossible length {17 * 1024 * 1024}")
    mutate("len-past-end", lambda b: struct.pack_into("<I", b, 4, 4096),
           f"truncated block of type 0x00000006: {n} of 4096 bytes present", tail=False)
    mutate("caplen-past-block", lambda b: struct.pack_into("<I", b, 20, 5000),
           "captured length 5000 exceeds the block")
    out["epb-short"] = (head + ng_block(6, b"\0" * 16), [1], "enhanced packet block too short")
    out["pb-short"] = (head + ng_block(2, b"\0" * 12), [1], "packet block too short")
    out["pb-caplen"] = (head + ng_block(2, struct.pack("<HHIIII", 0, 0, 0, 0, 99, 99)), [1],
                        "packet block: captured length 99 exceeds the block")
    out["spb-short"] = (head + ng_block(3, b""), [1], "simple packet block too short")
    out["idb-short"] = (head + ng_block(1, b"\1\0\0\0"), [1],
                        "interface description block too short")
    out["shb-bad-bom"] = (head + ng_block(0x0A0D0D0A, b"ABCD" + b"\0" * 12), [1],
                          "bad byte-order magic 41 42 43 44")
    out["shb-version"] = (head + _shb_raw(LE, major=2, minor=3), [1],
                          "unsupported pcapng version 2.3")
    out["shb-short"] = (head + struct.pack("<II", 0x0A0D0D0A, 20) + b"\x4d\x3c\x2b\x1a"
                        + b"\0" * 4 + struct.pack("<I", 20), [1],
                        "section header block too short (20 bytes)")
    out["shb-cut-bom"] = (head + b"\x0a\x0d\x0d\x0a\x1c\0\0\0\x4d\x3c", [1],
                          "truncated section header block")
    out["header-cut"] = (head + b"\x06\0\0\0\x20", [1], "truncated block header (5 of 8 bytes)")
    out["first-shb-long"] = (_shb_raw(BE, extra=ng_option(2, b"hardware", BE)
                                      + ng_option(0, b"", BE))
                             + ng_idb(1, endian=BE) + ng_epb(0, 1, syn(1), endian=BE), [1], None)
    out["idb-options-odd"] = (ng_shb() + ng_block(1, struct.pack("<HHI", 1, 0, 0)
                                                  + struct.pack("<HH", 9, 0)
                                                  + struct.pack("<HH", 9, 1) + b"\x03\0\0\0"
                                                  + struct.pack("<HH", 14, 4) + b"\1\2\3\4"
                                                  + struct.pack("<HH", 77, 200))
                              + ng_epb(0, 12345, syn(4)), [4], None)
    return out


PCAPNG_DAMAGES = _pcapng_damages()


@pytest.mark.parametrize("name", list(PCAPNG_DAMAGES))
def test_pcapng_damage(tmp_path, name):
    """Each kind of broken block: the packets before it are read, then one line naming the
    file, the frame and the block's byte offset says what is wrong."""
    blob, seqs, needle = PCAPNG_DAMAGES[name]
    path = write(tmp_path / f"{name}.pcapng", blob)
    segs, reader = read(path)
    assert [s.seq for s in segs] == seqs
    if needle is None:
        assert reader.problems == []
        return
    [p] = reader.problems
    head = len(ng_shb() + ng_idb(1) + ng_epb(0, 1, syn(1)))
    assert isinstance(p, DamagedCapture) and (p.offset, p.frame) == (head, 2), str(p)
    assert needle in p.message, p.message
    assert_one_line(p, path)


def test_idb_options_odd_resolution(tmp_path):
    """The first if_tsresol counts even when empty (then the default), a later one does not;
    an if_tsoffset of 4 bytes is ignored; an option running past the block ends the list."""
    blob = PCAPNG_DAMAGES["idb-options-odd"][0]
    [seg], _ = read(write(tmp_path / "o.pcapng", blob))
    assert seg.ts == pytest.approx(12345 / 10**6, abs=1e-15)


def _small_files() -> dict[str, tuple[bytes, list[int], list[int]]]:
    """kind -> (file, start offset of each packet record or block, sequence number each holds;
    the other blocks, before the first packet, only describe)."""
    frames = [syn(1), syn(2, payload=b"abc"), ether(ip6_tcp(seq=3, payload=b"defgh")),
              syn(4, options=[("Timestamp", (1, 2))])]
    seqs = [1, 2, 3, 4]
    out = {}
    for kind, endian, nanos in (("pcap", LE, False), ("pcap-be", BE, True)):
        blob = pcap_bytes([(1, 5, f) for f in frames], endian=endian, nanos=nanos)
        starts = [24]
        for f in frames[:-1]:
            starts.append(starts[-1] + 16 + len(f))
        out[kind] = (blob, starts, seqs)
    blocks = [ng_shb(), ng_idb(1, tsresol=9), ng_block(0x0BAD, b"x" * 5), ng_epb(0, 0, frames[0]),
              ng_epb(0, 1, frames[1]), ng_spb(frames[2]), ng_pb(0, 9, frames[3])]
    starts = [sum(len(b) for b in blocks[:i]) for i in range(3, len(blocks))]
    out["pcapng"] = (b"".join(blocks), starts, seqs)
    return out


SMALL = _small_files()


def _expected_cut(kind: str, cut: int):
    """What reading the first ``cut`` bytes must give, from the record boundaries: "unreadable"
    inside the file header (pcapng: the first section header block), else (sequence numbers,
    (offset, frame) of the one damage line, or None on a boundary)."""
    blob, starts, seqs = SMALL[kind]
    ends = starts[1:] + [len(blob)]
    header_end = 24 if kind.startswith("pcap") and kind != "pcapng" else len(ng_shb())
    if cut < header_end:
        return "unreadable"
    whole = [i for i, end in enumerate(ends) if end <= cut]
    got = [seqs[i] for i in whole]
    boundaries = {header_end, *ends, *([] if kind != "pcapng" else
                                       [len(ng_shb()) + len(ng_idb(1, tsresol=9)),
                                        starts[0]])}
    if cut in boundaries:
        return got, None
    if kind == "pcapng" and cut < starts[0]:  # inside the IDB or the unknown block
        prev = max(b for b in boundaries if b < cut)
        return got, (prev, 1)
    return got, (starts[len(whole)], len(whole) + 1)


@pytest.mark.parametrize("kind", list(SMALL))
def test_every_truncation(tmp_path, kind):
    """A small file cut at every byte: the records wholly present are read; a cut inside a
    record is one line of damage at that record's byte offset, naming its frame; a cut inside
    the file header cannot be read. The same cut gzip-compressed reads the same."""
    blob = SMALL[kind][0]
    for cut in range(len(blob) + 1):
        want = _expected_cut(kind, cut)
        for compress in (False, True):
            data = gzip.compress(blob[:cut], mtime=0) if compress else blob[:cut]
            path = write(tmp_path / ("t.gz" if compress else "t.bin"), data)
            if want == "unreadable":
                with pytest.raises(UnreadableCapture) as ei:
                    open_native(path)
                assert_one_line(ei.value, path)
                continue
            segs, reader = read(path)
            assert [s.seq for s in segs] == want[0], (cut, compress)
            if want[1] is None:
                assert reader.problems == [], (cut, compress)
                continue
            [p] = reader.problems
            assert isinstance(p, DamagedCapture) and "truncated" in p.message
            assert (p.offset, p.frame) == want[1], (cut, compress, str(p))
            assert_one_line(p, path)
    z = gzip.compress(blob, mtime=0)
    want = [s.seq for s in read(write(tmp_path / "whole", blob))[0]]
    for cut in range(len(z)):  # the compressed stream cut short: a prefix, then damage
        path = write(tmp_path / "z.gz", z[:cut])
        try:
            segs, reader = read(path)
        except UnreadableCapture as exc:
            assert_one_line(exc, path)
            continue
        assert [s.seq for s in segs] == want[:len(segs)]
        assert len(reader.problems) == 1 and isinstance(reader.problems[0], DamagedCapture)
        assert_one_line(reader.problems[0], path)


def test_damaged_gzip_streams(tmp_path):
    """Corrupted deflate data (zlib throws away what its failing call decompressed: the reader
    walks the file again a record at a time), a wrong CRC, trailing garbage: the records
    before the damage, then one line of damage; two members and zero padding: everything."""
    recs = [(1, i, syn(i, payload=(f"GET /item/{i} HTTP/1.1\r\nHost: x{i % 7}\r\n\r\n"
                                   * 8).encode())) for i in range(1500)]
    big = pcap_bytes(recs)
    z = gzip.compress(big, mtime=0)
    whole = list(range(1500))
    blobs = {"crc": z[:-8] + b"\0\0\0\0" + z[-4:], "garbage": z + b"garbage!"}
    for at in [*range(50, 2000, 97), *range(2000, len(z) - 20, len(z) // 10)]:
        bad = bytearray(z)
        bad[at] ^= 0xFF
        blobs[f"flip{at}"] = bytes(bad)
    zlib_errors = 0
    for name, blob in blobs.items():
        path = write(tmp_path / f"{name}.gz", blob)
        try:
            segs, reader = read(path)
        except UnreadableCapture as exc:  # (damage in the first deflate block)
            assert_one_line(exc, path)
            continue
        assert check_invariants(path, False) == [], name
        p = reader.problems[-1]  # (a flip zlib does not notice may also damage frames first)
        assert isinstance(p, DamagedCapture), name
        if not name.startswith("flip"):
            assert [s.seq for s in segs] == whole[:len(segs)] and p.frame == len(segs) + 1
        zlib_errors += ": read error: Error -3 while decompressing" in str(p)
        # what zlib gives before the error, fed a little at a time, is read in full
        out = _inflate_before_error(blob)
        if out is not None and len(reader.problems) == 1 and "Error -3" in str(p):
            # never more records than zlib gives before its error (and at most the records of
            # one read of the gzip module fewer: what the failing call decompressed is lost)
            assert _whole_records(out) - 40 <= reader.stats.frames <= _whole_records(out), name
    assert zlib_errors >= 3  # where the walk again is needed
    # two members, and zeros after the member (padding gzip allows): all of it, no damage
    for name, blob in (("members", gzip.compress(big[:5000]) + gzip.compress(big[5000:])),
                       ("zeros", z + b"\0" * 16)):
        segs, reader = read(write(tmp_path / f"{name}.gz", blob))
        assert [s.seq for s in segs] == whole and reader.problems == [], name


def _inflate_before_error(blob: bytes) -> bytes | None:
    """The gzip member's data zlib decompresses before an error, fed 64 bytes at a time
    (None: no zlib error)."""
    import zlib

    d = zlib.decompressobj(16 + zlib.MAX_WBITS)
    out = []
    try:
        for i in range(0, len(blob), 64):
            out.append(d.decompress(blob[i:i + 64]))
    except zlib.error:
        return b"".join(out)
    return None


def _whole_records(data: bytes) -> int:
    lay = fuzz.pcap_layout(data + bytes(16))
    if lay is None:
        return 0
    n, pos = 0, 24
    while pos + 16 <= len(data):
        caplen = struct.unpack_from("<I", data, pos + 8)[0]
        if pos + 16 + caplen > len(data):
            break
        n, pos = n + 1, pos + 16 + caplen
    return n


def test_pcap_damage(tmp_path):
    """A record length over the bound (libpcap's 256 KiB, raised by a larger snaplen), a record
    cut by the end of the file, an original length that lies (ignored)."""
    frames = [syn(1), syn(2, payload=b"abc"), syn(3, payload=b"defgh")]
    blob = pcap_bytes([(1, 0, f) for f in frames])
    third = 24 + (16 + len(frames[0])) + (16 + len(frames[1]))
    absurd = bytearray(blob)
    struct.pack_into("<I", absurd, third + 8, 50_000_000)
    big_snap = bytearray(pcap_bytes([(1, 0, f) for f in frames], snaplen=1 << 22))
    struct.pack_into("<I", big_snap, third + 8, 300_000)
    cases = {
        "absurd": (bytes(absurd), "record length 50000000 is absurd (snaplen 65535)"),
        "snaplen-raises-limit": (bytes(big_snap), "truncated record: "
                                 f"{len(frames[2])} of 300000 bytes present"),
    }
    for name, (data, message) in cases.items():
        path = write(tmp_path / f"{name}.pcap", data)
        segs, reader = read(path)
        assert [s.seq for s in segs] == [1, 2]
        [p] = reader.problems
        assert (p.offset, p.frame, p.message) == (third, 3, message), name
        assert_one_line(p, path)
    segs, reader = read(write(tmp_path / "w.pcap", pcap_bytes([(1, 0, f, 3) for f in frames])))
    assert [s.payload_len for s in segs] == [0, 3, 5] and reader.problems == []


def test_damaged_frame_ipv6_and_ipv4_total_zero(tmp_path):
    """An IPv6 TCP header longer than its packet is a damaged frame (named, skipped); an IPv4
    total length of 0 (segmentation offload) means the captured length."""
    v6 = bytearray(ether(ip6_tcp(seq=3)))
    v6[14 + 40 + 12] = 0xF0
    tso = bytearray(syn(9, payload=b"zz"))
    struct.pack_into("!H", tso, 16, 0)
    path = write(tmp_path / "l.pcap", pcap_bytes([(1, 0, bytes(v6)), (2, 0, syn(1)),
                                                  (3, 0, bytes(tso))]))
    segs, reader = read(path)
    assert [(s.frame, s.seq, s.payload_len) for s in segs] == [(2, 1, 0), (3, 9, 2)]
    [p] = reader.problems
    assert (p.frame, p.count, p.offset) == (1, 1, 24)
    assert p.problem == "TCP header length 60 exceeds the 20 bytes left in the IP packet"


def test_large_records_grow_the_buffer(tmp_path):
    """Records larger than the read buffer (pcap up to 4 MiB with a large snaplen, pcapng blocks
    up to 16 MiB), jumbo IPv6 segments whose length is the captured one."""
    def jumbo(n: int, seq: int) -> bytes:
        tcp = struct.pack("!HHIIBBHHH", 1, 2, seq, 0, 0x50, 0x18, 512, 0, 0) + b"j" * n
        # payload length 0: the length is the captured one
        return struct.pack("!IHBB16s16s", 0x60000000, 0, 6, 64, bytes(15) + b"\1",
                           bytes(15) + b"\2") + tcp

    big = jumbo(4 * 1024 * 1024 - 100, 1)
    path = write(tmp_path / "big.pcap", pcap_bytes([(1, 0, ip4_tcp(seq=0)),
                                                    (2, 0, big), (3, 0, jumbo(70000, 2))],
                                                   linktype=101, snaplen=1 << 22))
    segs, reader = read(path)
    assert [(s.seq, s.payload_len) for s in segs] == [(0, 0), (1, 4 * 1024 * 1024 - 100),
                                                      (2, 70000)]
    assert reader.problems == []
    blob = ng_shb() + ng_idb(101) + ng_epb(0, 1, jumbo(6 * 1024 * 1024, 3)) + ng_epb(0, 2, big)
    for name, data in (("big.pcapng", blob), ("big.gz", gzip.compress(blob))):
        segs, reader = read(write(tmp_path / name, data))
        assert [(s.seq, s.payload_len) for s in segs] == [(3, 6 * 1024 * 1024),
                                                          (1, 4 * 1024 * 1024 - 100)]
        assert reader.problems == []


# --- opening --------------------------------------------------------------------------------------

def test_unreadable(tmp_path):
    """Nothing can be read: one line naming the file (or the name given), what is wrong, and
    byte 0 where a byte is meant."""
    cases = {
        write(tmp_path / "empty.pcap", b""): "empty file",
        str(tmp_path / "missing.pcap"): "no such file",
        str(tmp_path): "is a directory",
        write(tmp_path / "short.pcap", b"\xd4\xc3"): "file is too short to be a capture (2 bytes)",
        write(tmp_path / "junk.gz", gzip.compress(b"hello world")): "(starts with 68 65 6c 6c)",
        write(tmp_path / "empty.gz", gzip.compress(b"")): "empty file (after gzip",
        write(tmp_path / "short.gz", gzip.compress(b"ab")): "gzip-compressed data is too short",
        write(tmp_path / "badgz.gz", b"\x1f\x8b\x08\x00garbage-not-deflate"):
            "gzip data cannot be decompressed",
        write(tmp_path / "badbom.pcapng", b"\x0a\x0d\x0d\x0a\x1c\0\0\0XXXX"):
            "no valid byte-order magic (found 58 58 58 58)",
        write(tmp_path / "nobom.pcapng", b"\x0a\x0d\x0d\x0a\x1c\0"): "(found nothing)",
        write(tmp_path / "html", b"<html><body>not a capture</body></html>"):
            "not a pcap or pcapng file (starts with 3c 68 74 6d)",
        write(tmp_path / "hdr.pcap", pcap_bytes([])[:20]): "pcap file header is truncated",
        write(tmp_path / "shb-len.pcapng", _shb_raw(LE)[:4] + b"\x0d\0\0\0" + _shb_raw(LE)[8:]):
            "impossible length 13",
        write(tmp_path / "shb-cut.pcapng", _shb_raw(LE)[:20]): "truncated (20 of 28 bytes",
        write(tmp_path / "shb-trailer.pcapng", _shb_raw(LE)[:-4] + b"\0\0\0\0"):
            "trailing length 0 differs from leading length 28",
        write(tmp_path / "shb-version.pcapng", _shb_raw(BE, major=3, minor=1)):
            "unsupported pcapng version 3.1",
    }
    for path, needle in cases.items():
        for name in (None, "shown-name"):
            with pytest.raises(UnreadableCapture) as ei:
                open_native(path, name=name)
            assert needle in ei.value.message, (path, ei.value.message)
            assert ei.value.path == (name or path)
            assert_one_line(ei.value, name or path)
            if "no such" not in needle and "directory" not in needle:
                assert ei.value.offset is not None


STDIN_CODE = """
import sys
from analyzer.core.decode import open_native
r = open_native("-") if sys.argv[1] == "-" else open_native(sys.argv[1], name="-")
segs = list(r)
print(repr((segs, r.stats.values(), [str(p) for p in r.problems], r.notes)))
"""


def _outcome_via(which: str, blob: bytes, path: str) -> str:
    out = subprocess.run([sys.executable, "-c", STDIN_CODE, which], input=blob,
                         capture_output=True, cwd=REPO, timeout=120, check=True)
    return out.stdout.decode()


@pytest.mark.parametrize("kind", ["pcap", "pcapng"])
@pytest.mark.parametrize("compress", [False, True], ids=["plain", "gzip"])
def test_stdin(tmp_path, kind, compress):
    """Standard input (a pipe) reads as the same bytes in a file do: segments, counters,
    damage (the file cut short) and notes."""
    blob = SMALL[kind][0]
    blob = gzip.compress(blob) if compress else blob
    for data in (blob, blob[:-3]):
        path = write(tmp_path / "f.bin", data)
        via_pipe = _outcome_via("-", data, path)
        assert "Segment(" in via_pipe and f"'compressed': {compress}" in via_pipe
        assert via_pipe == _outcome_via(path, b"", path)


def test_stdin_streams_before_writer_finishes(monkeypatch):
    """Standard input: fill hands over what it decoded rather than wait on the pipe."""
    rfd, wfd = os.pipe()
    monkeypatch.setattr(sys, "stdin", io.TextIOWrapper(os.fdopen(rfd, "rb")))
    frames = [syn(1), syn(2), syn(3)]
    blob = pcap_bytes([(1, 0, f) for f in frames])
    first_end = 24 + 16 + len(frames[0])
    os.write(wfd, blob[:first_end])
    got = []

    def consume():
        reader = open_native("-")
        got.append(next(iter(reader)).seq)

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    t.join(10)
    try:
        assert got == [1]
    finally:
        os.write(wfd, blob[first_end:])
        os.close(wfd)
        t.join(10)


def test_open_stream_frames_as_they_arrive():
    """A capture tool's pcap stream (live capture): frames() hands each record over as it
    arrives, as (time, link type, bytes) from the file's records; damage ends it, named."""
    rfd, wfd = os.pipe()
    frames = [syn(1), bytes(ip4_tcp(seq=2)), syn(3)]
    recs = [(7, 250_000_000, frames[0]), (8, 1, frames[1]), (9, 0, frames[2])]
    blob = pcap_bytes(recs, linktype=1, nanos=True)
    first_end = 24 + 16 + len(frames[0])
    os.write(wfd, blob[:first_end])
    got = []
    done = threading.Event()
    stream = os.fdopen(rfd, "rb")
    reader = open_stream(stream, "tshark -i lo")

    def consume():
        for rec in reader.frames():
            got.append(rec)
            done.set()

    t = threading.Thread(target=consume, daemon=True)
    t.start()
    try:
        assert done.wait(10) and got == [(7.25, 1, frames[0])]
    finally:
        os.write(wfd, blob[first_end:] + b"\0" * 5)  # then a record header cut short
        os.close(wfd)
        t.join(10)
        stream.close()
    assert got == [(7.25, 1, frames[0]), (8 + 1e-9, 1, frames[1]), (9.0, 1, frames[2])]
    assert reader.stats.frames == 3
    [p] = reader.problems
    assert (p.offset, p.frame) == (len(blob), 4) and str(p).startswith("tshark -i lo")


# --- fill -----------------------------------------------------------------------------------------

def test_fill_in_small_batches_and_count():
    path = str(max(CAPTURES, key=lambda p: p.stat().st_size))
    whole = list(open_native(path).segments())
    for batch in (1, 2, 7, 4096):
        assert list(open_native(path).segments(batch)) == whole
    data = Path(path).read_bytes()
    records = fuzz.pcap_records(data, fuzz.pcap_layout(data))  # (the fuzzer's own walk)
    assert count_segments(path) == (len(whole), len(records))


# --- hostile input --------------------------------------------------------------------------------

def check_invariants(path: str, check: bool, same_as: bytes | None = None, tmp=None) -> list:
    """What must hold for any input: it opens or is refused in one line; every frame has one
    fate; the segments are those counted; problems are at most the damaged frames, then where
    reading stopped, each one line naming the file. ``same_as``: a file it must read alike."""
    try:
        reader = open_native(path, check_ip_checksums=check)
    except UnreadableCapture as exc:
        return [] if "\n" not in str(exc) and str(exc).startswith(path) else [str(exc)]
    segs = list(reader)
    st = reader.stats
    bad = []
    total = sum(getattr(st, f) for f in FATES)
    if st.frames != (total if check else total - st.bad_ip_checksums):
        bad.append(f"{st.frames} frames, {total} fates")
    if len(segs) != st.tcp_segments + st.icmp_errors:
        bad.append(f"{len(segs)} segments, counted {st.tcp_segments + st.icmp_errors}")
    kinds = [type(p).__name__ for p in reader.problems]
    if kinds not in ([], ["DamagedCapture"], ["DamagedFrames"],
                     ["DamagedFrames", "DamagedCapture"]):
        bad.append(f"problems {kinds}")
    bad += [str(p) for p in reader.problems if "\n" in str(p) or not str(p).startswith(path)]
    if same_as is not None:
        other = write(tmp / "same.bin", same_as)
        want = list(open_native(other, check_ip_checksums=check))
        if [(s.frame, s.ts, s.seq, s.src) for s in segs] != [(s.frame, s.ts, s.seq, s.src)
                                                              for s in want]:
            bad.append("not the same segments as the file it rewrites")
    return bad


def test_fuzz_mutants(tmp_path):
    """analyzer.fuzz's mutators (truncations, flips, lying lengths, broken pcapng structure,
    gzip cuts, generated captures ...) over the captures and traces: every invariant holds,
    with and without IPv4 header checksum checking, and a rewritten file reads as its
    original."""
    seeds = fuzz.load_seeds()
    assert seeds
    path = str(tmp_path / "m.bin")
    failures = []
    categories = set()
    for index in range(FUZZ_INPUTS):
        m, base = fuzz.make_mutant(seeds, FUZZ_SEED, index)
        if m.category == "tunnelled":
            continue  # the Python reader decodes no tunnel
        categories.add(m.category)
        with open(path, "wb") as fh:
            fh.write(m.data)
        for check in (False, True):
            bad = check_invariants(path, check, m.same_as, tmp_path)
            if bad:
                failures.append((index, m.category, m.detail, base, check, bad[:2]))
                break
    assert len(categories) >= 12
    assert failures == []


def test_random_bytes(tmp_path):
    """Random flips and cuts of small pcap / pcapng files (deterministic)."""
    rng = random.Random(7)
    bases = [v[0] for v in SMALL.values()]
    path = str(tmp_path / "r.bin")
    for _ in range(1500):
        blob = bytearray(rng.choice(bases))
        for _ in range(rng.randrange(1, 7)):
            blob[rng.randrange(len(blob))] = rng.randrange(256)
        blob = bytes(blob[:rng.randrange(1, len(blob) + 1)])
        if rng.random() < 0.1:
            blob = gzip.compress(blob)
        with open(path, "wb") as fh:
            fh.write(blob)
        assert check_invariants(path, rng.random() < 0.5) == []


# --- statistics -----------------------------------------------------------------------------------

def test_stats_are_live_and_pickle(tmp_path):
    """reader.stats is one live object (the pipeline keeps it before reading), equal to the
    ReadStats of the same values, and it pickles to one."""
    frames = [syn(1), ether(b"\0" * 28, 0x0806), syn(2, payload=b"abc")]
    path = write(tmp_path / "s.pcap", pcap_bytes([(1, 0, f) for f in frames]))
    reader = open_native(path)
    stats = reader.stats
    assert stats.frames == 0 and stats.format == "pcap"
    segs = list(reader)
    want = ReadStats(format="pcap", frames=3, tcp_segments=2, non_tcp=1, link_types={1: 3},
                     bytes_read=os.path.getsize(path))
    assert len(segs) == 2 and stats is reader.stats
    assert stats == want and want == stats
    copy = pickle.loads(pickle.dumps(stats))
    assert isinstance(copy, ReadStats) and copy == want
    stats.frames += 1  # counters may be rebased, as chunked reading does
    assert reader.stats.frames == 4 and stats != want
    with pytest.raises(AttributeError):
        stats.format = "pcapng"
