"""Container format constants (pcap, pcapng, link types) for the Python code that looks at a
capture file's headers without decoding it: the scale-out walk, rotated-set detection, live
capture and its pcap writer. Decoding is the compiled reader's (``analyzer.core.decode``), which
takes its Python-level constants from here.
"""

from __future__ import annotations

# pcap (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcap-04.html)
PCAP_MAGICS = frozenset((b"\xd4\xc3\xb2\xa1", b"\xa1\xb2\xc3\xd4",  # usec LE, BE
                         b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"))  # nsec LE, BE
PCAP_LITTLE = frozenset((b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1"))  # fields little-endian
PCAP_NANOS = frozenset((b"\x4d\x3c\xb2\xa1", b"\xa1\xb2\x3c\x4d"))  # ts_frac in nanoseconds
PCAP_HEADER_LEN = 24  # global header
PCAP_RECORD_LEN = 16  # record header: ts_sec ts_frac caplen origlen

# pcapng (https://www.ietf.org/archive/id/draft-ietf-opsawg-pcapng-03.html)
SHB_MAGIC = b"\x0a\x0d\x0d\x0a"  # first 4 bytes of a pcapng file
BOM_LE = b"\x4d\x3c\x2b\x1a"  # byte-order magic 0x1a2b3c4d, little-endian
BOM_BE = b"\x1a\x2b\x3c\x4d"  # byte-order magic, big-endian
NG_MAX_BLOCK = 16 * 1024 * 1024  # larger block lengths are taken as corruption

# link-layer header types (https://www.tcpdump.org/linktypes.html) named outside the decoder
LINKTYPE_ETHERNET = 1
LINKTYPE_RAW = 101
LINKTYPE_MASK = 0xFFFF  # the link type is the low 16 bits of the field


def pcap_header(raw: bytes) -> tuple[bool, bool, int, int] | None:
    """(little-endian, nanoseconds, snaplen, link type) from a pcap file's first 24 bytes, or
    None if they are not a pcap file header."""
    magic = raw[:4]
    if magic not in PCAP_MAGICS or len(raw) < PCAP_HEADER_LEN:
        return None
    order = "little" if magic in PCAP_LITTLE else "big"
    return (magic in PCAP_LITTLE, magic in PCAP_NANOS, int.from_bytes(raw[16:20], order),
            int.from_bytes(raw[20:24], order) & LINKTYPE_MASK)
