"""Where the request-metrics middleware's time goes, for section 1.

Two measurements, both in-process on this interpreter:

* ``bench/request_overhead.py``'s comparison (the app called directly, no
  server): the middleware's added nanoseconds per request next to a
  prometheus_client middleware;
* a breakdown by operation of what the middleware does per request, each
  timed with ``timeit`` in isolation (best of several repeats): the clock
  reads, the shared-memory stores, the ``send`` wrapper, the label lookups,
  the bucket search. Their sum is close to the added cost, which shows there
  is no single expensive step left to remove.
"""

from __future__ import annotations

import timeit
from dataclasses import dataclass

from bench import request_overhead

REPEATS = 5
NUMBER = 200_000


@dataclass(frozen=True, slots=True)
class Step:
    what: str
    per_request: int  # how many times the middleware does it per hello-world request
    ns: float  # one occurrence


_SETUP = """
import mmap, time
from bisect import bisect_left
from corral.request_stats.layout import (
    FINITE_BUCKETS, METHOD_BASE, OTHER_BASE, STATUS_OFFSET, STATUS_5XX,
)
mapping = mmap.mmap(-1, 4096)
cells = memoryview(mapping).cast("d")
clock = time.perf_counter
message = {"type": "http.response.body", "status": 200}
def send(message):
    return None
def make(send):
    status = 0
    def capture(message):
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]
        return send(message)
    return capture
capture = make(send)
"""

_STEPS = (
    ("read the clock (`time.perf_counter`)", 2, "clock()"),
    ("add 1.0 to a float64 cell in shared memory", 3, "cells[7] += 1.0"),
    ("add the duration to the sum cell", 1, "cells[2] += 0.0001"),
    ("make the `send` wrapper (a closure over two cells)", 1, "make(send)"),
    ("call the `send` wrapper", 2, "capture(message)"),
    (
        "method and status-class lookups",
        1,
        "METHOD_BASE.get('GET', OTHER_BASE) + STATUS_OFFSET.get(200, STATUS_5XX)",
    ),
    ("bucket search (`bisect_left`)", 1, "bisect_left(FINITE_BUCKETS, 0.0001)"),
)


def breakdown() -> list[Step]:
    steps = []
    for what, count, stmt in _STEPS:
        best = min(timeit.repeat(stmt, setup=_SETUP, number=NUMBER, repeat=REPEATS))
        steps.append(Step(what, count, best / NUMBER * 1e9))
    return steps


def measure(quick: bool) -> list[str]:
    """Run both measurements; the Markdown lines for section 1."""
    calls, rounds = (50_000, 3) if quick else (200_000, 5)
    results, checks = request_overhead.measure(calls, rounds)
    if checks["corral_counted"] != checks["corral_expected"]:
        return [f"The middleware miscounted in the micro-benchmark: {checks}"]
    added = {r.variant: r for r in results}
    steps = breakdown()
    total = sum(s.ns * s.per_request for s in steps)
    lines = [
        "### Where the request-metrics middleware's time goes",
        "",
        "The middleware alone, called directly with a hello-world app and no server"
        f" (`bench/request_overhead.py`, {calls:,} calls x {rounds} alternating rounds):"
        f" it adds **{added['corral'].added_ns:.0f} ns** per request; a prometheus_client"
        f" middleware adds {added['prom-normal'].added_ns:.0f} ns (in-process values) or"
        f" {added['prom-multiproc'].added_ns:.0f} ns (multiprocess mode).",
        "",
        "| step | per request | ns each | ns per request |",
        "|---|--:|--:|--:|",
    ]
    for step in steps:
        subtotal = step.ns * step.per_request
        lines.append(f"| {step.what} | {step.per_request} | {step.ns:.0f} | {subtotal:.0f} |")
    lines += [
        f"| sum of the steps | | | {total:.0f} |",
        "",
        "The rest of the added cost is the middleware's own coroutine (one more frame"
        " per request between uvicorn and the app). Each step is already a single C call or"
        " bytecode; the stores must reach shared memory at once so a SIGKILLed worker's"
        " counts survive, and the wrapper is the only place ASGI exposes the status.",
        "",
    ]
    return lines
