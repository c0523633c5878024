# Included by decode.pyx (it shares its byte helpers and decode_ip_in). What Zeek decodes on
# the way to TCP beyond plain Ethernet / IP: LLC/SNAP, 802.1ah (PBB) and VN-Tag at the link
# layer, and the tunnels: IP-in-IP (4in4, 6in4, 4in6, 6in6), GRE (with ERSPAN I/II/III, PPTP's
# enhanced GRE and Aruba's 802.11-in-GRE), and, over UDP, GRE (4754), Teredo (3544, or any port
# whose payload looks like it), AYIYA (5072, or any port whose payload looks like it), VXLAN
# (4789), Geneve (6081) and GTPv1-U (2152, 2123). The rules (ports, header lengths, which
# packets are refused) are Zeek's packet analyzers' (src/packet_analysis/protocol/*, zeek/zeek
# a13de64f), rewritten here. Every read is bounded by n (the captured bytes, or less: the end of
# the enclosing IP packet); nesting is bounded by MAX_TUNNEL_DEPTH (Zeek's Tunnel::max_depth).

cdef enum:
    ETH_P_PBB = 0x88E7  # 802.1ah backbone service instance tag (I-TAG)
    ETH_P_VNTAG = 0x8926  # Cisco VN-Tag
    ETH_MAX_LENGTH = 1500  # an 802.3 length field: LLC (and maybe SNAP) follows
    ETH_P_TEB = 0x6558  # transparent Ethernet bridging (GRE, Geneve)
    ETH_P_ERSPAN12 = 0x88BE  # ERSPAN type I (no header) / II (8-byte header)
    ETH_P_ERSPAN3 = 0x22EB  # ERSPAN type III (12-byte header, 8 more with the O bit)
    ETH_P_PPP = 0x880B  # PPTP's enhanced GRE (version 1) carries PPP
    IPPROTO_IPIP = 4  # IPv4 in IP
    IPPROTO_UDP = 17  # UDP
    IPPROTO_IPV6 = 41  # IPv6 in IP
    IPPROTO_GRE = 47  # GRE
    UDP_GRE = 4754  # GRE over UDP
    UDP_TEREDO = 3544  # Teredo
    UDP_AYIYA = 5072  # AYIYA
    UDP_VXLAN = 4789  # VXLAN
    UDP_GENEVE = 6081  # Geneve
    UDP_GTPU = 2152  # GTPv1 user plane
    UDP_GTPC = 2123  # GTPv1 control plane (Zeek registers both)
    MAX_TUNNEL_DEPTH = 4  # encapsulations followed per frame (Zeek's Tunnel::max_depth)
    MAX_AYIYA_ID = 1 << 15  # identity lengths are 2**nibble bytes


cdef inline bint is_tunnel_port(uint32_t p) noexcept nogil:
    return (p == UDP_GRE or p == UDP_TEREDO or p == UDP_AYIYA or p == UDP_VXLAN
            or p == UDP_GENEVE or p == UDP_GTPU or p == UDP_GTPC)


