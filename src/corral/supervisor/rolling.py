"""Rolling operations: reload (SIGHUP), recycling (--max-requests) and scaling.

A rolling replacement never leaves a slot without a ready worker: the slot's
next incarnation is spawned as ``incoming`` beside the current one, and only
once it is ready (``promote``) does the old one drain. With a warm spare ready
(``--spares``), the spare is that next incarnation and the old one drains at
once. A reload replaces the spares first, then rolls one slot at a time; a
burst of reloads is coalesced into one more pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import structlog

from corral.appload import reload_app
from corral.errors import AppImportError
from corral.handles import WorkerHandle
from corral.incarnation import Failed
from corral.lifecycle.events import EventKind, SuccessorRole
from corral.policy import (
    AfterFailure,
    Decision,
    GiveUp,
    Outcome,
    Respawn,
    RestartPolicy,
    SlotBudget,
    SuccessionStep,
)
from corral.runtime import WorkerMode
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Fleet, Slot
from corral.supervisor.spares import Spares
from corral.supervisor.spawner import Spawner

log = structlog.get_logger("corral.supervisor")

# A successor died while the worker it was to replace serves on: only the roller acts.
_SUCCESSOR_OUTCOMES = frozenset(
    {Outcome.RETRY_SUCCESSOR_NOW, Outcome.RETRY_SUCCESSOR_LATER, Outcome.GIVE_UP_SUCCESSOR}
)


class Roller:
    def __init__(
        self,
        fleet: Fleet,
        spawner: Spawner,
        emitter: Emitter,
        policy: RestartPolicy,
        *,
        app_path: str | None,
        drain: Callable[[WorkerHandle], None],
        spares: Spares,
    ) -> None:
        self._fleet = fleet
        self._spawner = spawner
        self._spares = spares
        self._emit = emitter.emit
        self._respawned = emitter.respawn
        self._policy = policy
        self._app_path = app_path
        self._drain = drain
        self._queue: deque[int] = deque()
        self._again = False

    # --- Reload -------------------------------------------------------------

    def begin(self) -> None:
        """Roll every ready slot onto fresh code, one at a time."""
        fleet = self._fleet
        if not fleet.running:
            return
        if any(s.incoming for s in fleet.slots.values()):
            self._again = True  # coalesce a burst of SIGHUPs into one more pass
            return
        if self._spawner.mode is WorkerMode.THREAD and self._app_path is not None:
            try:
                self._spawner.app = reload_app(self._app_path, factory=self._spawner.config.factory)
            except AppImportError as exc:
                self._emit(EventKind.RELOAD, message=f"reload failed, keeping old code: {exc}")
                return
        self._supersede()
        ready = [s.index for s in fleet.ordered() if fleet.rollable(s)]
        self._emit(EventKind.RELOAD, workers=len(ready), message="rolling restart")
        self._spares.replace_all()  # before any slot: a spare this roll promotes runs new code
        self._revive_exhausted()
        self._queue.extend(ready)
        self._next()

    def _supersede(self) -> None:
        """A new roll replaces the rest of the last one, and every successor waiting out
        a backoff: it replaces each of their serving workers with the newest code anyway."""
        self._queue.clear()
        self._again = False
        for slot in self._fleet.slots.values():
            slot.end_succession()

    def _revive_exhausted(self) -> None:
        """A reload is how an operator ships a fix: exhausted slots get a fresh budget."""
        for slot in self._fleet.slots.values():
            if slot.exhausted and not slot.removing:
                slot.budget = SlotBudget(self._policy)
                slot.exhausted = False
                slot.worker = self._spawner.spawn(slot)

    def _next(self) -> None:
        if any(s.succession is SuccessorRole.RELOAD for s in self._fleet.slots.values()):
            return  # one slot at a time: the slot being rolled calls again when it is done
        while self._queue:
            slot = self._fleet.slots.get(self._queue.popleft())
            if slot is not None and self._fleet.rollable(slot) and slot.succession is None:
                self._start_successor(slot, SuccessorRole.RELOAD)
                return
        if self._again:
            self._again = False
            self.begin()

    def _start_successor(self, slot: Slot, role: SuccessorRole) -> None:
        slot.succession = role
        promoted = self._spares.promote_into(slot, reason=role.value)
        if promoted is None:
            slot.incoming = self._spawner.spawn(slot)
            return
        # A warm spare is ready already: it takes the slot now, and the old worker drains.
        slot.incoming = promoted
        self.promote(slot, promoted)

    def promote(self, slot: Slot, handle: WorkerHandle) -> None:
        """The replacement is ready: it takes the slot, then the old incarnation drains."""
        old = slot.worker
        slot.incoming = None
        slot.end_succession()
        slot.worker = handle
        if old is not None:
            slot.retiring.append(old)
            self._drain(old)
        self._next()

    def abort(self, reason: str) -> None:
        """Drop the rest of the roll; a reload asked for meanwhile still runs."""
        again = self._again
        self._queue.clear()
        self._again = False
        log.warning("rolling restart aborted; old workers keep serving", reason=reason)
        if again:
            self.begin()

    def clear(self) -> None:
        """Corral is stopping: no roll goes on, and no successor is started again."""
        self._supersede()

    # --- A successor that failed ------------------------------------------------

    def on_failure(
        self,
        slot: Slot,
        handle: WorkerHandle,
        failed: Failed,
        *,
        decision: Decision,
        after: AfterFailure,
        now: float,
    ) -> bool:
        """Carry out what a failure means for the slot's succession.

        True when that is all there is to do: a successor died while the worker
        it was to replace serves on, and is started again (now, or once the
        backoff is over) or given up. Otherwise the slot's own restart follows.
        """
        if handle is slot.incoming and self._fleet.running:
            slot.incoming = None
            self._report(slot, handle, failed, decision, after.outcome)
        outcome = after.outcome
        role = slot.succession
        if outcome in (Outcome.RETRY_SUCCESSOR_NOW, Outcome.RETRY_SUCCESSOR_LATER):
            assert isinstance(decision, Respawn)
            self._respawned(handle, decision)  # a restart charged to the slot's budget
            if outcome is Outcome.RETRY_SUCCESSOR_LATER:
                slot.successor_at = now + decision.delay
            else:
                self._start_successor(slot, role or SuccessorRole.RECYCLE)
            if self._again:  # a reload asked for while it booted: supersede a pending retry
                self._again = False
                self.begin()
        if after.succession is not SuccessionStep.KEEP:
            slot.end_succession()
            if after.succession is SuccessionStep.ABORT:
                self.abort(f"replacement for slot {slot.index} failed: {failed.info.describe()}")
            else:
                self._next()
        return outcome in _SUCCESSOR_OUTCOMES

    def successors_due(self, now: float) -> None:
        """Start again the successors whose backoff is over."""
        for slot in list(self._fleet.slots.values()):
            due, role = slot.successor_at, slot.succession
            if due is None or due > now:
                continue
            slot.successor_at = None
            if role is not None and self._fleet.running and self._fleet.rollable(slot):
                self._start_successor(slot, role)
            else:  # its worker is no longer serving: whatever replaces it is fresh anyway
                slot.end_succession()
                self._next()

    def _report(
        self, slot: Slot, handle: WorkerHandle, failed: Failed, decision: Decision, outcome: Outcome
    ) -> None:
        what = failed.info.describe()
        if isinstance(decision, GiveUp):
            restarts, remaining, backoff = decision.restarts_in_window, 0, None
        else:
            restarts, remaining = decision.restart_number, decision.budget_remaining
            backoff = decision.delay
        if outcome is Outcome.GIVE_UP_SUCCESSOR:
            message = (
                f"{what}; gave up: {restarts} restarts within {self._policy.window:g}s; "
                "the old worker keeps serving"
            )
        elif outcome in _SUCCESSOR_OUTCOMES:
            message = f"{what}; starting it again in {backoff:.3g}s; the old worker keeps serving"
        else:
            message = f"{what}; the worker it was to replace is gone"
        self._emit(
            EventKind.SUCCESSOR_FAILED,
            handle,
            role=slot.succession,
            reason=failed.verdict.reason,
            restart_number=restarts,
            backoff=backoff if outcome in _SUCCESSOR_OUTCOMES else None,
            budget_remaining=remaining,
            message=message,
        )

    # --- Recycling (--max-requests) -------------------------------------------

    def recycle(self, handle: WorkerHandle, requests: int) -> None:
        """Replace a worker that served its quota, rolling: its successor must be
        ready before it drains, so the slot never stops serving."""
        slot = self._fleet.slots[handle.slot]
        if (
            not self._fleet.running
            or handle is not slot.worker
            or handle.life.drain_started is not None
            or slot.incoming is not None
            or slot.succession is not None
            or slot.index in self._queue
        ):
            return  # a rolling restart is replacing it anyway, or we are stopping
        limit = handle.spec.request_limit
        message = f"served {requests} requests; its max_requests is {limit}"
        self._emit(EventKind.RECYCLE, handle, message=message)
        self._start_successor(slot, SuccessorRole.RECYCLE)

    # --- Scaling (SIGTTIN / SIGTTOU) ----------------------------------------------

    def scale_up(self) -> None:
        fleet = self._fleet
        if not fleet.running:
            return
        index = max(fleet.slots, default=-1) + 1
        slot = Slot(index, SlotBudget(self._policy))
        fleet.slots[index] = slot
        fleet.desired += 1
        self._emit(EventKind.SCALE_UP, slot=index, workers=fleet.desired)
        slot.worker = self._spawner.spawn(slot)

    def scale_down(self) -> None:
        fleet = self._fleet
        remaining = [s for s in fleet.slots.values() if not s.removing]
        if not fleet.running or len(remaining) <= 1:
            log.warning("scale down ignored", reason="at least one worker must remain")
            return
        # Give up an exhausted slot first: removing a healthy one could leave
        # nothing but exhausted slots, serving nobody.
        slot = max(remaining, key=lambda s: (s.exhausted, s.index))
        slot.removing = True
        slot.respawn_at = None
        rolling = slot.succession is not None
        slot.end_succession()
        fleet.desired -= 1
        self._emit(EventKind.SCALE_DOWN, slot=slot.index, workers=fleet.desired)
        for handle in list(slot.handles()):
            self._drain(handle)
        if slot.empty():
            del fleet.slots[slot.index]
        if rolling:
            self._next()
