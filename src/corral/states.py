"""The slot vocabulary: what a worker slot can be, and how each state is shown.

This is a leaf module: it imports nothing from corral, so the supervisor,
the metrics, the side port and the ``corral status`` client can all depend on
it without depending on each other. States are enums everywhere inside
corral; they become strings only at the edges (JSON, metric label values, the
terminal table, the status page), through ``.value`` and ``STATE_STYLES``.
"""

from __future__ import annotations

import enum
from collections.abc import Iterable
from dataclasses import dataclass


class SlotState(enum.Enum):
    """What one worker slot is doing, as the supervisor reports it."""

    STARTING = "starting"  # its worker is booting (lifespan startup not done yet)
    READY = "ready"  # its worker serves requests
    DRAINING = "draining"  # its worker finishes in-flight requests, then exits
    BACKOFF = "backoff"  # waiting out the backoff delay before the next respawn
    EXHAUSTED = "exhausted"  # out of restart budget: not started again
    HUNG = "hung"  # a thread worker whose event loop stopped (a thread cannot be killed)
    STOPPED = "stopped"  # no worker, and none coming: corral is shutting down
    SPARE = "spare"  # a warm spare (--spares), not a slot: booted, not accepting, waiting


# The states a slot can be in: SPARE is a spare's, never a slot's.
SLOT_STATES = tuple(state for state in SlotState if state is not SlotState.SPARE)

# A slot in one of these has a live worker incarnation (its pid/thread is real).
ALIVE_STATES = frozenset({SlotState.STARTING, SlotState.READY, SlotState.DRAINING})


class Phase(enum.Enum):
    """The supervisor's own lifecycle."""

    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    FORCING = "forcing"
    DONE = "done"


@dataclass(frozen=True, slots=True)
class StateStyle:
    """How a state is shown to people: one label and one colour everywhere.

    ``terminal`` is a click colour name (``corral status``); ``css`` the
    colour the status page uses for the same state.
    """

    label: str
    terminal: str
    css: str


STATE_STYLES: dict[SlotState, StateStyle] = {
    SlotState.STARTING: StateStyle("starting", "yellow", "#8a6d00"),
    SlotState.READY: StateStyle("ready", "green", "#176f2c"),
    SlotState.DRAINING: StateStyle("draining", "cyan", "#0b5cad"),
    SlotState.BACKOFF: StateStyle("backoff", "magenta", "#a3369a"),
    SlotState.EXHAUSTED: StateStyle("exhausted", "red", "#b00020"),
    SlotState.HUNG: StateStyle("hung", "bright_red", "#d35400"),
    SlotState.STOPPED: StateStyle("stopped", "bright_black", "#777777"),
    SlotState.SPARE: StateStyle("spare", "blue", "#5b4fb0"),
}


def parse_state(text: object) -> SlotState | None:
    """The state a JSON value names, or ``None`` for anything else (an older corral, say)."""
    try:
        return SlotState(text)
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One row of ``Supervisor.status()``: a consistent snapshot of one slot."""

    slot: int
    mode: str  # "thread" or "process": the value of the supervisor's WorkerMode
    pid: int | None
    thread_id: int | None
    generation: int
    state: SlotState
    started_at: float | None
    restarts_in_window: int
    budget_remaining: int
    last_exit: str | None

    def as_dict(self) -> dict[str, object]:
        """The JSON view: the state as its string value."""
        return {
            "slot": self.slot,
            "mode": self.mode,
            "pid": self.pid,
            "thread_id": self.thread_id,
            "generation": self.generation,
            "state": self.state.value,
            "started_at": self.started_at,
            "restarts_in_window": self.restarts_in_window,
            "budget_remaining": self.budget_remaining,
            "last_exit": self.last_exit,
        }


def required_ready(min_ready: int | None, slots: Iterable[WorkerStatus]) -> int:
    """Ready workers ``/readyz`` needs: ``--min-ready``, else every slot not exhausted (at least 1).

    One rule for ``/readyz`` and the ``corral_workers_min_ready`` gauge, so the
    CorralNotReady alert compares against exactly what ``/readyz`` answers.
    """
    if min_ready is not None:
        return min_ready
    return max(1, sum(1 for row in slots if row.state is not SlotState.EXHAUSTED))


@dataclass(frozen=True, slots=True)
class SpareStatus:
    """One spare as ``/workers`` and the metrics show it."""

    number: int
    pid: int | None
    thread_id: int | None
    state: SlotState  # SPARE once warm, STARTING while it boots
    started_at: float

    def as_dict(self) -> dict[str, object]:
        return {
            "spare": self.number,
            "pid": self.pid,
            "thread_id": self.thread_id,
            "state": self.state.value,
            "started_at": self.started_at,
        }


@dataclass(frozen=True, slots=True)
class SparesView:
    """The spares at one moment: how many are wanted, and each one there is."""

    desired: int
    budget_remaining: int
    exhausted: bool
    rows: tuple[SpareStatus, ...] = ()

    @property
    def ready(self) -> int:
        return sum(1 for row in self.rows if row.state is SlotState.SPARE)
