"""Per-request cost of corral's request metrics, next to prometheus_client.

A hello-world request through uvicorn+httptools costs ~60-100 µs, and corral
with request metrics must keep at least 97% of bare uvicorn's throughput, so
the metrics may add at most ~2-3 µs. This bench isolates that added cost: it
calls a hello-world ASGI app directly, with a fake ``receive``/``send`` that
never suspend, stepping each call's coroutine by hand (no event loop, no
sockets), so nothing but the app and the middleware is timed. Variants:

* ``bare``: the app alone, the baseline.
* ``corral``: ``RequestMetricsMiddleware`` writing into a shared-memory lane.
* ``prom-multiproc``: a straightforward middleware on prometheus_client in
  multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set to a temp dir):
  ``Counter.labels(...).inc()``, ``Histogram.observe()`` and a ``livesum``
  ``Gauge`` ``inc``/``dec``; what corral would do without its own blocks.
* ``prom-normal``: the same middleware on prometheus_client's in-process
  values (correct only for one process).

Both prometheus variants capture the status exactly like corral (same
closure, same label lookups), so the differences are the recording alone.
Each round times every variant over ``--calls`` requests, in a rotating order;
the added cost is ``variant - bare`` within a round, and the report is the
median over rounds.

Run with ``.venv/bin/python bench/request_overhead.py [--calls N] [--rounds R] [--json]``.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import os
import platform
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, values

from corral.request_stats.layout import METHODS, STATUS_CLASSES
from corral.request_stats.pool import RequestStatsPool
from corral.request_stats.recorder import RequestMetricsMiddleware, RequestRecorder, open_recorder

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
App = Callable[[Scope, Receive, Send], Coroutine[Any, Any, None]]

SLOT_LABEL = "0"

# --- The app and its fake server ------------------------------------------------------

START: Message = {
    "type": "http.response.start",
    "status": 200,
    "headers": [(b"content-type", b"text/plain")],
}
BODY: Message = {"type": "http.response.body", "body": b"Hello, world!"}
REQUEST: Message = {"type": "http.request", "body": b"", "more_body": False}


async def hello(scope: Scope, receive: Receive, send: Send) -> None:
    await receive()
    await send(START)
    await send(BODY)


async def fake_receive() -> Message:
    return REQUEST


async def fake_send(message: Message) -> None:
    return None


def time_calls(app: App, calls: int) -> float:
    """Nanoseconds per request: each call's coroutine runs to completion in one step."""
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    receive, send = fake_receive, fake_send
    begin = time.perf_counter_ns()
    for _ in range(calls):
        coroutine = app(scope, receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            continue
        raise RuntimeError("the app suspended; the fake receive/send never should")
    return (time.perf_counter_ns() - begin) / calls


# --- A straightforward prometheus_client middleware ---------------------------------

_METHOD_LABEL = {method: method for method in METHODS}
_CLASS_LABEL = {status: STATUS_CLASSES[status // 100 - 1] for status in range(100, 600)}


@dataclass
class PromMetrics:
    requests: Counter
    duration: Histogram  # the slot's child
    in_flight: Gauge  # the slot's child


@contextmanager
def value_class(multiprocess: bool) -> Iterator[None]:
    """Build metrics with in-process or multiprocess values in one interpreter.

    prometheus_client picks its value class once, at import, from the
    environment; it reads ``values.ValueClass`` whenever a metric *or a labelled
    child* is created. So the bench swaps it while building a variant's metrics
    and creates every child it will use inside the swap.
    """
    saved = values.ValueClass
    values.ValueClass = (
        values.MultiProcessValue()  # type: ignore[no-untyped-call]
        if multiprocess
        else values.MutexValue
    )
    try:
        yield
    finally:
        values.ValueClass = saved


def prom_metrics(*, multiprocess: bool) -> PromMetrics:
    registry = CollectorRegistry()  # not the global one: two variants live side by side
    with value_class(multiprocess):
        requests = Counter(
            "corral_http_requests",
            "HTTP requests.",
            ["slot", "method", "status_class"],
            registry=registry,
        )
        for method in (*METHODS, "other"):
            for status_class in STATUS_CLASSES:
                requests.labels(SLOT_LABEL, method, status_class)
        duration = Histogram(
            "corral_http_request_duration_seconds",
            "HTTP request duration.",
            ["slot"],
            registry=registry,
        ).labels(SLOT_LABEL)
        in_flight = Gauge(
            "corral_http_requests_in_flight",
            "HTTP requests in flight.",
            ["slot"],
            registry=registry,
            multiprocess_mode="livesum",
        ).labels(SLOT_LABEL)
    return PromMetrics(requests, duration, in_flight)


class PromMiddleware:
    """What a request-metrics middleware on prometheus_client usually looks like."""

    def __init__(self, app: App, metrics: PromMetrics) -> None:
        self.app = app
        self.metrics = metrics

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        status = 0

        def capture(message: Message) -> Awaitable[None]:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
            return send(message)

        metrics.in_flight.inc()
        start = time.perf_counter()
        try:
            await self.app(scope, receive, capture)
        except BaseException:
            status = 0
            raise
        finally:
            metrics.duration.observe(time.perf_counter() - start)
            metrics.requests.labels(
                SLOT_LABEL,
                _METHOD_LABEL.get(scope["method"], "other"),
                _CLASS_LABEL.get(status, "5xx"),
            ).inc()
            metrics.in_flight.dec()


# --- Running it ------------------------------------------------------------------------


@dataclass(frozen=True)
class Result:
    variant: str
    ns_per_request: float  # median over rounds
    added_ns: float  # median over rounds of (variant - bare) within the round
    # The added cost as a share of a hello-world request through uvicorn+httptools.
    added_pct_of_100us: float
    added_pct_of_60us: float


def measure(calls: int, rounds: int) -> tuple[list[Result], dict[str, Any]]:
    saved_env = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    with tempfile.TemporaryDirectory(prefix="corral-bench-prom-") as prom_dir:
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = prom_dir  # read when a multiproc value is made
        try:
            with RequestStatsPool() as pool:
                lease = pool.acquire(0)
                with open_recorder(lease.path) as recorder:
                    results, checks = _measure(calls, rounds, recorder)
                    checks["corral_counted"] = pool.snapshot()[0].duration_count
            checks["prom_multiproc_files"] = sorted(p.name for p in Path(prom_dir).iterdir())
        finally:
            values.close_all_multiprocess_files()  # type: ignore[no-untyped-call]
            if saved_env is None:
                del os.environ["PROMETHEUS_MULTIPROC_DIR"]
            else:
                os.environ["PROMETHEUS_MULTIPROC_DIR"] = saved_env
    return results, checks


def _measure(
    calls: int, rounds: int, recorder: RequestRecorder
) -> tuple[list[Result], dict[str, Any]]:
    variants: dict[str, App] = {
        "bare": hello,
        "corral": RequestMetricsMiddleware(hello, recorder),
        "prom-multiproc": PromMiddleware(hello, prom_metrics(multiprocess=True)),
        "prom-normal": PromMiddleware(hello, prom_metrics(multiprocess=False)),
    }
    names = list(variants)
    for name in names:  # warm up: specialise the bytecode, fault in the pages
        time_calls(variants[name], max(1, calls // 10))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(time_calls(variants[name], calls))
    results = []
    for name in names:
        added = statistics.median(
            s - b for s, b in zip(samples[name], samples["bare"], strict=True)
        )
        median = statistics.median(samples[name])
        results.append(Result(name, median, added, added / 1000.0, added / 600.0))
    checks: dict[str, Any] = {"corral_expected": max(1, calls // 10) + calls * rounds}
    return results, checks


def environment(calls: int, rounds: int) -> dict[str, Any]:
    return {
        "python": sys.version.split()[0],
        "free_threaded": bool(sysconfig.get_config_var("Py_GIL_DISABLED")),
        "machine": platform.machine(),
        "cpus": os.cpu_count(),
        "prometheus_client": importlib.metadata.version("prometheus-client"),
        "calls": calls,
        "rounds": rounds,
    }


def render(results: list[Result], env: dict[str, Any]) -> str:
    lines = [
        f"Python {env['python']} ({'free-threaded' if env['free_threaded'] else 'GIL'}), "
        f"{env['machine']}, {env['cpus']} CPUs, prometheus_client {env['prometheus_client']}; "
        f"{env['calls']} calls x {env['rounds']} rounds, medians",
        "",
        f"{'variant':<16}{'ns/request':>12}{'added ns':>10}{'% of 100 µs':>13}{'% of 60 µs':>12}",
    ]
    for r in results:
        lines.append(
            f"{r.variant:<16}{r.ns_per_request:>12.0f}{r.added_ns:>10.0f}"
            f"{r.added_pct_of_100us:>12.2f}%{r.added_pct_of_60us:>11.2f}%"
        )
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--calls", type=int, default=200_000, help="requests per variant per round")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds")
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    results, checks = measure(args.calls, args.rounds)
    env = environment(args.calls, args.rounds)
    if checks["corral_counted"] != checks["corral_expected"]:
        print(f"corral's count is wrong: {checks}", file=sys.stderr)
        return 1
    if args.json:
        document = {"environment": env, "results": [asdict(r) for r in results], "checks": checks}
        print(json.dumps(document, indent=2))
    else:
        print(render(results, env))
        print(
            f"\nchecks: corral counted {checks['corral_counted']:.0f} requests "
            f"(expected {checks['corral_expected']}); "
            f"prometheus multiprocess files: {', '.join(checks['prom_multiproc_files'])}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
