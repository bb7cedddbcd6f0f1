"""What counting requests costs a worker, for section 1.

Timed figures on a shared 2-core machine move by more than the counting
costs, so the main figure here is a count of machine instructions, taken by
valgrind's callgrind, which is the same however busy the machine is:

* **a real server**: corral's console script, one process worker, serving
  ``bench.apps:app`` to a client that sends ``SERVER_REQUESTS`` keep-alive
  requests one after another on one connection, with full observability
  and with it off. Only the worker is counted, and only during those
  requests (callgrind's instrumentation is switched on for that pid after a
  warm-up and off after). The difference per request is what observability
  adds to serving one request, all of it.
* **the request cycle alone**: uvicorn's httptools ``RequestResponseCycle``
  and corral's counting subclass of it, each run in-process over a fake
  transport (``request_overhead.time_cycles``); instructions per request
  are the difference between two runs of different lengths, so start-up
  cancels out.

Then the same cycle comparison in nanoseconds of CPU time (and the ASGI
middleware corral's workers used before, for reference), and the counting's
steps, each timed alone with ``timeit``.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import http.client
import os
import shutil
import subprocess
import sys
import tempfile
import timeit
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from bench import request_overhead
from bench.commands import corral_argv, shown
from bench.servers import HOST, ROOT, BenchError, ServerProcess, free_port
from bench.serving import APP, OBSERVABILITY_OFF

SERVER_REQUESTS = 3000
WARM_UP_REQUESTS = 300
CYCLE_RUNS = (2000, 12000)  # two lengths: the difference is per request, start-up cancels
REPEATS = 5
NUMBER = 200_000


@dataclass(frozen=True, slots=True)
class Instructions:
    """Instructions per request, without and with corral's counting."""

    what: str
    without: float
    with_counting: float
    how: str

    @property
    def added(self) -> float:
        return self.with_counting - self.without


# --- Instruction counts (callgrind) ------------------------------------------------


def _callgrind(out: str, *argv: str, atstart: bool = True) -> list[str]:
    return [
        "valgrind",
        "--tool=callgrind",
        "--trace-children=yes",
        f"--instr-atstart={'yes' if atstart else 'no'}",
        f"--callgrind-out-file={out}",
        "--log-file=/dev/null",
        *argv,
    ]


def _total(paths: Sequence[str]) -> int:
    """The largest event total across callgrind dump files (one per dump of a pid)."""
    best = 0
    for path in paths:
        for line in Path(path).read_text().splitlines():
            if line.startswith(("summary:", "totals:")):
                best = max(best, int(line.split()[1]))
    return best


def _keep_alive_requests(port: int, count: int) -> None:
    """``count`` GETs on one keep-alive connection, each answer read whole before the next."""
    conn = http.client.HTTPConnection(HOST, port, timeout=60)
    try:
        for _ in range(count):
            conn.request("GET", "/")
            response = conn.getresponse()
            response.read()
            if response.status != 200 or response.will_close:
                raise BenchError(f"answer {response.status}, keep-alive {not response.will_close}")
    finally:
        conn.close()


def server_instructions(observability: bool, workdir: str) -> tuple[float, list[str]]:
    """Instructions per request in corral's one process worker; and its command line."""
    port = free_port()
    metrics_port = free_port() if observability else None
    argv = corral_argv(APP, port, metrics_port, workers=1, mode="process")
    # The worker boots tens of times slower under valgrind: no hang verdict meanwhile.
    argv += ["--worker-timeout", "600"]
    env = {} if observability else dict(OBSERVABILITY_OFF)
    out = os.path.join(workdir, f"server-{observability}.%p")
    server = ServerProcess("corral-callgrind", _callgrind(out, *argv, atstart=False), env)
    try:
        ready = server.wait_for(
            lambda r: bool(r.get("lifecycle")) and r.get("event") == "ready", 300, "ready"
        )
        pid = str(ready["pid"])
        _keep_alive_requests(port, WARM_UP_REQUESTS)
        subprocess.run(["callgrind_control", "-i", "on", pid], check=True, capture_output=True)
        _keep_alive_requests(port, SERVER_REQUESTS)
        subprocess.run(["callgrind_control", "-i", "off", pid], check=True, capture_output=True)
        subprocess.run(["callgrind_control", "-d", pid], check=True, capture_output=True)
    finally:
        server.stop()
    total = _total(glob.glob(out.replace("%p", pid) + "*"))
    return total / SERVER_REQUESTS, argv


