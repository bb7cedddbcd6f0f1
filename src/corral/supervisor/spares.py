"""Warm spares (``--spares N``): workers that booted, waiting to take a slot at once.

A spare is spawned like any worker but told it is one (``WorkerSpec.spare``):
it runs the app's lifespan startup, reports ready, and does not listen. When
a slot needs a new worker now (a crash or a hang replaced without backoff, a
backoff that ended, a recycle, a rolling restart), a ready spare is
*promoted* instead of a worker being started: it takes the slot's next
generation and accepts within one turn of its event loop, where a fresh
worker would spend tens of milliseconds (a process) booting first. Another
spare then boots in the background.

Spares have a restart budget of their own (the slots' policy, counted apart),
so a spare that fails at boot backs off, and out of budget spares stop until
the next reload, which gives them a fresh budget. A failing spare never
escalates: the slots serve on without spares. A reload replaces every spare
before it rolls a slot, so a promoted spare never serves old code.

Each spare is named by its number (the spare lineage's generation): events
carry it as ``spare``, and a ``promote`` event carries both the spare and the
slot generation it became.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import structlog

from corral.handles import WorkerHandle
from corral.incarnation import Failed
from corral.lifecycle.events import EventKind
from corral.policy import GiveUp, RestartPolicy, SlotBudget
from corral.states import SlotState, SpareStatus, SparesView
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Fleet, Slot
from corral.supervisor.spawner import Spawner
from corral.worker_messages import SPARE_SLOT

log = structlog.get_logger("corral.supervisor")


class Spares:
    """The warm spares and their budget; only the supervision loop calls in."""

    def __init__(
        self,
        desired: int,
        policy: RestartPolicy,
        *,
        fleet: Fleet,
        spawner: Spawner,
        emitter: Emitter,
        drain: Callable[[WorkerHandle], None],
    ) -> None:
        self.desired = desired
        self._policy = policy
        self._fleet = fleet
        self._spawner = spawner
        self._emitter = emitter
        self._drain = drain
        # The spares' lineage: its generation numbers the spares, its budget is theirs.
        self._lineage = Slot(SPARE_SLOT, SlotBudget(policy))
        self._booting: list[WorkerHandle] = []
        self._ready: list[WorkerHandle] = []  # oldest first: the longest warm is promoted first
        self._retiring: list[WorkerHandle] = []  # replaced by a reload, or stopping
        self.respawn_at: float | None = None
        self._exhausted = False

    # --- Bookkeeping ---------------------------------------------------------------

    def handles(self) -> Iterator[WorkerHandle]:
        yield from self._booting
        yield from self._ready
        yield from self._retiring

    def find(self, number: int) -> WorkerHandle | None:
        return next((h for h in self.handles() if h.generation == number), None)

    def detach(self, handle: WorkerHandle) -> None:
        for bucket in (self._booting, self._ready, self._retiring):
            if handle in bucket:
                bucket.remove(handle)

    def view(self, now: float) -> SparesView:
        rows = [self._row(h, SlotState.STARTING) for h in self._booting]
        rows.extend(self._row(h, SlotState.SPARE) for h in self._ready)
        return SparesView(
            self.desired,
            self._lineage.budget.remaining(now),
            self._exhausted,
            tuple(sorted(rows, key=_number)),
        )

    @staticmethod
    def _row(handle: WorkerHandle, state: SlotState) -> SpareStatus:
        return SpareStatus(
            handle.generation, handle.pid, handle.thread_id, state, handle.started_wall
        )

    # --- Keeping the spares there -------------------------------------------------

    def fill(self) -> None:
        """Boot spares until ``desired`` are warm or warming (not while backing off)."""
        if not self._fleet.running or self._exhausted or self.respawn_at is not None:
            return
        while len(self._booting) + len(self._ready) < self.desired:
            self._booting.append(self._spawner.spawn(self._lineage, spare=True))

    def on_ready(self, handle: WorkerHandle) -> None:
        """A spare finished its lifespan startup: it may be promoted from now on."""
        if handle in self._booting:
            self._booting.remove(handle)
            self._ready.append(handle)

    def due(self, now: float) -> None:
        if self.respawn_at is not None and self.respawn_at <= now:
            self.respawn_at = None
            self.fill()

    def replace_all(self) -> None:
        """A reload: every spare runs the old code, so each drains and a new one boots."""
        for handle in [*self._booting, *self._ready]:
            self.detach(handle)
            self._retiring.append(handle)
            self._drain(handle)
        self._lineage.budget = SlotBudget(self._policy)
        self._exhausted = False
        self.respawn_at = None
        self.fill()

    def stop(self) -> None:
        """Corral is stopping: the coordinator drains every live worker, spares included."""
        self.respawn_at = None

    # --- Promotion ------------------------------------------------------------------

    def take_into(self, slot: Slot) -> Promotion | None:
        """Hand a ready spare to ``slot`` as its next generation, or None if none is ready.

        Only the hand-over happens here (the spare is told at once); the
        ``promote`` event follows from ``announce``, after whatever the caller
        must report first, and the replacement spare boots from ``fill``.
        """
        if not self._ready or not self._fleet.running:
            return None
        handle = self._ready.pop(0)
        number = handle.generation
        self._spawner.hand_over(handle, slot)
        return Promotion(handle, number, time.monotonic())

    def promote_into(self, slot: Slot, *, reason: str) -> WorkerHandle | None:
        """``take_into`` and ``announce`` at once, for a caller with nothing to report between."""
        promotion = self.take_into(slot)
        return self.announce(promotion, reason=reason) if promotion is not None else None

    def announce(self, promotion: Promotion, *, reason: str) -> WorkerHandle:
        self._emitter.emit(
            EventKind.PROMOTE,
            promotion.handle,
            at=promotion.at,
            spare=promotion.number,
            message=f"spare {promotion.number} took slot {promotion.handle.slot}: {reason}",
        )
        self.fill()
        return promotion.handle

    # --- A spare that failed --------------------------------------------------------

    def on_failed(self, handle: WorkerHandle, failed: Failed, now: float) -> None:
        """Report it, then boot another within the spares' budget and backoff."""
        self.detach(handle)  # before ``fill`` counts the spares there are
        self._emitter.failure(handle, failed, at=now)
        decision = self._lineage.budget.on_failure(now, failed.uptime)
        if not self._fleet.running:
            return
        if isinstance(decision, GiveUp):
            self._exhausted = True
            self._emitter.emit(
                EventKind.BUDGET_EXHAUSTED,
                handle,
                budget_remaining=0,
                restart_number=decision.restarts_in_window,
                message=(
                    f"spares given up: {decision.restarts_in_window} restarts within "
                    f"{self._policy.window:g}s; none until a reload"
                ),
            )
            return
        self._emitter.respawn(handle, decision)
        if decision.delay > 0:
            self.respawn_at = now + decision.delay
        else:
            self.fill()


@dataclass(frozen=True, slots=True)
class Promotion:
    """A spare handed to a slot; ``at`` is when (monotonic), for its event."""

    handle: WorkerHandle
    number: int
    at: float


def _number(row: SpareStatus) -> int:
    return row.number
