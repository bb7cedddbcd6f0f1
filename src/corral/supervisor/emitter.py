"""Turning a transition into a ``LifecycleEvent`` for the collector.

Every lifecycle event the supervisor sends goes through ``Emitter.emit``, so
each one carries the same identity fields (mode, times, slot, generation, pid,
thread) however it was caused. A warm spare's events name it by ``spare``
(its number) instead of a slot: it has none until it is promoted.

An event's times are those of what it reports, which may precede its
emission: a respawn starts the replacement first and reports the crash after
(``Restarts.on_failed``), so those events pass ``at``, the monotonic time it
happened.
"""

from __future__ import annotations

import os
import signal
import time
from typing import Any

from corral.handles import WorkerHandle
from corral.incarnation import Failed
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.events import EventKind, LifecycleEvent
from corral.policy import ExitClass, Respawn
from corral.runtime import WorkerMode


class Emitter:
    def __init__(self, collector: LifecycleCollector, mode: WorkerMode) -> None:
        self.collector = collector
        self._mode = mode

    def emit(
        self,
        kind: EventKind,
        handle: WorkerHandle | None = None,
        *,
        slot: int | None = None,
        at: float | None = None,
        **details: Any,
    ) -> LifecycleEvent:
        """Send one event; ``at`` (``time.monotonic()``) if it happened before now."""
        wall, monotonic = time.time(), time.monotonic()
        if at is not None:
            wall, monotonic = wall - (monotonic - at), at
        at_slot, generation = slot, 0
        if handle is not None and handle.spec.spare:
            details["spare"] = handle.generation  # a spare has no slot until promoted
        elif handle is not None:
            at_slot, generation = handle.slot, handle.generation
        event = LifecycleEvent(
            kind=kind,
            mode=self._mode,
            wall_time=wall,
            monotonic=monotonic,
            slot=at_slot,
            generation=generation,
            pid=handle.pid if handle else os.getpid(),
            thread_id=handle.thread_id if handle else None,
            **details,
        )
        return self.collector.emit(event)

    def failure(self, handle: WorkerHandle, failed: Failed, *, at: float) -> LifecycleEvent:
        """The ``crash`` (or, for a clean exit nobody asked for, ``exit``) event of ``handle``."""
        info, verdict = failed.info, failed.verdict
        return self.emit(
            EventKind.EXIT if verdict.kind is ExitClass.CLEAN else EventKind.CRASH,
            handle,
            at=at,
            exit_code=info.exit_code,
            signal=signal.Signals(info.signal_number).name if info.signal_number else None,
            reason=verdict.reason,
            uptime=failed.uptime,
            message=failed.message or handle.boot_message,
        )

    def respawn(
        self, handle: WorkerHandle, decision: Respawn, *, at: float | None = None
    ) -> LifecycleEvent:
        """The ``respawn`` event: a restart of a slot (or a spare), charged to its budget."""
        return self.emit(
            EventKind.RESPAWN,
            handle,
            at=at,
            restart_number=decision.restart_number,
            backoff=decision.delay,
            budget_remaining=decision.budget_remaining,
        )
