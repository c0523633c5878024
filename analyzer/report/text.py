"""Plain-text output for a terminal, in the order a person reads a big capture: the summary by
case, then who is resetting whom (the most frequent endpoints of each abnormal case), then the
connections themselves, a few of each case."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable

from analyzer import cases


def shown(v, missing: str = "-") -> str:
    """``v`` as a person reads it: None, NaN and empty text become ``missing``, never "nan"."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return missing
    text = str(v)
    return text if text.strip() else missing


def number(n: int) -> str:
    return f"{int(n):,}"


def percent(share: float) -> str:
    """A share as a whole percentage; a small one is "<1%", never a misleading 0%."""
    if 0 < share < 0.005:
        return "<1%"
    return f"{share * 100:.0f}%"


def _sees(x) -> str:
    if x is None or isinstance(x, float):
        return "nothing"
    return ", ".join(map(str, x)) if len(x) else "nothing"


# what connection_block and the listing read of a record
BLOCK_FIELDS = ("file", "conn", "client", "server", "first_frame", "last_frame", "case", "title",
                "closer", "client_sees", "server_sees", "confidence", "rival", "reason",
                "evidence", "abnormal", "advice")


def connection_block(rec: dict) -> str:
    """Several lines about one connection: what happened, who closed, what each side saw."""
    conf = "" if rec.get("confidence") in ("certain", None) or shown(rec.get("rival")) == "-" \
        else f"  (likely; could be {rec['rival']})"
    evidence = rec.get("evidence")
    evidence = ", ".join(map(str, evidence)) if evidence is not None and len(evidence) else "-"
    lines = [
        f"#{rec['conn']:<4} {rec['client']} -> {rec['server']}  frames "
        f"{rec['first_frame']}-{rec['last_frame']}  [{rec['case']}]{conf}",
        f"      {shown(rec.get('title'), rec['case'])}",
        f"      closed by: {shown(rec.get('closer'), 'neither')};  client saw: "
        f"{_sees(rec.get('client_sees'))};  server saw: {_sees(rec.get('server_sees'))}",
        f"      why: {shown(rec.get('reason'))} (frames {evidence})",
    ]
    if rec.get("abnormal"):
        lines.append(f"      advice: {shown(rec.get('advice'))}")
    return "\n".join(lines)


def connection_line(rec: dict) -> str:
    return (f"#{rec['conn']:<4} {rec['client']:>22} -> {rec['server']:<22} "
            f"{rec['case']:<22} closer={shown(rec.get('closer')):<7} "
            f"zeek={shown(rec.get('zeek_state'))}/{shown(rec.get('zeek_history'))}")


def summary(records: Iterable[dict], n_files: int = 1) -> str:
    """The summary by case from records (or ``{"case": id}`` stubs)."""
    return summary_from_counts(Counter(r["case"] for r in records), n_files)


def summary_from_counts(counts: dict[str, int], n_files: int = 1) -> str:
    total = sum(counts.values())
    abnormal = sum(n for c, n in counts.items() if c in cases.ABNORMAL)
    out = [f"{number(total)} connection(s) in {n_files} file(s), {number(abnormal)} abnormal"]
    for case in cases.CATALOG:
        if counts.get(case.id):
            mark = "!" if case.abnormal else " "
            out.append(f"  {mark} {case.id:<24} {number(counts[case.id]):>9}   {case.title}")
    return "\n".join(out)


LABELS = {"server": "server", "server_port": "port", "client_addr": "client",
          "client_net": "network"}
# a line left out where it would say no more than the one above it (one value per group)
_REDUNDANT = {"server_port": "server", "client_net": "client_addr"}


