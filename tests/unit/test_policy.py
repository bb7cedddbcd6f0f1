"""Unit tests for ``corral.policy``: exit classification, restart budget, backoff, escalation."""

from __future__ import annotations

import pytest

from corral.config import ExhaustedAction, ServerConfig
from corral.errors import ExitCode
from corral.lifecycle.events import CrashReason, SuccessorRole
from corral.policy import (
    AfterFailure,
    Decision,
    Escalation,
    ExitClass,
    ExitVerdict,
    GiveUp,
    Outcome,
    Respawn,
    RestartPolicy,
    Role,
    SlotBudget,
    SuccessionStep,
    after_failure,
    classify_exit,
    escalate,
)


def _zero() -> float:
    return 0.0


def _one() -> float:
    return 1.0


def _budget(
    max_restarts: int = 3,
    window: float = 60.0,
    backoff_base: float = 0.1,
    backoff_cap: float = 10.0,
    rng: float = 1.0,
) -> SlotBudget:
    policy = RestartPolicy(max_restarts, window, backoff_base, backoff_cap)
    return SlotBudget(policy, rng=lambda: rng)


# --- RestartPolicy ------------------------------------------------------------


def test_restart_policy_defaults_match_server_config_defaults() -> None:
    assert RestartPolicy() == RestartPolicy.from_config(ServerConfig())
    assert RestartPolicy() == RestartPolicy(5, 60.0, 0.1, 10.0)


def test_restart_policy_from_config_copies_every_field() -> None:
    config = ServerConfig(max_restarts=2, restart_window=7.5, backoff_base=0.25, backoff_cap=4.0)
    assert RestartPolicy.from_config(config) == RestartPolicy(
        max_restarts=2, window=7.5, backoff_base=0.25, backoff_cap=4.0
    )


# --- classify_exit --------------------------------------------------------------


def test_classify_stop_requested_wins_over_everything() -> None:
    verdict = classify_exit(
        exit_code=1, signal_number=9, raised=True, was_ready=False, stop_requested=True, hung=True
    )
    assert verdict == ExitVerdict(ExitClass.STOPPED, None)


def test_classify_hung_wins_over_boot_raise_signal_and_code() -> None:
    verdict = classify_exit(
        exit_code=1, signal_number=9, raised=True, was_ready=False, stop_requested=False, hung=True
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.HANG)


def test_classify_not_ready_is_boot_even_if_raised_or_signalled() -> None:
    verdict = classify_exit(
        exit_code=1, signal_number=9, raised=True, was_ready=False, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.BOOT)


def test_classify_not_ready_clean_exit_is_still_boot() -> None:
    verdict = classify_exit(
        exit_code=0, signal_number=None, raised=False, was_ready=False, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.BOOT)


def test_classify_raised_wins_over_signal_and_code() -> None:
    verdict = classify_exit(
        exit_code=1, signal_number=9, raised=True, was_ready=True, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.EXCEPTION)


def test_classify_signal_wins_over_exit_code() -> None:
    verdict = classify_exit(
        exit_code=1, signal_number=15, raised=False, was_ready=True, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.SIGNAL)


def test_classify_signal_with_no_exit_code() -> None:
    verdict = classify_exit(
        exit_code=None, signal_number=9, raised=False, was_ready=True, stop_requested=False
    )
    assert verdict.kind is ExitClass.CRASH
    assert verdict.reason is CrashReason.SIGNAL


@pytest.mark.parametrize("code", [1, 2, 255, -1])
def test_classify_nonzero_exit_code(code: int) -> None:
    verdict = classify_exit(
        exit_code=code, signal_number=None, raised=False, was_ready=True, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CRASH, CrashReason.EXIT_CODE)


@pytest.mark.parametrize("code", [0, None])
def test_classify_clean_exit(code: int | None) -> None:
    verdict = classify_exit(
        exit_code=code, signal_number=None, raised=False, was_ready=True, stop_requested=False
    )
    assert verdict == ExitVerdict(ExitClass.CLEAN, None)


def test_classify_hung_defaults_to_false() -> None:
    verdict = classify_exit(
        exit_code=0, signal_number=None, raised=False, was_ready=True, stop_requested=False
    )
    assert verdict.kind is ExitClass.CLEAN


# --- SlotBudget: counting -------------------------------------------------------


