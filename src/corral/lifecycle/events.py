"""The typed lifecycle events that every sink receives.

One enum names every transition; one frozen dataclass carries it. Fields
that only some kinds use are optional and ``None`` otherwise, so a sink can
read ``event.exit_code`` without type-switching, and ``as_dict`` gives the
flat, JSON-ready view that logs and the side port share.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, fields
from typing import Any

from corral.runtime import WorkerMode


class EventKind(enum.Enum):
    SUPERVISOR_START = "supervisor_start"
    SUPERVISOR_STOP = "supervisor_stop"
    SPAWN = "spawn"
    READY = "ready"
    EXIT = "exit"
    CRASH = "crash"
    RESPAWN = "respawn"
    BUDGET_EXHAUSTED = "budget_exhausted"
    DRAIN_START = "drain_start"
    DRAIN_END = "drain_end"
    FORCE_STOP = "force_stop"
    RELOAD = "reload"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"
    RECYCLE = "recycle"  # a worker reached --max-requests and is replaced, rolling
    # A recycle's or a reload's successor died before it was ready; the old worker serves on.
    SUCCESSOR_FAILED = "successor_failed"
    # A warm spare (--spares) took a slot: the slot's next generation, serving at once.
    PROMOTE = "promote"


class CrashReason(enum.Enum):
    """Why a worker died. A fixed set, so it is safe as a metric label."""

    EXIT_CODE = "exit_code"  # the process exited non-zero
    SIGNAL = "signal"  # the process was killed by a signal
    BOOT = "boot"  # died before it ever became ready
    HANG = "hang"  # stopped heartbeating and was killed
    EXCEPTION = "exception"  # the worker's loop raised (thread mode, mostly)


class SuccessorRole(enum.Enum):
    """Why a successor was started beside a serving worker. A fixed set, like ``CrashReason``."""

    RECYCLE = "recycle"  # its worker reached --max-requests
    RELOAD = "reload"  # a rolling restart (SIGHUP, --reload, ``restart_workers``)


@dataclass(frozen=True, slots=True)
class LifecycleEvent:
    """One lifecycle transition. ``seq`` is stamped by the collector, in delivery order.

    ``slot`` is ``None`` for supervisor-wide events (start, stop, reload) and
    for a warm spare's own events, which name the spare by ``spare`` instead;
    a ``promote`` event has both: the spare, and the slot it took.
    ``wall_time`` is for humans and exporters; ``monotonic`` for durations.
    """

    kind: EventKind
    mode: WorkerMode
    wall_time: float
    monotonic: float
    slot: int | None = None
    generation: int = 0
    pid: int | None = None
    thread_id: int | None = None
    seq: int = 0
    # Crash and exit details.
    exit_code: int | None = None
    signal: str | None = None
    reason: CrashReason | None = None
    uptime: float | None = None
    role: SuccessorRole | None = None  # successor_failed: what the successor was for
    spare: int | None = None  # a warm spare's number (its own events, and promote)
    # Respawn and budget details.
    restart_number: int | None = None
    backoff: float | None = None
    budget_remaining: int | None = None
    # Drain, force-stop, scaling and free text.
    duration: float | None = None
    workers: int | None = None
    message: str | None = None
    # Stamped by the tracing sink before any other sink sees the event, so the
    # log line, the metric exemplar and /events all name the same span.
    trace_id: str | None = None
    span_id: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """Flat JSON-ready view; unset optional fields are left out.

        Every field is a scalar, so this reads them directly: ``dataclasses.asdict``
        deep-copies and took a quarter of each event's cost in the log sink.
        """
        out: dict[str, Any] = {}
        for key in _FIELD_NAMES:
            value = getattr(self, key)
            if value is None:
                continue
            out[key] = value.value if isinstance(value, enum.Enum) else value
        return out


_FIELD_NAMES = tuple(field.name for field in fields(LifecycleEvent))
