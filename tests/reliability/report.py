"""``ScenarioReport``: the figures one scenario run produced, one JSON line each.

``scripts/reliability_report.py`` turns the lines into ``RELIABILITY.md``.
A report is written at teardown whether the scenario passed or not, with its
outcome, so a failing run still leaves its evidence.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from tests.reliability.load import LoadResult
from tests.reliability.observe import Resources, SinkCount


@dataclass(slots=True)
class ScenarioReport:
    """Filled in by the scenario as it runs; the fixture adds the outcome and duration."""

    scenario: str
    mode: str
    test: str = ""
    load: str = "none"
    faults: str = "none"
    sent: int = 0
    failed: int = 0
    failures_by_outcome: dict[str, int] = field(default_factory=dict)
    # Why each failure could not have been avoided (e.g. "in flight on a killed worker").
    failure_reason: str = ""
    events: list[SinkCount] = field(default_factory=list)
    # Named figures: "supervisor CPU s", "RSS MiB", "fds start/end"...
    figures: dict[str, float | int | str] = field(default_factory=dict)
    outcome: str = "unknown"
    duration_s: float = 0.0
    finished_at: float = 0.0

    def record_load(self, result: LoadResult, reason: str = "") -> None:
        self.load = result.spec.describe()
        if result.spec.duration is None:
            self.load = self.load.replace("until stopped", f"{result.elapsed:.0f} s")
        self.sent += result.sent
        self.failed += result.failed
        for name, count in result.by_outcome().items():
            self.failures_by_outcome[name] = self.failures_by_outcome.get(name, 0) + count
        if reason:
            self.failure_reason = reason

    def record_resources(self, label: str, resources: Resources) -> None:
        """``label`` names the moment: "start", "end", "during the storm"..."""
        self.figures[f"supervisor CPU s ({label})"] = round(resources.cpu_seconds, 3)
        self.figures[f"supervisor RSS MiB ({label})"] = round(resources.rss_mib, 1)
        self.figures[f"supervisor fds ({label})"] = resources.fds

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)


def append(path: Path, report: ScenarioReport) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    report.finished_at = time.time()
    with path.open("a", encoding="utf-8") as out:
        out.write(report.to_json() + "\n")
