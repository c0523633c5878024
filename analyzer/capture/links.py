"""Link layers: find where the IP header starts in a captured frame.

Each decoder takes the frame bytes and returns the offset of the IP header, or -1 when the frame
does not carry IP (ARP, 802.3/LLC, PPP control, ...). Which IP version it is, is decided by the IP
layer from the first nibble. ``decoder_for(linktype)`` returns None for an unsupported link type.
"""

from __future__ import annotations

from collections.abc import Callable

# Link-layer header types (https://www.tcpdump.org/linktypes.html).
LINKTYPE_NULL = 0  # BSD loopback: 4-byte address family, host byte order of the writer
LINKTYPE_ETHERNET = 1  # IEEE 802.3 Ethernet (DLT_EN10MB)
LINKTYPE_RAW_BSD = 12  # raw IP on most BSDs (DLT_RAW there); OpenBSD uses it for DLT_LOOP
LINKTYPE_RAW_OPENBSD = 14  # raw IP on OpenBSD
LINKTYPE_RAW = 101  # raw IPv4 or IPv6, version from the first nibble
LINKTYPE_LOOP = 108  # OpenBSD loopback: 4-byte address family, network byte order
LINKTYPE_LINUX_SLL = 113  # Linux "cooked" capture v1 (tcpdump -i any, older libpcap)
LINKTYPE_IPV4 = 228  # raw IPv4
LINKTYPE_IPV6 = 229  # raw IPv6
LINKTYPE_LINUX_SLL2 = 276  # Linux "cooked" capture v2 (tcpdump -i any, libpcap >= 1.10)

LINKTYPE_MASK = 0xFFFF  # pcap's linktype field: low 16 bits; upper bits carry FCS information

# Ethertypes.
ETH_P_IP = 0x0800  # IPv4
ETH_P_IPV6 = 0x86DD  # IPv6
ETH_P_8021Q = 0x8100  # 802.1Q VLAN tag
ETH_P_8021AD = 0x88A8  # 802.1ad service tag (QinQ outer tag)
ETH_P_QINQ_OLD = 0x9100  # pre-standard QinQ outer tag
ETH_P_MPLS_UC = 0x8847  # MPLS unicast
ETH_P_MPLS_MC = 0x8848  # MPLS multicast
ETH_P_PPPOE_SESS = 0x8864  # PPPoE session stage
ETH_P_FABRICPATH = 0x8903  # Cisco FabricPath
ETH_MIN_TYPE = 0x0600  # below this the field is an 802.3 length (LLC follows): not decoded

PPP_IP = 0x0021  # PPP protocol field: IPv4
PPP_IPV6 = 0x0057  # PPP protocol field: IPv6

# Address families seen in NULL / LOOP headers.
AF_INET = 2  # everywhere
AF_INET6_VALUES = frozenset((10, 24, 28, 30))  # Linux, NetBSD/OpenBSD, FreeBSD, macOS

MAX_NESTING = 16  # bound on VLAN tags / MPLS labels / nested encapsulations per frame

_VLAN_TYPES = frozenset((ETH_P_8021Q, ETH_P_8021AD, ETH_P_QINQ_OLD))


def after_ethertype(data: bytes, etype: int, off: int) -> int:
    """Follow an ethertype whose payload starts at ``off`` down to IP; -1 when not IP."""
    for _ in range(MAX_NESTING):
        if etype == ETH_P_IP or etype == ETH_P_IPV6:
            return off
        if etype in _VLAN_TYPES:
            if len(data) < off + 4:
                return -1
            etype = (data[off + 2] << 8) | data[off + 3]
            off += 4
        elif etype == ETH_P_MPLS_UC or etype == ETH_P_MPLS_MC:
            return _after_mpls(data, off)
        elif etype == ETH_P_PPPOE_SESS:
            if len(data) < off + 8:
                return -1
            proto = (data[off + 6] << 8) | data[off + 7]
            return off + 8 if proto == PPP_IP or proto == PPP_IPV6 else -1
        elif etype == ETH_P_FABRICPATH:
            # 2-byte FTag/TTL after the ethertype, then a whole inner Ethernet frame.
            off += 2
            if len(data) < off + 14:
                return -1
            etype = (data[off + 12] << 8) | data[off + 13]
            off += 14
        else:
            return -1
    return -1


def _after_mpls(data: bytes, off: int) -> int:
    n = len(data)
    for _ in range(MAX_NESTING):
        if n < off + 4:
            return -1
        bottom = data[off + 2] & 1
        off += 4
        if bottom:
            if n <= off:
                return -1
            version = data[off] >> 4
            return off if version == 4 or version == 6 else -1
    return -1


def ethernet(data: bytes) -> int:
    if len(data) < 14:
        return -1
    etype = (data[12] << 8) | data[13]
    if etype == ETH_P_IP:  # fast path
        return 14
    if etype < ETH_MIN_TYPE:
        return -1
    return after_ethertype(data, etype, 14)


def linux_sll(data: bytes) -> int:
    if len(data) < 16:
        return -1
    return after_ethertype(data, (data[14] << 8) | data[15], 16)


def linux_sll2(data: bytes) -> int:
    if len(data) < 20:
        return -1
    return after_ethertype(data, (data[0] << 8) | data[1], 20)


def bsd_null(data: bytes) -> int:
    if len(data) < 4:
        return -1
    family = int.from_bytes(data[:4], "little")
    if family > 0xFFFF:  # written by a big-endian host
        family = int.from_bytes(data[:4], "big")
    return 4 if family == AF_INET or family in AF_INET6_VALUES else -1


def bsd_loop(data: bytes) -> int:
    if len(data) < 4:
        return -1
    family = int.from_bytes(data[:4], "big")
    return 4 if family == AF_INET or family in AF_INET6_VALUES else -1


def raw_ip(data: bytes) -> int:
    return 0 if data and (data[0] >> 4) in (4, 6) else -1


_DECODERS: dict[int, Callable[[bytes], int]] = {
    LINKTYPE_NULL: bsd_null,
    LINKTYPE_ETHERNET: ethernet,
    LINKTYPE_RAW_BSD: raw_ip,
    LINKTYPE_RAW_OPENBSD: raw_ip,
    LINKTYPE_RAW: raw_ip,
    LINKTYPE_LOOP: bsd_loop,
    LINKTYPE_LINUX_SLL: linux_sll,
    LINKTYPE_IPV4: raw_ip,
    LINKTYPE_IPV6: raw_ip,
    LINKTYPE_LINUX_SLL2: linux_sll2,
}


def decoder_for(linktype: int) -> Callable[[bytes], int] | None:
    """The function finding the IP header for ``linktype``, or None if unsupported."""
    return _DECODERS.get(linktype & LINKTYPE_MASK)
