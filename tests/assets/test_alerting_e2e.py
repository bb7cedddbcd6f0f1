"""The shipped alerts, end to end: real corral, real Prometheus, real Alertmanager, real webhook.

Two corrals run side by side under one Prometheus (1 s scrapes and
evaluations) that loads ``deploy/prometheus/rules`` as shipped, and
alerts go through Alertmanager (the shipped routing and inhibit rules) to a
webhook this test serves on loopback:

* **chaos**: the chaos example with a restart budget of 6 in a 10-minute
  window. One slot is SIGKILLed three times in a row and then every 15 s while
  it has more than two restarts left, which must make
  ``CorralWorkerCrashLooping`` fire (after its shipped ``for: 1m``) while the
  slot still has budget; then it is killed until the budget runs out, which
  must make ``CorralRestartBudgetExhausted`` fire and reach the webhook. Then
  it is drained with SIGTERM.
* **quiet**: the same app with no faults and default settings, scraped for the
  whole scenario. No alert may as much as go pending for it (but see
  ``_assert_quiet_run_raised_nothing`` for the one thing a slow machine may
  cause).

Afterwards every PromQL expression in ``dashboards/*.json`` and
``deploy/prometheus/rules/*.yml`` must parse and return at least one series
over the scenario (see ``tests.assets.promql`` for the rewrites).

No ``for:`` duration is shortened. Only Alertmanager's group waits are (to 1 s,
in the test's copy of its config). The whole test takes about 75 s, most of
it the crash-loop alert's minute.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.assets.promql import all_expressions, substitute, without_thresholds
from tests.assets.stack import (
    ALERTMANAGER_BINARIES,
    PROMETHEUS_BINARIES,
    PrometheusAPI,
    Server,
    Webhook,
    start_alertmanager,
    start_prometheus,
    webhook,
)
from tests.assets.tools import require
from tests.conftest import CorralProcess, eventually

pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]

CRASHED_SLOT = 0
MAX_RESTARTS = 6
CHAOS_ARGS = (
    "--workers", "2", "--mode", "process",
    "--max-restarts", str(MAX_RESTARTS), "--restart-window", "600",
    "--backoff-base", "0.05", "--backoff-cap", "0.5",
    "--shutdown-timeout", "5",
)  # fmt: skip
QUIET_ARGS = ("--workers", "2", "--mode", "process")
# Generous: a loaded two-core machine. The alert itself needs ~60 s (its for:).
ALERT_TIMEOUT = 150.0


@dataclass
class Stack:
    prometheus: PrometheusAPI
    hook: Webhook


@pytest.fixture
def stack_binaries() -> tuple[str, str]:
    return (
        require("prometheus", *PROMETHEUS_BINARIES),
        require("prometheus-alertmanager", *ALERTMANAGER_BINARIES),
    )


@contextlib.contextmanager
def running_stack(binaries: tuple[str, str], workdir: Path, targets: list[str]) -> Iterator[Stack]:
    prometheus_binary, alertmanager_binary = binaries
    servers: list[Server] = []
    with webhook() as hook:
        try:
            am = start_alertmanager(alertmanager_binary, workdir, hook.url)
            servers.append(am)
            servers.append(start_prometheus(prometheus_binary, workdir, targets, am.url))
            yield Stack(PrometheusAPI(servers[-1]), hook)
        finally:
            for server in reversed(servers):
                server.stop()


def _target(server: CorralProcess) -> str:
    return server.metrics_url.removeprefix("http://").rstrip("/")


def _firing(api: PrometheusAPI, name: str, instance: str) -> list[dict[str, Any]]:
    return [
        alert
        for alert in api.alerts()
        if alert["labels"]["alertname"] == name
        and alert["labels"].get("instance") == instance
        and alert["state"] == "firing"
    ]


def _budget(server: CorralProcess, slot: int) -> int:
    rows = server.side("/workers").json()["workers"]
    return int(next(row["budget_remaining"] for row in rows if row["slot"] == slot))


class SlotKiller:
    """SIGKILLs one slot's workers, each once it is ready, one generation after another."""

    def __init__(self, server: CorralProcess, slot: int) -> None:
        self.server = server
        self.slot = slot
        self.generation = 1

    def crash(self) -> None:
        self.server.wait_event("ready", slot=self.slot, generation=self.generation, timeout=30)
        self.server.crash_slot("process", self.slot)
        self.generation += 1


