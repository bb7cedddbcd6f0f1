"""Hung workers (--worker-timeout): detected, dumped, and handled per mode and policy."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable

import httpx

from corral.errors import ExitCode
from tests.conftest import CorralProcess, eventually


def hang_in_background(server: CorralProcess, seconds: float) -> threading.Thread:
    """Block whichever worker takes this request for ``seconds``; its reply does not matter."""

    def request() -> None:
        # A killed worker takes the request down with it: that is the point.
        with contextlib.suppress(httpx.HTTPError):
            httpx.get(f"{server.base_url}/hang?seconds={seconds}", timeout=seconds + 10)

    thread = threading.Thread(target=request, daemon=True)
    thread.start()
    return thread


def stack_logs(server: CorralProcess) -> list[str]:
    return [r["stacks"] for r in server.records if r.get("event") == "hung worker stacks"]


def assert_detected_in_time(server: CorralProcess, timeout: float) -> None:
    """The supervisor's own measure of the silence it acted on: within timeout + 2 s."""
    (hung,) = [r for r in server.records if r.get("event") == "worker hung"]
    assert timeout < hung["silent_seconds"] < timeout + 2


def test_a_hung_process_worker_is_dumped_killed_and_replaced(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "1", "--mode", "process", "--worker-timeout", "1")
    server.wait_ready(1)
    hang_in_background(server, 60)
    (crash,) = server.wait_event("crash", slot=0, reason="hang", timeout=20)
    assert crash["signal"] == "SIGKILL"
    assert crash["message"] == "event loop blocked: no sign of life for over 1s"
    assert_detected_in_time(server, timeout=1)
    (stacks,) = stack_logs(server)
    assert "examples/chaos.py" in stacks
    assert "in app" in stacks
    server.wait_event("ready", slot=0, generation=2)
    assert server.get("/").json()["generation"] == 2
    metrics = server.scrape()
    assert metrics.value("corral_worker_crashes_total", slot="0", reason="hang") == 1
    assert metrics.value("corral_worker_restarts_total", slot="0") == 1
    assert metrics.value("corral_worker_force_stops_total", slot="0") == 0


def test_a_hung_thread_worker_makes_corral_drain_the_rest_and_exit_9(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral("--workers", "2", "--mode", "thread", "--worker-timeout", "1")
    server.wait_ready(2)
    hang_in_background(server, 60)
    (crash,) = server.wait_event("crash", reason="hang", timeout=20)
    hung = crash["slot"]
    assert_detected_in_time(server, timeout=1)
    (stacks,) = stack_logs(server)
    assert f"corral-worker-{hung}" in stacks
    assert "examples/chaos.py" in stacks
    assert server.wait_exit(30) == ExitCode.WORKER_HUNG
    healthy = 1 - hung
    (healthy_end,) = server.events("drain_end", slot=healthy)
    assert healthy_end["message"] == "graceful"
    (abandoned,) = server.events("force_stop", slot=hung)
    assert abandoned["message"] == "thread did not exit; abandoned"
    assert not server.events("respawn")


def test_under_ignore_a_hung_thread_stops_counting_as_ready_then_comes_back(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral(
        "--workers", "2", "--mode", "thread", "--worker-timeout", "1", "--on-hung-thread", "ignore"
    )
    server.wait_ready(2)
    hang_in_background(server, 4)
    (crash,) = server.wait_event("crash", reason="hang", timeout=20)
    slot = str(crash["slot"])
    hung = server.scrape()
    assert hung.value("corral_worker_state", slot=slot, state="hung") == 1
    assert hung.value("corral_workers_ready") == 1
    assert hung.value("corral_worker_crashes_total", slot=slot, reason="hang") == 1
    assert server.get("/").status_code == 200, "the healthy worker keeps serving"
    server.wait_for(lambda r: r.get("event") == "hung worker recovered", timeout=20)

    def back() -> bool:
        metrics = server.scrape()
        return metrics.value("corral_worker_state", slot=slot, state="ready") == 1

    eventually(back, what="the recovered slot counts as ready again")
    assert server.scrape().value("corral_workers_ready") == 2
    assert server.proc.poll() is None
    assert not server.events("respawn")


def test_a_worker_that_never_finishes_booting_counts_as_hung(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral(
        "--workers",
        "1",
        "--mode",
        "process",
        "--worker-timeout",
        "1",
        app="tests.integration.slow_boot_app:app",
        env={"CORRAL_TEST_BOOT_SECONDS": "60"},
    )
    (crash,) = server.wait_event("crash", slot=0, reason="hang", timeout=20)
    assert crash["message"] == "not ready: no sign of life for over 1s"
    assert server.events("ready") == []


def test_worker_timeout_zero_lets_a_loop_block_for_as_long_as_it_likes(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, "--worker-timeout", "0")
    server.wait_ready(1)
    reply = httpx.get(f"{server.base_url}/hang?seconds=2.5", timeout=30)
    assert reply.status_code == 200
    assert not server.events("crash")
    assert server.get("/").json()["generation"] == 1


def test_a_slow_but_live_loop_is_not_hung(corral: Callable[..., CorralProcess], mode: str) -> None:
    """Blocking for less than the timeout, again and again, is slow, not hung."""
    server = corral("--workers", "1", "--mode", mode, "--worker-timeout", "2")
    server.wait_ready(1)
    for _ in range(4):
        assert httpx.get(f"{server.base_url}/hang?seconds=0.8", timeout=30).status_code == 200
    assert not server.events("crash")
