"""--max-requests: workers are replaced, rolling, after serving their quota."""

from __future__ import annotations

import os
import signal
from collections.abc import Callable
from pathlib import Path

import httpx

from tests.conftest import CorralProcess


def test_a_worker_is_recycled_after_its_quota_without_dropping_a_request(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "1", "--mode", mode, "--max-requests", "40")
    server.wait_ready(1)
    generations: list[int] = []
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(60):
            reply = client.get("/", headers={"connection": "close"})
            assert reply.status_code == 200
            generations.append(reply.json()["generation"])
        server.wait_event("ready", slot=0, generation=2)
        (recycle,) = server.wait_event("recycle", slot=0, generation=1)
        served, limit = quota(recycle)
        assert limit == 40
        assert served >= 40
        server.wait_event("drain_end", slot=0, generation=1)
        for _ in range(10):  # only the successor is left to answer
            assert client.get("/", headers={"connection": "close"}).json()["generation"] == 2
    assert generations[0] == 1
    # One slot, never zero capacity: the successor was ready before the old one drained.
    ordered = [(e["event"], e["generation"]) for e in server.events() if e.get("slot") == 0]
    assert ordered.index(("ready", 2)) < ordered.index(("drain_start", 1))
    assert not server.events("crash")
    metrics = server.scrape()
    assert metrics.value("corral_lifecycle_events_total", kind="recycle") >= 1
    assert metrics.value("corral_worker_restarts_total", slot="0") == 0, "not a failure"


def test_jitter_gives_each_incarnation_its_own_quota(
    corral: Callable[..., CorralProcess],
) -> None:
    server = corral(
        "--workers", "1", "--mode", "thread", "--max-requests", "5", "--max-requests-jitter", "50"
    )
    server.wait_ready(1)
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(2000):
            assert client.get("/", headers={"connection": "close"}).status_code == 200
            if len(server.events("recycle")) >= 3:
                break
    recycles = server.events("recycle")
    assert len(recycles) >= 3, "5 + at most 50 requests per incarnation, and 2000 were sent"
    quotas = [quota(event) for event in recycles]
    for served, limit in quotas:
        assert 5 <= limit <= 55
        assert served >= limit
    assert len({limit for _, limit in quotas}) > 1 or len(quotas) < 3


def test_a_worker_that_dies_past_its_budget_while_its_successor_boots_hands_the_slot_over(
    corral: Callable[..., CorralProcess], mode: str, tmp_path: Path
) -> None:
    """No restart is asked for, so the spent budget gives nothing up: the booting
    successor takes the slot, and the slot never reads as exhausted."""
    delay = tmp_path / "startup-delay"
    server = corral(
        "--workers", "1", "--mode", mode, "--max-requests", "5", "--max-restarts", "0",
        env={"CHAOS_STARTUP_DELAY_FILE": str(delay)},
    )  # fmt: skip
    server.wait_ready(1)
    delay.write_text("2")  # workers started from now on take 2 s in lifespan startup
    with httpx.Client(base_url=server.base_url, timeout=10) as client:
        for _ in range(5):
            assert client.get("/", headers={"connection": "close"}).status_code == 200
    server.wait_event("recycle", slot=0, generation=1)
    server.wait_event("spawn", slot=0, generation=2)  # the successor boots
    # ... and the worker it was to replace dies meanwhile.
    if mode == "process":
        (serving,) = server.events("ready", slot=0, generation=1)
        os.kill(serving["pid"], signal.SIGKILL)
    else:  # the successor does not accept yet, so /crash reaches the old worker
        server.crash_slot(mode, 0)
    (crash,) = server.wait_event("crash", slot=0, generation=1)
    server.wait_event("ready", slot=0, generation=2, timeout=20)
    assert not server.events("budget_exhausted")
    assert not server.events("respawn"), "nothing restarted: the successor was already booting"
    assert server.get("/").json()["generation"] == 2
    rows = server.side("/workers").json()["workers"]
    assert [(r["slot"], r["state"], r["generation"]) for r in rows] == [(0, "ready", 2)]
    metrics = server.scrape()
    assert metrics.value("corral_worker_exhausted", slot="0") == 0
    assert metrics.value("corral_workers_ready") == 1
    assert crash["seq"] < server.events("ready", slot=0, generation=2)[0]["seq"]


def quota(event: dict[str, object]) -> tuple[int, int]:
    """(requests served, its max_requests) from a recycle event's message."""
    words = str(event["message"]).split()
    return int(words[1]), int(words[-1])