def who_resets_whom(df, n: int = 3) -> str:
    """For each abnormal case in ``df`` (a table with case, server and client or client_addr):
    its most frequent server endpoints and ports, client addresses and networks, with counts
    and shares. The port and network lines are left out where they say no more than the line
    above them."""
    from analyzer.report import aggregate

    ab = df[df["case"].isin(cases.ABNORMAL)] if len(df) else df
    if ab.empty:
        return ""
    ab = aggregate.keyed(ab)
    tops = {by: aggregate.top(ab, by, n=n) for by in aggregate.TOP_BY}
    distinct = {by: aggregate.distinct(ab, by) for by in aggregate.TOP_BY}
    counts = ab["case"].value_counts()
    out = [f"Who is resetting whom (the {n} most frequent endpoints of each abnormal case):"]
    for case in cases.CATALOG:
        if not counts.get(case.id):
            continue
        out.append(f"  {number(counts[case.id])} {case.id}")
        for by in aggregate.TOP_BY:
            finer = _REDUNDANT.get(by)
            if finer and distinct[by].get(case.id, 0) == distinct[finer].get(case.id, 0):
                continue
            t = tops[by][tops[by]["case"] == case.id]
            items = [f"{v} {number(c)} ({percent(s)})"
                     for v, c, s in zip(t[by], t["count"], t["share"], strict=True)]
            more = int(distinct[by].get(case.id, 0)) - len(items)
            tail = f", … {number(more)} more" if more > 0 else ""
            out.append(f"      {LABELS[by]:<8} {', '.join(items)}{tail}")
    return "\n".join(out)


