"""Every transition of a worker incarnation's state machine, without a process or thread.

Each row says: an incarnation in this stage, this happens, so it moves to
that stage with that deadline and asks the mechanism for these actions.
"""

from __future__ import annotations

import itertools
import signal
from dataclasses import dataclass, replace

import pytest

from corral.config import HungThreadAction, ServerConfig
from corral.errors import ExitCode
from corral.incarnation import (
    Abandon,
    Action,
    DeadlinePassed,
    DrainRequested,
    DumpStacks,
    EmitDrainEnd,
    EmitDrainStart,
    EmitForceStop,
    EmitHangCrash,
    EmitReady,
    Exited,
    ExitInfo,
    Failed,
    ForceRequested,
    Happening,
    Incarnation,
    Kill,
    LogHung,
    LogRecovered,
    LogStacks,
    Ready,
    SendDrain,
    SendForce,
    Stage,
    StopSupervisor,
    Timing,
    step,
)
from corral.lifecycle.events import CrashReason
from corral.policy import ExitClass, ExitVerdict

EXIT = Timing(
    worker_timeout=10.0,
    shutdown_timeout=30.0,
    force_stop_grace=3.0,
    on_hung_thread=HungThreadAction.EXIT,
    stack_dump_grace=0.5,
    reap_grace=2.0,
    hung_recheck=1.0,
)
IGNORE = replace(EXIT, on_hung_thread=HungThreadAction.IGNORE)
BLOCKED = "event loop blocked: no sign of life for over 10s"
NOT_READY = "not ready: no sign of life for over 10s"


def proc(stage: Stage, **fields: object) -> Incarnation:
    return replace(Incarnation(killable=True, started=0.0), stage=stage, **fields)  # type: ignore[arg-type]


def thread(stage: Stage, **fields: object) -> Incarnation:
    return replace(Incarnation(killable=False, started=0.0), stage=stage, **fields)  # type: ignore[arg-type]


@dataclass(frozen=True)
class Row:
    name: str
    start: Incarnation
    happening: Happening
    stage: Stage
    deadline: float | None
    actions: list[Action]
    timing: Timing = EXIT


SERVING = proc(Stage.SERVING, was_ready=True, deadline=10.1)
HUNG_PROC = proc(Stage.HUNG, was_ready=True, hang=BLOCKED, deadline=5.5)
HUNG_THREAD = thread(Stage.HUNG, was_ready=True, hang=BLOCKED, hang_told=True, deadline=5.5)
ABANDONING_THREAD = thread(Stage.KILLED, was_ready=True, hang=BLOCKED, hang_told=True, deadline=8.0)