def test_budget_exhausts_after_exactly_max_restarts() -> None:
    budget = _budget(max_restarts=3)
    decisions = [budget.on_failure(now=float(i), uptime=0.5) for i in range(3)]
    assert all(isinstance(d, Respawn) for d in decisions)
    assert [d.restart_number for d in decisions if isinstance(d, Respawn)] == [1, 2, 3]
    assert [d.budget_remaining for d in decisions if isinstance(d, Respawn)] == [2, 1, 0]
    assert budget.on_failure(now=3.0, uptime=0.5) == GiveUp(restarts_in_window=3)
    # Still exhausted on the next failure inside the window, and nothing new was recorded.
    assert budget.on_failure(now=4.0, uptime=0.5) == GiveUp(restarts_in_window=3)
    assert budget.restarts_in_window(4.0) == 3


def test_max_restarts_zero_gives_up_on_first_failure() -> None:
    budget = _budget(max_restarts=0)
    assert budget.remaining(0.0) == 0
    assert budget.on_failure(now=0.0, uptime=100.0) == GiveUp(restarts_in_window=0)
    assert budget.restarts_in_window(0.0) == 0


def test_max_restarts_one() -> None:
    budget = _budget(max_restarts=1)
    assert budget.on_failure(now=0.0, uptime=1.0) == Respawn(
        delay=0.0, restart_number=1, budget_remaining=0
    )
    assert budget.on_failure(now=1.0, uptime=1.0) == GiveUp(restarts_in_window=1)


def test_restarts_older_than_window_stop_counting() -> None:
    budget = _budget(max_restarts=2, window=10.0)
    assert isinstance(budget.on_failure(now=100.0, uptime=1.0), Respawn)
    assert isinstance(budget.on_failure(now=105.0, uptime=1.0), Respawn)
    assert budget.restarts_in_window(105.0) == 2
    # At 109.9 both are still inside the window: exhausted.
    assert budget.on_failure(now=109.9, uptime=1.0) == GiveUp(restarts_in_window=2)
    # At 110.5 the restart at 100 has aged out; one slot of budget is back.
    assert budget.restarts_in_window(110.5) == 1
    assert budget.remaining(110.5) == 1
    decision = budget.on_failure(now=110.5, uptime=1.0)
    assert isinstance(decision, Respawn)
    assert decision.restart_number == 2
    assert decision.budget_remaining == 0
    # Long after, everything has aged out.
    assert budget.restarts_in_window(1000.0) == 0
    assert budget.remaining(1000.0) == 2


def test_restart_exactly_one_window_old_no_longer_counts() -> None:
    budget = _budget(max_restarts=1, window=10.0)
    assert isinstance(budget.on_failure(now=0.0, uptime=1.0), Respawn)
    assert budget.restarts_in_window(9.999) == 1
    assert budget.restarts_in_window(10.0) == 0


def test_remaining_and_restarts_in_window_on_fresh_budget() -> None:
    budget = _budget(max_restarts=4)
    assert budget.restarts_in_window(0.0) == 0
    assert budget.remaining(0.0) == 4
    budget.on_failure(now=1.0, uptime=0.0)
    budget.on_failure(now=2.0, uptime=0.0)
    assert budget.restarts_in_window(2.0) == 2
    assert budget.remaining(2.0) == 2


def test_remaining_never_negative() -> None:
    budget = _budget(max_restarts=1)
    budget.on_failure(now=0.0, uptime=0.0)
    budget.on_failure(now=0.1, uptime=0.0)
    assert budget.remaining(0.2) == 0


# --- SlotBudget: backoff ----------------------------------------------------------


def test_backoff_first_consecutive_is_immediate() -> None:
    budget = _budget(rng=1.0)
    assert budget.backoff(0) == 0.0
    assert budget.backoff(1) == 0.0


def test_backoff_doubles_from_base_up_to_cap_at_max_jitter() -> None:
    policy = RestartPolicy(max_restarts=100, window=60.0, backoff_base=0.1, backoff_cap=1.0)
    budget = SlotBudget(policy, rng=_one)
    assert [budget.backoff(n) for n in range(1, 8)] == pytest.approx(
        [0.0, 0.1, 0.2, 0.4, 0.8, 1.0, 1.0]
    )


