"""Directories of SIGKILLed owners are swept; live owners' are never touched."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

from corral.owned_dir import LOCK_NAME, OwnedDirectory, sweep_abandoned
from corral.request_stats.pool import DIRECTORY_PREFIX, RequestStatsPool

HOLD_A_DIRECTORY = """
import sys, time
from corral.owned_dir import OwnedDirectory
owned = OwnedDirectory("test-owned-", sys.argv[1])
print(owned.path, flush=True)
time.sleep(60)
"""


def _owner_process(parent: Path) -> tuple[subprocess.Popen[str], Path]:
    child = subprocess.Popen(
        [sys.executable, "-c", HOLD_A_DIRECTORY, str(parent)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    return child, Path(child.stdout.readline().strip())


def test_a_killed_owners_directory_is_swept_and_a_live_ones_is_not(tmp_path: Path) -> None:
    dead, dead_dir = _owner_process(tmp_path)
    alive, alive_dir = _owner_process(tmp_path)
    try:
        os.kill(dead.pid, signal.SIGKILL)
        dead.wait(10)
        assert (dead_dir / LOCK_NAME).exists()
        assert sweep_abandoned("test-owned-", str(tmp_path)) == 1
        assert not dead_dir.exists()
        assert alive_dir.exists(), "its owner still holds the lock"
    finally:
        alive.kill()
        alive.wait(10)


def test_a_directory_without_a_lock_file_is_left_alone(tmp_path: Path) -> None:
    foreign = tmp_path / "test-owned-foreign"
    foreign.mkdir()
    assert sweep_abandoned("test-owned-", str(tmp_path)) == 0
    assert foreign.exists()


def test_close_removes_the_directory_and_is_idempotent(tmp_path: Path) -> None:
    owned = OwnedDirectory("test-owned-", str(tmp_path))
    assert (owned.path / LOCK_NAME).exists()
    assert oct(owned.path.stat().st_mode & 0o777) == "0o700"
    owned.close()
    owned.close()
    assert not owned.path.exists()


def test_a_new_request_stats_pool_sweeps_what_a_killed_supervisor_left(tmp_path: Path) -> None:
    script = HOLD_A_DIRECTORY.replace('"test-owned-"', repr(DIRECTORY_PREFIX))
    child = subprocess.Popen(
        [sys.executable, "-c", script, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None
    left_behind = Path(child.stdout.readline().strip())
    child.kill()
    child.wait(10)
    with RequestStatsPool(tmp_path) as pool:
        assert not left_behind.exists()
        assert [p.name for p in tmp_path.iterdir()] == [pool.directory.name]