ROWS = [
    # --- Ready --------------------------------------------------------------
    Row("boot completes", proc(Stage.BOOTING), Ready(2.0), Stage.SERVING, None, [EmitReady(2.0)]),
    Row("ready twice is told once", SERVING, Ready(3.0), Stage.SERVING, 10.1, []),
    Row(
        "ready while already draining",
        proc(Stage.DRAINING, drain_started=1.0, deadline=31.0),
        Ready(2.0),
        Stage.DRAINING,
        31.0,
        [EmitReady(2.0)],
    ),
    # --- DrainRequested ---------------------------------------------------------
    Row(
        "drain a booting worker",
        proc(Stage.BOOTING, deadline=10.1),
        DrainRequested(5.0),
        Stage.DRAINING,
        35.0,
        [EmitDrainStart(), SendDrain()],
    ),
    Row(
        "drain a serving worker",
        SERVING,
        DrainRequested(5.0),
        Stage.DRAINING,
        35.0,
        [EmitDrainStart(), SendDrain()],
    ),
    Row(
        "drain twice",
        proc(Stage.DRAINING, drain_started=1.0, deadline=31.0),
        DrainRequested(5.0),
        Stage.DRAINING,
        31.0,
        [],
    ),
    Row(
        "a hung thread (ignore policy) drains like any other",
        HUNG_THREAD,
        DrainRequested(5.0),
        Stage.DRAINING,
        35.0,
        [EmitDrainStart(), SendDrain()],
        IGNORE,
    ),
    Row(
        "a hung process keeps its SIGKILL deadline",
        HUNG_PROC,
        DrainRequested(5.2),
        Stage.HUNG,
        5.5,
        [EmitDrainStart(), SendDrain()],
    ),
    Row(
        "a hung thread being abandoned is still told to drain",
        ABANDONING_THREAD,
        DrainRequested(5.2),
        Stage.KILLED,
        8.0,
        [EmitDrainStart(), SendDrain()],
    ),
    # --- ForceRequested -----------------------------------------------------------
    Row(
        "force a serving worker: drain, then force",
        SERVING,
        ForceRequested(5.0, "operator"),
        Stage.FORCING,
        8.0,
        [EmitDrainStart(), SendDrain(), EmitForceStop("operator"), SendForce()],
    ),
    Row(
        "force a draining worker",
        proc(Stage.DRAINING, drain_started=1.0, deadline=31.0),
        ForceRequested(5.0, "operator"),
        Stage.FORCING,
        8.0,
        [EmitForceStop("operator"), SendForce()],
    ),
    Row(
        "force twice",
        proc(Stage.FORCING, drain_started=1.0, deadline=8.0),
        ForceRequested(6.0, "again"),
        Stage.FORCING,
        8.0,
        [],
    ),
    Row(
        "force after the last resort",
        proc(Stage.KILLED, drain_started=1.0, deadline=9.0),
        ForceRequested(6.0, "again"),
        Stage.KILLED,
        9.0,
        [],
    ),
    Row(
        "force a hung process keeps the sooner SIGKILL",
        HUNG_PROC,
        ForceRequested(5.2, "operator"),
        Stage.FORCING,
        5.5,
        [EmitDrainStart(), SendDrain(), EmitForceStop("operator"), SendForce()],
    ),
    # --- DeadlinePassed: liveness ----------------------------------------------------
    Row(
        "it beat since: check again later",
        SERVING,
        DeadlinePassed(10.1, last_sign_of_life=5.0),
        Stage.SERVING,
        15.1,
        [],
    ),
    Row(
        "a silent process is hung: dump its stacks",
        SERVING,
        DeadlinePassed(10.2, last_sign_of_life=0.0),
        Stage.HUNG,
        10.7,
        [LogHung(10.2), DumpStacks()],
    ),
    Row(
        "a silent thread, exit policy: tell, stop corral, abandon after the grace",
        thread(Stage.SERVING, was_ready=True, deadline=10.1),
        DeadlinePassed(10.2, last_sign_of_life=0.0),
        Stage.KILLED,
        13.2,
        [
            LogHung(10.2),
            LogStacks(),
            EmitHangCrash(BLOCKED, 10.2),
            StopSupervisor(ExitCode.WORKER_HUNG),
        ],
    ),
    Row(
        "a silent thread, ignore policy: tell, look again",
        thread(Stage.SERVING, was_ready=True, deadline=10.1),
        DeadlinePassed(10.2, last_sign_of_life=0.0),
        Stage.HUNG,
        11.2,
        [LogHung(10.2), LogStacks(), EmitHangCrash(BLOCKED, 10.2)],
        IGNORE,
    ),
    Row(
        "a boot that never finishes is a hang too",
        thread(Stage.BOOTING, deadline=10.1),
        DeadlinePassed(10.2, last_sign_of_life=0.0),
        Stage.HUNG,
        11.2,
        [LogHung(10.2), LogStacks(), EmitHangCrash(NOT_READY, 10.2)],
        IGNORE,
    ),
    Row(
        "a hung process had its time to dump: SIGKILL",
        HUNG_PROC,
        DeadlinePassed(5.5, last_sign_of_life=0.0),
        Stage.KILLED,
        7.5,
        [Kill()],
    ),
    Row(
        "a hung thread still silent",
        HUNG_THREAD,
        DeadlinePassed(12.0, last_sign_of_life=0.0),
        Stage.HUNG,
        13.0,
        [],
        IGNORE,
    ),
    Row(
        "a hung thread recovered",
        HUNG_THREAD,
        DeadlinePassed(12.0, last_sign_of_life=11.9),
        Stage.SERVING,
        22.0,
        [LogRecovered()],
        IGNORE,
    ),
    # --- DeadlinePassed: the force-stop ladder ------------------------------------------
    Row(
        "a drain overran: force",
        proc(Stage.DRAINING, drain_started=1.0, deadline=31.0),
        DeadlinePassed(31.0, last_sign_of_life=0.0),
        Stage.FORCING,
        34.0,
        [EmitForceStop("drain timeout exceeded"), SendForce()],
    ),
    Row(
        "a forced process lingers: SIGKILL",
        proc(Stage.FORCING, drain_started=1.0, deadline=34.0),
        DeadlinePassed(34.0, last_sign_of_life=0.0),
        Stage.KILLED,
        36.0,
        [EmitForceStop("still running; SIGKILL"), Kill()],
    ),
    Row(
        "a forced thread lingers: one last grace",
        thread(Stage.FORCING, drain_started=1.0, deadline=34.0),
        DeadlinePassed(34.0, last_sign_of_life=0.0),
        Stage.KILLED,
        36.0,
        [],
    ),
    Row(
        "a killed process is never reaped: give up",
        proc(Stage.KILLED, drain_started=1.0, deadline=36.0),
        DeadlinePassed(36.0, last_sign_of_life=0.0),
        Stage.KILLED,
        None,
        [EmitForceStop("not reaped"), Abandon("not reaped")],
    ),
    Row(
        "a stuck thread is abandoned",
        ABANDONING_THREAD,
        DeadlinePassed(8.0, last_sign_of_life=0.0),
        Stage.KILLED,
        None,
        [
            EmitForceStop("thread did not exit; abandoned"),
            Abandon("thread did not exit; abandoned"),
        ],
    ),
    Row(
        "a deadline not reached yet",
        SERVING,
        DeadlinePassed(9.0, last_sign_of_life=0.0),
        Stage.SERVING,
        10.1,
        [],
    ),
    Row(
        "no deadline at all (--worker-timeout 0)",
        proc(Stage.SERVING, was_ready=True),
        DeadlinePassed(99.0, last_sign_of_life=0.0),
        Stage.SERVING,
        None,
        [],
    ),
    # --- Exited --------------------------------------------------------------------
    Row(
        "a drained worker exits",
        proc(Stage.DRAINING, was_ready=True, drain_started=5.0, deadline=35.0),
        Exited(7.0, ExitInfo(exit_code=0)),
        Stage.EXITED,
        None,
        [EmitDrainEnd(2.0, forced=False)],
    ),
    Row(
        "a forced worker exits",
        proc(Stage.FORCING, was_ready=True, drain_started=5.0, deadline=38.0),
        Exited(36.0, ExitInfo(exit_code=0)),
        Stage.EXITED,
        None,
        [EmitDrainEnd(31.0, forced=True)],
    ),
    Row(
        "a SIGKILLed draining worker exits",
        proc(Stage.KILLED, was_ready=True, drain_started=5.0, deadline=40.0),
        Exited(39.0, ExitInfo(signal_number=signal.SIGKILL)),
        Stage.EXITED,
        None,
        [EmitDrainEnd(34.0, forced=True)],
    ),
    Row(
        "killed by a signal while serving",
        SERVING,
        Exited(4.0, ExitInfo(signal_number=signal.SIGKILL)),
        Stage.EXITED,
        None,
        [
            Failed(
                ExitInfo(signal_number=signal.SIGKILL),
                ExitVerdict(ExitClass.CRASH, CrashReason.SIGNAL),
                4.0,
                None,
            )
        ],
    ),
    Row(
        "died while booting",
        proc(Stage.BOOTING),
        Exited(1.0, ExitInfo(exit_code=3, message="lifespan failed")),
        Stage.EXITED,
        None,
        [
            Failed(
                ExitInfo(exit_code=3, message="lifespan failed"),
                ExitVerdict(ExitClass.CRASH, CrashReason.BOOT),
                1.0,
                "lifespan failed",
            )
        ],
    ),
    Row(
        "exited 0 on its own",
        SERVING,
        Exited(4.0, ExitInfo(exit_code=0)),
        Stage.EXITED,
        None,
        [Failed(ExitInfo(exit_code=0), ExitVerdict(ExitClass.CLEAN), 4.0, None)],
    ),
    Row(
        "exited non-zero",
        SERVING,
        Exited(4.0, ExitInfo(exit_code=2)),
        Stage.EXITED,
        None,
        [
            Failed(
                ExitInfo(exit_code=2),
                ExitVerdict(ExitClass.CRASH, CrashReason.EXIT_CODE),
                4.0,
                None,
            )
        ],
    ),
    Row(
        "its loop raised",
        SERVING,
        Exited(4.0, ExitInfo(raised=True, message="KeyError: x")),
        Stage.EXITED,
        None,
        [
            Failed(
                ExitInfo(raised=True, message="KeyError: x"),
                ExitVerdict(ExitClass.CRASH, CrashReason.EXCEPTION),
                4.0,
                "KeyError: x",
            )
        ],
    ),
    Row(
        "a hung process dies of its SIGKILL: stacks, then the hang crash",
        proc(Stage.KILLED, was_ready=True, hang=BLOCKED, deadline=7.5),
        Exited(5.6, ExitInfo(signal_number=signal.SIGKILL)),
        Stage.EXITED,
        None,
        [
            LogStacks(),
            Failed(
                ExitInfo(signal_number=signal.SIGKILL),
                ExitVerdict(ExitClass.CRASH, CrashReason.HANG),
                5.6,
                BLOCKED,
            ),
        ],
    ),
    Row(
        "a hung thread whose crash was told exits: charged, not told again",
        HUNG_THREAD,
        Exited(6.0, ExitInfo(exit_code=0)),
        Stage.EXITED,
        None,
        [
            Failed(
                ExitInfo(exit_code=0),
                ExitVerdict(ExitClass.CRASH, CrashReason.HANG),
                6.0,
                BLOCKED,
                told=True,
            )
        ],
        IGNORE,
    ),
    Row(
        "nothing happens to the dead",
        proc(Stage.EXITED),
        Ready(1.0),
        Stage.EXITED,
        None,
        [],
    ),
]