def test_backoff_lower_bound_is_half_the_ceiling() -> None:
    policy = RestartPolicy(max_restarts=100, window=60.0, backoff_base=0.1, backoff_cap=1.0)
    budget = SlotBudget(policy, rng=_zero)
    assert [budget.backoff(n) for n in range(1, 8)] == pytest.approx(
        [0.0, 0.05, 0.1, 0.2, 0.4, 0.5, 0.5]
    )


def test_backoff_jitter_midpoint() -> None:
    policy = RestartPolicy(max_restarts=100, window=60.0, backoff_base=2.0, backoff_cap=100.0)
    budget = SlotBudget(policy, rng=lambda: 0.5)
    assert budget.backoff(3) == pytest.approx(4.0 * 0.75)


def test_backoff_stays_at_cap_for_large_counts() -> None:
    policy = RestartPolicy(max_restarts=100, window=60.0, backoff_base=0.1, backoff_cap=10.0)
    assert SlotBudget(policy, rng=_one).backoff(60) == pytest.approx(10.0)
    assert SlotBudget(policy, rng=_zero).backoff(60) == pytest.approx(5.0)


def test_backoff_is_a_float() -> None:
    policy = RestartPolicy(max_restarts=3, window=60.0, backoff_base=1, backoff_cap=4)
    assert type(SlotBudget(policy, rng=_one).backoff(2)) is float


def test_on_failure_delays_follow_backoff_sequence() -> None:
    budget = _budget(max_restarts=5, window=60.0, backoff_base=0.1, backoff_cap=0.3, rng=1.0)
    delays = []
    for i in range(5):
        decision = budget.on_failure(now=float(i), uptime=0.5)
        assert isinstance(decision, Respawn)
        delays.append(decision.delay)
    assert delays == pytest.approx([0.0, 0.1, 0.2, 0.3, 0.3])


def test_consecutive_resets_when_uptime_reaches_window() -> None:
    budget = _budget(max_restarts=10, window=10.0, backoff_base=1.0, backoff_cap=100.0, rng=1.0)
    first = budget.on_failure(now=0.0, uptime=1.0)
    second = budget.on_failure(now=1.0, uptime=1.0)
    third = budget.on_failure(now=2.0, uptime=1.0)
    assert [d.delay for d in (first, second, third) if isinstance(d, Respawn)] == [0.0, 1.0, 2.0]
    # Uptime of exactly one window counts as a healthy spell: back to immediate restart.
    healthy = budget.on_failure(now=12.0, uptime=10.0)
    assert isinstance(healthy, Respawn)
    assert healthy.delay == 0.0
    following = budget.on_failure(now=12.5, uptime=0.5)
    assert isinstance(following, Respawn)
    assert following.delay == 1.0


def test_consecutive_not_reset_by_uptime_just_under_window() -> None:
    budget = _budget(max_restarts=10, window=10.0, backoff_base=1.0, backoff_cap=100.0, rng=1.0)
    budget.on_failure(now=0.0, uptime=1.0)
    decision = budget.on_failure(now=20.0, uptime=9.99)
    assert isinstance(decision, Respawn)
    assert decision.delay == 1.0
    # The restart count did age out, though: only this one is in the window.
    assert decision.restart_number == 1


def test_give_up_does_not_advance_backoff() -> None:
    budget = _budget(max_restarts=2, window=10.0, backoff_base=1.0, backoff_cap=100.0, rng=1.0)
    budget.on_failure(now=0.0, uptime=0.1)
    budget.on_failure(now=1.0, uptime=0.1)
    assert isinstance(budget.on_failure(now=2.0, uptime=0.1), GiveUp)
    assert isinstance(budget.on_failure(now=3.0, uptime=0.1), GiveUp)
    decision = budget.on_failure(now=10.5, uptime=0.1)  # restart at 0 has aged out
    assert isinstance(decision, Respawn)
    assert decision.delay == 2.0  # third consecutive restart, not fifth


def test_rng_is_called_only_for_backoff_after_the_first() -> None:
    calls: list[int] = []

    def rng() -> float:
        calls.append(1)
        return 0.0

    budget = SlotBudget(RestartPolicy(max_restarts=5), rng=rng)
    budget.on_failure(now=0.0, uptime=0.0)
    assert calls == []
    budget.on_failure(now=0.1, uptime=0.0)
    assert calls == [1]


# --- escalate ---------------------------------------------------------------------


