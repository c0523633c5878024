"""Plain-text output for a terminal: the abnormal endings, one block each, and a summary."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from analyzer import cases


def _sees(x: list[str]) -> str:
    return ", ".join(x) if x else "nothing"


def connection_block(rec: dict) -> str:
    """Several lines about one connection: what happened, who closed, what each side saw."""
    conf = "" if rec["confidence"] == "certain" else f"  (likely; could be {rec['rival']})"
    lines = [
        f"#{rec['conn']:<4} {rec['client']} -> {rec['server']}  frames "
        f"{rec['first_frame']}-{rec['last_frame']}  [{rec['case']}]{conf}",
        f"      {rec['title']}",
        f"      closed by: {rec['closer'] or 'neither'};  client saw: "
        f"{_sees(rec['client_sees'])};  server saw: {_sees(rec['server_sees'])}",
        f"      why: {rec['reason']} (frames {', '.join(map(str, rec['evidence'])) or '-'})",
    ]
    if rec["abnormal"]:
        lines.append(f"      advice: {rec['advice']}")
    return "\n".join(lines)


def connection_line(rec: dict) -> str:
    return (f"#{rec['conn']:<4} {rec['client']:>22} -> {rec['server']:<22} "
            f"{rec['case']:<22} closer={rec['closer'] or '-':<7} "
            f"zeek={rec['zeek_state'] or '-'}/{rec['zeek_history'] or '-'}")


def summary(records: Iterable[dict], n_files: int = 1) -> str:
    counts = Counter(r["case"] for r in records)
    total = sum(counts.values())
    abnormal = sum(n for c, n in counts.items() if c in cases.ABNORMAL)
    out = [f"{total} connection(s) in {n_files} file(s), {abnormal} abnormal"]
    for case in cases.CATALOG:
        if counts.get(case.id):
            mark = "!" if case.abnormal else " "
            out.append(f"  {mark} {case.id:<24} {counts[case.id]:>7}   {case.title}")
    return "\n".join(out)
