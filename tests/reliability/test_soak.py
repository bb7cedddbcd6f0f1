"""The soak (``make soak`` only): load, periodic kills and rolling restarts for 30 minutes.

``CORRAL_SOAK_SECONDS`` (default 1800) sets the length. What must hold:
the supervisor's RSS and fd count stay flat, the request-stats directory
holds no more files than live workers, and every sink counts the same.
"""

from __future__ import annotations

import os
import random
import signal
import time
from pathlib import Path

import pytest

from tests.conftest import CorralProcess, eventually
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.faults import Kill, attribute, kill_random_worker
from tests.reliability.load import LoadGenerator, LoadSpec
from tests.reliability.observe import Resources, sample, sink_counts, untracked_incarnations
from tests.reliability.report import ScenarioReport

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("CORRAL_SOAK_SECONDS", "1800"))
WORKERS = 4
KILL_EVERY = 10.0
RELOAD_EVERY = 60.0
SAMPLE_EVERY = 15.0


@pytest.mark.timeout(SOAK_SECONDS + 600)
def test_soak(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Soak: load, a kill every 10 s and a SIGHUP every 60 s"""
    server = start_corral(
        mode, WORKERS, "--max-restarts", "100000", "--backoff-base", "0.05", "--backoff-cap", "0.5"
    )  # fmt: skip
    rng = random.Random(30)
    spec = LoadSpec(server.base_url + "/slow?seconds=0.02", rate=50, connections=8, duration=None)
    kills: list[Kill] = []
    reloads = 0
    samples: list[Resources] = []
    stats_files: list[int] = []
    began = time.monotonic()
    next_kill, next_reload, next_sample = began + KILL_EVERY, began + RELOAD_EVERY, began
    with LoadGenerator(spec) as load:
        load.wait_started(20)
        while (now := time.monotonic()) < began + SOAK_SECONDS:
            if now >= next_sample:
                samples.append(sample(server.pid))
                stats_files.append(len(list(Path(server.stats_dir).glob("lane-*.stats"))))
                next_sample += SAMPLE_EVERY
            if now >= next_kill:
                kills.append(kill_random_worker(server, mode, rng))
                next_kill += KILL_EVERY
            if now >= next_reload:
                server.send(signal.SIGHUP)
                reloads += 1
                next_reload += RELOAD_EVERY
            assert server.proc.poll() is None, "the supervisor died"
            time.sleep(0.2)
        eventually(lambda: _all_ready(server), timeout=60, what="every worker ready")
        time.sleep(1.0)
    result = load.result()
    metrics = server.scrape()
    n = len(kills)
    # sink_counts waits for the spans to settle and records what arrived.
    split = attribute(result.failures, kills, mode)
    report.faults = (
        f"{n} kills (one every {KILL_EVERY:g} s) and {reloads} SIGHUPs (one every "
        f"{RELOAD_EVERY:g} s) over {SOAK_SECONDS:g} s"
    )
    report.record_load(result, split.describe())
    report.figures["unexplained failures"] = split.unexplained_summary(kills)
    report.events = sink_counts(
        server, {"crash": f"{n} (= kills)", "respawn": f"{n} (= kills)", "reload": str(reloads)},
        metrics, otlp,
    )  # fmt: skip
    warm = _record_figures(report, samples, stats_files)
    untracked = untracked_incarnations(server)
    report.figures["untracked incarnations at the end"] = len(untracked)
    assert not split.unexplained, split.unexplained[:10]
    assert [c.log for c in report.events[:2]] == [n, n]
    assert all(c.consistent() for c in report.events), report.events
    assert not untracked, f"workers running untracked: {untracked}"
    # Bounded: one file per concurrently live worker: current, retiring (a roll
    # drains old workers side by side), one replacement and one respawn.
    assert max(stats_files) <= 2 * WORKERS + 2
    # Stable: after warm-up, RSS grows by less than 20 MiB and fds by less than 20.
    assert max(s.rss_mib for s in warm) - warm[0].rss_mib < 20
    assert max(s.fds for s in warm) - warm[0].fds < 20


def _all_ready(server: CorralProcess) -> bool:
    rows = server.side("/workers").json()["workers"]
    return all(row["state"] == "ready" for row in rows)


def _record_figures(
    report: ScenarioReport, samples: list[Resources], stats_files: list[int]
) -> list[Resources]:
    """Resources after warm-up (the first quarter of the samples is skipped), which it returns."""
    warm = samples[len(samples) // 4 :] or samples
    report.record_resources("first quarter", warm[0])
    report.record_resources("end", samples[-1])
    report.figures["supervisor RSS MiB (min / max after warm-up)"] = (
        f"{min(s.rss_mib for s in warm):.1f} / {max(s.rss_mib for s in warm):.1f}"
    )
    report.figures["supervisor fds (min / max after warm-up)"] = (
        f"{min(s.fds for s in warm)} / {max(s.fds for s in warm)}"
    )
    report.figures["request-stats files (max)"] = max(stats_files)
    return warm
