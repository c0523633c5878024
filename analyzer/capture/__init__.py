"""Capture readers and sniffers: the only place that touches packet bytes, scapy or pyshark.

Public API (everything downstream uses only this and ``analyzer.segment.Segment``)::

    reader = open_capture(path)        # path to pcap / pcapng / .gz, or "-" for standard input
    for seg in reader:                 # streams Segments; memory does not grow with the file
        ...
    reader.stats                       # ReadStats: counters, filled while iterating
    reader.problems                    # list[DamagedCapture]: non-fatal damage met while reading

``open_capture`` raises ``UnreadableCapture`` when nothing can be read (missing file, wrong
magic, unsupported format). Damage found after the start (truncated record, absurd length) is
appended to ``problems`` and iteration stops there (or resynchronises, where the format allows),
so everything before it is still analyzed.
"""

from analyzer.capture.reader import CaptureReader, ReadStats, open_capture

__all__ = ["CaptureReader", "ReadStats", "open_capture"]
