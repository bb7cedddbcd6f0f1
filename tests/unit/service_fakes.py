"""A scripted ``ServiceSources`` for the side port's tests.

It behaves like the real one where the HTTP layer can tell: events carry
``seq`` and ``kind``, ``subscribe`` calls back from whichever thread calls
``emit`` (tests call it from the test thread, not the port's loop), and
every call is counted so a test can assert what the port asked for.
"""

from __future__ import annotations

import threading
from typing import Any

from corral.lifecycle.feed import EventCallback
from corral.service.sources import MetricsPayload, Readiness, Unsubscribe

PROMETHEUS = "text/plain; version=0.0.4; charset=utf-8"
OPENMETRICS = "application/openmetrics-text; version=1.0.0; charset=utf-8"


class FakeSources:
    def __init__(self) -> None:
        self._lock = threading.Lock()
        self.healthy_value = True
        self.healthy_gate: threading.Event | None = None
        self.healthy_calls = 0
        self.readiness_value = Readiness(True, "2 workers ready", 2, 2)
        self.metrics_body = b"# HELP corral_workers Workers.\ncorral_workers 2\n"
        self.metrics_accepts: list[str | None] = []
        self.fail: set[str] = set()
        self.traces_value: list[dict[str, Any]] = [
            {"trace_id": "ab" * 16, "span_id": "cd" * 8, "name": "spawn", "links": []}
        ]
        self.workers_value: dict[str, Any] = {
            "mode": "process",
            "gil_enabled": True,
            "desired": 2,
            "workers": [
                {"slot": 0, "pid": 101, "state": "ready", "generation": 1, "started_at": 1.0},
                {"slot": 1, "pid": 102, "state": "starting", "generation": 3, "started_at": 2.0},
            ],
        }
        self._events: list[dict[str, Any]] = []
        self._subscribers: dict[int, EventCallback] = {}
        self._next_subscriber = 0
        self.subscribe_calls = 0

    # --- ServiceSources ---------------------------------------------------

    def metrics(self, accept: str | None) -> MetricsPayload:
        self._maybe_fail("metrics")
        with self._lock:
            self.metrics_accepts.append(accept)
        if accept is not None and "application/openmetrics-text" in accept:
            return MetricsPayload(self.metrics_body + b"# EOF\n", OPENMETRICS)
        return MetricsPayload(self.metrics_body, PROMETHEUS)

    def healthy(self) -> bool:
        with self._lock:
            self.healthy_calls += 1
        if self.healthy_gate is not None:
            self.healthy_gate.wait(10)
        return self.healthy_value

    def readiness(self) -> Readiness:
        return self.readiness_value

    def workers(self) -> dict[str, Any]:
        self._maybe_fail("workers")
        return self.workers_value

    def events(self, since: int) -> list[dict[str, Any]]:
        self._maybe_fail("events")
        with self._lock:
            return [dict(event) for event in self._events if event["seq"] > since]

    def subscribe(self, callback: EventCallback) -> Unsubscribe:
        with self._lock:
            key = self._next_subscriber
            self._next_subscriber += 1
            self._subscribers[key] = callback
            self.subscribe_calls += 1

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    def traces(self) -> list[dict[str, Any]]:
        self._maybe_fail("traces")
        return self.traces_value

    # --- Test controls ----------------------------------------------------

    @property
    def subscriber_count(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def emit(self, kind: str, **fields: Any) -> dict[str, Any]:
        """Record an event and call every subscriber, like the collector does."""
        with self._lock:
            event = {"seq": len(self._events) + 1, "kind": kind, **fields}
            self._events.append(event)
            callbacks = list(self._subscribers.values())
        for callback in callbacks:
            callback(dict(event))
        return event

    def _maybe_fail(self, name: str) -> None:
        if name in self.fail:
            raise RuntimeError(f"secret detail /etc/{name} that must not leak")
