"""The lab: every catalog case reproduced with real sockets on this machine's kernel.

Public API (wired into ``rstscope lab list`` / ``rstscope lab run``)::

    list_scenarios() -> list[ScenarioInfo]
    run_scenarios(case_ids, outdir, families=("4",), *, log=print) -> list[LabResult]

For each (case, family) the lab writes ``<case>.pcap`` / ``<case>_v6.pcap`` (tcpdump) and a
label ``<case>.json`` / ``<case>_v6.json``: every socket call and its result, the kernel's own
account from tracefs, a summary of the wire, and whether the run did what the case claims
(``verified``). Each scenario runs in a network namespace of its own, created and deleted
around it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterable
from pathlib import Path

from analyzer.errors import LabError, UsageError
from analyzer.lab.model import LabResult, ScenarioInfo


class LabUnavailable(LabError):
    """This machine cannot run the lab (not root, tcpdump or ip(8) missing)."""


def _registry():
    from analyzer.lab import scenarios  # noqa: F401  (fills the registry)
    from analyzer.lab.model import REGISTRY

    return REGISTRY


def list_scenarios() -> list[ScenarioInfo]:
    return [sc.info() for _, sc in sorted(_registry().items())]


def run_scenarios(case_ids: Iterable[str], outdir: Path, families: Iterable[str] = ("4",), *,
                  log: Callable[[str], None] = print) -> list[LabResult]:
    import shutil

    from analyzer.lab.capture import tcpdump_path
    from analyzer.lab.runner import run_all
    from analyzer.lab.trace import tracefs_available

    registry = _registry()
    ids = list(case_ids)
    unknown = [c for c in ids if c not in registry]
    if unknown:
        raise UsageError(f"unknown lab case(s): {', '.join(unknown)}; "
                         f"known: {', '.join(sorted(registry))}")
    fams = tuple(str(f).removeprefix("v").removeprefix("ipv") for f in families)
    if any(f not in ("4", "6") for f in fams):
        raise UsageError(f"families must be '4' and/or '6', not {fams}")
    if os.geteuid() != 0:
        raise LabUnavailable("the lab needs root (network namespaces, tcpdump, nftables)")
    if tcpdump_path() is None:
        raise LabUnavailable("the lab needs tcpdump, which is not installed")
    for tool in ("ip", "nft", "tc"):
        if shutil.which(tool) is None:
            raise LabUnavailable(f"the lab needs {tool}, which is not installed")
    tracefs = tracefs_available()
    if not tracefs:
        log("lab: tracefs unavailable; labels will carry \"tracefs\": false")
    return run_all(ids, Path(outdir), fams, tracefs, log)


__all__ = ["LabResult", "LabUnavailable", "ScenarioInfo", "list_scenarios", "run_scenarios"]
