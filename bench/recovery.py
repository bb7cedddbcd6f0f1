"""Crash-recovery latency: corral (process and thread mode) next to uvicorn --workers.

Each system serves ``examples.chaos:app`` on two workers, on loopback only.
The bench makes one worker fail, ``kills`` times per system, taking the
systems in turn (one kill each per round), and measures from the moment of
the failure (``t_kill``):

* **A**, until the replacement worker exists. For corral this is the
  ``monotonic`` stamp of the next generation's ``spawn`` event (the
  supervisor's ``time.monotonic()``; CLOCK_MONOTONIC is system-wide on Linux,
  so it compares with the bench's own clock). For uvicorn and gunicorn, which
  log no such event, the bench polls ``/proc/<main>/task/<main>/children``
  every millisecond for a pid that was not there before the kill.
* **B**, until the replacement serves: the first ``200`` from it, asking on a
  fresh connection each time (1 ms apart).
* For corral also the ``crash`` and ``ready`` events' stamps.

How a worker fails:

* corral process mode and uvicorn/gunicorn: ``SIGKILL`` to a worker process.
* corral thread mode: threads cannot be killed, so ``GET /crash?slot=0``
  stops that worker's event loop. ``t_kill`` is taken just before sending the
  request that reached slot 0 (the others come back ``409`` and are retried).

Every kill waits for full recovery (B) plus 0.2 s before the next system's
turn. corral is started with ``--restart-window 1``; a worker that crashes
before it has been up a full window is a *back-to-back* crash and is
respawned after a backoff, by design. This bench measures the isolated-crash
path, so it never kills a corral worker younger than the window plus 0.25 s.

This is section 2 of ``make bench`` (``bench/run.py`` calls ``measure``, and
``make bench-quick`` runs corral process mode and uvicorn only, 5 kills); alone,
``.venv/bin/python -m bench.run --only 2``. The systems are in
``bench/recovery_systems.py`` and ``bench/recovery_corral.py``, the report in
``bench/recovery_report.py``. Every server is started and stopped by
``bench/servers.py``.
"""

from __future__ import annotations

import datetime
import random
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass

from bench.commands import shown
from bench.recovery_corral import CorralSystem
from bench.recovery_report import crash_request_note, ready_lag_note
from bench.recovery_systems import (
    JITTER_SECONDS,
    SETTLE_SECONDS,
    System,
    UvicornSystem,
    granian_system,
    gunicorn_system,
)
from bench.servers import BenchError, Interrupted, stop_all_servers

DEFAULT_KILLS = 30
QUICK_KILLS = 5


def run_rounds(systems: Sequence[System], kills: int, time_limit: float, seed: int) -> None:
    rng = random.Random(seed)
    started = time.monotonic()
    for round_number in range(1, kills + 1):
        for system in systems:
            if time.monotonic() - started > time_limit:
                raise BenchError(
                    f"time limit of {time_limit:.0f} s reached in round {round_number}"
                )
            sample = system.kill_once()
            system.samples.append(sample)
            time.sleep(SETTLE_SECONDS + rng.uniform(0.0, JITTER_SECONDS))
        summary = ", ".join(f"{s.key} B={s.samples[-1].serving * 1000:.0f}ms" for s in systems)
        print(f"round {round_number}/{kills}: {summary}", file=sys.stderr, flush=True)


@dataclass(slots=True)
class RecoveryRun:
    """Everything one recovery measurement produced; ``failure`` says why it stopped early."""

    systems: list[System]
    notes: list[str]
    started_utc: datetime.datetime
    runtime: float
    failure: str | None


def systems(keys: Sequence[str] | None) -> list[System]:
    """Every system, or those named in ``keys``."""
    every = [
        CorralSystem("process"),
        CorralSystem("process", spares=1),
        CorralSystem("thread"),
        CorralSystem("thread", spares=1),
        UvicornSystem(),
        gunicorn_system(),
        granian_system(),
    ]
    return [s for s in every if keys is None or s.key in keys]


def measure(
    kills: int, time_limit: float, seed: int, keys: Sequence[str] | None = None
) -> RecoveryRun:
    """Start every system (or those named in ``keys``), run the kill rounds, stop them all
    (whatever happens)."""
    t0 = time.monotonic()
    started_utc = datetime.datetime.now(datetime.UTC)
    chosen = systems(keys)
    active = [s for s in chosen if s.available]
    started: list[System] = []
    notes: list[str] = []
    failure: str | None = None
    try:
        for system in active:
            print(f"starting {system.label}: {shown(system.argv)}", file=sys.stderr, flush=True)
            started.append(system)
            system.start()
        run_rounds(active, kills, time_limit, seed)
    except BenchError as exc:
        failure = str(exc)
    except Interrupted as exc:
        failure = f"interrupted by {exc}"
    finally:
        notes.extend(stop_all_servers(started))
    notes += _system_notes(active)
    return RecoveryRun(chosen, notes, started_utc, time.monotonic() - t0, failure)


def _system_notes(active: Sequence[System]) -> list[str]:
    notes: list[str] = []
    for system in active:
        notes.extend(f"{system.label}: {note}" for note in dict.fromkeys(system.notes))
        if isinstance(system, CorralSystem):
            for note in (ready_lag_note(system), crash_request_note(system)):
                if note:
                    notes.append(f"{system.label}: {note}")
    return notes
