"""Everything that touches a capture's bytes besides the compiled decoder: the format constants
(``formats``), the statistics type (``stats``), live sniffing (``sniff``) and kernel traces
(``kernel``). Reading a capture is ``analyzer.core.decode.open_native``::

    reader = open_native(path)         # pcap / pcapng / .gz, or "-" for standard input
    for seg in reader:                 # analyzer.segment.Segment, streamed
        ...
    reader.stats                       # counters (ReadStats' fields), live while reading
    reader.problems                    # damage met while reading (DamagedCapture, DamagedFrames)
"""

