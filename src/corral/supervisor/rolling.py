"""Rolling operations: reload (SIGHUP), recycling (--max-requests) and scaling.

A rolling replacement never leaves a slot without a ready worker: the slot's
next incarnation is spawned as ``incoming`` beside the current one, and only
once it is ready (``promote``) does the old one drain. A reload rolls one slot
at a time; a burst of reloads is coalesced into one more pass.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

import structlog

from corral.appload import reload_app
from corral.errors import AppImportError
from corral.handles import WorkerHandle
from corral.lifecycle.events import EventKind
from corral.policy import RestartPolicy, SlotBudget
from corral.runtime import WorkerMode
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Fleet, Slot
from corral.supervisor.spawner import Spawner

log = structlog.get_logger("corral.supervisor")


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
    ) -> None:
        self._fleet = fleet
        self._spawner = spawner
        self._emit = emitter.emit
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
        if self._queue or any(s.incoming for s in fleet.slots.values()):
            self._again = True  # coalesce a burst of SIGHUPs into one more pass
            return
        if self._spawner.mode is WorkerMode.THREAD and self._app_path is not None:
            try:
                self._spawner.app = reload_app(self._app_path, factory=self._spawner.config.factory)
            except AppImportError as exc:
                self._emit(EventKind.RELOAD, message=f"reload failed, keeping old code: {exc}")
                return
        ready = [s.index for s in fleet.ordered() if fleet.rollable(s)]
        self._emit(EventKind.RELOAD, workers=len(ready), message="rolling restart")
        self._revive_exhausted()
        self._queue.extend(ready)
        self._next()

    def _revive_exhausted(self) -> None:
        """A reload is how an operator ships a fix: exhausted slots get a fresh budget."""
        for slot in self._fleet.slots.values():
            if slot.exhausted and not slot.removing:
                slot.budget = SlotBudget(self._policy)
                slot.exhausted = False
                slot.worker = self._spawner.spawn(slot)

    def _next(self) -> None:
        while self._queue:
            slot = self._fleet.slots.get(self._queue.popleft())
            if slot is not None and self._fleet.rollable(slot):
                slot.incoming = self._spawner.spawn(slot)
                return
        if self._again:
            self._again = False
            self.begin()

    def promote(self, slot: Slot, handle: WorkerHandle) -> None:
        """The replacement is ready: it takes the slot, then the old incarnation drains."""
        old = slot.worker
        slot.incoming = None
        slot.worker = handle
        if old is not None:
            slot.retiring.append(old)
            self._drain(old)
        self._next()

    def abort(self, reason: str) -> None:
        self.clear()
        log.warning("rolling restart aborted; old workers keep serving", reason=reason)

    def clear(self) -> None:
        self._queue.clear()
        self._again = False

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
            or slot.index in self._queue
        ):
            return  # a rolling restart is replacing it anyway, or we are stopping
        limit = handle.spec.request_limit
        message = f"served {requests} requests; its max_requests is {limit}"
        self._emit(EventKind.RECYCLE, handle, message=message)
        slot.incoming = self._spawner.spawn(slot)

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
        fleet.desired -= 1
        self._emit(EventKind.SCALE_DOWN, slot=slot.index, workers=fleet.desired)
        for handle in list(slot.handles()):
            self._drain(handle)
        if slot.empty():
            del fleet.slots[slot.index]
