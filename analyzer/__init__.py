"""rstscope: why did my TCP connection get reset, which side caused it, and what did each
application see?

The pipeline, one stage knowing only the one before it::

    captures (pcap, pcapng, gzip, stdin, sniffers) -> core/ (compiled: decode -> observer,
      with both endpoints' state machines from tcpstate.py's transition table and Zeek's view
      -> the classifier, whose rules follow the catalog in cases.py) -> Connection + Verdict
      or JSON Lines -> report/ (tables, plots, HTML) -> cli.py

Python API: ``analyzer.analyze(path)`` returns an ``Analysis`` with a ``connections`` DataFrame
(columns: ``analyzer.pipeline.RECORD_FIELDS``) and an ``events`` DataFrame (one row per state
change; columns: ``analyzer.pipeline.EVENT_FIELDS``).
"""

from __future__ import annotations

__version__ = "0.1.0"

__all__ = ["Analysis", "analyze", "__version__"]


def analyze(*paths: str, **kwargs):
    """Analyze one or more captures; see ``analyzer.api.analyze``."""
    from analyzer.api import analyze as _analyze

    return _analyze(*paths, **kwargs)


def __getattr__(name: str):
    if name == "Analysis":
        from analyzer.api import Analysis

        return Analysis
    raise AttributeError(name)
