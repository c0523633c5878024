"""Shared by the scale-out tests: running the command line, comparing what it printed."""

from __future__ import annotations

import json
import os
import re
from pathlib import Path

from analyzer.cli import main

CAPTURES = Path(__file__).resolve().parents[1] / "captures"


def run(argv: list[str], capsys) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of ``rstscope`` with ``argv``."""
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def without_file(out: str) -> list[dict]:
    """The JSON records printed, without their ``file`` (a set names its first file)."""
    recs = [json.loads(line) for line in out.splitlines()]
    for r in recs:
        r.pop("file")
    return recs


def in_order(directory: str) -> list[str]:
    """The pieces ``split`` wrote (cap.pcap, cap.pcap1, ...), in their order."""
    return sorted(os.listdir(directory), key=lambda n: int(re.sub(r"\D", "", n) or 0))
