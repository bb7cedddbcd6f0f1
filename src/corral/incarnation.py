"""One worker incarnation's life, as a pure state machine.

An incarnation (one process or thread serving a slot, from spawn to exit) is
always in exactly one ``Stage``, with at most one deadline: the moment
something must happen if nothing else does first (a liveness check, a
force-stop, a SIGKILL, giving up). ``step`` takes the incarnation and what
happened and returns the new incarnation and the actions for the mechanism
to carry out. It touches no process, thread, socket or clock, so every
transition is a table-driven unit test (``tests/unit/test_incarnation.py``).

The stages and what their deadline means::

    BOOTING  --Ready-->  SERVING          deadline: next liveness check
       |  \\                |  \\
       |   `--silent-------+---`--> HUNG   process: SIGKILL after its stacks are dumped
       |                   |               thread (ignore): look again
    DrainRequested     DrainRequested
       v                   v
    DRAINING  --deadline-->  FORCING  --deadline-->  KILLED  --deadline-->  (abandoned)
    deadline: force-stop     SIGKILL                 give up waiting

and any stage --Exited--> EXITED. A hung thread under ``--on-hung-thread
exit`` goes straight to KILLED (a thread cannot be killed, so KILLED means
"the last resort is spent; abandon it at the deadline").

The supervisor-level consequences of an exit (restart, backoff, exhaustion)
are not decided here: ``Failed`` hands them to ``policy.after_failure``.
A hung thread whose crash was told at detection (``--on-hung-thread
ignore``) and that later exits is restarted like any failure, without a
second crash event.
"""

from __future__ import annotations

import enum
import signal
from dataclasses import dataclass, replace

from corral.config import HungThreadAction, ServerConfig
from corral.errors import ExitCode
from corral.lifecycle.events import CrashReason
from corral.liveness import TICK_SECONDS
from corral.policy import ExitClass, ExitVerdict, classify_exit


class Stage(enum.Enum):
    BOOTING = "booting"
    SERVING = "serving"
    HUNG = "hung"
    DRAINING = "draining"
    FORCING = "forcing"
    KILLED = "killed"
    EXITED = "exited"


@dataclass(frozen=True, slots=True)
class Timing:
    """The deadlines' lengths: policy as data, from ``ServerConfig``."""

    worker_timeout: float = 30.0  # 0 disables liveness checks
    shutdown_timeout: float = 30.0
    force_stop_grace: float = 3.0
    on_hung_thread: HungThreadAction = HungThreadAction.EXIT
    stack_dump_grace: float = 0.5  # a hung process gets this long to write its stacks
    reap_grace: float = 2.0  # after SIGKILL, how long until a process stuck in D is given up
    hung_recheck: float = 1.0  # how often a hung thread (ignore policy) is looked at again

    @classmethod
    def from_config(cls, config: ServerConfig) -> Timing:
        return cls(
            worker_timeout=config.worker_timeout,
            shutdown_timeout=config.shutdown_timeout,
            force_stop_grace=config.force_stop_grace,
            on_hung_thread=config.on_hung_thread,
        )

    def next_check(self, last_sign_of_life: float) -> float | None:
        """A loop silent past this moment was blocked for over ``worker_timeout``."""
        if not self.worker_timeout:
            return None
        return last_sign_of_life + self.worker_timeout + TICK_SECONDS


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How an incarnation ended. ``signal_number`` is set when a signal killed a process."""

    exit_code: int | None = None
    signal_number: int | None = None
    raised: bool = False
    message: str | None = None

    def describe(self) -> str:
        if self.signal_number is not None:
            return signal.Signals(self.signal_number).name
        if self.raised:
            return f"exception: {self.message}"
        return f"exit {self.exit_code}"


@dataclass(frozen=True, slots=True)
class Incarnation:
    """Where one incarnation is in its life; replaced, never mutated, by ``step``."""

    killable: bool  # a process can be SIGKILLed; a thread cannot
    started: float  # monotonic spawn time
    stage: Stage = Stage.BOOTING
    deadline: float | None = None
    was_ready: bool = False
    drain_started: float | None = None  # set once a drain was asked for: its exit is no failure
    hang: str | None = None  # why it was declared hung
    hang_told: bool = False  # its crash event went out at detection (threads)

    @classmethod
    def spawned(cls, *, killable: bool, now: float, timing: Timing) -> Incarnation:
        return cls(killable=killable, started=now, deadline=timing.next_check(now))

    @property
    def alive(self) -> bool:
        return self.stage is not Stage.EXITED


# --- What can happen to an incarnation -------------------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    now: float


@dataclass(frozen=True, slots=True)
class DrainRequested:
    now: float


@dataclass(frozen=True, slots=True)
class ForceRequested:
    now: float
    reason: str


@dataclass(frozen=True, slots=True)
class DeadlinePassed:
    now: float
    last_sign_of_life: float  # its heartbeat, or its spawn time if it never beat


@dataclass(frozen=True, slots=True)
class Exited:
    now: float
    info: ExitInfo


Happening = Ready | DrainRequested | ForceRequested | DeadlinePassed | Exited


# --- What the mechanism must do ---------------------------------------------------


@dataclass(frozen=True, slots=True)
class EmitReady:
    boot_seconds: float


@dataclass(frozen=True, slots=True)
class EmitDrainStart:
    pass


@dataclass(frozen=True, slots=True)
class SendDrain:
    pass


@dataclass(frozen=True, slots=True)
class SendForce:
    pass


@dataclass(frozen=True, slots=True)
class EmitForceStop:
    message: str


@dataclass(frozen=True, slots=True)
class Kill:
    pass


@dataclass(frozen=True, slots=True)
class DumpStacks:
    """Ask a hung process for its stacks (they are logged when it exits)."""


@dataclass(frozen=True, slots=True)
class LogHung:
    silent_seconds: float


@dataclass(frozen=True, slots=True)
class LogStacks:
    pass


@dataclass(frozen=True, slots=True)
class EmitHangCrash:
    """A hung thread's crash, told at detection: it may never exit."""

    message: str
    uptime: float