class View:
    """The text view of ``rstscope analyze``, fed a columns batch at a time (``add_batch``,
    ``analyzer.core.columns.Batch``) or a record at a time (``add``).

    It keeps what the summary needs of every connection (the case; client and server of the
    abnormal ones) and whole records only for those it may list: at most ``limit`` per case
    (None: all), the lowest (file, conn) first; ``everything`` lists ordinary endings too. From
    a batch, records are built only for the rows it may list.
    """

    def __init__(self, limit: int | None, everything: bool = False):
        self.limit = limit
        self.everything = everything
        self.counts: Counter[str] = Counter()
        # (case, client address, server); one shared stub per ordinary case
        self.ends: list[tuple] = []
        self._stub: dict[str, tuple] = {}
        self.listed: dict[str, list[dict]] = {}
        self._pieces: list = []  # (case, client_addr, server) columns of each batch
        # with no limit, every listed row: (batch, its rows), made records only when rendered
        # (a batch's arrays are a tenth of its records' size)
        self._batches: list = []

    def add_batch(self, batch) -> None:
        import numpy as np

        from analyzer.core.batch import CASE_ABNORMAL, CASE_IDS

        codes = batch.a["case"]
        for code, n in enumerate(np.bincount(codes, minlength=len(CASE_IDS))):
            if n:
                self.counts[CASE_IDS[code]] += int(n)
        abnormal = CASE_ABNORMAL[codes]
        ab = np.flatnonzero(abnormal)
        addr = np.full(len(codes), None, dtype=object)
        server = addr.copy()
        addr[ab] = batch.address("client", ab)
        server[ab] = batch.endpoint("server", ab)
        self._pieces.append((CASE_IDS[codes], addr, server))
        if self.limit == 0:
            return
        rows = batch.order()  # (file, conn): the lowest of each case are listed
        if not self.everything:
            rows = rows[abnormal[rows]]
        if self.limit is None:
            self._batches.append((batch, rows))
            return
        if self.limit is not None:  # the first `limit` rows of each case
            case = codes[rows]
            rows = np.concatenate([rows[case == c][:self.limit] for c in np.unique(case)]
                                  or [rows[:0]])
        for rec in batch.records(rows):
            kept = self.listed.setdefault(rec["case"], [])
            kept.append(rec)
            if self.limit is not None and len(kept) > 4 * self.limit + 64:
                kept.sort(key=_by_number)
                del kept[self.limit:]

    def add(self, rec: dict) -> None:
        case = rec["case"]
        self.counts[case] += 1
        if rec["abnormal"]:
            self.ends.append((case, rec["client"].rpartition(":")[0].strip("[]"),
                              rec["server"]))
        else:
            self.ends.append(self._stub.setdefault(case, (case, None, None)))
        if not (rec["abnormal"] or self.everything) or self.limit == 0:
            return
        kept = self.listed.setdefault(case, [])
        kept.append(rec)
        # records arrive in the order connections end, not by number: trim now and then
        if self.limit is not None and len(kept) > 4 * self.limit + 64:
            kept.sort(key=_by_number)
            del kept[self.limit:]

    def frame(self):
        import numpy as np
        import pandas as pd

        cols = ["case", "client_addr", "server"]
        if not self._pieces:
            return pd.DataFrame(self.ends, columns=cols)
        pieces = list(self._pieces)
        if self.ends:
            pieces.append(tuple(np.array(c, dtype=object) for c in zip(*self.ends, strict=True)))
        return pd.DataFrame({name: np.concatenate([p[i] for p in pieces])
                             for i, name in enumerate(cols)}, columns=cols)

    def render(self, n_files: int, reports=()) -> str:
        parts = [summary_from_counts(self.counts, n_files)]
        for r in reports:
            s = r.stats
            parts.append(f"  {r.path}: {number(s.frames)} frames, {number(s.tcp_segments)} TCP "
                         f"segments, {number(getattr(s, 'icmp_errors', 0))} ICMP errors, "
                         f"{number(s.non_tcp)} other")
        who = who_resets_whom(self.frame())
        if who:
            parts += ["", who]
        listing = self._listing(n_files)
        if listing:
            parts += ["", listing]
        return "\n".join(parts) + "\n"

    def _kept(self, case: str):
        """How many records are listed for ``case`` and (an iterator) those records, by (file,
        conn): the first ``limit``."""
        kept = sorted(self.listed.get(case, ()), key=_by_number)[:self.limit]
        if not self._batches:
            return len(kept), iter(kept)
        import numpy as np

        from analyzer.core.batch import CASE_IDS

        code = list(CASE_IDS).index(case)
        picks = [(b, rows[b.a["case"][rows] == code]) for b, rows in self._batches]
        picks = [(b, rows) for b, rows in picks if len(rows)]
        if not picks:
            return len(kept), iter(kept)
        files = sorted({f for b, _ in picks for f in b.files})
        rank = {f: i for i, f in enumerate(files)}
        which = np.concatenate([np.full(len(r), i) for i, (_, r) in enumerate(picks)])
        rows = np.concatenate([r for _, r in picks])
        frank = np.concatenate([np.array([rank[f] for f in b.files])[b.file_code[r]]
                                for b, r in picks])
        conn = np.concatenate([b.a["conn"][r] for b, r in picks])
        order = np.lexsort((conn, frank))
        which, rows = which[order], rows[order]

        def records(chunk: int = 4096):  # (a chunk at a time: a case may be most rows)
            for lo in range(0, len(rows), chunk):
                recs: list = [None] * len(rows[lo:lo + chunk])
                for i, (b, _) in enumerate(picks):  # each batch's records at once
                    at = np.flatnonzero(which[lo:lo + chunk] == i)
                    for j, rec in zip(at, b.records(rows[lo:lo + chunk][at], BLOCK_FIELDS),
                                      strict=True):
                        recs[j] = rec
                yield from recs

        if kept:  # (records added one at a time too: merged in order)
            return len(kept) + len(rows), iter(sorted([*kept, *records()], key=_by_number))
        return len(rows), records()

    def _listing(self, n_files: int) -> str:
        if not self.listed and not self._batches:
            return ""
        limit = self.limit
        out = [f"Connections, at most {number(limit)} of each case (--limit N, --all):"
               if limit is not None else "Connections:"]
        left = 0
        for case in cases.CATALOG:
            n_kept, kept = self._kept(case.id)
            if not n_kept:
                continue
            total = self.counts[case.id]
            out.append(f"-- {case.id}: {number(n_kept)} of {number(total)}")
            last_file = None
            for rec in kept:
                if n_files > 1 and rec["file"] != last_file:
                    out.append(f"== {rec['file']}")
                    last_file = rec["file"]
                out.append(connection_block(rec))
            if total > n_kept:
                left += total - n_kept
                out.append(f"   … {number(total - n_kept)} more {case.id} not listed")
        if left:
            out.append(f"{number(left)} connection(s) not listed: --limit N lists up to N of "
                       "each case, --all lists them all.")
        return "\n".join(out)


def _by_number(rec: dict):
    return (rec["file"], rec["conn"])
