"""Per-slot figures for ``/workers`` and the status page: requests, CPU, memory, budget.

The numbers come from the same readers ``/metrics`` uses (the request-stats
pool and ``metrics.ResourceCollector``), so the page and Prometheus can never
disagree about what a worker has done. They are cumulative (requests, CPU
seconds): the page turns two successive readings into a rate, which keeps the
server stateless and lets any number of pages share one ``/workers``.

Everything here runs on the side port's thread only; the collector's
psutil cache is not shared with the scrape-time one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from corral.metrics import FleetSource, ResourceCollector
from corral.request_stats.pool import SlotRequestStats

RequestSnapshot = Callable[[], Mapping[int, SlotRequestStats]]

_CPU = "corral_worker_cpu_seconds"
_RSS = "corral_worker_resident_memory_bytes"


@dataclass(frozen=True, slots=True)
class BudgetLimit:
    """The configured restart budget: ``max_restarts`` per ``window_seconds``, per slot."""

    max_restarts: int
    window_seconds: float

    def as_dict(self) -> dict[str, object]:
        return {"max_restarts": self.max_restarts, "window_seconds": self.window_seconds}


class SlotFigures:
    """Reads every slot's cumulative figures at once, for one ``/workers`` answer."""

    UNKNOWN: Mapping[str, float | None] = {
        "requests": None,
        "errors": None,
        "in_flight": None,
        "cpu_seconds": None,
        "rss_bytes": None,
    }

    def __init__(self, fleet: FleetSource, requests: RequestSnapshot | None, *, threads: bool):
        self._resources = ResourceCollector(fleet, threads=threads)
        self._requests = requests

    def read(self) -> dict[int, dict[str, float | None]]:
        """``slot -> {requests, errors, in_flight, cpu_seconds, rss_bytes}``.

        A figure corral cannot know is ``None``: request counts with
        ``--no-request-metrics``, RSS per worker in thread mode (the threads
        share one process), CPU for a slot with no live worker.
        """
        out: dict[int, dict[str, float | None]] = {}

        def row(slot: int) -> dict[str, float | None]:
            return out.setdefault(slot, dict(self.UNKNOWN))

        for family in self._resources.collect():
            key = {_CPU: "cpu_seconds", _RSS: "rss_bytes"}.get(family.name)
            for sample in family.samples if key else ():
                if key is not None and sample.name in (_CPU + "_total", _RSS):
                    row(int(sample.labels["slot"]))[key] = sample.value
        if self._requests is not None:
            for slot, stats in self._requests().items():
                figures = row(slot)
                figures["requests"] = sum(stats.requests.values())
                figures["errors"] = sum(
                    count for (_, status), count in stats.requests.items() if status == "5xx"
                )
                figures["in_flight"] = stats.in_flight
        return out