@dataclass(frozen=True, slots=True)
class StopSupervisor:
    """Drain everything and exit with ``exit_code`` (a hung thread under the exit policy)."""

    exit_code: ExitCode


@dataclass(frozen=True, slots=True)
class LogRecovered:
    pass


@dataclass(frozen=True, slots=True)
class Abandon:
    """Stop waiting for it: account for it as exited with ``message``."""

    message: str


@dataclass(frozen=True, slots=True)
class EmitDrainEnd:
    seconds: float
    forced: bool


@dataclass(frozen=True, slots=True)
class Failed:
    """It died on its own: the slot's restart policy decides what follows.

    ``told`` is set for a hung thread whose crash event went out when it was
    found hung: its exit is charged to the budget but not reported twice.
    """

    info: ExitInfo
    verdict: ExitVerdict
    uptime: float
    message: str | None
    told: bool = False


Action = (
    EmitReady
    | EmitDrainStart
    | SendDrain
    | SendForce
    | EmitForceStop
    | Kill
    | DumpStacks
    | LogHung
    | LogStacks
    | EmitHangCrash
    | StopSupervisor
    | LogRecovered
    | Abandon
    | EmitDrainEnd
    | Failed
)
Step = tuple[Incarnation, list[Action]]

# Stages whose deadline is a liveness check.
_WATCHED = (Stage.BOOTING, Stage.SERVING)


def step(inc: Incarnation, happening: Happening, timing: Timing) -> Step:
    """The one transition function: ``inc`` plus what happened gives the next ``Step``."""
    if inc.stage is Stage.EXITED:
        return inc, []
    if isinstance(happening, Ready):
        return _on_ready(inc, happening.now)
    if isinstance(happening, DrainRequested):
        return _on_drain(inc, happening.now, timing)
    if isinstance(happening, ForceRequested):
        return _on_force(inc, happening.now, happening.reason, timing)
    if isinstance(happening, DeadlinePassed):
        return _on_deadline(inc, happening, timing)
    return _on_exit(inc, happening.now, happening.info)


def _on_ready(inc: Incarnation, now: float) -> Step:
    if inc.was_ready:
        return inc, []
    stage = Stage.SERVING if inc.stage is Stage.BOOTING else inc.stage
    return replace(inc, stage=stage, was_ready=True), [EmitReady(now - inc.started)]


def _on_drain(inc: Incarnation, now: float, timing: Timing) -> Step:
    if inc.drain_started is not None:
        return inc, []
    drained = replace(inc, drain_started=now)
    actions: list[Action] = [EmitDrainStart(), SendDrain()]
    if inc.stage in _WATCHED or (inc.stage is Stage.HUNG and not inc.killable):
        # A hung thread under the ignore policy drains like any other: it may recover.
        return replace(
            drained, stage=Stage.DRAINING, deadline=now + timing.shutdown_timeout
        ), actions
    return drained, actions  # a hung process is about to be killed; FORCING/KILLED run on