cdef Py_ssize_t after_llc(const uint8_t* d, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    """IP after an 802.2 LLC header at off (802.3 framing), or -1. Zeek sends only SNAP with the
    zero OUI on to IP (its plain-LLC and Novell analyzers carry no IP)."""
    cdef Py_ssize_t llc_len
    cdef uint32_t etype
    if n < off + 3 or d[off] != 0xAA or d[off + 1] != 0xAA:
        return -1
    llc_len = 3 if (d[off + 2] & 3) == 3 else 4  # U frames have a 1-byte control field
    if n < off + llc_len + 5:
        return -1
    if d[off + llc_len] or d[off + llc_len + 1] or d[off + llc_len + 2]:
        return -1  # Zeek keys SNAP on OUI and type together: only OUI 0 reaches IP
    etype = be16(d + off + llc_len + 3)
    off += llc_len + 5
    return off if (etype == ETH_P_IP or etype == ETH_P_IPV6) and n > off else -1


cdef Py_ssize_t after_80211(const uint8_t* d, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    """IP in an 802.11 data frame at off (Aruba's GRE), or -1. Of an A-MSDU, only the first
    subframe is decoded (one Seg per frame)."""
    cdef Py_ssize_t hdr = 24
    cdef uint32_t fc = d[off] if n > off else 0
    cdef bint amsdu = False
    cdef uint32_t etype
    if n <= off + hdr or not ((fc >> 2) & 2) or ((fc >> 4) & 4):
        return -1  # not a data frame, or a null-data one
    if (d[off + 1] & 3) == 3:
        hdr += 6  # four addresses
    if n <= off + hdr:
        return -1
    if (fc >> 4) & 8:  # QoS data: a QoS control field, whose bit 7 says A-MSDU
        amsdu = (d[off + hdr] & 0x80) != 0
        if d[off + 1] & 0x40:
            return -1  # protected: encrypted payload
        hdr += 2
    off += hdr
    if amsdu:  # subframe header: destination, source, length
        if n < off + 14:
            return -1
        off += 14
    if n < off + 8 or d[off] != 0xAA or d[off + 1] != 0xAA or d[off + 2] != 0x03 \
            or d[off + 3] or d[off + 4] or d[off + 5]:
        return -1
    etype = be16(d + off + 6)
    off += 8
    return off if (etype == ETH_P_IP or etype == ETH_P_IPV6) else -1


cdef inline Py_ssize_t ip_in_ethernet(const uint8_t* d, Py_ssize_t n,
                                      Py_ssize_t off) noexcept nogil:
    """IP in the Ethernet frame at d[off:n], or -1."""
    cdef Py_ssize_t r = find_ip(d + off, n - off, LT_ETHERNET) if n > off else -1
    return off + r if r >= 0 else -1


cdef inline Py_ssize_t ip_header_at(const uint8_t* d, Py_ssize_t n, Py_ssize_t off) noexcept nogil:
    return off if off >= 0 and n > off and (d[off] >> 4 == 4 or d[off] >> 4 == 6) else -1


cdef Py_ssize_t after_gre(const uint8_t* d, Py_ssize_t n, Py_ssize_t g) noexcept nogil:
    """IP inside the GRE packet at g (d[g:n]), or -1 (GRE.cc's rules)."""
    cdef uint32_t flags = 0, proto = 0, ppp
    cdef Py_ssize_t hlen = 4, erspan = 0
    cdef int version
    if n < g + 4:
        return -1
    flags = be16(d + g)
    proto = be16(d + g + 2)
    version = flags & 7
    if flags & 0x8000:  # checksum (and reserved) present
        hlen += 4
    if flags & 0x2000:  # key present
        hlen += 4
    if flags & 0x1000:  # sequence number present
        hlen += 4
    if flags & 0x0080:  # acknowledgment present (version 1)
        hlen += 4
    if flags & 0x4000 or flags & 0x0078:  # routing present, or reserved flags set
        return -1
    if version == 1:
        if proto != ETH_P_PPP or n < g + hlen + 4:
            return -1
        ppp = be16(d + g + hlen + 2)
        if ppp != PPP_IP and ppp != PPP_IPV6:
            return -1
        return ip_header_at(d, n, g + hlen + 4)
    if version != 0:
        return -1
    if proto == ETH_P_TEB:
        return ip_in_ethernet(d, n, g + hlen)
    if proto == ETH_P_ERSPAN12:
        if flags & 0x1000:  # type II: an 8-byte ERSPAN header (type I has none)
            erspan = 8
        return ip_in_ethernet(d, n, g + hlen + erspan)
    if proto == ETH_P_ERSPAN3:
        if n <= g + hlen + 12 + 14:
            return -1
        erspan = 12
        if d[g + hlen + 11] & 1:  # O bit: an 8-byte platform-specific subheader follows
            erspan += 8
        return ip_in_ethernet(d, n, g + hlen + erspan)
    if ((proto & 0x8200) == 0x8200 and (proto & 0x0F) == 0) \
            or ((proto & 0x8300) == 0x8300 and (proto & 0x0F) == 0 and proto <= 0x8370):
        return after_80211(d, n, g + hlen)  # Aruba: 802.11 frames
    return ip_header_at(d, n, g + hlen)  # anything else: raw IP, as Zeek decodes it


cdef inline bint teredo_prefix(const uint8_t* a) noexcept nogil:
    return a[0] == 0x20 and a[1] == 0x01 and a[2] == 0 and a[3] == 0  # 2001:0000::/32


cdef bint looks_teredo(const uint8_t* d, Py_ssize_t n, Py_ssize_t u) noexcept nogil:
    """Zeek's Teredo protocol detection (TeredoAnalyzer::DetectProtocol) on the UDP payload
    d[u:n]: an IPv6 header with a Teredo (2001:0::/32) address, or an origin indication
    (possibly after an authentication header) leading to an IPv6 header."""
    cdef Py_ssize_t length = n - u, skip
    cdef uint32_t val
    if length < 40 or ((d[u] >> 4) != 6 and (d[u] != 0 or (d[u + 1] != 0 and d[u + 1] != 1))):
        return False
    if (d[u] >> 4) == 6 and (teredo_prefix(d + u + 8) or teredo_prefix(d + u + 24)):
        return True  # Zeek's pattern: an IPv6 header with a Teredo source or destination
    val = d[u + 1]
    if val == 1:
        skip = 13 + <Py_ssize_t>d[u + 2] + d[u + 3]
        if length < skip + 40:
            return False
        u += skip
        length -= skip
        val = be16(d + u)
    if val == 0:
        if length < 48:
            return False
        return (d[u + 8] >> 4) == 6
    return False


cdef Py_ssize_t after_teredo(const uint8_t* d, Py_ssize_t n, Py_ssize_t u) noexcept nogil:
    """The IPv6 header inside the Teredo payload at u, or -1 (TeredoEncapsulation::DoParse)."""
    cdef bint origin = False, auth = False
    cdef int i
    cdef uint32_t tag
    cdef Py_ssize_t skip
    for i in range(3):
        if n < u + 2:
            return -1
        tag = be16(d + u)
        if tag == 0:
            if origin or n < u + 8:
                return -1
            origin = True
            u += 8
        elif tag == 1:
            if origin or auth or n < u + 4:
                return -1
            auth = True
            skip = 4 + <Py_ssize_t>d[u + 2] + d[u + 3] + 8 + 1
            if n < u + skip:
                return -1
            u += skip
        elif (tag >> 12) == 6:
            return u if n >= u + 40 else -1
        else:
            return -1
    return -1


cdef Py_ssize_t after_ayiya(const uint8_t* d, Py_ssize_t n, Py_ssize_t u) noexcept nogil:
    """IP inside the AYIYA packet at u, or -1 (AYIYA.cc): 8 bytes, the identity and the
    signature; only forwarding packets (opcode 1) carry IP."""
    cdef Py_ssize_t hlen
    if n < u + 8:
        return -1
    hlen = 8 + (<Py_ssize_t>1 << (d[u] >> 4)) + (d[u + 1] >> 4) * 4
    if n <= u + hlen or (d[u + 2] & 0x0F) != 1:
        return -1
    if d[u + 3] != IPPROTO_IPIP and d[u + 3] != IPPROTO_IPV6:
        return -1
    return ip_header_at(d, n, u + hlen)


cdef Py_ssize_t after_geneve(const uint8_t* d, Py_ssize_t n, Py_ssize_t u) noexcept nogil:
    cdef Py_ssize_t hlen
    cdef uint32_t proto
    if n < u + 8 or (d[u] >> 6) != 0:
        return -1
    hlen = 8 + (d[u] & 0x3F) * 4
    if n <= u + hlen:
        return -1
    proto = be16(d + u + 2)
    if proto == ETH_P_TEB:
        return ip_in_ethernet(d, n, u + hlen)
    if proto == ETH_P_IP or proto == ETH_P_IPV6:
        return ip_header_at(d, n, u + hlen)
    return -1


cdef Py_ssize_t after_gtp(const uint8_t* d, Py_ssize_t n, Py_ssize_t u) noexcept nogil:
    """The IP packet of a GTPv1 G-PDU at u, or -1: version 1, protocol type GTP, message 255;
    4 more header bytes when any of E, S, PN is set, then the extension headers while E."""
    cdef uint32_t flags, nxt
    cdef Py_ssize_t p
    cdef int i
    if n < u + 8:
        return -1
    flags = d[u]
    if (flags >> 5) != 1 or not (flags & 0x10) or d[u + 1] != 255:
        return -1
    p = u + 8
    if flags & 7:
        if n < p + 4:
            return -1
        nxt = d[p + 3]
        p += 4
        if flags & 4:
            for i in range(MAX_NESTING):
                if nxt == 0:
                    break
                if n < p + 1 or d[p] == 0:
                    return -1
                p += <Py_ssize_t>d[p] * 4
                if n < p:
                    return -1
                nxt = d[p - 1]
            if nxt != 0:
                return -1
    if n < p + 20:
        return -1  # Zeek wants at least an IPv4 header's worth
    return ip_header_at(d, n, p)


cdef Py_ssize_t after_udp(const uint8_t* d, Py_ssize_t n, Py_ssize_t u, Tunnel* tun) noexcept nogil:
    """The IP packet tunnelled in the UDP datagram at u, or -1 (not a tunnel Zeek decodes).
    Zeek picks the analyzer by the UDP connection's responder port: the destination port, or
    the source port when only it is a tunnel port (Zeek counts tunnel ports as likely server
    ports and flips such a connection). Teredo and AYIYA are also recognised on any other port
    by their content, as Zeek's protocol detection does."""
    cdef uint32_t sport, dport, port
    cdef Py_ssize_t p = u + 8
    if n < p:
        return -1
    sport = be16(d + u)
    dport = be16(d + u + 2)
    port = sport if is_tunnel_port(sport) and not is_tunnel_port(dport) else dport
    tun.outer_sport = sport
    tun.outer_dport = dport
    if port == UDP_GRE:
        tun.kind = TUN_GRE
        return after_gre(d, n, p)
    if port == UDP_VXLAN:
        tun.kind = TUN_VXLAN
        if n < p + 8 or not (d[p] & 0x08):  # the I flag: a valid VNI
            return -1
        return ip_in_ethernet(d, n, p + 8)
    if port == UDP_GENEVE:
        tun.kind = TUN_GENEVE
        return after_geneve(d, n, p)
    if port == UDP_GTPU or port == UDP_GTPC:
        tun.kind = TUN_GTPV1
        return after_gtp(d, n, p)
    if port == UDP_TEREDO or looks_teredo(d, n, p):
        tun.kind = TUN_TEREDO
        return after_teredo(d, n, p)
    if port == UDP_AYIYA or (n >= p + 3 and d[p + 1] == 0x52 and d[p + 2] == 0x11):
        tun.kind = TUN_AYIYA
        return after_ayiya(d, n, p)
    return -1


cdef bint udp_checksum_bad(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, int version,
                           Py_ssize_t u, Py_ssize_t end, bint fragmented) noexcept nogil:
    """The UDP datagram at u (to end) carries a wrong checksum (Zeek, without -C, drops such a
    datagram before any tunnel analyzer). Not known (False) when the datagram is not all
    captured or is fragmented; IPv4's zero checksum means none."""
    cdef uint64_t acc
    cdef Py_ssize_t ulen = end - u
    if fragmented or end > n or ulen < 8 or ulen > 0xFFFF:
        return False
    if version == 4:
        if be16(d + u + 6) == 0:
            return False
        acc = sum_mod(d + off + 12, 8)
    else:
        acc = sum_mod(d + off + 8, 32)
    acc += IPPROTO_UDP + <uint64_t>ulen + sum_mod(d + u, ulen)
    return acc % 0xFFFF != 0


cdef int decode_tunnel(const uint8_t* d, Py_ssize_t n, Py_ssize_t off, int version, int proto,
                       Py_ssize_t t, Py_ssize_t end, bint fragmented, bint check_ip, Counts* st,
                       Seg* s, int depth) noexcept nogil:
    """The IP packet at off (header at off, its payload of protocol proto at t, ending at end)
    as a tunnel: 1 a Seg was written from the inner packet, 0 the frame was counted as non-TCP
    (the inner packet gave no Seg), -1 not a tunnel (the caller counts it)."""
    cdef Tunnel tun
    cdef Counts inner_counts
    cdef Py_ssize_t inner, lim = end if end < n else n
    cdef bint bad_outer = False
    cdef int r
    if depth >= MAX_TUNNEL_DEPTH:
        return -1
    memset(&tun, 0, sizeof(Tunnel))
    if proto == IPPROTO_IPIP or proto == IPPROTO_IPV6:
        tun.kind = TUN_IP
        inner = ip_header_at(d, lim, t)
        if inner >= 0 and (d[inner] >> 4) != (4 if proto == IPPROTO_IPIP else 6):
            inner = -1
    elif proto == IPPROTO_GRE:
        tun.kind = TUN_GRE
        inner = after_gre(d, lim, t)
    elif proto == IPPROTO_UDP:
        inner = after_udp(d, lim, t, &tun)
        if inner >= 0:
            bad_outer = udp_checksum_bad(d, n, off, version, t, end, fragmented)
    else:
        return -1
    if inner < 0:
        return -1
    # An inner packet that yields no Seg makes the frame count once as non-TCP, whatever the
    # inner decoder found wrong (the frame is a tunnel packet, not a damaged TCP segment).
    inner_counts = st[0]
    r = decode_ip_in(d, lim, inner, check_ip, &inner_counts, s, depth + 1)
    if r != 1:
        st.non_tcp += 1
        return 0
    st[0] = inner_counts
    if r == 1:
        if bad_outer:
            s.checksum = CSUM_BAD
        if s.tunnel.kind == TUN_NONE:  # the innermost tunnel names the connection's
            tun.outer_version = version
            if version == 4:
                memcpy(tun.outer_src.b, d + off + 12, 4)
                memcpy(tun.outer_dst.b, d + off + 16, 4)
            else:
                memcpy(tun.outer_src.b, d + off + 8, 16)
                memcpy(tun.outer_dst.b, d + off + 24, 16)
            s.tunnel = tun
        s.tunnel.depth += 1
    return r