def _gauge(api: PrometheusAPI, name: str, instance: str) -> float | None:
    found = api.query(f'{name}{{instance="{instance}"}}')
    return float(found[0]["value"][1]) if found else None


def _assert_limits_are_exported(
    api: PrometheusAPI, chaos: CorralProcess, quiet: CorralProcess
) -> None:
    """The flags the rules compare against, as Prometheus stored them: chaos's and the defaults."""
    expected = {
        _target(chaos): {
            "corral_restart_budget_limit": float(MAX_RESTARTS),
            "corral_restart_budget_window_seconds": 600.0,
            "corral_workers_min_ready": 2.0,
        },
        _target(quiet): {
            "corral_restart_budget_limit": 5.0,
            "corral_restart_budget_window_seconds": 60.0,
            "corral_workers_min_ready": 2.0,
        },
    }
    for instance, gauges in expected.items():
        seen = {name: _gauge(api, name, instance) for name in gauges}
        assert seen == gauges, instance


def _serve_some(server: CorralProcess) -> None:
    for path in ("/", "/", "/missing"):
        server.get(path)


def _crash_until_looping(api: PrometheusAPI, chaos: CorralProcess, killer: SlotKiller) -> None:
    """Three quick crashes, then one every 15 s while two or more restarts are left."""
    for _ in range(3):
        killer.crash()
    target = _target(chaos)
    deadline = time.monotonic() + ALERT_TIMEOUT
    last_crash = time.monotonic()
    while not _firing(api, "CorralWorkerCrashLooping", target):
        assert time.monotonic() < deadline, f"CrashLooping never fired: {api.alerts()}"
        if time.monotonic() - last_crash > 15 and _budget(chaos, killer.slot) > 2:
            killer.crash()
            last_crash = time.monotonic()
        time.sleep(0.5)
    looping = _firing(api, "CorralWorkerCrashLooping", target)
    assert [alert["labels"]["slot"] for alert in looping] == [str(killer.slot)]
    assert looping[0]["labels"]["severity"] == "warning"
    # The description quotes the configured budget, read from the gauges.
    assert (
        f"budget of {MAX_RESTARTS} restarts per 600 s" in looping[0]["annotations"]["description"]
    )
    assert not chaos.events("budget_exhausted"), "it fired during the crash phase"
    assert _budget(chaos, killer.slot) > 0


def _exhaust(stack: Stack, chaos: CorralProcess, killer: SlotKiller) -> None:
    """Spend the rest of the budget; the critical alert must reach the webhook."""
    for _ in range(_budget(chaos, killer.slot) + 1):
        killer.crash()
    chaos.wait_event("budget_exhausted", slot=killer.slot, timeout=30)
    target = _target(chaos)

    def delivered() -> list[dict[str, Any]]:
        return [
            alert
            for alert in stack.hook.alerts()
            if alert["labels"]["alertname"] == "CorralRestartBudgetExhausted"
            and alert["labels"].get("instance") == target
            and alert["labels"].get("slot") == str(killer.slot)
            and alert["status"] == "firing"
        ]

    eventually(lambda: bool(delivered()), timeout=60, what="BudgetExhausted reaches the webhook")
    alert = delivered()[0]
    assert alert["labels"]["severity"] == "critical"
    assert alert["annotations"]["runbook_url"] == (
        "https://github.com/corral-dev/corral/blob/main/docs/runbooks.md"
        "#corralrestartbudgetexhausted"
    )
    assert _firing(stack.prometheus, "CorralRestartBudgetExhausted", target)
    # Degraded but ready: /readyz now needs only the slot that is left, and
    # CorralNotReady, which compares with what /readyz needs, stays quiet.
    eventually(
        lambda: _gauge(stack.prometheus, "corral_workers_min_ready", target) == 1.0,
        timeout=30,
        what="min-ready follows the exhausted slot",
    )
    assert chaos.side("/readyz").status_code == 200
    assert not [
        a
        for a in stack.prometheus.alerts()
        if a["labels"]["alertname"] == "CorralNotReady" and a["labels"].get("instance") == target
    ]


