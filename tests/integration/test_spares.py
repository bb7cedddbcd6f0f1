"""Warm spares (``--spares``): a spare takes a dead, recycled or rolled worker's slot at once.

Both modes. A spare boots through lifespan startup and waits without
accepting; promoted, it serves as the slot's next generation, and another
spare boots behind it. Spares have their own budget and a reload replaces them.
"""

from __future__ import annotations

import signal
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CorralProcess, eventually, run_cli

Start = Callable[..., CorralProcess]


def _start(
    corral: Start, mode: str, workers: int, spares: int, *args: str, **env: str
) -> CorralProcess:
    server = corral(
        "--workers", str(workers), "--spares", str(spares), "--mode", mode, *args, env=env
    )  # fmt: skip
    server.wait_ready(workers + spares)  # every slot's worker and every spare
    for number in range(1, spares + 1):
        server.wait_event("ready", spare=number)
    return server


def _answer_from(server: CorralProcess, slot: int) -> dict[str, int]:
    """What the app says of itself in a reply served by ``slot`` (fresh connections
    until one lands there: the kernel hands them to whichever worker wins)."""
    for _ in range(1000):
        reply = server.get("/").json()
        if reply["slot"] == slot:
            return dict(reply)
    raise AssertionError(f"no reply from slot {slot} in 1000 requests")


def test_a_dead_worker_is_replaced_by_its_warm_spare_and_a_new_spare_boots(
    corral: Start, mode: str
) -> None:
    server = _start(corral, mode, 2, 1)
    (spare,) = server.events("spawn", spare=1)
    assert "slot" not in spare, "a spare belongs to no slot until promoted"
    served_before = server.scrape().sum("corral_http_requests_total")
    server.crash_slot(mode, 0)
    (promote,) = server.wait_event("promote", slot=0)
    assert (promote["generation"], promote["spare"], promote["pid"]) == (2, 1, spare["pid"])
    assert promote.get("thread_id") == spare.get("thread_id")
    (crash,) = server.events("crash", slot=0)
    server.wait_event("spawn", spare=2)
    kinds = [e["event"] for e in server.events() if e["seq"] > crash["seq"]]
    assert kinds[:3] == ["respawn", "promote", "spawn"], "the next spare boots after the promotion"
    assert not server.events("spawn", slot=0, generation=2), "no worker was booted for the slot"
    server.wait_event("ready", spare=2)
    # The promoted spare serves as slot 0, generation 2, and says so itself.
    answer = _answer_from(server, 0)
    assert (answer["pid"], answer["generation"]) == (spare["pid"], 2)
    rows = server.side("/workers").json()
    assert [(r["slot"], r["state"], r["generation"]) for r in rows["workers"]] == [
        (0, "ready", 2),
        (1, "ready", 1),
    ]
    assert rows["spares"]["desired"] == 1
    assert [(s["spare"], s["state"]) for s in rows["spares"]["workers"]] == [(2, "spare")]
    metrics = server.scrape()
    assert metrics.value("corral_spares_desired") == 1
    assert metrics.value("corral_spares_ready") == 1
    assert metrics.value("corral_spares_exhausted") == 0
    assert metrics.value("corral_lifecycle_events_total", kind="promote") == 1
    assert metrics.value("corral_worker_restarts_total", slot="0") == 1, "charged to the slot"
    assert metrics.value("corral_workers_ready") == 2
    # The promoted worker's requests are counted for its slot, like any worker's.
    assert metrics.sum("corral_http_requests_total") >= served_before + 1
    assert not metrics.find("corral_http_requests_total", slot="-1")
    shown = run_cli("status", "--url", server.metrics_url)
    assert shown.returncode == 0, shown.stderr
    assert "spares: 1 of 1 warm: #2 spare (" in shown.stdout