@pytest.mark.parametrize("action", list(ExhaustedAction))
def test_escalate_all_exhausted_after_serving(action: ExhaustedAction) -> None:
    assert escalate([True, True], action, any_worker_was_ready=True) == Escalation(
        stop=True, exit_code=ExitCode.ALL_EXHAUSTED
    )


@pytest.mark.parametrize("action", list(ExhaustedAction))
def test_escalate_all_exhausted_never_ready_is_boot_loop(action: ExhaustedAction) -> None:
    assert escalate([True], action, any_worker_was_ready=False) == Escalation(
        stop=True, exit_code=ExitCode.BOOT_LOOP
    )


@pytest.mark.parametrize("ready", [True, False])
def test_escalate_some_exhausted_with_exit_action(ready: bool) -> None:
    assert escalate([False, True, False], ExhaustedAction.EXIT, ready) == Escalation(
        stop=True, exit_code=ExitCode.BUDGET_EXHAUSTED
    )


def test_escalate_some_exhausted_with_degrade_keeps_serving() -> None:
    result = escalate([True, False], ExhaustedAction.DEGRADE, any_worker_was_ready=True)
    assert result == Escalation(stop=False, exit_code=ExitCode.OK)


@pytest.mark.parametrize("action", list(ExhaustedAction))
def test_escalate_none_exhausted(action: ExhaustedAction) -> None:
    assert escalate([False, False], action, True) == Escalation(stop=False)


@pytest.mark.parametrize("action", list(ExhaustedAction))
def test_escalate_empty_list_does_not_stop(action: ExhaustedAction) -> None:
    assert escalate([], action, False) == Escalation(stop=False, exit_code=ExitCode.OK)


def test_escalate_accepts_a_generator() -> None:
    flags = (slot != 1 for slot in range(3))
    assert escalate(flags, ExhaustedAction.EXIT, True).exit_code is ExitCode.BUDGET_EXHAUSTED
    assert escalate((f for f in [True, True]), ExhaustedAction.DEGRADE, False) == Escalation(
        stop=True, exit_code=ExitCode.BOOT_LOOP
    )


# --- after_failure: a slot's next step once an incarnation failed ---------------------

RESPAWN_NOW = Respawn(delay=0.0, restart_number=1, budget_remaining=4)
RESPAWN_LATER = Respawn(delay=0.4, restart_number=2, budget_remaining=3)
GIVE_UP = GiveUp(restarts_in_window=5)


RECYCLE, RELOAD = SuccessorRole.RECYCLE, SuccessorRole.RELOAD
KEEP, END, ABORT = SuccessionStep.KEEP, SuccessionStep.END, SuccessionStep.ABORT

FailureCase = tuple[Role, Decision, bool, bool, bool, SuccessorRole | None, Outcome, SuccessionStep]