def _assert_quiet_run_raised_nothing(stack: Stack, quiet: CorralProcess, start: float) -> None:
    """Not even a pending alert, over everything Prometheus has recorded for it.

    One exception, for a loaded machine: a scrape that overran its 1 s timeout
    makes ``up`` 0 and puts CorralMetricsDown into pending (its ``for`` is 2
    minutes). That is tolerated only if such a failed scrape is on record, and
    it must never have fired.
    """
    target = _target(quiet)
    window = f"{int(time.time() - start) + 5}s"
    api = stack.prometheus
    scrapes = api.query(f'count_over_time(up{{instance="{target}"}}[{window}])')
    assert float(scrapes[0]["value"][1]) >= 30, "the quiet run was scraped long enough"
    worst_up = api.query(f'min_over_time(up{{instance="{target}"}}[{window}])')
    alerts = f'count_over_time(ALERTS{{instance="{target}"}}[{window}])'
    seen = {
        (series["metric"]["alertname"], series["metric"]["alertstate"])
        for series in api.query(f"count by (alertname, alertstate) ({alerts})")
    }
    tolerated = {("CorralMetricsDown", "pending")} if worst_up[0]["value"][1] == "0" else set()
    assert seen <= tolerated, seen
    assert not [a for a in stack.hook.alerts() if a["labels"].get("instance") == target]


def _drain(api: PrometheusAPI, chaos: CorralProcess) -> None:
    chaos.send(signal.SIGTERM)
    assert chaos.wait_exit() == 0
    chaos.wait_event("drain_end", timeout=5)
    eventually(
        lambda: api.targets_up().get(_target(chaos)) == 0.0,
        timeout=30,
        what="Prometheus sees the drained corral go away",
    )


def _assert_every_expression_has_data(api: PrometheusAPI, start: float) -> None:
    end = time.time()
    missing: list[str] = []
    for expression in all_expressions():
        expr = substitute(expression.expr)
        api.query(expr)  # raises with Prometheus' parse error
        probe = without_thresholds(expr) if expression.is_rule else expr
        if not api.query_range(probe, start, end):
            missing.append(f"{expression.where}: {probe}")
    assert not missing, "expressions with no series:\n" + "\n".join(missing)


def test_budget_alerts_fire_and_reach_the_webhook_and_every_query_has_data(
    corral: Callable[..., CorralProcess], stack_binaries: tuple[str, str], tmp_path: Path
) -> None:
    chaos = corral(*CHAOS_ARGS)
    quiet = corral(*QUIET_ARGS)
    chaos.wait_ready(2)
    quiet.wait_ready(2)
    targets = {_target(chaos): 1.0, _target(quiet): 1.0}
    with running_stack(stack_binaries, tmp_path, list(targets)) as stack:
        api = stack.prometheus
        start = time.time()
        eventually(lambda: api.targets_up() == targets, timeout=60, what="both corrals scraped")
        loaded = [rule["name"] for group in api.rule_groups() for rule in group["rules"]]
        assert len(loaded) == 9, loaded
        _assert_limits_are_exported(api, chaos, quiet)
        _serve_some(chaos)
        _serve_some(quiet)
        killer = SlotKiller(chaos, CRASHED_SLOT)
        _crash_until_looping(api, chaos, killer)
        _exhaust(stack, chaos, killer)
        _assert_quiet_run_raised_nothing(stack, quiet, start)
        _drain(api, chaos)
        _assert_every_expression_has_data(api, start)
