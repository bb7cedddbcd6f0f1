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

corral's workers no longer use the middleware: the request cycle counts
itself (``request_stats.cycle``). A second table times that where it runs,
inside uvicorn's httptools ``RequestResponseCycle``, each request making its
cycle and running ``run_asgi`` to the end over a fake transport, so uvicorn's
own per-request work is in every variant:

* ``uvicorn cycle``: uvicorn's cycle, the app unwrapped, the baseline;
* ``cycle + middleware``: uvicorn's cycle running the app wrapped in
  ``RequestMetricsMiddleware`` (what corral's workers did before);
* ``metered cycle``: corral's counting subclass of the cycle (what they do now).

Times are this thread's CPU time per request (``time.thread_time_ns``), so
other processes on a shared machine do not count; they still share its caches.

Run with ``.venv/bin/python bench/request_overhead.py [--calls N] [--rounds R] [--json]``.
"""

from __future__ import annotations

import argparse
import functools
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

from corral.request_stats.cycle import metered_cycle
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


# This thread's CPU time, not the wall clock: on a shared machine the wall clock
# also counts the turns other processes take on the CPU, which swamps the
# difference of a few hundred nanoseconds this bench is after.
_cpu_ns = time.thread_time_ns


def time_calls(app: App, calls: int) -> float:
    """Nanoseconds per request: each call's coroutine runs to completion in one step."""
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    receive, send = fake_receive, fake_send
    begin = _cpu_ns()
    for _ in range(calls):
        coroutine = app(scope, receive, send)
        try:
            coroutine.send(None)
        except StopIteration:
            continue
        raise RuntimeError("the app suspended; the fake receive/send never should")
    return (_cpu_ns() - begin) / calls


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
    samples = _alternate(
        {name: functools.partial(time_calls, app) for name, app in variants.items()},
        calls,
        rounds,
    )
    results = _results(samples, "bare")
    checks: dict[str, Any] = {"corral_expected": max(1, calls // 10) + calls * rounds}
    return results, checks


# --- Inside uvicorn's request cycle ----------------------------------------------------


class _Transport:
    """Enough of an asyncio transport for uvicorn's cycle: writes go nowhere."""

    def write(self, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None

    def is_closing(self) -> bool:
        return False


class _Flow:
    write_paused = False

    def resume_reading(self) -> None:
        return None


def _on_response() -> None:
    return None


def time_cycles(cycle_class: type, app: App, calls: int) -> float:
    """Nanoseconds per request: make a cycle as httptools' protocol does, run it to the end."""
    import asyncio  # noqa: PLC0415
    import logging  # noqa: PLC0415

    logger = logging.getLogger("bench.request_overhead")
    transport, flow = _Transport(), _Flow()
    scope: Scope = {"type": "http", "method": "GET", "path": "/", "headers": []}
    begin = _cpu_ns()
    for _ in range(calls):
        event = asyncio.Event()
        event.set()  # the request body is all there: receive() never suspends
        cycle = cycle_class(
            scope=scope,
            transport=transport,
            flow=flow,
            logger=logger,
            access_logger=logger,
            access_log=False,
            default_headers=[],
            message_event=event,
            expect_100_continue=False,
            keep_alive=True,
            on_response=_on_response,
        )
        cycle.more_body = False
        coroutine = cycle.run_asgi(app)
        try:
            coroutine.send(None)
        except StopIteration:
            continue
        raise RuntimeError("the cycle suspended; the fake transport never should")
    return (_cpu_ns() - begin) / calls


def measure_cycle(calls: int, rounds: int) -> tuple[list[Result], dict[str, Any]] | None:
    """The second table; ``None`` where httptools (uvicorn's fast protocol) is missing."""
    try:
        from uvicorn.protocols.http.httptools_impl import RequestResponseCycle  # noqa: PLC0415
    except ImportError:
        return None
    with RequestStatsPool() as pool:
        lease = pool.acquire(0)
        with open_recorder(lease.path) as recorder:
            variants: dict[str, tuple[type, App]] = {
                "uvicorn cycle": (RequestResponseCycle, hello),
                "cycle + middleware": (
                    RequestResponseCycle,
                    RequestMetricsMiddleware(hello, recorder),
                ),
                "metered cycle": (metered_cycle(RequestResponseCycle, recorder.cells), hello),
            }
            samples = _alternate(
                {name: functools.partial(time_cycles, *v) for name, v in variants.items()},
                calls,
                rounds,
            )
            counted = pool.snapshot()[0].duration_count
    expected = 2 * (max(1, calls // 10) + calls * rounds)  # the middleware and the metered cycle
    results = _results(samples, "uvicorn cycle")
    return results, {"cycle_counted": counted, "cycle_expected": expected}


def _alternate(
    timers: dict[str, Callable[[int], float]], calls: int, rounds: int
) -> dict[str, list[float]]:
    names = list(timers)
    for name in names:  # warm up: specialise the bytecode, fault in the pages
        timers[name](max(1, calls // 10))
    samples: dict[str, list[float]] = {name: [] for name in names}
    for round_index in range(rounds):
        shift = round_index % len(names)
        for name in names[shift:] + names[:shift]:
            samples[name].append(timers[name](calls))
    return samples


def _results(samples: dict[str, list[float]], baseline: str) -> list[Result]:
    results = []
    for name, times in samples.items():
        added = statistics.median(s - b for s, b in zip(times, samples[baseline], strict=True))
        median = statistics.median(times)
        results.append(Result(name, median, added, added / 1000.0, added / 600.0))
    return results


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
        f"{'variant':<20}{'ns/request':>12}{'added ns':>10}{'% of 100 µs':>13}{'% of 60 µs':>12}",
    ]
    for r in results:
        lines.append(
            f"{r.variant:<20}{r.ns_per_request:>12.0f}{r.added_ns:>10.0f}"
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
    cycle = measure_cycle(args.calls, args.rounds)
    env = environment(args.calls, args.rounds)
    if checks["corral_counted"] != checks["corral_expected"]:
        print(f"corral's count is wrong: {checks}", file=sys.stderr)
        return 1
    if cycle is not None and cycle[1]["cycle_counted"] != cycle[1]["cycle_expected"]:
        print(f"the cycle's count is wrong: {cycle[1]}", file=sys.stderr)
        return 1
    if args.json:
        document: dict[str, Any] = {
            "environment": env,
            "results": [asdict(r) for r in results],
            "checks": checks,
        }
        if cycle is not None:
            document["cycle_results"] = [asdict(r) for r in cycle[0]]
            document["cycle_checks"] = cycle[1]
        print(json.dumps(document, indent=2))
    else:
        print("The app called directly (`corral` is the middleware corral's workers used before):")
        print(render(results, env))
        print(
            f"\nchecks: corral counted {checks['corral_counted']:.0f} requests "
            f"(expected {checks['corral_expected']}); "
            f"prometheus multiprocess files: {', '.join(checks['prom_multiproc_files'])}"
        )
        if cycle is not None:
            print("\nInside uvicorn's httptools request cycle (the cycle made per request):")
            print(render(cycle[0], env))
    return 0


if __name__ == "__main__":
    sys.exit(main())
