"""Plain data of the lab: what a scenario declares, what a run returns, and the registry.

Scenarios are declared as data (a ``Scenario`` record holding the function that drives the
sockets) and collected in one table, so ``list_scenarios`` can describe them without running
anything and the tests can check the table against the catalog.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path


@dataclass(frozen=True)
class ScenarioInfo:
    """What ``list_scenarios`` shows: enough to choose and to know what the machine needs."""

    id: str
    title: str
    families: tuple[str, ...]
    needs: tuple[str, ...]
    slow: bool = False


@dataclass(frozen=True)
class Scenario:
    """One catalog case reproduced with real sockets.

    ``run(lab)`` drives the sockets through ``lab`` (an ``analyzer.lab.context.Lab``);
    ``capture_late`` means the scenario starts tcpdump itself (the ``partial`` case);
    ``slow`` marks the timeout cases that take several seconds. ``case`` is the catalog case
    the scenario reproduces when its id is a variant's (``backlog_overflow_recovers``), not
    the case id itself; ``variant`` marks a scenario that changes only what the wire hides
    (the tests let it get its rival's case, marked likely and naming its own).
    """

    id: str
    title: str
    description: str
    run: Callable
    families: tuple[str, ...] = ("4", "6")
    needs: tuple[str, ...] = ("root", "netns", "tracefs")
    capture_late: bool = False
    slow: bool = False
    case: str = ""
    # a variant that changes only what the wire hides: its verdict may honestly be the rival's
    variant: bool = False

    @property
    def case_id(self) -> str:
        return self.case or self.id

    def info(self) -> ScenarioInfo:
        return ScenarioInfo(self.id, self.title, self.families, self.needs, self.slow)


@dataclass
class LabResult:
    """The outcome of one (case, family) run: the files written and whether it did its job."""

    case: str
    family: int
    pcap: Path | None
    label: Path | None
    verified: bool
    reason: str
    seconds: float
    error: str | None = None
    label_data: dict = field(default_factory=dict, repr=False)


REGISTRY: dict[str, Scenario] = {}


def scenario(id: str, title: str, description: str, **kw) -> Callable[[Callable], Callable]:
    """Decorator: register the decorated function as the scenario for catalog case ``id``."""

    def register(fn: Callable) -> Callable:
        if id in REGISTRY:
            raise ValueError(f"duplicate lab scenario {id}")
        REGISTRY[id] = Scenario(id, title, " ".join(description.split()), fn, **kw)
        return fn

    return register
