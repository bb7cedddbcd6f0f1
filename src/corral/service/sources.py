"""What the side port reads, as one small protocol.

The HTTP layer (``service.server``) knows nothing about supervisors,
registries or tracers: it asks a ``ServiceSources`` for bytes and JSON-ready
values. ``cli`` wires the real implementation; tests can hand it a fake.
Every method is called from the side port's own thread, so implementations
must be thread-safe and must never block on a worker.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from corral.lifecycle.feed import EventCallback


@dataclass(frozen=True, slots=True)
class Readiness:
    """The answer behind ``/readyz``: ``reason`` is one human-readable line."""

    ready: bool
    reason: str
    ready_workers: int
    required_workers: int


@dataclass(frozen=True, slots=True)
class MetricsPayload:
    body: bytes
    content_type: str


Unsubscribe = Callable[[], None]


class ServiceSources(Protocol):
    def metrics(self, accept: str | None) -> MetricsPayload:
        """The exposition for this ``Accept`` header (OpenMetrics when asked for)."""
        ...

    def healthy(self) -> bool:
        """Whether the supervisor loop is alive and answering. May wait up to ~1 s."""
        ...

    def readiness(self) -> Readiness: ...

    def workers(self) -> dict[str, Any]:
        """``{"mode", "gil_enabled", "desired", "workers": [row, ...]}``."""
        ...

    def events(self, since: int) -> list[dict[str, Any]]:
        """Recent lifecycle events with ``seq > since``, oldest first (each has ``seq``)."""
        ...

    def subscribe(self, callback: EventCallback) -> Unsubscribe:
        """Call ``callback(event_dict)`` for every new event, from the emitting thread.

        The callback must not block: hand the event to your own loop
        (``loop.call_soon_threadsafe``) and return.
        """
        ...

    def traces(self) -> list[dict[str, Any]]:
        """Recent lifecycle spans, oldest first, with trace/span ids and links."""
        ...
