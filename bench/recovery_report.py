"""Recovery (section 2)'s Markdown: the table, the target verdicts, the notes, the method."""

from __future__ import annotations

import datetime
import os
import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from bench import machine
from bench.commands import shown
from bench.recovery_corral import MIN_UPTIME, RESTART_WINDOW, CorralSystem
from bench.recovery_systems import JITTER_SECONDS, SETTLE_SECONDS, Sample, System
from bench.stats import Stats, summarize

SECTION_TITLE = "## 2. Recovery"
READY_LAG_NOTABLE = 0.005  # B later than corral's ready event by more than this is reported


@dataclass(frozen=True, slots=True)
class Interval:
    name: str
    value: Callable[[Sample], float | None]


GONE = Interval("kill → the kernel reports the worker gone (pidfd)", lambda s: s.gone)
CRASH = Interval("kill → `crash` event", lambda s: s.crash_event)
SPAWNED = Interval("**A** kill → replacement spawned", lambda s: s.spawned)
READY = Interval("kill → `ready` event", lambda s: s.ready_event)
SERVING = Interval("**B** kill → replacement serving", lambda s: s.serving)
INTERVALS = (GONE, CRASH, SPAWNED, READY, SERVING)


def interval_stats(system: System, interval: Interval) -> Stats | None:
    values = [v for v in map(interval.value, system.samples) if v is not None]
    return summarize(values)


