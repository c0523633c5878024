"""The Python API: ``analyze(path)`` -> tables (pandas) of connections and state changes."""

from __future__ import annotations

from dataclasses import dataclass, field

import pandas as pd

from analyzer.pipeline import (
    FileReport,
    iter_batches,
)
from analyzer.timeouts import Timeouts


@dataclass
class Analysis:
    """The result of analyzing captures.

    ``connections``: one row per connection, columns as ``RECORD_FIELDS`` documents.
    ``events``: one row per endpoint state change, columns as ``EVENT_FIELDS`` documents.
    ``files``: per file, the reader's statistics and any damage found (``problems``).
    """

    connections: pd.DataFrame
    events: pd.DataFrame
    files: list[FileReport] = field(default_factory=list)

    @property
    def problems(self):
        return [p for f in self.files for p in f.problems]

    def records(self) -> list[dict]:
        return self.connections.to_dict("records")

    def top(self, case=None, by: str = "server", n: int | None = 10) -> pd.DataFrame:
        """The most frequent endpoints per case: columns case, ``by``, count, share (of the
        case's connections). ``case``: a case id or a list of them (default: every case);
        ``by``: server, server_addr, server_port, client, client_addr or client_net (/24, /64);
        ``n``: per case (None: all). The same numbers as the text view and the report."""
        from analyzer.report import aggregate

        return aggregate.top(self.connections, by, case=case, n=n)

    def summary(self) -> pd.DataFrame:
        """Connections per case: case, title, abnormal, count, share (catalog order)."""
        from analyzer.report import aggregate

        return aggregate.case_table(self.connections)


def analyze(*paths: str, timeouts: Timeouts | None = None,
            check_ip_checksums: bool = False, zeek_options: dict | None = None) -> Analysis:
    """Read the captures and classify every connection. Raises ``UnreadableCapture`` when a file
    cannot be read at all; partial damage is reported in ``Analysis.problems``.
    ``zeek_options`` (``bare_mode``, ``ignore_checksums``) make the Zeek fields mimic ``zeek -b``
    / ``zeek -C``."""
    reports: list[FileReport] = []
    batches = []
    for path in paths:
        report = FileReport(path)
        reports.append(report)
        batches.extend(iter_batches(path, report, timeouts,
                                    check_ip_checksums=check_ip_checksums,
                                    zeek_options=zeek_options))
    return from_batches(batches, reports)


def from_batches(batches, reports: list[FileReport]) -> Analysis:
    """The Analysis of columns batches (``pipeline.iter_batches``): the connections in (file,
    conn) order, the events in the order connections finished."""
    from analyzer.core.batch import concat

    batch = concat(batches)
    return Analysis(batch.frame(batch.order()), batch.events(), reports)

