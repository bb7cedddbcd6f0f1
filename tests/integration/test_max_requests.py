"""--max-requests: workers are replaced, rolling, after serving their quota."""

from __future__ import annotations

from collections.abc import Callable

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


def quota(event: dict[str, object]) -> tuple[int, int]:
    """(requests served, its max_requests) from a recycle event's message."""
    words = str(event["message"]).split()
    return int(words[1]), int(words[-1])
