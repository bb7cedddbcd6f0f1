"""The supervisor's decisions, free of threads, processes, sockets and clocks.

Everything here is a pure function of its inputs: the policy (data, from
``ServerConfig``), the time it is told, and a random source it is given. The
mechanism in ``supervisor`` feeds it exits and acts on what it returns, so
every branch of "worker N exited with X at time T" is unit-testable in
milliseconds.

Restart intensity follows Erlang/OTP: at most ``max_restarts`` restarts per
slot within any ``window`` seconds. Past that, the slot is *exhausted*: an
explicit state with a defined escalation, never a silent retry.
"""

from __future__ import annotations

import enum
import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass

from corral.config import ExhaustedAction, ServerConfig
from corral.errors import ExitCode
from corral.lifecycle.events import CrashReason, SuccessorRole


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    max_restarts: int = 5
    window: float = 60.0
    backoff_base: float = 0.1
    backoff_cap: float = 10.0

    @classmethod
    def from_config(cls, config: ServerConfig) -> RestartPolicy:
        return cls(
            config.max_restarts, config.restart_window, config.backoff_base, config.backoff_cap
        )


# --- Classifying an exit ------------------------------------------------------


class ExitClass(enum.Enum):
    STOPPED = "stopped"  # we asked it to stop: not a failure, no restart
    CLEAN = "clean"  # exited 0 on its own: restarted, counted against the budget
    CRASH = "crash"


@dataclass(frozen=True, slots=True)
class ExitVerdict:
    kind: ExitClass
    reason: CrashReason | None = None


def classify_exit(
    *,
    exit_code: int | None,
    signal_number: int | None,
    raised: bool,
    was_ready: bool,
    stop_requested: bool,
    hung: bool = False,
) -> ExitVerdict:
    """Name what an exit means. Order matters: the most specific cause wins."""
    if stop_requested:
        return ExitVerdict(ExitClass.STOPPED)
    if hung:
        return ExitVerdict(ExitClass.CRASH, CrashReason.HANG)
    if not was_ready:
        return ExitVerdict(ExitClass.CRASH, CrashReason.BOOT)
    if raised:
        return ExitVerdict(ExitClass.CRASH, CrashReason.EXCEPTION)
    if signal_number is not None:
        return ExitVerdict(ExitClass.CRASH, CrashReason.SIGNAL)
    if exit_code:
        return ExitVerdict(ExitClass.CRASH, CrashReason.EXIT_CODE)
    return ExitVerdict(ExitClass.CLEAN)


# --- Restart budget and backoff ----------------------------------------------


@dataclass(frozen=True, slots=True)
class Respawn:
    """Start the next incarnation after ``delay`` seconds."""

    delay: float
    restart_number: int  # restarts within the window, this one included
    budget_remaining: int


@dataclass(frozen=True, slots=True)
class GiveUp:
    """The slot is exhausted: do not start it again."""

    restarts_in_window: int


Decision = Respawn | GiveUp


class SlotBudget:
    """Restart history for one slot, kept across all of its incarnations.

    Keeping it per *slot* rather than per worker handle is the point: a slot
    whose every incarnation crashes must run out of restarts, however many
    fresh handles it has been given.
    """

    def __init__(self, policy: RestartPolicy, rng: Callable[[], float] = random.random) -> None:
        self._policy = policy
        self._rng = rng
        self._restarts: deque[float] = deque()
        self._consecutive = 0

    def _prune(self, now: float) -> None:
        horizon = now - self._policy.window
        while self._restarts and self._restarts[0] <= horizon:
            self._restarts.popleft()

    def restarts_in_window(self, now: float) -> int:
        self._prune(now)
        return len(self._restarts)

    def remaining(self, now: float) -> int:
        return max(0, self._policy.max_restarts - self.restarts_in_window(now))

    def on_failure(self, now: float, uptime: float) -> Decision:
        """Record a failed incarnation that ran for ``uptime`` seconds and decide."""
        self._prune(now)
        if uptime >= self._policy.window:
            self._consecutive = 0  # it stayed up a full window: forget old backoff
        if len(self._restarts) >= self._policy.max_restarts:
            return GiveUp(len(self._restarts))
        self._consecutive += 1
        self._restarts.append(now)
        return Respawn(
            delay=self.backoff(self._consecutive),
            restart_number=len(self._restarts),
            budget_remaining=self._policy.max_restarts - len(self._restarts),
        )

    def backoff(self, consecutive: int) -> float:
        """Delay before the ``consecutive``-th back-to-back restart.

        The first restart after a healthy spell is immediate: an isolated
        crash is replaced in milliseconds. From the second on, the delay
        doubles from ``backoff_base`` up to ``backoff_cap``, with "equal
        jitter" (half fixed, half random) so that slots which crashed
        together do not restart in lockstep.
        """
        if consecutive <= 1:
            return 0.0
        ceiling = min(self._policy.backoff_cap, self._policy.backoff_base * 2 ** (consecutive - 2))
        return float(ceiling * (0.5 + 0.5 * self._rng()))


