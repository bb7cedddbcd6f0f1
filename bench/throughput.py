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
"""

from __future__ import annotations

import math
import os
import shutil
import sys
from collections.abc import Sequence
from dataclasses import dataclass

from bench import middleware_cost, serving
from bench.apps import CPU_LOOPS
from bench.common import LoadWindow, Spread, pinned, shown, wrk_argv
from bench.recovery import HOST, _importable
from bench.serving import Contender, corral_argv

APP = "bench.apps:app"
WORKERS = 2
CONNECTIONS = 64
TARGET = 0.97
REFERENCE = "uvicorn"


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
    py = sys.executable
    made = []
    port, mport = serving.new_port(), serving.new_port()
    made.append(
        Contender(
            "corral",
            "corral, full observability",
            corral_argv(py, APP, port, mport, workers=WORKERS, mode="process"),
            port,
            WORKERS,
            metrics_port=mport,
        )
    )
    port = serving.new_port()
    made.append(
        Contender(
            "corral-off",
            "corral, observability off",
            corral_argv(py, APP, port, None, workers=WORKERS, mode="process"),
            port,
            WORKERS,
            env={"OTEL_SDK_DISABLED": "true"},
        )
    )
    port = serving.new_port()
    made.append(
        Contender(
            "uvicorn",
            f"uvicorn --workers {WORKERS}",
            [
                py,
                "-m",
                "uvicorn",
                APP,
                "--workers",
                str(WORKERS),
                "--host",
                HOST,
                "--port",
                str(port),
                "--loop",
                "uvloop",
                "--http",
                "httptools",
                "--no-access-log",
            ],
            port,
            WORKERS,
        )
    )
    if _importable("gunicorn") and _importable("uvicorn_worker"):
        made.append(serving.gunicorn_contender(py, APP, WORKERS))
    if _importable("hypercorn"):
        port = serving.new_port()
        made.append(
            Contender(
                "hypercorn",
                "hypercorn (uvloop, h11)",
                [
                    py,
                    "-m",
                    "hypercorn",
                    APP,
                    "--workers",
                    str(WORKERS),
                    "--bind",
                    f"{HOST}:{port}",
                    "--worker-class",
                    "uvloop",
                ],
                port,
                WORKERS,
            )
        )
    if _importable("granian"):
        port = serving.new_port()
        made.append(
            Contender(
                "granian",
                "granian (ASGI, Rust)",
                [
                    py,
                    "-m",
                    "granian",
                    "--interface",
                    "asgi",
                    "--workers",
                    str(WORKERS),
                    "--host",
                    HOST,
                    "--port",
                    str(port),
                    "--no-ws",
                    APP,
                ],
                port,
                WORKERS,
            )
        )
    return made


PINNED_ROUNDS = 8
PINNED_SECONDS = 3.0
PINNED_CONNECTIONS = 32
SERVER_CPU, WRK_CPU = "0", "1"


def pinned_contenders() -> list[Contender]:
    """One worker on CPU 0, wrk on CPU 1: uvicorn bare and wrapped, corral off and full."""
    py = sys.executable
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
        port = serving.new_port()
        argv = [*pinned(SERVER_CPU), py, "-m", "uvicorn", target, "--host", HOST]
        argv += ["--port", str(port), "--loop", "uvloop", "--http", "httptools", "--no-access-log"]
        made.append(Contender(key, label, argv, port, 1))
    port = serving.new_port()
    argv = [*pinned(SERVER_CPU), *corral_argv(py, APP, port, None, workers=1, mode="process")]
    made.append(
        Contender(
            "corral-off",
            "corral, 1 worker, observability off",
            argv,
            port,
            1,
            env={"OTEL_SDK_DISABLED": "true"},
        )
    )
    port, mport = serving.new_port(), serving.new_port()
    argv = [*pinned(SERVER_CPU), *corral_argv(py, APP, port, mport, workers=1, mode="process")]
    made.append(Contender("corral", "corral, 1 worker, full observability", argv, port, 1, mport))
    return made


def run_pinned() -> list[Contender]:
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        return []
    made = pinned_contenders()
    try:
        serving.start(made, "/")
        serving.alternate(
            made, "/", PINNED_ROUNDS, PINNED_SECONDS, PINNED_CONNECTIONS, wrk_cpu=WRK_CPU
        )
    finally:
        for note in serving.stop(made):
            print(f"  note: {note}", file=sys.stderr)
    return made


@dataclass(slots=True)
class Result:
    hello: list[Contender]
    cpu: list[Contender]
    window: LoadWindow
    missing: list[str]
    plan: Plan
    middleware: list[str]
    pinned: list[Contender]


def run(quick: bool) -> Result:
    plan = QUICK if quick else FULL
    window = LoadWindow()
    every = contenders()
    wanted = [c for c in every if plan.keys is None or c.key in plan.keys]
    expected = {"gunicorn", "hypercorn", "granian"} if plan.keys is None else set()
    missing = sorted(expected - {c.key for c in every})
    try:
        serving.start(wanted, "/")
        serving.alternate(wanted, "/", plan.rounds, plan.seconds, CONNECTIONS)
        cpu: list[Contender] = []
        if plan.cpu_rounds:
            cpu = [_cpu_twin(c) for c in wanted]
            serving.alternate(cpu, "/cpu", plan.cpu_rounds, plan.cpu_seconds, CONNECTIONS)
    finally:
        notes = serving.stop(wanted)
    for note in notes:
        print(f"  note: {note}", file=sys.stderr)
    pinned_runs = [] if quick else run_pinned()
    middleware = [] if quick else middleware_cost.measure(quick)
    window.close()
    return Result(wanted, cpu, window, missing, plan, middleware, pinned_runs)


def _cpu_twin(contender: Contender) -> Contender:
    """The same running server, measured again on ``/cpu`` with fresh result lists."""
    return Contender(
        contender.key,
        contender.label,
        contender.argv,
        contender.port,
        contender.workers,
        metrics_port=contender.metrics_port,
        env=contender.env,
        server=contender.server,
    )


def ratio(contender: Contender, reference: Contender) -> Spread:
    """Each round's throughput over the reference's in the same round."""
    pairs = zip(contender.runs, reference.runs, strict=True)
    return Spread.of([a.requests_per_second / b.requests_per_second for a, b in pairs])


def _table(rows: Sequence[Contender], show_spread: bool) -> list[str]:
    reference = next((c for c in rows if c.key == REFERENCE), None)
    head = "| server | req/s median (min-max) | vs uvicorn, per round: median (min-max) |"
    head += " p50 ms | p99 ms | errors | server CPU µs per request, median (min-max) |"
    if show_spread:
        head += " busiest worker's share of CPU | corral busiest slot's share of requests |"
    lines = [head, "|---|--:|--:|--:|--:|--:|--:|" + ("--:|--:|" if show_spread else "")]
    for c in rows:
        rel = ratio(c, reference) if reference else None
        rel_text = f"{rel.median:.3f} ({rel.low:.3f}-{rel.high:.3f})" if rel and rel.n else "n/a"
        line = (
            f"| {c.label} | {c.spread('requests_per_second').fmt()} | {rel_text}"
            f" | {c.spread('p50_ms').median:.2f} | {c.spread('p99_ms').median:.2f}"
            f" | {sum(r.errors for r in c.runs)} | {Spread.of(c.cpu_us_per_request).fmt(1)} |"
        )
        if show_spread:
            share = Spread.of([s for s in c.busiest_share if not math.isnan(s)])
            slots = Spread.of(c.slot_share)
            line += f" {share.fmt(2)} | {slots.fmt(2) if slots.n else ''} |"
        lines.append(line)
    return lines


def _pinned_lines(rows: Sequence[Contender]) -> list[str]:
    reference = next((c for c in rows if c.key == REFERENCE), None)
    if reference is None:
        return []
    lines = [
        "### One worker, pinned",
        "",
        f"The same comparison with less noise: one worker, every server process pinned to"
        f" CPU {SERVER_CPU} and wrk to CPU {WRK_CPU} (`taskset`), {PINNED_CONNECTIONS}"
        f" connections, {PINNED_ROUNDS} rounds of {PINNED_SECONDS:g} s in rotating order."
        " The uvicorn rows serve the same app behind a wrapper, so they isolate what the"
        " wrapper costs inside a real server, without corral's supervisor or worker.",
        "",
        "| server | req/s median (min-max) | vs uvicorn, per round | server CPU µs per request"
        " | added CPU µs per request vs uvicorn, per round |",
        "|---|--:|--:|--:|--:|",
    ]
    for c in rows:
        rel = ratio(c, reference)
        pairs = zip(c.cpu_us_per_request, reference.cpu_us_per_request, strict=False)
        added = Spread.of([mine - theirs for mine, theirs in pairs])
        lines.append(
            f"| {c.label} | {c.spread('requests_per_second').fmt()}"
            f" | {rel.median:.3f} ({rel.low:.3f}-{rel.high:.3f})"
            f" | {Spread.of(c.cpu_us_per_request).fmt(1)} | {added.fmt(1)} |"
        )
    lines += [
        "",
        "Commands: "
        + "; ".join(f"`{shown(c.argv)}`" for c in rows)
        + "; load: `"
        + shown(wrk_argv(f"http://{HOST}:PORT/", PINNED_SECONDS, PINNED_CONNECTIONS, cpu=WRK_CPU))
        + "`.",
        "",
    ]
    return lines


def verdict(result: Result) -> str:
    corral = next((c for c in result.hello if c.key == "corral"), None)
    reference = next((c for c in result.hello if c.key == REFERENCE), None)
    if corral is None or reference is None:
        return "Target not evaluated: corral or uvicorn missing from this run."
    rel = ratio(corral, reference)
    met = "met" if rel.median >= TARGET else "missed"
    noise = "inside" if rel.low < TARGET <= rel.high else "outside"
    text = (
        f"**Target (corral with full observability >= {TARGET:.0%} of `uvicorn --workers"
        f" {WORKERS}`): {met} at the median**, {rel.median:.1%} over {rel.n} paired rounds;"
        f" the per-round ratio ranged {rel.low:.1%}-{rel.high:.1%}, so the target is"
        f" {noise} this run's noise band."
    )
    if corral.cpu_us_per_request and reference.cpu_us_per_request:
        pairs = zip(reference.cpu_us_per_request, corral.cpu_us_per_request, strict=False)
        efficiency = Spread.of([u / c for u, c in pairs])
        text += (
            " By server CPU time per request (uvicorn's over corral's, per round, so above"
            f" 1 means corral used less): median {efficiency.median:.3f}"
            f" ({efficiency.low:.3f}-{efficiency.high:.3f})."
        )
    off = next((c for c in result.hello if c.key == "corral-off"), None)
    if off is not None:
        cost = ratio(corral, off)
        text += (
            " The cost of observability alone, corral full over corral off in the same"
            f" round: median {cost.median:.3f} ({cost.low:.3f}-{cost.high:.3f})."
        )
    return text


def render(result: Result) -> str:
    plan = result.plan
    lines = [
        "## 1. Serving overhead",
        "",
        f"`GET /` on `bench.apps:app` (hello world), {WORKERS} workers each, wrk with"
        f" {CONNECTIONS} keep-alive connections on loopback; {plan.rounds} rounds of"
        f" {plan.seconds:g} s, the servers taken in rotating order each round (all of them"
        " running all the time, idle when not measured). The ratio column divides each"
        " round's figure by uvicorn's in the same round, then takes the median, min and"
        " max of those ratios. Latency columns are medians over rounds of wrk's"
        " percentiles.",
        "",
        *_table(result.hello, show_spread=True),
        "",
        verdict(result),
        "",
        "![throughput](docs/img/throughput.png)",
        "",
    ]
    if result.cpu:
        lines += [
            f"`GET /cpu` (about {CPU_LOOPS:,} iterations of pure-Python arithmetic per request),"
            f" same servers, {plan.cpu_rounds} rounds of {plan.cpu_seconds:g} s:",
            "",
            *_table(result.cpu, show_spread=True),
            "",
        ]
    lines += _pinned_lines(result.pinned)
    lines += result.middleware
    lines += [
        "- corral's full observability is its default: side port on, request metrics on,"
        " lifecycle tracing into a real OpenTelemetry SDK `TracerProvider` whose only"
        " processor is corral's in-process ring of recent spans (no exporter configured,"
        " nothing leaves the process). Tracing records lifecycle events only, never"
        " requests. Observability off: `--no-metrics --no-request-metrics` and"
        " `OTEL_SDK_DISABLED=true`.",
        "- Server CPU per request: the CPU time (user + system) every process of the"
        " server's process group used during the run, over the requests wrk completed."
        " It does not depend on how many cores the server got, so it is a steadier view"
        " of overhead than req/s on a shared machine, but cache and core sharing with"
        " other work still move it by several µs.",
        "- Busiest worker's share: of the CPU time the two busiest processes of the"
        " server's process group used during a run (from `/proc/<pid>/stat`); 0.50 is an"
        " even split. corral, uvicorn, gunicorn and hypercorn have all workers accept() on"
        " one shared listening socket (gunicorn's `reuse_port` is off by default); a"
        " worker busy with a request is not waiting in accept(), so the split follows who"
        " is idle when a connection arrives. corral's own per-slot request counters"
        " (`corral_http_requests_total`) give the last column.",
        "- Hypercorn has no httptools parser; it is h11 on uvloop, so its gap is its HTTP"
        " parser, not its process model.",
        "- Commands (cwd = repository root; ports are free ones picked at run time):",
    ]
    lines += [f"  - {c.label}: `{shown(c.argv)}`" for c in result.hello]
    if result.hello:
        sample = wrk_argv(f"http://{HOST}:PORT/", plan.seconds, CONNECTIONS)
        lines.append(f"  - load: `{shown(sample)}`")
    if result.missing:
        lines.append(f"- Not measured (not installed): {', '.join(result.missing)}.")
    lines += ["", result.window.line(), ""]
    return "\n".join(lines)
