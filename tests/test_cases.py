"""The catalog as data: complete, documented, reproducible, and consistent with CASES.md."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from analyzer import cases
from analyzer.lab import list_scenarios

ROOT = Path(__file__).resolve().parents[1]
CASES_MD = ROOT.parent / "shared" / "CASES.md"
DOCUMENT_REF = re.compile(r"\b00[0-4]\b|beyond the documents|—")


def test_ids_match_cases_md():
    if not CASES_MD.exists():
        pytest.skip(f"{CASES_MD} not found")
    ids = set(re.findall(r"^\| `([a-z_]+)` \|", CASES_MD.read_text(), re.M))
    # every catalog case is in CASES.md; CASES.md's others are planned, and only those
    assert ids == set(cases.BY_ID) | set(cases.PLANNED)
    assert not set(cases.PLANNED) & set(cases.BY_ID)


@pytest.mark.parametrize("case", cases.CATALOG, ids=lambda c: c.id)
def test_every_case_is_documented_reproducible_and_captured(case):
    assert DOCUMENT_REF.search(case.documents), f"{case.id}: no document reference"
    assert case.title and case.wire and case.sees and case.advice
    assert case.id in {s.id for s in list_scenarios()}, f"{case.id}: no lab scenario"
    assert (ROOT / "captures" / f"{case.id}.pcap").exists(), f"{case.id}: no capture"


def test_precedence_is_a_total_order_with_abnormal_first():
    prec = [c.precedence for c in cases.CATALOG]
    assert len(set(prec)) == len(prec)
    worst_abnormal = max(c.precedence for c in cases.CATALOG if c.abnormal)
    assert all(c.precedence > worst_abnormal for c in cases.CATALOG if not c.abnormal)
