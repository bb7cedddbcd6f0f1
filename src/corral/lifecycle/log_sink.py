"""The structlog sink: one log line per lifecycle event."""

from __future__ import annotations

import logging

import structlog

from corral.lifecycle.events import EventKind, LifecycleEvent

_LEVELS = {
    EventKind.CRASH: logging.WARNING,
    EventKind.FORCE_STOP: logging.WARNING,
    EventKind.SUCCESSOR_FAILED: logging.WARNING,
    EventKind.BUDGET_EXHAUSTED: logging.ERROR,
}


class StructlogSink:
    """Writes each event as a structured line: ``event`` is the kind, the rest are fields."""

    name = "log"

    def __init__(self, logger_name: str = "corral.lifecycle") -> None:
        self._log = structlog.get_logger(logger_name)

    def handle(self, event: LifecycleEvent) -> None:
        fields = event.as_dict()
        kind = fields.pop("kind")
        level = _LEVELS.get(event.kind, logging.INFO)
        self._log.log(level, kind, lifecycle=True, **fields)