@pytest.mark.parametrize(
    "case",
    [
        # The current worker, no succession in progress.
        (Role.CURRENT, RESPAWN_NOW, True, True, False, None, Outcome.RESPAWN_NOW, KEEP),
        (Role.CURRENT, RESPAWN_LATER, True, True, False, None, Outcome.RESPAWN_LATER, KEEP),
        (Role.CURRENT, GIVE_UP, True, True, False, None, Outcome.EXHAUST, KEEP),
        (Role.CURRENT, RESPAWN_NOW, False, True, False, None, Outcome.NOTHING, KEEP),
        # The current worker while its successor boots: that successor is the restart.
        (Role.CURRENT, RESPAWN_NOW, True, True, True, RELOAD, Outcome.AWAIT_INCOMING, KEEP),
        (Role.CURRENT, RESPAWN_LATER, True, True, True, RECYCLE, Outcome.AWAIT_INCOMING, KEEP),
        # ... even past the budget: no restart is asked for, so nothing is given up.
        (Role.CURRENT, GIVE_UP, True, True, True, RELOAD, Outcome.AWAIT_INCOMING, KEEP),
        (Role.CURRENT, GIVE_UP, True, True, True, RECYCLE, Outcome.AWAIT_INCOMING, KEEP),
        # The current worker while its failed successor waits out a backoff: the restart
        # ends the succession; a reload rolls on, unless the budget gave the slot up.
        (Role.CURRENT, RESPAWN_NOW, True, True, False, RELOAD, Outcome.RESPAWN_NOW, END),
        (Role.CURRENT, RESPAWN_LATER, True, True, False, RECYCLE, Outcome.RESPAWN_LATER, END),
        (Role.CURRENT, GIVE_UP, True, True, False, RELOAD, Outcome.EXHAUST, ABORT),
        (Role.CURRENT, GIVE_UP, True, True, False, RECYCLE, Outcome.EXHAUST, END),
        (Role.CURRENT, RESPAWN_NOW, False, True, False, RELOAD, Outcome.NOTHING, KEEP),
        # A successor dies while the worker it replaces serves on: retried within budget.
        (Role.INCOMING, RESPAWN_NOW, True, True, False, RECYCLE, Outcome.RETRY_SUCCESSOR_NOW, KEEP),
        (Role.INCOMING, RESPAWN_NOW, True, True, False, RELOAD, Outcome.RETRY_SUCCESSOR_NOW, KEEP),
        (
            Role.INCOMING, RESPAWN_LATER, True, True, False, RECYCLE,
            Outcome.RETRY_SUCCESSOR_LATER, KEEP,
        ),
        (
            Role.INCOMING, RESPAWN_LATER, True, True, False, RELOAD,
            Outcome.RETRY_SUCCESSOR_LATER, KEEP,
        ),
        # ... and given up once out of budget: a reload stops rolling, a recycle just ends.
        (Role.INCOMING, GIVE_UP, True, True, False, RELOAD, Outcome.GIVE_UP_SUCCESSOR, ABORT),
        (Role.INCOMING, GIVE_UP, True, True, False, RECYCLE, Outcome.GIVE_UP_SUCCESSOR, END),
        # A successor dies after the worker it was to replace: the slot restarts as usual.
        (Role.INCOMING, RESPAWN_NOW, True, False, False, RELOAD, Outcome.RESPAWN_NOW, END),
        (Role.INCOMING, RESPAWN_LATER, True, False, False, RELOAD, Outcome.RESPAWN_LATER, END),
        (Role.INCOMING, RESPAWN_LATER, True, False, False, RECYCLE, Outcome.RESPAWN_LATER, END),
        (Role.INCOMING, GIVE_UP, True, False, False, RELOAD, Outcome.EXHAUST, ABORT),
        (Role.INCOMING, GIVE_UP, True, False, False, RECYCLE, Outcome.EXHAUST, END),
        # Stopping, or an old incarnation: nothing to do.
        (Role.INCOMING, RESPAWN_NOW, False, True, False, RELOAD, Outcome.NOTHING, KEEP),
        (Role.INCOMING, GIVE_UP, False, False, False, RECYCLE, Outcome.NOTHING, KEEP),
        (Role.RETIRING, RESPAWN_NOW, True, True, False, None, Outcome.NOTHING, KEEP),
        (Role.RETIRING, GIVE_UP, True, True, True, RELOAD, Outcome.NOTHING, KEEP),
    ],
)  # fmt: skip
def test_after_failure(case: FailureCase) -> None:
    """Columns: role, budget decision, running, has a current worker, another replacement
    is booting, the slot's succession in progress; then the expected outcome and what
    becomes of the succession."""
    role, decision, running, has_current, incoming, succession, outcome, step = case
    after = after_failure(
        role,
        decision,
        running=running,
        has_current=has_current,
        incoming_booting=incoming,
        succession=succession,
    )
    assert after == AfterFailure(outcome, step)


def test_a_successor_retry_follows_the_slots_budget_and_backoff() -> None:
    """Retrying a failed successor spends the same budget as any restart, with the same
    backoff, and is given up exactly when a crash would exhaust the slot."""
    budget = _budget(max_restarts=3, backoff_base=0.5)
    outcomes = []
    for now in (0.0, 0.1, 0.2, 0.3):
        decision = budget.on_failure(now, uptime=0.05)
        after = after_failure(
            Role.INCOMING,
            decision,
            running=True,
            has_current=True,
            incoming_booting=False,
            succession=SuccessorRole.RELOAD,
        )
        outcomes.append((after.outcome, getattr(decision, "delay", None)))
    assert outcomes == [
        (Outcome.RETRY_SUCCESSOR_NOW, 0.0),
        (Outcome.RETRY_SUCCESSOR_LATER, 0.5),
        (Outcome.RETRY_SUCCESSOR_LATER, 1.0),
        (Outcome.GIVE_UP_SUCCESSOR, None),
    ]
    assert budget.remaining(0.3) == 0
