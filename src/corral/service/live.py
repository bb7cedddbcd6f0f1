"""The real ``ServiceSources``: the side port's view of a running supervisor.

Everything here reads snapshots taken under the owners' locks
(``Supervisor.status()``, ``LifecycleCollector.recent()``, the metrics
registry), so the side port's thread never touches supervision state
directly and never waits on a worker.
"""

from __future__ import annotations

import time
from typing import Any, Protocol

from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.feed import EventCallback, EventFeed
from corral.metrics import CorralMetrics, FleetView
from corral.runtime import ModeDecision, WorkerMode
from corral.service.figures import BudgetLimit, RequestSnapshot, SlotFigures
from corral.service.sources import (
    MetricsPayload,
    Readiness,
    Unsubscribe,
)
from corral.states import Phase, SlotState, SparesView, WorkerStatus, required_ready
from corral.tracing import RecentSpans

# How long /healthz waits for the supervision loop to answer a ping.
PING_TIMEOUT_SECONDS = 1.0


class SupervisorView(Protocol):
    """What the side port reads from a supervisor; ``corral.supervisor.Supervisor`` is one.

    A protocol, so that the side port depends on the slot vocabulary only,
    never on the supervision mechanism.
    """

    @property
    def phase(self) -> Phase: ...

    @property
    def worker_count(self) -> int: ...

    @property
    def mode_decision(self) -> ModeDecision: ...

    def status(self) -> list[WorkerStatus]: ...

    def spares(self) -> SparesView: ...

    def ping(self, timeout: float = ...) -> bool: ...


def fleet_view(supervisor: SupervisorView) -> FleetView:
    return FleetView(
        desired=supervisor.worker_count, slots=supervisor.status(), spares=supervisor.spares()
    )


class LiveSources:
    def __init__(
        self,
        supervisor: SupervisorView,
        collector: LifecycleCollector,
        metrics: CorralMetrics,
        feed: EventFeed,
        *,
        spans: RecentSpans | None,
        min_ready: int | None,
        budget: BudgetLimit | None = None,
        request_stats: RequestSnapshot | None = None,
    ) -> None:
        self._supervisor = supervisor
        self._budget = budget
        threads = supervisor.mode_decision.mode is WorkerMode.THREAD
        self._figures = SlotFigures(lambda: fleet_view(supervisor), request_stats, threads=threads)
        self._collector = collector
        self._metrics = metrics
        self._feed = feed
        self._spans = spans
        self._min_ready = min_ready

    def metrics(self, accept: str | None) -> MetricsPayload:
        body, content_type = self._metrics.expose(accept)
        return MetricsPayload(body, content_type)

    def healthy(self) -> bool:
        return self._supervisor.ping(PING_TIMEOUT_SECONDS)

    def readiness(self) -> Readiness:
        phase = self._supervisor.phase
        rows = self._supervisor.status()
        ready = sum(1 for row in rows if row.state is SlotState.READY)
        required = required_ready(self._min_ready, rows)
        if phase is not Phase.RUNNING:
            return Readiness(False, f"supervisor is {phase.value}", ready, required)
        if ready < required:
            return Readiness(
                False, f"{ready} of {required} required workers ready", ready, required
            )
        return Readiness(True, f"{ready} workers ready", ready, required)

    def workers(self) -> dict[str, Any]:
        decision = self._supervisor.mode_decision
        figures = self._figures.read()
        rows = []
        for status in self._supervisor.status():
            row = _row(status.as_dict())
            row.update(figures.get(status.slot, SlotFigures.UNKNOWN))
            rows.append(row)
        return {
            "mode": decision.mode.value,
            "gil_enabled": decision.gil_enabled,
            "phase": self._supervisor.phase.value,
            "desired": self._supervisor.worker_count,
            # The server's clock, so a page on another machine can place events on its timeline.
            "time": time.time(),
            "budget": self._budget.as_dict() if self._budget is not None else None,
            "workers": rows,
            "spares": _spares(self._supervisor.spares()),
        }

    def events(self, since: int) -> list[dict[str, Any]]:
        return [event.as_dict() for event in self._collector.recent(since)]

    def subscribe(self, callback: EventCallback) -> Unsubscribe:
        return self._feed.subscribe(callback)

    def traces(self) -> list[dict[str, Any]]:
        return self._spans.snapshot() if self._spans is not None else []


def _spares(view: SparesView) -> dict[str, object]:
    return {
        "desired": view.desired,
        "ready": view.ready,
        "budget_remaining": view.budget_remaining,
        "exhausted": view.exhausted,
        "workers": [row.as_dict() for row in view.rows],
    }


def _row(row: dict[str, object]) -> dict[str, object]:
    row.pop("mode", None)  # said once at the top level
    return row
