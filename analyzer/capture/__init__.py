"""Everything that touches a capture's bytes besides the compiled decoder: the format constants
(``formats``), the statistics type (``stats``), live sniffing (``sniff``) and kernel traces
(``kernel``). Reading a capture is ``analyzer.core.decode.open_native``::

    reader = open_native(path)         # pcap / pcapng / .gz, or "-" for standard input
    for seg in reader:                 # analyzer.segment.Segment, streamed
        ...
    reader.stats                       # counters (ReadStats' fields), live while reading
    reader.problems                    # damage met while reading (DamagedCapture, DamagedFrames)
"""


def open_capture(path, *, name=None, check_ip_checksums=True):
    """``open_native`` with IPv4 header checksums checked unless told otherwise (the default of
    the Python reader it replaced): kept only for the core's parity tests owned elsewhere
    (tests/test_core_conn.py, test_core_verdict.py, test_core_zeek.py); new code calls
    open_native."""
    from analyzer.core.decode import open_native

    return open_native(path, name=name, check_ip_checksums=check_ip_checksums)
