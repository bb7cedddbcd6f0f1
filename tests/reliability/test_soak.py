"""The soak (``make soak`` only): load, periodic kills and rolling restarts for 30 minutes.

``CORRAL_SOAK_SECONDS`` (default 1800) sets the length; ``-k process`` or
``-k thread`` picks one worker mode. What must hold: the supervisor's RSS
and fd count stay flat, the request-stats directory holds no more files than
live workers, and every sink counts the same: each kill is one event, and
log lines, ``corral_lifecycle_events_total`` and spans received agree for
every kind, with ``corral_spans_dropped_total`` at 0.

A kill is expected to be a ``crash``. In process mode the victim is chosen
from ``/workers`` as ready and SIGKILLed a few milliseconds later; if a
rolling restart began draining it in between, the supervisor rightly
records its death as a forced ``drain_end`` (with no respawn: its
replacement is already up). The test tells the two apart by the victim's pid
and reports both, so a kill is never silently lost nor counted twice.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.conftest import CorralProcess, Metrics, eventually
from tests.otlp_receiver import OtlpReceiver
from tests.reliability.conftest import StartCorral
from tests.reliability.faults import Kill, attribute, kill_random_worker
from tests.reliability.load import LoadGenerator, LoadSpec
from tests.reliability.observe import (
    SPAN_SETTLE,
    Resources,
    sample,
    sink_counts,
    untracked_incarnations,
)
from tests.reliability.report import ScenarioReport

pytestmark = [pytest.mark.integration, pytest.mark.soak]

SOAK_SECONDS = float(os.environ.get("CORRAL_SOAK_SECONDS", "1800"))
WORKERS = 4
KILL_EVERY = 10.0
RELOAD_EVERY = 60.0
SAMPLE_EVERY = 15.0


@dataclass
class Soak:
    """What the soak did and saw while it ran."""

    kills: list[Kill] = field(default_factory=list)
    reloads: int = 0
    samples: list[Resources] = field(default_factory=list)
    stats_files: list[int] = field(default_factory=list)


@pytest.mark.timeout(SOAK_SECONDS + 600)
def test_soak(
    start_corral: StartCorral, mode: str, otlp: OtlpReceiver, report: ScenarioReport
) -> None:
    """Soak: load, a kill every 10 s and a SIGHUP every 60 s"""
    server = start_corral(
        mode, WORKERS, "--max-restarts", "100000", "--backoff-base", "0.05", "--backoff-cap", "0.5"
    )  # fmt: skip
    spec = LoadSpec(server.base_url + "/slow?seconds=0.02", rate=50, connections=8, duration=None)
    with LoadGenerator(spec) as load:
        load.wait_started(20)
        soak = _drive(server, mode)
        eventually(lambda: _all_ready(server), timeout=60, what="every worker ready")
        time.sleep(1.0)
    result = load.result()
    kills = soak.kills
    split = attribute(result.failures, kills, mode)
    report.faults = (
        f"{len(kills)} kills (one every {KILL_EVERY:g} s) and {soak.reloads} SIGHUPs (one every "
        f"{RELOAD_EVERY:g} s) over {SOAK_SECONDS:g} s"
    )
    report.record_load(result, split.describe())
    report.figures["unexplained failures"] = split.unexplained_summary(kills)
    fates = _kill_fates(server, kills, mode)
    report.figures["kills recorded as crash / as forced drain_end / not at all"] = (
        f"{fates['crash']} / {fates['drain_end']} / {fates['none']}"
    )
    totals = _record_sinks(report, server, otlp, fates["crash"], soak.reloads)
    warm = _record_figures(report, soak.samples, soak.stats_files)
    untracked = untracked_incarnations(server)
    report.figures["untracked incarnations at the end"] = len(untracked)
    assert not split.unexplained, split.unexplained[:10]
    assert fates["none"] == 0, fates
    assert fates["crash"] + fates["drain_end"] == len(kills), fates
    assert [c.log for c in report.events[:2]] == [fates["crash"]] * 2
    assert all(c.consistent() for c in report.events), report.events
    assert totals.spans == totals.log == totals.metrics, totals
    assert totals.dropped == 0, totals
    assert not untracked, f"workers running untracked: {untracked}"
    # Bounded: one file per concurrently live worker: current, retiring (a roll
    # drains old workers side by side), one replacement and one respawn.
    assert max(soak.stats_files) <= 2 * WORKERS + 2
    # Stable: after warm-up, RSS grows by less than 20 MiB and fds by less than 20.
    assert max(s.rss_mib for s in warm) - warm[0].rss_mib < 20
    assert max(s.fds for s in warm) - warm[0].fds < 20


def _drive(server: CorralProcess, mode: str) -> Soak:
    """Kill, reload and sample on schedule for ``SOAK_SECONDS``."""
    rng = random.Random(30)
    soak = Soak()
    began = time.monotonic()
    next_kill, next_reload, next_sample = began + KILL_EVERY, began + RELOAD_EVERY, began
    while (now := time.monotonic()) < began + SOAK_SECONDS:
        if now >= next_sample:
            soak.samples.append(sample(server.pid))
            soak.stats_files.append(len(list(Path(server.stats_dir).glob("lane-*.stats"))))
            next_sample += SAMPLE_EVERY
        if now >= next_kill:
            soak.kills.append(kill_random_worker(server, mode, rng))
            next_kill += KILL_EVERY
        if now >= next_reload:
            server.send(signal.SIGHUP)
            soak.reloads += 1
            next_reload += RELOAD_EVERY
        assert server.proc.poll() is None, "the supervisor died"
        time.sleep(0.2)
    return soak


def _kill_fates(server: CorralProcess, kills: list[Kill], mode: str) -> Counter[str]:
    """How the supervisor recorded each kill: ``crash``, a forced ``drain_end``, or ``none``.

    Thread kills share the supervisor's pid; ``crash_thread`` already waited
    for each one's crash event, so they are all crashes.
    """
    if mode != "process":
        return Counter(crash=len(kills), drain_end=0, none=0)
    crashed = {e["pid"] for e in server.events("crash")}
    drained = {e["pid"] for e in server.events("drain_end") if e.get("signal") == "SIGKILL"}
    fates: Counter[str] = Counter(crash=0, drain_end=0, none=0)
    for kill in kills:
        fate = "crash" if kill.pid in crashed else "drain_end" if kill.pid in drained else "none"
        fates[fate] += 1
    return fates


@dataclass(frozen=True, slots=True)
class SpanTotals:
    """Every lifecycle event counted three ways, and what the span export lost."""

    log: int  # event lines, a drain's start and end counted once (they are one span)
    metrics: int  # corral_lifecycle_events_total, likewise
    spans: int  # spans the OTLP receiver got
    dropped: int  # corral_spans_dropped_total, all reasons


def _expected_spans(server: CorralProcess) -> int:
    return len(server.events()) - len(server.events("drain_start"))


def _settle_spans(server: CorralProcess, otlp: OtlpReceiver) -> None:
    """Give the batch processor ``SPAN_SETTLE`` s to deliver every span the log shows."""
    deadline = time.monotonic() + SPAN_SETTLE
    while otlp.total() < _expected_spans(server) and time.monotonic() < deadline:
        time.sleep(0.05)


def _record_sinks(
    report: ScenarioReport, server: CorralProcess, otlp: OtlpReceiver, crashes: int, reloads: int
) -> SpanTotals:
    """Per-kind counts in every sink, then the totals over all events and the spans dropped."""
    _settle_spans(server, otlp)
    metrics = server.scrape()
    want = f"{crashes} (kills of a ready worker)"
    report.events = sink_counts(
        server, {"crash": want, "respawn": want, "reload": str(reloads)}, metrics, otlp
    )
    return _record_span_totals(report, server, metrics, otlp)


def _record_span_totals(
    report: ScenarioReport, server: CorralProcess, metrics: Metrics, otlp: OtlpReceiver
) -> SpanTotals:
    events = metrics.sum("corral_lifecycle_events_total")
    drain_starts = metrics.sum("corral_lifecycle_events_total", kind="drain_start")
    totals = SpanTotals(
        log=_expected_spans(server),
        metrics=int(events - drain_starts),
        spans=otlp.total(),
        dropped=int(metrics.sum("corral_spans_dropped_total")),
    )
    report.figures["all events: log / metrics / spans received (a drain is one span)"] = (
        f"{totals.log} / {totals.metrics} / {totals.spans}"
    )
    by_reason = {
        labels["reason"]: int(value)
        for _, labels, value in metrics.find("corral_spans_dropped_total")
    }
    report.figures["corral_spans_dropped_total"] = (
        f"{totals.dropped} ({', '.join(f'{k} {v}' for k, v in sorted(by_reason.items()))})"
    )
    return totals


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
