"""Section 1, serving overhead: corral next to uvicorn, gunicorn, hypercorn and granian.

Every contender serves ``bench.apps:app`` on ``WORKERS`` worker processes on
loopback, with access logs off, and every uvicorn-based one on uvloop and
httptools (corral's workers pick them as uvicorn's ``auto`` does; uvicorn,
and gunicorn's ``UvicornWorker``, get them named or by the same ``auto``).
hypercorn has no httptools path: it runs its own h11 parser on uvloop.
granian serves through its ASGI interface from Rust.

"Full observability" for corral is its default: the side port (``/metrics``
etc.), request metrics in shared memory, and lifecycle tracing into a real
OpenTelemetry SDK ``TracerProvider`` whose only processor is corral's
in-process ring of recent spans (no ``OTEL_*`` exporter is configured, so
nothing leaves the process). Tracing only sees lifecycle events, not
requests, so it costs nothing per request either way. "Observability off" is
``--no-metrics --no-request-metrics`` with ``OTEL_SDK_DISABLED=true``.
The report is ``bench/throughput_report.py``.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass

from bench import counting_cost, serving
from bench.commands import (
    HTTPTOOLS,
    granian_argv,
    hypercorn_argv,
    importable,
    uvicorn_argv,
    uvicorn_worker_class,
)
from bench.load import pinned
from bench.servers import free_port
from bench.serving import APP, Contender, corral_contender
from bench.stats import LoadWindow

WORKERS = 2
CONNECTIONS = 64
TARGET = 0.98  # issue 13: corral full >= 0.98 of uvicorn --workers 2, >= 9 rounds
OBSERVABILITY_TARGET = 0.99  # issue 13: corral full >= 0.99 of corral with observability off
REFERENCE = "uvicorn"
NO_ACCESS_LOG = "--no-access-log"
PINNED_ROUNDS = 8
PINNED_SECONDS = 3.0
PINNED_CONNECTIONS = 32
SERVER_CPU, WRK_CPU = "0", "1"


@dataclass(frozen=True, slots=True)
class Plan:
    rounds: int
    seconds: float
    cpu_rounds: int  # 0: skip the CPU-bound endpoint
    cpu_seconds: float
    keys: tuple[str, ...] | None  # None: every contender


FULL = Plan(rounds=9, seconds=4.0, cpu_rounds=3, cpu_seconds=4.0, keys=None)
QUICK = Plan(rounds=3, seconds=2.0, cpu_rounds=0, cpu_seconds=0.0, keys=("corral", "uvicorn"))


def contenders() -> list[Contender]:
    made = [
        corral_contender("corral", "corral, full observability", workers=WORKERS),
        corral_contender(
            "corral-off", "corral, observability off", workers=WORKERS, observability=False
        ),
    ]
    port = free_port()
    argv = uvicorn_argv(APP, port, WORKERS, *HTTPTOOLS, NO_ACCESS_LOG)
    made.append(Contender("uvicorn", f"uvicorn --workers {WORKERS}", argv, port, WORKERS))
    if importable("uvicorn_worker") and (worker_class := uvicorn_worker_class()):
        made.append(serving.gunicorn_contender(worker_class, WORKERS))
    if importable("hypercorn"):
        port = free_port()
        argv = hypercorn_argv(APP, port, WORKERS)
        made.append(Contender("hypercorn", "hypercorn (uvloop, h11)", argv, port, WORKERS))
    if importable("granian"):
        port = free_port()
        argv = granian_argv(APP, port, WORKERS)
        made.append(Contender("granian", "granian (ASGI, Rust)", argv, port, WORKERS))
    return made


def pinned_contenders() -> list[Contender]:
    """One worker on CPU 0, wrk on CPU 1: uvicorn bare and wrapped, corral off and full."""
    made = []
    for key, label, target in (
        ("uvicorn", "uvicorn, 1 worker", APP),
        (
            "uvicorn-passthrough",
            "uvicorn + a pass-through `async def`",
            "bench.wrapped_apps:passthrough",
        ),
        ("uvicorn-metered", "uvicorn + `RequestMetricsMiddleware`", "bench.wrapped_apps:metered"),
    ):
        port = free_port()
        argv = uvicorn_argv(target, port, None, *HTTPTOOLS, NO_ACCESS_LOG)
        made.append(Contender(key, label, [*pinned(SERVER_CPU), *argv], port, 1))
    made.append(
        corral_contender(
            "corral-off",
            "corral, 1 worker, observability off",
            workers=1,
            observability=False,
            cpu=SERVER_CPU,
        )
    )
    made.append(
        corral_contender(
            "corral", "corral, 1 worker, full observability", workers=1, cpu=SERVER_CPU
        )
    )
    return made


def run_pinned() -> list[Contender]:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    made = pinned_contenders()
    try:
        serving.start(made)
        serving.alternate(
            made, "/", PINNED_ROUNDS, PINNED_SECONDS, PINNED_CONNECTIONS, wrk_cpu=WRK_CPU
        )
    finally:
        serving.stop(made)
    return made


@dataclass(slots=True)
class Result:
    hello: list[Contender]
    cpu: list[Contender]
    window: LoadWindow
    missing: list[str]
    plan: Plan
    counting: list[str]
    pinned: list[Contender]


def run(quick: bool) -> Result:
    plan = QUICK if quick else FULL
    window = LoadWindow()
    every = contenders()
    wanted = [c for c in every if plan.keys is None or c.key in plan.keys]
    expected = {"gunicorn", "hypercorn", "granian"} if plan.keys is None else set()
    missing = sorted(expected - {c.key for c in every})
    try:
        serving.start(wanted)
        serving.alternate(wanted, "/", plan.rounds, plan.seconds, CONNECTIONS)
        cpu: list[Contender] = []
        if plan.cpu_rounds:
            cpu = [c.twin() for c in wanted]
            serving.alternate(cpu, "/cpu", plan.cpu_rounds, plan.cpu_seconds, CONNECTIONS)
    finally:
        serving.stop(wanted)
    pinned_runs = [] if quick else run_pinned()
    counting = [] if quick else counting_cost.measure(quick)
    window.close()
    return Result(wanted, cpu, window, missing, plan, counting, pinned_runs)