# --- Escalation ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Escalation:
    """What the supervisor as a whole must do after a slot is exhausted."""

    stop: bool
    exit_code: ExitCode = ExitCode.OK


def escalate(
    exhausted: Iterable[bool], action: ExhaustedAction, any_worker_was_ready: bool
) -> Escalation:
    """Decide the supervisor's fate given which slots are exhausted.

    Every slot exhausted always stops corral non-zero, whatever the action:
    there is nothing left to serve with. ``BOOT_LOOP`` distinguishes an app
    that never started from one that crashed after serving.
    """
    flags = list(exhausted)
    if flags and all(flags):
        code = ExitCode.ALL_EXHAUSTED if any_worker_was_ready else ExitCode.BOOT_LOOP
        return Escalation(stop=True, exit_code=code)
    if any(flags) and action is ExhaustedAction.EXIT:
        return Escalation(stop=True, exit_code=ExitCode.BUDGET_EXHAUSTED)
    return Escalation(stop=False)


# --- What a slot does after one of its incarnations failed -------------------


class Role(enum.Enum):
    """Which of its slot's incarnations a worker was when it ended."""

    CURRENT = "current"  # the slot's serving (or booting) worker
    INCOMING = "incoming"  # a rolling replacement that was not ready yet
    RETIRING = "retiring"  # an older incarnation, already replaced


class Outcome(enum.Enum):
    NOTHING = "nothing"  # not the slot's worker, or corral is stopping
    EXHAUST = "exhaust"  # out of budget: the slot stops
    RESPAWN_NOW = "respawn_now"
    RESPAWN_LATER = "respawn_later"  # after the backoff delay
    AWAIT_INCOMING = "await_incoming"  # a replacement already booting takes the slot
    # A successor died beside the worker it was to replace, which serves on:
    RETRY_SUCCESSOR_NOW = "retry_successor_now"
    RETRY_SUCCESSOR_LATER = "retry_successor_later"  # after the backoff delay
    GIVE_UP_SUCCESSOR = "give_up_successor"  # out of budget: no successor; the old one serves on


class SuccessionStep(enum.Enum):
    """What a failure means for the slot's succession: a recycle or a reload replacing
    its worker (a successor booting, or waiting out a backoff to be started again)."""

    KEEP = "keep"  # none in progress, or it goes on (a retry; the booting successor)
    END = "end"  # it is over (the slot restarts, or gave its successor up): the roll goes on
    ABORT = "abort"  # a reload gave up: the rest of the roll is dropped


@dataclass(frozen=True, slots=True)
class AfterFailure:
    outcome: Outcome
    succession: SuccessionStep = SuccessionStep.KEEP


def after_failure(
    role: Role,
    decision: Decision,
    *,
    running: bool,
    has_current: bool,
    incoming_booting: bool,
    succession: SuccessorRole | None = None,
) -> AfterFailure:
    """Decide a slot's next step once its ``role`` incarnation failed and its budget decided.

    ``succession`` is why the slot has a successor on the way (booting, or to
    be started again after a backoff), if it has one. A successor that dies
    while the worker it replaces still serves is started again within the
    slot's budget and backoff, like any restart; out of budget it is given
    up, and the old worker serves on. A successor booting when the current
    worker dies *is* the restart: a backoff respawn beside it would later
    leave one of the two running untracked. It takes the slot even when the
    budget is spent, since no restart is asked for: the slot is given up only
    if that successor fails too (with no current worker left, its failure
    takes the general path). A current worker that dies while
    its successor waits out a backoff is restarted as usual, which ends the
    succession: the restart brings a fresh worker, and the reload's new code.
    """
    if role is Role.RETIRING or not running:
        return AfterFailure(Outcome.NOTHING)
    gave_up = isinstance(decision, GiveUp)
    if role is Role.INCOMING and has_current:
        if isinstance(decision, GiveUp):
            return AfterFailure(Outcome.GIVE_UP_SUCCESSOR, _ended(succession, gave_up=True))
        if decision.delay > 0:
            return AfterFailure(Outcome.RETRY_SUCCESSOR_LATER)
        return AfterFailure(Outcome.RETRY_SUCCESSOR_NOW)
    if role is Role.CURRENT and incoming_booting:
        return AfterFailure(Outcome.AWAIT_INCOMING)
    step = SuccessionStep.KEEP if succession is None else _ended(succession, gave_up=gave_up)
    if isinstance(decision, GiveUp):
        return AfterFailure(Outcome.EXHAUST, step)
    if decision.delay > 0:
        return AfterFailure(Outcome.RESPAWN_LATER, step)
    return AfterFailure(Outcome.RESPAWN_NOW, step)


def _ended(succession: SuccessorRole | None, *, gave_up: bool) -> SuccessionStep:
    """A reload whose slot ran out of budget stops rolling: its new code is likely broken,
    and every slot it reaches would spend its budget the same way."""
    if gave_up and succession is SuccessorRole.RELOAD:
        return SuccessionStep.ABORT
    return SuccessionStep.END
