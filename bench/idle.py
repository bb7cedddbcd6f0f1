"""Section 3, supervisor idle cost: CPU seconds per minute with 8 idle workers.

All servers are started with 8 workers, answer one request each until every
one is up, then nothing talks to them for the measured window (no scrape,
no probe). For each server's process group the bench reads, from ``/proc``,
at the start and the end of the window:

* CPU seconds (utime + stime) of the main process (corral's supervisor, with
  its side-port thread; uvicorn's and gunicorn's master), of its helper
  processes (multiprocessing's forkserver and resource tracker), and of all
  workers together;
* voluntary context switches of every thread of the main process: how often
  it went to sleep, so how often it woke up. A polling loop shows up here
  even when it is too cheap to show up in CPU seconds.

In thread mode corral's workers are threads of the supervisor's process, so
the main-process figures include 8 idle uvicorn event loops; the supervisor
loop, which runs on the main thread, is also reported alone from
``/proc/<pid>/task/<pid>``.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field

from bench import serving
from bench.commands import importable, shown, uvicorn_argv, uvicorn_worker_class
from bench.procfs import cmdline, cpu_seconds, group_members, main_thread_cpu, parent
from bench.procfs import voluntary_switches as _switches
from bench.servers import free_port
from bench.serving import APP, Contender, corral_contender
from bench.stats import LoadWindow

WORKERS = 8
FULL_WINDOW = 60.0
QUICK_WINDOW = 5.0
SETTLE = 2.0


@dataclass(frozen=True, slots=True)
class Reading:
    main: float
    helpers: float
    workers: float
    main_switches: int
    supervisor_thread: float | None  # corral: the main thread, where the supervisor loop runs


@dataclass(slots=True)
class IdleResult:
    contender: Contender
    per_minute: Reading
    worker_count: int


@dataclass(slots=True)
class Result:
    rows: list[IdleResult] = field(default_factory=list)
    window_seconds: float = 0.0
    window: LoadWindow = field(default_factory=LoadWindow)


def _helper(pid: int, main: int) -> bool:
    """A forkserver or resource tracker started by the main process (workers forked from
    the forkserver share its command line, but their parent is the forkserver)."""
    line = cmdline(pid)
    return parent(pid) == main and ("forkserver" in line or "resource_tracker" in line)


def read(contender: Contender) -> tuple[Reading, int]:
    assert contender.server is not None
    main = contender.server.pid
    helpers = workers = 0.0
    count = 0
    for pid in group_members(main):
        if pid == main:
            continue
        seconds = cpu_seconds(pid) or 0.0
        if _helper(pid, main):
            helpers += seconds
        else:
            workers += seconds
            count += 1
    reading = Reading(
        main=cpu_seconds(main) or 0.0,
        helpers=helpers,
        workers=workers,
        main_switches=_switches(main),
        supervisor_thread=main_thread_cpu(main) if contender.key.startswith("corral") else None,
    )
    return reading, count


def _per_minute(before: Reading, after: Reading, seconds: float) -> Reading:
    scale = 60.0 / seconds
    thread = None
    if before.supervisor_thread is not None and after.supervisor_thread is not None:
        thread = (after.supervisor_thread - before.supervisor_thread) * scale
    return Reading(
        main=(after.main - before.main) * scale,
        helpers=(after.helpers - before.helpers) * scale,
        workers=(after.workers - before.workers) * scale,
        main_switches=round((after.main_switches - before.main_switches) * scale),
        supervisor_thread=thread,
    )


def contenders(quick: bool) -> list[Contender]:
    made = [
        corral_contender(f"corral-{mode}", f"corral, {mode} mode", workers=WORKERS, mode=mode)
        for mode in ("process", "thread")
    ]
    if quick:
        return made
    port = free_port()
    argv = uvicorn_argv(APP, port, WORKERS, "--no-access-log")
    made.append(Contender("uvicorn", f"uvicorn --workers {WORKERS}", argv, port, WORKERS))
    if importable("uvicorn_worker") and (worker_class := uvicorn_worker_class()):
        made.append(serving.gunicorn_contender(worker_class, WORKERS))
    return made


def run(quick: bool) -> Result:
    result = Result()
    servers = contenders(quick)
    seconds = QUICK_WINDOW if quick else FULL_WINDOW
    try:
        serving.start(servers)
        time.sleep(SETTLE)
        before = {c.key: read(c)[0] for c in servers}
        t0 = time.monotonic()
        print(f"  idle window of {seconds:g} s", file=sys.stderr, flush=True)
        time.sleep(seconds)
        elapsed = time.monotonic() - t0
        for c in servers:
            after, count = read(c)
            result.rows.append(IdleResult(c, _per_minute(before[c.key], after, elapsed), count))
        result.window_seconds = elapsed
    finally:
        serving.stop(servers)
    result.window.close()
    return result


def render(result: Result) -> str:
    lines = [
        "## 3. Supervisor idle cost",
        "",
        f"{WORKERS} idle workers, nothing talking to the servers for"
        f" {result.window_seconds:.0f} s (all servers up at once, measured over the same"
        " window). CPU seconds per minute from `/proc/<pid>/stat` (10 ms resolution, so"
        f" over {result.window_seconds:.0f} s the smallest non-zero figure is"
        f" {0.01 * 60 / max(result.window_seconds, 1):.3f} s/min); wake-ups are the main"
        " process's voluntary context switches, all threads, per minute.",
        "",
        "| server | main process CPU s/min | corral supervisor thread CPU s/min"
        " | main process wake-ups/min | helper processes CPU s/min"
        " | all workers CPU s/min (n) |",
        "|---|--:|--:|--:|--:|--:|",
    ]
    for row in result.rows:
        r = row.per_minute
        thread = f"{r.supervisor_thread:.3f}" if r.supervisor_thread is not None else ""
        workers = f"{r.workers:.3f} ({row.worker_count})" if row.worker_count else "in main"
        lines.append(
            f"| {row.contender.label} | {r.main:.3f} | {thread} | {r.main_switches:,}"
            f" | {r.helpers:.3f} | {workers} |"
        )
    lines += [
        "",
        "- Main process: corral's supervisor (its loop thread, the side-port thread and,"
        " in thread mode, every worker thread); the supervisor thread column is its main"
        " thread alone, where the supervisor loop runs; uvicorn's and gunicorn's master."
        " Helpers: multiprocessing's forkserver and resource tracker. Every uvicorn"
        " worker, corral's included, runs uvicorn's once-a-tenth-of-a-second main loop"
        " tick, so idle workers are not free for anyone.",
        "- Commands:",
        *[f"  - {row.contender.label}: `{shown(row.contender.argv)}`" for row in result.rows],
        "",
        result.window.line(),
        "",
    ]
    return "\n".join(lines)