@pytest.mark.parametrize("row", ROWS, ids=[row.name for row in ROWS])
def test_transition(row: Row) -> None:
    after, actions = step(row.start, row.happening, row.timing)
    assert after.stage is row.stage
    assert after.deadline == pytest.approx(row.deadline)
    assert actions == row.actions


def test_ready_and_drain_leave_their_marks() -> None:
    ready, _ = step(proc(Stage.BOOTING), Ready(2.0), EXIT)
    assert ready.was_ready
    drained, _ = step(ready, DrainRequested(3.0), EXIT)
    assert drained.drain_started == 3.0


def test_a_recovered_thread_forgets_its_hang() -> None:
    after, _ = step(HUNG_THREAD, DeadlinePassed(12.0, last_sign_of_life=11.9), IGNORE)
    assert after.hang is None
    assert not after.hang_told


def test_a_hung_worker_remembers_why() -> None:
    after, _ = step(SERVING, DeadlinePassed(10.2, last_sign_of_life=0.0), EXIT)
    assert after.hang == BLOCKED


HAPPENINGS: list[Happening] = [
    Ready(50.0),
    DrainRequested(50.0),
    ForceRequested(50.0, "x"),
    DeadlinePassed(50.0, last_sign_of_life=0.0),
    DeadlinePassed(50.0, last_sign_of_life=49.9),
    Exited(50.0, ExitInfo(exit_code=0)),
]
WAITING = (Stage.HUNG, Stage.DRAINING, Stage.FORCING, Stage.KILLED)


