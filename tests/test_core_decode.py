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
import mmap
import shutil
import struct
import subprocess
from pathlib import Path

import pytest
from analyzer.core.decode import (
    decode_frame,
    ip_offset,
    open_native,
)

from analyzer.errors import UnreadableCapture
from analyzer.segment import ACK
from tests.capture_helpers import (
    ng_epb,
    ng_idb,
    ng_shb,
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


@pytest.mark.xfail(strict=True, reason="Seg has one ip_version for the quoted packet and "
                   "icmp_from: an ICMPv4 error quoting IPv6 (or ICMPv6 quoting IPv4) cannot "
                   "carry the router's address in the other family (needs a field in seg.pxd)")
def test_icmp_quoting_the_other_ip_version(tmp_path):
    from scapy.all import ICMP, IP

    quoted6 = ip6_tcp(seq=1, flags="S")
    frame = ether(bytes(IP(src="192.0.2.1", dst="10.0.0.1") / ICMP(type=3, code=1) / quoted6))
    [seg], _ = read(write(tmp_path / "x.pcap", pcap_bytes([(1, 0, frame)])))
    assert (seg.src, seg.dst, seg.seq) == ("2001:db8::1", "2001:db8::2", 1)
    assert (seg.icmp_from, seg.icmp_kind) == ("192.0.2.1", "host_unreachable")