def render_table(systems: Sequence[System]) -> str:
    baseline = next((s for s in systems if s.key == "corral-process"), None)
    rows = [
        "| system | interval | n | median ms | p99 ms | min ms | max ms"
        " | median vs corral process |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for system in systems:
        if not system.available:
            rows.append(f"| {system.label} | {system.unavailable_reason} | 0 | | | | | |")
            continue
        for interval in INTERVALS:
            stats = interval_stats(system, interval)
            if stats is None:
                continue
            base = interval_stats(baseline, interval) if baseline else None
            ratio = f"{stats.median / base.median:.2f}x" if base and base.median > 0 else "n/a"
            rows.append(
                f"| {system.label} | {interval.name} | {stats.n} | {stats.median:.1f}"
                f" | {stats.p99:.1f} | {stats.low:.1f} | {stats.high:.1f} | {ratio} |"
            )
    return "\n".join(rows)


# Issue 13's targets, median kill -> worker able to serve, in milliseconds.
READY_TARGET_MS = 40.0  # process mode, no spares: kill -> `ready`
PROMOTED_TARGET_MS = 5.0  # --spares 1, either mode: kill -> `promote` (the spare accepts)


def issue_targets(systems: Sequence[System]) -> list[str]:
    """Kill to ready without spares (process mode), and kill to a promoted spare (both)."""
    lines = []
    for system in systems:
        if not isinstance(system, CorralSystem) or not system.samples:
            continue
        if system.spares:
            target, what = PROMOTED_TARGET_MS, "kill → `promote` (a warm spare accepting)"
        elif system.mode == "process":
            target, what = READY_TARGET_MS, "kill → `ready`"
        else:
            continue
        stats = interval_stats(system, READY)
        if stats is None:
            continue
        verdict = "met" if stats.median <= target else "**missed**"
        lines.append(
            f"- {system.label}: {what} median {stats.median:.1f} ms, target <= {target:g} ms:"
            f" {verdict}."
        )
    return lines


def _median(stats: Stats) -> float:
    return stats.median


def _p99(stats: Stats) -> float:
    return stats.p99


def target_lines(systems: Sequence[System]) -> list[str]:
    """Whether corral (either mode) is the lowest at median and p99, for A and for B."""
    pickers: tuple[tuple[str, Callable[[Stats], float]], ...] = (
        ("median", _median),
        ("p99", _p99),
    )
    lines = []
    for interval in (SPAWNED, SERVING):
        stats = [(s, st) for s in systems if s.available if (st := interval_stats(s, interval))]
        if not stats:
            continue
        parts = []
        for name, pick in pickers:
            best, best_stats = min(stats, key=lambda item: pick(item[1]))
            verdict = "corral" if isinstance(best, CorralSystem) else "**not corral**"
            parts.append(f"lowest {name}: {best.label} ({pick(best_stats):.1f} ms, {verdict})")
        lines.append(f"- {interval.name}: " + "; ".join(parts) + ".")
        peers = [(s, st) for s, st in stats if not isinstance(s, CorralSystem)]
        for system, own in stats:
            if isinstance(system, CorralSystem) and peers:
                lines.append(f"  - {system.label}: " + _against_peers(own, peers))
    return lines


def _against_peers(own: Stats, peers: Sequence[tuple[System, Stats]]) -> str:
    """How one corral mode compares with the best peer at median and at p99."""
    parts = []
    for name, value in (("median", _median), ("p99", _p99)):
        peer, peer_stats = min(peers, key=lambda item: value(item[1]))
        mine, theirs = value(own), value(peer_stats)
        word = "lower" if mine < theirs else "**not lower**"
        parts.append(f"{name} {mine:.1f} ms vs {theirs:.1f} ms ({peer.label}): {word}")
    return "; ".join(parts) + "."


def crash_request_note(system: CorralSystem) -> str | None:
    outcomes = system.crash_request_outcomes()
    if not outcomes:
        return None
    errors: dict[str, list[float]] = {}
    for outcome in outcomes:
        kind = outcome.error or f"HTTP {outcome.status}"
        errors.setdefault(kind, []).append(outcome.elapsed * 1000)
    parts = [
        f"{len(times)} x {kind} after a median {statistics.median(times):.0f} ms"
        for kind, times in sorted(errors.items())
    ]
    return "the request that crashed the worker ended: " + "; ".join(parts)


def render_section(
    systems: Sequence[System],
    kills: int,
    started_utc: datetime.datetime,
    runtime: float,
    notes: Sequence[str],
    *,
    invocation: str,
) -> str:
    lines = [
        SECTION_TITLE,
        "",
        "How long a 2-worker server takes to replace a worker that died, measured"
        " side by side on loopback. These numbers come from the last `make bench` run"
        " (the exact invocation is under *Run* below); reproduce them with `make bench` (or"
        " `.venv/bin/python -m bench.run --only 2`; `--quick` does 5 kills). They depend on"
        " the machine: compare the ratios, not the absolute numbers, across machines.",
        "",
        render_table(systems),
        "",
        "Target: corral is the lowest at median and at p99.",
        "",
        *target_lines(systems),
        "",
        "Targets of issue 13 (medians):",
        "",
        *issue_targets(systems),
        "",
        *_method_lines(kills),
        "",
        f"Run: {started_utc:%Y-%m-%d %H:%M} UTC, {runtime:.0f} s in total; `{invocation}`.",
        "",
        *_run_lines(systems, notes),
    ]
    return "\n".join(lines) + "\n"


def _method_lines(kills: int) -> list[str]:
    return [
        "- **A**: from the kill until the replacement worker exists: corral's `spawn`"
        " event (its `monotonic` stamp: when the forkserver had returned the new pid; the"
        " event itself is logged after the `crash` and `respawn` events, which corral"
        " records once the replacement is asked for); for uvicorn and gunicorn, a new"
        " child pid in"
        " `/proc/<main>/task/<main>/children`, polled every 1 ms.",
        "- **B**: from the kill until the replacement answers `200` to a request on a"
        " fresh connection (`GET /?slot=0` for corral, which the other slot answers"
        " with `409`; `GET /` for uvicorn and gunicorn, until a pid not alive before the kill"
        " answers). Requests are 1 ms apart, so B has about 1-2 ms of polling error.",
        "- The pidfd row, for every system whose worker is a process: a thread of the"
        " bench opened a pidfd on the victim before the kill and stamps when it turns"
        " readable, which is when the kernel has finished the process (its memory"
        " freed). No supervisor can see a death earlier, so it is the floor under A;"
        " what A adds above it is the supervisor's own work (for corral: noticing, then"
        " the forkserver's accept, fork and reply).",
        "- `crash` / `ready` events: their `monotonic` stamps (`crash`: when the supervisor"
        " saw the death). `ready` is logged when the"
        " supervisor has processed the worker's report, so it may trail B slightly.",
        "- The kill: `SIGKILL` to slot 0's process (corral process mode) or to a worker"
        " (uvicorn, gunicorn). corral thread mode cannot kill a thread: `GET /crash?slot=0` stops"
        " the worker's event loop, and `t_kill` is taken just before the request that"
        " reached slot 0 (it includes that request's trip).",
        f"- {kills} kills per system, systems taken in turn (one kill each per round),"
        f" waiting for B plus {SETTLE_SECONDS:g} s and a random 0-{JITTER_SECONDS:g} s"
        " (so kills take every phase of uvicorn's 0.5 s worker check) after each."
        " corral runs with"
        f" `--restart-window {RESTART_WINDOW:g}` and no corral worker is killed before it"
        f" has been up {MIN_UPTIME:g} s, so every kill is an isolated crash (immediate"
        " respawn), not a crash loop (which backs off by design).",
        "- corral with `--spares 1`: a warm spare (booted, not accepting) is promoted into"
        " the dead worker's slot, so **A** and the `ready` row are its `promote` event (when"
        " the supervisor handed it the slot; it accepts on its next loop turn). Before each"
        " kill the bench waits until the spare booted after the last promotion is warm.",
        "- corral is started as the README starts it, with the venv's `corral` script, not"
        " `python -m corral`. (Before issue 13, multiprocessing re-ran that script in every"
        " new worker, importing the CLI and the observability stack before it served;"
        " corral's workers now skip the parent's `__main__` on every launch path.)",
    ]


def _run_lines(systems: Sequence[System], notes: Sequence[str]) -> list[str]:
    packages = ("corral", "uvicorn", "uvloop", "httptools", "gunicorn", "uvicorn-worker")
    lines = [
        f"- Machine: {len(os.sched_getaffinity(0))} CPUs (`nproc`), {machine.cpu_model()},"
        f" {machine.kernel()}",
        f"- Python: {machine.python()}; {machine.versions(packages)}",
        "- Commands (cwd = repository root, `PYTHONPATH` = repository root;"
        " uvicorn's and gunicorn's ports are free ones picked at run time):",
    ]
    for system in systems:
        if system.available:
            lines.append(f"  - {system.label}: `{shown(system.argv)}`")
        else:
            lines.append(f"  - {system.label}: {system.unavailable_reason}, not measured")
    totals = [
        f"{s.label} {sum(x.failed_requests for x in s.samples)} of"
        f" {sum(x.requests for x in s.samples)}"
        for s in systems
        if s.available
    ]
    lines.append(f"- Polling requests that failed outright during recovery: {'; '.join(totals)}.")
    if notes:
        lines.append("- Observed during this run:")
        lines.extend(f"  - {note}" for note in notes)
    return lines


def ready_lag_note(system: CorralSystem) -> str | None:
    """Evidence for kills where the replacement was ready but others kept getting the requests."""
    lagging = [
        s
        for s in system.samples
        if s.other_after_ready > 0
        and s.ready_event is not None
        and s.serving - s.ready_event > READY_LAG_NOTABLE
    ]
    if not lagging:
        return None
    gaps = [(s.serving - s.ready_event) * 1000 for s in system.samples if s.ready_event is not None]
    return (
        f"in {len(lagging)} of {len(system.samples)} kills B trailed the `ready` event by more"
        f" than {READY_LAG_NOTABLE * 1000:g} ms, while"
        f" {sum(s.other_after_ready for s in lagging)} polling requests in all were still"
        " answered by the other slot (409); over all kills B - `ready` was median"
        f" {statistics.median(gaps):.1f} ms, max {max(gaps):.1f} ms. Both workers accept()"
        " from one shared listening socket and the kernel hands a lone connection to"
        " whichever is woken first, so B also measures when the replacement first wins one."
    )