@pytest.mark.parametrize(
    ("stage", "killable", "timing"),
    list(itertools.product(Stage, [True, False], [EXIT, IGNORE])),
)
def test_every_stage_meets_every_happening(stage: Stage, killable: bool, timing: Timing) -> None:
    """Totality, and the guarantee behind every bounded shutdown: a stage that waits on
    the worker (hung, draining, forcing, killed) always has a deadline, so a worker that
    never answers can never stall the supervisor."""
    start = Incarnation(killable=killable, started=0.0, stage=stage, deadline=40.0)
    for happening in HAPPENINGS:
        after, _ = step(start, happening, timing)
        if after.stage in WAITING and after != start:
            assert after.deadline is not None or after.stage is Stage.KILLED, (happening, after)
        if stage is Stage.EXITED:
            assert after == start


def test_spawned_incarnations_are_checked_from_their_spawn() -> None:
    born = Incarnation.spawned(killable=True, now=100.0, timing=EXIT)
    assert born.stage is Stage.BOOTING
    assert born.deadline == pytest.approx(110.1)
    assert (
        Incarnation.spawned(killable=True, now=1.0, timing=replace(EXIT, worker_timeout=0)).deadline
        is None
    )


def test_timing_comes_from_the_config() -> None:
    config = ServerConfig(
        worker_timeout=7,
        shutdown_timeout=9,
        force_stop_grace=2,
        on_hung_thread=HungThreadAction.IGNORE,
    )
    timing = Timing.from_config(config)
    assert (timing.worker_timeout, timing.shutdown_timeout, timing.force_stop_grace) == (7, 9, 2)
    assert timing.on_hung_thread is HungThreadAction.IGNORE


def test_exit_info_describes_itself() -> None:
    assert ExitInfo(signal_number=signal.SIGKILL).describe() == "SIGKILL"
    assert ExitInfo(raised=True, message="KeyError: x").describe() == "exception: KeyError: x"
    assert ExitInfo(exit_code=3).describe() == "exit 3"