def test_a_recycled_worker_hands_its_slot_to_a_spare(corral: Start, mode: str) -> None:
    server = _start(corral, mode, 1, 1, "--max-requests", "20")
    (spare,) = server.events("spawn", spare=1)
    for _ in range(30):
        assert server.get("/").status_code == 200
    (recycle,) = server.wait_event("recycle", slot=0)
    (promote,) = server.wait_event("promote", slot=0, generation=2)
    assert promote["pid"] == spare["pid"]
    assert promote["seq"] > recycle["seq"]
    assert "recycle" in promote["message"]
    server.wait_event("drain_end", slot=0, generation=1)
    assert not server.events("spawn", slot=0, generation=2)
    for _ in range(10):
        assert server.get("/").status_code == 200
    server.wait_event("ready", spare=2)


def test_a_reload_replaces_the_spares_so_a_promoted_spare_runs_the_new_code(
    corral: Start, mode: str
) -> None:
    server = _start(corral, mode, 2, 1)
    server.send(signal.SIGHUP)
    server.wait_event("drain_end", spare=1)  # the old code's spare goes first
    server.wait_event("drain_end", slot=0, generation=1)
    server.wait_event("drain_end", slot=1, generation=1)
    (reload,) = server.events("reload")
    # The roll itself may hand a slot to a new spare if one is warm in time, so
    # wait for a warm spare, crash slot 1 and look at the promotion that follows.
    eventually(lambda: server.scrape().value("corral_spares_ready") == 1, what="a warm spare")
    crashed_before = len(server.events("crash", slot=1))
    server.crash_slot(mode, 1)
    crash = server.wait_event("crash", slot=1, count=crashed_before + 1)[-1]
    (promote,) = server.wait_for(
        lambda r: (
            bool(r.get("lifecycle"))
            and r.get("event") == "promote"
            and r.get("slot") == 1
            and r["seq"] > crash["seq"]
        )
    )
    promoted = {e["spare"] for e in server.events("promote")}
    booted_after_reload = {
        e["spare"] for e in server.events("spawn") if "spare" in e and e["seq"] > reload["seq"]
    }
    assert promote["spare"] in booted_after_reload
    assert promoted <= booted_after_reload, "only a spare booted after the reload is promoted"
    assert 1 not in promoted, "the old code's spare never serves"


def test_spares_failing_at_boot_back_off_then_stop_without_touching_the_slots(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker = tmp_path / "fail-startup"
    server = _start(
        corral, mode, 2, 1, "--max-restarts", "2", "--backoff-base", "0.05",
        CHAOS_FAIL_STARTUP_FILE=str(marker),
    )  # fmt: skip
    marker.touch()  # what boots from now on fails its lifespan startup: a bad deploy
    server.send(signal.SIGHUP)
    (exhausted,) = server.wait_event("budget_exhausted", spare=4, timeout=30)
    assert "spares given up" in exhausted["message"]
    crashes = server.events("crash", reason="boot")
    spare_crashes = [e["spare"] for e in crashes if "spare" in e]
    assert spare_crashes == [2, 3, 4], "the first fails, two restarts, then given up"
    assert [e["spare"] for e in server.events("respawn") if "spare" in e] == [2, 3]
    metrics = server.scrape()
    assert metrics.value("corral_spares_exhausted") == 1
    assert metrics.value("corral_spares_ready") == 0
    assert not metrics.find("corral_worker_crashes_total", slot="-1")
    # The slots serve on, on their old workers: a spare's failure never escalates.
    server.wait_for(lambda r: r.get("event") == "rolling restart aborted; old workers keep serving")
    assert server.side("/readyz").status_code == 200
    assert server.get("/").status_code == 200
    assert server.proc.poll() is None
    # The fix ships: the next reload gives the spares a fresh budget.
    marker.unlink()
    server.send(signal.SIGHUP)
    server.wait_event("ready", spare=5, timeout=30)
    eventually(lambda: server.scrape().value("corral_spares_ready") == 1, what="spare back")
    assert server.scrape().value("corral_spares_exhausted") == 0
