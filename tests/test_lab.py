"""The lab: its table covers the catalog; with root, a few fast scenarios really run."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from analyzer import cases
from analyzer.errors import LabError
from analyzer.lab import LabUnavailable, list_scenarios, run_scenarios

CASES_MD = Path(__file__).resolve().parents[2] / "shared" / "CASES.md"


def catalog_ids() -> set[str]:
    try:
        from analyzer import cases  # the catalog module, once it exists
        return {c.id for c in cases.CASES}  # type: ignore[attr-defined]
    except (ImportError, AttributeError):
        pass
    if not CASES_MD.exists():
        pytest.skip(f"{CASES_MD} not found")
    return set(re.findall(r"^\| `([a-z_]+)` \|", CASES_MD.read_text(), flags=re.M))


def test_every_catalog_case_has_a_scenario():
    ids = catalog_ids() - set(cases.PLANNED)  # (planned cases bring their scenarios)
    assert len(ids) >= 20
    listed = {s.id for s in list_scenarios()}
    assert ids <= listed, f"no lab scenario for {sorted(ids - listed)}"


def test_scenario_info_is_complete():
    for s in list_scenarios():
        assert s.title and set(s.families) <= {"4", "6"} and s.families
        assert "root" in s.needs


def test_lab_unavailable_is_a_lab_error():
    assert issubclass(LabUnavailable, LabError)


@pytest.mark.skipif(os.geteuid() == 0, reason="checks the non-root refusal")
def test_without_root_the_lab_refuses(tmp_path):
    with pytest.raises(LabUnavailable):
        run_scenarios(["refused"], tmp_path)


def _need_root():
    if os.geteuid() != 0:
        pytest.skip("needs root")
    if shutil.which("tcpdump") is None:
        pytest.skip("needs tcpdump")


# case -> (side, call, expected result) per CASES.md, and the RST reasons tracefs may show
EXPECT = {
    "refused": (("client", "connect", "ECONNREFUSED"), {"NO_SOCKET"}),
    "write_after_close": (("server", "send", "EPIPE"), {"NO_SOCKET", "TCP_TIMEWAIT_SOCKET"}),
    "unread_data_reset": (("server", "recv", "ECONNRESET"), {"TCP_ABORT_ON_CLOSE"}),
    "graceful": (("server", "recv", "EOF"), set()),
}


def _leftovers() -> list[str]:
    pid = os.getpid()
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True,
                         timeout=5).stdout
    left = [line for line in out.splitlines() if f"rstscope_lab_{pid}_" in line]
    tables = subprocess.run(["nft", "list", "tables"], capture_output=True, text=True,
                            timeout=5).stdout
    left += [line for line in tables.splitlines() if f"rstscope_lab_{pid}" in line]
    if Path(f"/sys/kernel/tracing/instances/rstscope_{pid}").exists():
        left.append("trace instance")
    return left


@pytest.mark.root
def test_fast_scenarios_really_run(tmp_path):
    _need_root()
    results = run_scenarios(list(EXPECT), tmp_path, ("4", "6"), log=lambda m: None)
    assert len(results) == 2 * len(EXPECT)
    for res in results:
        assert res.error is None, res.error
        assert res.pcap is not None and res.pcap.stat().st_size > 24, res
        label = json.loads(res.label.read_text())
        (side, call, want), reasons = EXPECT[res.case]
        got = [c["result"] for c in label["calls"] if c["side"] == side and c["call"] == call]
        assert want in got, (res.case, res.family, label["calls"])
        assert label["verified"], (res.case, label["verify_reason"])
        if label["tracefs"]:
            assert label["kernel"]["inet_sock_set_state"], res.case
            sent = {e["reason"] for e in label["kernel"]["tcp_send_reset"]}
            assert (reasons & sent) if reasons else not sent, (res.case, sent)
    assert not _leftovers()


@pytest.mark.root
def test_unknown_case_is_a_usage_error(tmp_path):
    from analyzer.errors import UsageError

    with pytest.raises(UsageError):
        run_scenarios(["no_such_case"], tmp_path)