def cycle_instructions(variant: str, workdir: str) -> float:
    """Instructions per request of one cycle variant, in-process (see ``_run_cycles``)."""
    totals = []
    for calls in CYCLE_RUNS:
        out = os.path.join(workdir, f"cycle-{variant.replace(' ', '-')}-{calls}")
        argv = [sys.executable, "-m", "bench.counting_cost", "--cycles", variant, str(calls)]
        subprocess.run(_callgrind(out, *argv), cwd=ROOT, check=True, capture_output=True)
        totals.append(_total([out]))
    return (totals[1] - totals[0]) / (CYCLE_RUNS[1] - CYCLE_RUNS[0])


def _run_cycles(variant: str, calls: int) -> None:
    """What ``cycle_instructions`` runs under callgrind: ``calls`` requests through one cycle."""
    from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # noqa: PLC0415

    from corral.request_stats.cycle import metered_cycle  # noqa: PLC0415
    from corral.request_stats.pool import RequestStatsPool  # noqa: PLC0415
    from corral.request_stats.recorder import open_recorder  # noqa: PLC0415

    with RequestStatsPool() as pool, open_recorder(pool.acquire(0).path) as recorder:
        cycle = RequestResponseCycle
        if variant == "metered":
            cycle = metered_cycle(RequestResponseCycle, recorder.cells)
        request_overhead.time_cycles(cycle, request_overhead.hello, calls)


def instructions() -> list[Instructions] | str:
    """Both instruction counts, or why they could not be taken."""
    missing = [tool for tool in ("valgrind", "callgrind_control") if shutil.which(tool) is None]
    if missing:
        return f"{' and '.join(missing)} not installed (`make bench` installs valgrind)"
    with tempfile.TemporaryDirectory(prefix="corral-callgrind-") as workdir:
        off, off_argv = server_instructions(False, workdir)
        full, full_argv = server_instructions(True, workdir)
        bare = cycle_instructions("uvicorn", workdir)
        metered = cycle_instructions("metered", workdir)
    return [
        Instructions(
            f"a real server: corral, 1 process worker, {SERVER_REQUESTS:,} keep-alive"
            " requests; observability off, then full",
            off,
            full,
            f"`{shown(off_argv)}` and `{shown(full_argv)}`, each under `valgrind"
            " --tool=callgrind --trace-children=yes --instr-atstart=no`",
        ),
        Instructions(
            "the request cycle alone: uvicorn's httptools cycle, then corral's counting subclass",
            bare,
            metered,
            f"`python -m bench.counting_cost --cycles uvicorn|metered N` under callgrind,"
            f" N = {CYCLE_RUNS[0]:,} and {CYCLE_RUNS[1]:,}",
        ),
    ]


# --- The counting's steps, timed alone ---------------------------------------------

_SETUP = """
import mmap, time
from corral.request_stats.layout import FIRST_BOUND, REQUEST_CELL
mapping = mmap.mmap(-1, 8192)
cells = memoryview(mapping).cast("d")
clock = time.perf_counter
duration = 0.0001
class Cycle:
    response_started = False
    def _set(self, value):
        self._value = value
    on_response = property(lambda self: self._value, _set)
    def send(self, message):
        if message["type"] == "http.response.start" and not self.response_started:
            self._status = message["status"]
        return None
cycle = Cycle()
message = {"type": "http.response.start", "status": 200}
"""

