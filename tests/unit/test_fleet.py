"""A slot's state is derived from what it holds: every case, without a worker running.

``StillbornWorker`` is a real handle that never starts anything, so these
tests need no process, thread or socket.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from corral.config import ServerConfig
from corral.handles import StillbornWorker, WorkerHandle
from corral.incarnation import Stage
from corral.lifecycle.events import SuccessorRole
from corral.policy import RestartPolicy, Role, SlotBudget
from corral.runtime import WorkerMode
from corral.states import Phase, SlotState
from corral.supervisor.fleet import Fleet, Slot
from corral.worker_messages import WorkerSpec

CONFIG = ServerConfig(port=0)


def handle(slot: int = 0, generation: int = 1, **life: object) -> WorkerHandle:
    worker = StillbornWorker(WorkerSpec(slot, generation, WorkerMode.THREAD, CONFIG, None))
    worker.life = replace(worker.life, **life)  # type: ignore[arg-type]
    return worker


def new_slot(index: int = 0) -> Slot:
    return Slot(index, SlotBudget(RestartPolicy()))


@pytest.mark.parametrize(
    ("stage", "drain_started", "state"),
    [
        (Stage.BOOTING, None, SlotState.STARTING),
        (Stage.SERVING, None, SlotState.READY),
        (Stage.HUNG, None, SlotState.HUNG),
        (Stage.KILLED, None, SlotState.HUNG),
        (Stage.DRAINING, 1.0, SlotState.DRAINING),
        (Stage.FORCING, 1.0, SlotState.DRAINING),
        (Stage.KILLED, 1.0, SlotState.DRAINING),
        (Stage.HUNG, 1.0, SlotState.DRAINING),
    ],
)
def test_a_slot_shows_its_current_worker(
    stage: Stage, drain_started: float | None, state: SlotState
) -> None:
    slot = new_slot()
    slot.worker = handle(stage=stage, drain_started=drain_started)
    assert slot.state(Phase.RUNNING) is state


def test_a_slot_without_a_worker() -> None:
    slot = new_slot()
    assert slot.state(Phase.RUNNING) is SlotState.STOPPED
    slot.respawn_at = 5.0
    assert slot.state(Phase.RUNNING) is SlotState.BACKOFF
    slot.respawn_at = None
    slot.incoming = handle()
    assert slot.state(Phase.RUNNING) is SlotState.STARTING
    assert slot.state(Phase.DRAINING) is SlotState.STOPPED
    slot.exhausted = True
    assert slot.state(Phase.RUNNING) is SlotState.EXHAUSTED


def test_roles_and_detach() -> None:
    slot = new_slot()
    current, incoming, old = handle(generation=2), handle(generation=3), handle(generation=1)
    slot.worker, slot.incoming, slot.retiring = current, incoming, [old]
    assert [slot.role_of(h) for h in (current, incoming, old)] == [
        Role.CURRENT,
        Role.INCOMING,
        Role.RETIRING,
    ]
    for each in (current, incoming, old):
        assert not slot.empty()
        slot.detach(each)
    assert slot.empty()


def test_the_fleet_finds_counts_and_rolls() -> None:
    fleet = Fleet(desired=3)
    fleet.phase = Phase.RUNNING
    for index, stage in enumerate((Stage.SERVING, Stage.BOOTING, Stage.SERVING)):
        slot = new_slot(index)
        slot.worker = handle(slot=index, generation=1, stage=stage)
        fleet.slots[index] = slot
    fleet.slots[2].removing = True
    assert fleet.count(SlotState.READY) == 2
    assert [fleet.rollable(s) for s in fleet.ordered()] == [True, False, False]
    assert fleet.find(1, 1) is fleet.slots[1].worker
    assert fleet.find(1, 2) is None
    assert fleet.find(7, 1) is None
    assert len(fleet.live()) == 3
    fleet.slots[1].exhausted = True
    assert fleet.exhausted_flags() == [False, True]
    row = fleet.row(fleet.slots[0], "thread", now=0.0)
    assert (row.slot, row.state, row.generation, row.budget_remaining) == (
        0,
        SlotState.READY,
        1,
        5,
    )


def test_a_row_shows_the_serving_workers_generation_not_its_successors() -> None:
    fleet = Fleet(desired=1)
    fleet.phase = Phase.RUNNING
    slot = new_slot()
    fleet.slots[0] = slot
    slot.worker = handle(generation=1, stage=Stage.SERVING)
    slot.generation = 4  # three successors were spawned since; none is ready
    assert fleet.row(slot, "process", now=0.0).generation == 1
    slot.worker = None
    slot.respawn_at = 1.0
    assert fleet.row(slot, "process", now=0.0).generation == 4


def test_a_failed_successor_waiting_out_its_backoff() -> None:
    """The slot still serves with its old worker, and the loop wakes when the retry is due."""
    fleet = Fleet(desired=2)
    fleet.phase = Phase.RUNNING
    for index in (0, 1):
        fleet.slots[index] = slot = new_slot(index)
        slot.worker = handle(slot=index, stage=Stage.SERVING)
    waiting, crashed = fleet.slots[0], fleet.slots[1]
    waiting.succession, waiting.successor_at = SuccessorRole.RELOAD, 7.5
    crashed.worker, crashed.respawn_at = None, 3.0
    assert waiting.state(Phase.RUNNING) is SlotState.READY
    assert fleet.rollable(waiting)
    assert sorted(fleet.deadlines()) == [3.0, 7.5]
    waiting.end_succession()
    assert waiting.succession is None
    assert waiting.successor_at is None
    assert fleet.deadlines() == [3.0]
