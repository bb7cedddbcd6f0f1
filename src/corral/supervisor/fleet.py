"""Worker slots and the fleet of them: the supervisor's bookkeeping, no mechanism.

A slot is a worker position that outlives its incarnations, and so keeps
their restart history (its ``SlotBudget``). Its ``SlotState`` is *derived*
from what it holds (its current incarnation's stage, a pending backoff, an
exhausted budget) rather than stored beside it, so the two cannot disagree.

Only the supervision loop changes a fleet, under the supervisor's lock.
"""

from __future__ import annotations

from collections.abc import Iterator

from corral.handles import WorkerHandle
from corral.incarnation import Stage
from corral.lifecycle.events import SuccessorRole
from corral.policy import Role, SlotBudget
from corral.states import Phase, SlotState, WorkerStatus

_STAGE_STATES = {
    Stage.BOOTING: SlotState.STARTING,
    Stage.SERVING: SlotState.READY,
    Stage.HUNG: SlotState.HUNG,
    Stage.KILLED: SlotState.HUNG,  # a hung worker's last resort, or after FORCING (draining)
    Stage.DRAINING: SlotState.DRAINING,
    Stage.FORCING: SlotState.DRAINING,
    Stage.EXITED: SlotState.STOPPED,
}


class Slot:
    """One worker position: its current, incoming and retiring incarnations."""

    def __init__(self, index: int, budget: SlotBudget) -> None:
        self.index = index
        self.budget = budget
        self.generation = 0
        self.worker: WorkerHandle | None = None
        self.incoming: WorkerHandle | None = None  # rolling replacement, not yet ready
        # Why a successor replaces ``worker`` (booting as ``incoming``, or due again at
        # ``successor_at`` after it failed); None when no succession is in progress.
        self.succession: SuccessorRole | None = None
        self.successor_at: float | None = None
        self.retiring: list[WorkerHandle] = []  # older incarnations still draining
        self.respawn_at: float | None = None  # a backoff is pending until then
        self.exhausted = False  # out of restart budget: not started again
        self.last_exit: str | None = None
        self.removing = False  # scaled down: goes away once its workers are gone

    def handles(self) -> Iterator[WorkerHandle]:
        if self.worker is not None:
            yield self.worker
        if self.incoming is not None:
            yield self.incoming
        yield from self.retiring

    def role_of(self, handle: WorkerHandle) -> Role:
        if handle is self.worker:
            return Role.CURRENT
        if handle is self.incoming:
            return Role.INCOMING
        return Role.RETIRING

    def state(self, phase: Phase) -> SlotState:
        if self.exhausted:
            return SlotState.EXHAUSTED
        worker = self.worker
        if worker is None:
            if self.respawn_at is not None:
                return SlotState.BACKOFF
            if self.incoming is not None and phase is Phase.RUNNING:
                return SlotState.STARTING  # its replacement takes the slot once ready
            return SlotState.STOPPED
        life = worker.life
        if life.drain_started is not None:
            return SlotState.DRAINING
        return _STAGE_STATES[life.stage]

    def detach(self, handle: WorkerHandle) -> None:
        """Forget a dead incarnation."""
        if self.worker is handle:
            self.worker = None
        if self.incoming is handle:
            self.incoming = None
        if handle in self.retiring:
            self.retiring.remove(handle)

    def end_succession(self) -> None:
        """Forget the succession in progress (the caller deals with a booting ``incoming``)."""
        self.succession = None
        self.successor_at = None

    def empty(self) -> bool:
        return next(self.handles(), None) is None


class Fleet:
    """Every slot, the supervisor's phase and how many slots are wanted."""

    def __init__(self, desired: int) -> None:
        self.slots: dict[int, Slot] = {}
        self.desired = desired
        self.phase = Phase.NEW
        self.any_ready = False  # whether any worker ever got ready: a boot loop is told apart

    @property
    def running(self) -> bool:
        return self.phase is Phase.RUNNING

    def ordered(self) -> list[Slot]:
        return sorted(self.slots.values(), key=_index)

    def live(self) -> list[WorkerHandle]:
        """Every incarnation that has not exited yet, in every slot."""
        return [
            handle
            for slot in self.slots.values()
            for handle in slot.handles()
            if handle.exit_info is None
        ]

    def find(self, index: int, generation: int) -> WorkerHandle | None:
        slot = self.slots.get(index)
        if slot is None:
            return None
        return next((h for h in slot.handles() if h.generation == generation), None)

    def deadlines(self) -> list[float]:
        """When a slot next needs the loop: a respawn's or a successor's backoff ending."""
        due = [s.respawn_at for s in self.slots.values() if s.respawn_at is not None]
        due.extend(s.successor_at for s in self.slots.values() if s.successor_at is not None)
        return due

    def count(self, state: SlotState) -> int:
        return sum(1 for slot in self.slots.values() if slot.state(self.phase) is state)

    def exhausted_flags(self) -> list[bool]:
        return [slot.exhausted for slot in self.slots.values() if not slot.removing]

    def rollable(self, slot: Slot) -> bool:
        """A slot a rolling restart may replace: serving, and staying."""
        return (
            slot.worker is not None
            and not slot.removing
            and slot.state(self.phase) is SlotState.READY
        )

    def row(self, slot: Slot, mode: str, now: float) -> WorkerStatus:
        worker = slot.worker
        return WorkerStatus(
            slot=slot.index,
            mode=mode,
            pid=worker.pid if worker else None,
            thread_id=worker.thread_id if worker else None,
            # The serving worker's, not a successor's still booting (or failed).
            generation=worker.generation if worker else slot.generation,
            state=slot.state(self.phase),
            started_at=worker.started_wall if worker else None,
            restarts_in_window=slot.budget.restarts_in_window(now),
            budget_remaining=slot.budget.remaining(now),
            last_exit=slot.last_exit,
        )


def _index(slot: Slot) -> int:
    return slot.index
