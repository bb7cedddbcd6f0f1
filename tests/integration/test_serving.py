"""Both worker modes serve real HTTP on one shared, supervisor-owned port."""

from __future__ import annotations

from collections.abc import Callable

from tests.conftest import CorralProcess


def test_both_modes_serve_requests(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    start = server.events("supervisor_start")[0]
    assert start["mode"] == mode
    replies = [server.get("/") for _ in range(20)]
    assert [r.status_code for r in replies] == [200] * 20
    assert {r.json()["slot"] for r in replies} <= {0, 1}
    assert all(r.json()["generation"] == 1 for r in replies)


def test_port_zero_binds_one_port_shared_by_all_workers(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "3", "--mode", mode)
    server.wait_ready(3)
    url = server.base_url
    port = int(url.rsplit(":", 1)[1])
    assert port > 0, "the chosen ephemeral port is reported, not 0"
    listening = [r for r in server.records if r.get("event") == "corral listening"]
    assert len(listening) == 1
    assert listening[0]["urls"] == [url]
    # Every worker serves on that one port: keep asking until each slot has answered.
    seen: set[int] = set()
    for _ in range(300):
        seen.add(server.get("/").json()["slot"])
        if seen == {0, 1, 2}:
            break
    assert seen == {0, 1, 2}


def test_spawn_and_ready_events_carry_identity(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral("--workers", "2", "--mode", mode)
    server.wait_ready(2)
    for event in server.events("spawn") + server.events("ready"):
        assert event["slot"] in (0, 1)
        assert event["generation"] == 1
        assert event["mode"] == mode
        assert isinstance(event["pid"], int)
        assert event["wall_time"] > 0
        assert event["monotonic"] > 0
        if mode == "thread":
            assert isinstance(event["thread_id"], int)
    for event in server.events("ready"):
        assert 0 < event["duration"] < 30, "spawn-to-ready duration is recorded"
