"""A rolling restart's failed replacement: retried, given up, superseded, or cut short.

The chaos app fails its lifespan startup while a marker file exists, so each
test breaks the successors of workers that already serve. (The recycle and
the roll under load, with their figures, are the reliability scenarios in
tests/reliability/test_successor_retry.py.)
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from pathlib import Path

from tests.conftest import CorralProcess, Event

Start = Callable[..., CorralProcess]


def _start(
    corral: Start, mode: str, marker: Path, workers: int, *args: str, **env: str
) -> CorralProcess:
    server = corral(
        "--workers", str(workers), "--mode", mode, *args,
        env={"CHAOS_FAIL_STARTUP_FILE": str(marker), **env},
    )  # fmt: skip
    server.wait_ready(workers)
    marker.touch()  # every worker started from now on fails its startup
    return server


def _spawned(server: CorralProcess, slot: int) -> list[int]:
    return [e["generation"] for e in server.events("spawn", slot=slot)]


def _listener_descriptors_blocking(server: CorralProcess) -> list[bool]:
    """For each of corral's descriptors on its listening socket, whether it is in blocking mode.

    Read from /proc: the ``flags`` line of fdinfo is the open file description's
    flags (in octal), which every copy of the listener shares.
    """
    port = int(server.base_url.rsplit(":", 1)[1])
    inodes = set()
    for line in Path("/proc/net/tcp").read_text().splitlines()[1:]:
        fields = line.split()
        if int(fields[1].split(":")[1], 16) == port and fields[3] == "0A":  # LISTEN
            inodes.add(f"socket:[{fields[9]}]")
    blocking = []
    for fd in os.listdir(f"/proc/{server.pid}/fd"):
        if os.readlink(f"/proc/{server.pid}/fd/{fd}") in inodes:
            info = Path(f"/proc/{server.pid}/fdinfo/{fd}").read_text()
            flags = int(info.split("flags:")[1].split()[0], 8)
            blocking.append(not flags & os.O_NONBLOCK)
    return blocking


def _due(failed: Event) -> float:
    """When the retry a successor_failed event scheduled was due (monotonic)."""
    return float(failed["monotonic"]) + float(failed["backoff"])


def _sleep_until(moment: float) -> None:
    time.sleep(max(0.0, moment - time.monotonic()))


def test_a_replacement_that_keeps_failing_is_given_up_and_the_old_workers_serve_on(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker = tmp_path / "fail-startup"
    server = _start(corral, mode, marker, 2, "--max-restarts", "2", "--backoff-base", "0.05")
    server.send(signal.SIGHUP)
    failed = server.wait_event("successor_failed", count=3, timeout=30)
    server.wait_for(lambda r: r.get("event") == "rolling restart aborted; old workers keep serving")
    assert [(e["slot"], e["role"], e["budget_remaining"]) for e in failed] == [
        (0, "reload", 1),
        (0, "reload", 0),
        (0, "reload", 0),
    ]
    assert "gave up: 2 restarts within 60s" in failed[-1]["message"]
    assert len(server.events("respawn")) == 2, "the give-up schedules nothing"
    time.sleep(0.5)  # the roll does not go on to slot 1
    assert _spawned(server, 1) == [1]
    assert _spawned(server, 0) == [1, 2, 3, 4]
    rows = server.side("/workers").json()["workers"]
    assert [(r["state"], r["generation"]) for r in rows] == [("ready", 1), ("ready", 1)]
    for _ in range(10):
        assert server.get("/").status_code == 200
    metrics = server.scrape()
    assert metrics.value("corral_worker_restarts_total", slot="0") == 2
    assert metrics.value("corral_lifecycle_events_total", kind="successor_failed") == 3
    assert metrics.value("corral_restart_budget_remaining", slot="0") == 0
    assert metrics.value("corral_workers_ready") == 2
    assert not server.events("budget_exhausted"), "a slot that serves is not exhausted"
    # The fix ships: the next reload rolls both slots.
    marker.unlink()
    server.send(signal.SIGHUP)
    server.wait_event("drain_end", slot=0, generation=1, timeout=30)
    server.wait_event("drain_end", slot=1, generation=1, timeout=30)
    assert [r["generation"] for r in server.side("/workers").json()["workers"]] == [5, 2]


def test_replacements_failing_at_boot_leave_the_shared_listener_non_blocking(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    # Every worker's loop wakes for each new connection and all but one lose
    # the accept() race. Were the listener blocking, a loser would sleep inside
    # accept() until a later connection came: no serving, no drain. A thread
    # worker's copy of the listener once made it blocking, and only a worker
    # that got as far as serving set it back, so failed boots left it so.
    marker = tmp_path / "fail-startup"
    server = _start(corral, mode, marker, 2, "--max-restarts", "1", "--backoff-base", "0.05")
    server.send(signal.SIGHUP)
    server.wait_for(lambda r: r.get("event") == "rolling restart aborted; old workers keep serving")
    flags = _listener_descriptors_blocking(server)
    assert flags, "no descriptor of corral's on its listening socket"
    assert not any(flags), f"blocking copies of the listener: {flags}"
    for _ in range(20):  # each wakes both workers' loops; the loser must not be stuck
        assert server.get("/").status_code == 200
    marker.unlink()
    server.send(signal.SIGTERM)
    assert server.proc.wait(timeout=30) == 0
    drained = [(e["slot"], e["generation"]) for e in server.events("drain_end")]
    assert sorted(drained) == [(0, 1), (1, 1)], "a worker stuck in accept() never drains"


def test_a_second_reload_supersedes_a_retry_waiting_out_its_backoff(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker = tmp_path / "fail-startup"
    # The second failure backs off 3-6 s: long enough to supersede it, short enough to wait out.
    server = _start(corral, mode, marker, 2, "--backoff-base", "6", "--backoff-cap", "6")
    server.send(signal.SIGHUP)
    first, second = server.wait_event("successor_failed", count=2, timeout=30)
    assert (first["backoff"], second["backoff"] >= 3) == (0, True)
    marker.unlink()
    server.send(signal.SIGHUP)
    (replacement,) = server.wait_event("spawn", slot=0, generation=4, timeout=30)
    server.wait_event("ready", slot=0, generation=4, timeout=30)
    server.wait_event("drain_end", slot=1, generation=1, timeout=30)
    assert float(replacement["monotonic"]) < _due(second), "it waited for the old backoff"
    _sleep_until(_due(second) + 1.0)
    assert _spawned(server, 0) == [1, 2, 3, 4], "the superseded retry still ran"
    assert _spawned(server, 1) == [1, 2]
    assert len(server.events("reload")) == 2
    assert [e["generation"] for e in server.events("drain_end")] == [1, 1]
    rows = server.side("/workers").json()["workers"]
    assert [(r["state"], r["generation"]) for r in rows] == [("ready", 4), ("ready", 2)]


def test_a_reload_asked_for_while_a_replacement_boots_survives_its_failure(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker, delay = tmp_path / "fail-startup", tmp_path / "startup-delay"
    # No retries at all: the first failure gives the replacement up and aborts the roll.
    server = _start(
        corral, mode, marker, 1, "--max-restarts", "0", CHAOS_STARTUP_DELAY_FILE=str(delay)
    )
    delay.write_text("1.5")  # replacements boot slowly, then fail
    server.send(signal.SIGHUP)
    server.wait_event("spawn", slot=0, generation=2)
    server.send(signal.SIGHUP)  # coalesced: a replacement is booting
    failed = server.wait_event("successor_failed", count=2, timeout=30)
    assert all("gave up" in e["message"] for e in failed)
    rolls = [e for e in server.events("reload") if e.get("message") == "rolling restart"]
    assert len(rolls) == 2, "the second SIGHUP was lost with the aborted roll"
    assert server.get("/").status_code == 200
    rows = server.side("/workers").json()["workers"]
    assert [(r["state"], r["generation"]) for r in rows] == [("ready", 1)]


def test_a_worker_that_dies_while_its_replacement_backs_off_is_restarted_and_the_roll_goes_on(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker = tmp_path / "fail-startup"
    server = _start(corral, mode, marker, 2, "--backoff-base", "4", "--backoff-cap", "4")
    server.send(signal.SIGHUP)
    _, second = server.wait_event("successor_failed", count=2, timeout=30)
    marker.unlink()
    # Generation 1 dies while its replacement backs off (it is the only slot-0 worker serving).
    if mode == "process":
        os.kill(server.events("spawn", slot=0, generation=1)[0]["pid"], signal.SIGKILL)
    else:
        server.crash_slot(mode, 0)
    server.wait_event("crash", slot=0, generation=1)
    # Its restart is the slot's fresh worker; the roll moves on to slot 1 at once.
    server.wait_event("ready", slot=0, generation=4, timeout=30)
    server.wait_event("drain_end", slot=1, generation=1, timeout=30)
    _sleep_until(_due(second) + 1.0)
    assert _spawned(server, 0) == [1, 2, 3, 4], "the cancelled retry still ran"
    assert _spawned(server, 1) == [1, 2]
    rows = server.side("/workers").json()["workers"]
    assert [(r["state"], r["generation"]) for r in rows] == [("ready", 4), ("ready", 2)]


def test_shutdown_does_not_wait_for_a_pending_retry(
    corral: Start, mode: str, tmp_path: Path
) -> None:
    marker = tmp_path / "fail-startup"
    # The second failure backs off 15-30 s; shutting down must not wait for it.
    server = _start(corral, mode, marker, 1, "--backoff-base", "30", "--backoff-cap", "30")
    server.send(signal.SIGHUP)
    _, second = server.wait_event("successor_failed", count=2, timeout=30)
    assert second["backoff"] >= 15
    server.send(signal.SIGTERM)
    assert server.wait_exit(timeout=10) == 0
    assert _spawned(server, 0) == [1, 2, 3]
    (drained,) = server.events("drain_end")
    assert (drained["generation"], drained["message"]) == (1, "graceful")