def _on_force(inc: Incarnation, now: float, reason: str, timing: Timing) -> Step:
    if inc.stage in (Stage.FORCING, Stage.KILLED):
        return inc, []
    inc, actions = _on_drain(inc, now, timing)
    deadline = now + timing.force_stop_grace
    if inc.stage is Stage.HUNG and inc.deadline is not None:
        deadline = min(deadline, inc.deadline)  # its SIGKILL was due sooner anyway
    forced = replace(inc, stage=Stage.FORCING, deadline=deadline)
    return forced, [*actions, EmitForceStop(reason), SendForce()]


def _on_deadline(inc: Incarnation, event: DeadlinePassed, timing: Timing) -> Step:
    if inc.deadline is None or event.now < inc.deadline:
        return inc, []
    now = event.now
    if inc.stage in _WATCHED:
        return _check_liveness(inc, event, timing)
    if inc.stage is Stage.HUNG:
        if inc.killable:  # its stacks had their time: SIGKILL; the crash is told at exit
            return replace(inc, stage=Stage.KILLED, deadline=now + timing.reap_grace), [Kill()]
        return _recheck_hung_thread(inc, event, timing)
    if inc.stage is Stage.DRAINING:
        return _on_force(inc, now, "drain timeout exceeded", timing)
    if inc.stage is Stage.FORCING:
        killed = replace(inc, stage=Stage.KILLED, deadline=now + timing.reap_grace)
        if not inc.killable:
            return killed, []  # a thread gets one last grace before it is abandoned
        return killed, [EmitForceStop("still running; SIGKILL"), Kill()]
    message = "not reaped" if inc.killable else "thread did not exit; abandoned"
    return replace(inc, deadline=None), [EmitForceStop(message), Abandon(message)]


def _check_liveness(inc: Incarnation, event: DeadlinePassed, timing: Timing) -> Step:
    """The worker's deadline came: it either beat since (move on) or it is hung."""
    silent = event.now - event.last_sign_of_life
    if silent <= timing.worker_timeout:
        return replace(inc, deadline=timing.next_check(event.last_sign_of_life)), []
    what = "event loop blocked" if inc.was_ready else "not ready"
    hang = f"{what}: no sign of life for over {timing.worker_timeout:g}s"
    hung = replace(inc, stage=Stage.HUNG, hang=hang)
    if inc.killable:  # faulthandler writes the stacks from C; SIGKILL follows shortly
        dumping = replace(hung, deadline=event.now + timing.stack_dump_grace)
        return dumping, [LogHung(silent), DumpStacks()]
    told = replace(hung, hang_told=True)
    actions: list[Action] = [
        LogHung(silent),
        LogStacks(),
        EmitHangCrash(hang, event.now - inc.started),
    ]
    if timing.on_hung_thread is HungThreadAction.IGNORE:
        return replace(told, deadline=event.now + timing.hung_recheck), actions
    # A thread cannot be stopped: the others drain, and this one is given only
    # the force-stop grace before the process leaves it behind.
    abandoning = replace(told, stage=Stage.KILLED, deadline=event.now + timing.force_stop_grace)
    return abandoning, [*actions, StopSupervisor(ExitCode.WORKER_HUNG)]


def _recheck_hung_thread(inc: Incarnation, event: DeadlinePassed, timing: Timing) -> Step:
    """Under ``--on-hung-thread ignore``: serve again once its loop runs again."""
    if event.now - event.last_sign_of_life > timing.worker_timeout:
        return replace(inc, deadline=event.now + timing.hung_recheck), []
    recovered = replace(
        inc,
        stage=Stage.SERVING,
        was_ready=True,
        hang=None,
        hang_told=False,
        deadline=timing.next_check(event.last_sign_of_life),
    )
    return recovered, [LogRecovered()]


def _on_exit(inc: Incarnation, now: float, info: ExitInfo) -> Step:
    ended = replace(inc, stage=Stage.EXITED, deadline=None)
    actions: list[Action] = []
    if inc.hang is not None and not inc.hang_told:
        actions.append(LogStacks())  # what faulthandler wrote before the SIGKILL
    if inc.drain_started is not None:
        forced = inc.stage in (Stage.FORCING, Stage.KILLED)
        return ended, [*actions, EmitDrainEnd(now - inc.drain_started, forced)]
    uptime = now - inc.started
    if inc.hang_told:
        hang = ExitVerdict(ExitClass.CRASH, CrashReason.HANG)
        return ended, [*actions, Failed(info, hang, uptime, inc.hang, told=True)]
    verdict = classify_exit(
        exit_code=info.exit_code,
        signal_number=info.signal_number,
        raised=info.raised,
        was_ready=inc.was_ready,
        stop_requested=False,
        hung=inc.hang is not None,
    )
    return ended, [*actions, Failed(info, verdict, uptime, inc.hang or info.message)]