_STEPS = (
    ("read the clock (`time.perf_counter`)", 2, "clock()"),
    ("add to a float64 cell in shared memory (started, the request's cell, the sum)", 3,
     "cells[7] += 1.0"),
    ("call a property setter (uvicorn assigns `on_response` at the start and the end)", 2,
     "cycle.on_response = None"),
    ("call the `send` override (the status)", 2, "cycle.send(message)"),
    ("the request's cell: `REQUEST_CELL[method][status]`", 1, "REQUEST_CELL['GET'][200]"),
    ("its bucket: one comparison for a request under 5 ms", 1, "duration > FIRST_BOUND"),
)  # fmt: skip


@dataclass(frozen=True, slots=True)
class Step:
    what: str
    per_request: int
    ns: float


def steps() -> list[Step]:
    made = []
    for what, count, stmt in _STEPS:
        best = min(timeit.repeat(stmt, setup=_SETUP, number=NUMBER, repeat=REPEATS))
        made.append(Step(what, count, best / NUMBER * 1e9))
    return made


# --- The report -----------------------------------------------------------------------


def measure(quick: bool) -> list[str]:
    """Run the measurements; the Markdown lines for section 1."""
    lines = ["### What counting requests costs a worker", ""]
    counted = instructions()
    if isinstance(counted, str):
        lines += [f"Instruction counts not taken: {counted}.", ""]
    else:
        lines += _instruction_table(counted)
    calls, rounds = (50_000, 3) if quick else (200_000, 5)
    cycle = request_overhead.measure_cycle(calls, rounds)
    if cycle is not None:
        results, checks = cycle
        if checks["cycle_counted"] != checks["cycle_expected"]:
            return [*lines, f"The metered cycle miscounted in the micro-benchmark: {checks}", ""]
        added = {r.variant: r for r in results}
        lines += [
            f"In CPU time, the same in-process cycle ({calls:,} requests x {rounds} alternating"
            f" rounds, median): corral's counting cycle adds"
            f" **{added['metered cycle'].added_ns:.0f} ns** per request to uvicorn's; the"
            f" request-metrics middleware corral's workers ran before (one more coroutine"
            f" frame) adds {added['cycle + middleware'].added_ns:.0f} ns.",
            "",
        ]
    lines += _step_table(steps())
    return lines


def _instruction_table(counted: list[Instructions]) -> list[str]:
    lines = [
        "Instructions per request (callgrind: the same on a busy machine as on a quiet one):",
        "",
        "| measured | without counting | with | added | added, % |",
        "|---|--:|--:|--:|--:|",
    ]
    for row in counted:
        lines.append(
            f"| {row.what} | {row.without:,.0f} | {row.with_counting:,.0f}"
            f" | {row.added:,.0f} | {row.added / row.without:.1%} |"
        )
    lines += ["", *[f"- {row.what.split(':')[0]}: {row.how}." for row in counted], ""]
    return lines


def _step_table(timed: list[Step]) -> list[str]:
    total = sum(s.ns * s.per_request for s in timed)
    lines = [
        f"The counting's steps, each timed alone (`timeit`, best of {REPEATS} x {NUMBER:,}):",
        "",
        "| step | per request | ns each | ns per request |",
        "|---|--:|--:|--:|",
    ]
    for step in timed:
        subtotal = step.ns * step.per_request
        lines.append(f"| {step.what} | {step.per_request} | {step.ns:.0f} | {subtotal:.0f} |")
    lines += [
        f"| sum of the steps | | | {total:.0f} |",
        "",
        "Each step is one C call or a few bytecodes. The stores reach shared memory at once,"
        " so a SIGKILLed worker's counts survive; the two setter calls are where uvicorn"
        " marks a request's start and end, and the `send` override is the only place the"
        " status passes. A slower request adds a bucket search (`bisect_left`).",
        "",
    ]
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--cycles", nargs=2, metavar=("VARIANT", "CALLS"))
    args = parser.parse_args(argv)
    if args.cycles:
        variant, calls = args.cycles
        if variant not in ("uvicorn", "metered"):
            parser.error("VARIANT is uvicorn or metered")
        _run_cycles(variant, int(calls))
        return 0
    with contextlib.suppress(BrokenPipeError):
        print("\n".join(measure(quick=False)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
