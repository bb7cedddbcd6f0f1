"""Section 1's Markdown: the serving table, the verdict against the target, the pinned table."""

from __future__ import annotations

import math
from collections.abc import Sequence

from bench.apps import CPU_LOOPS
from bench.commands import shown
from bench.load import wrk_argv
from bench.servers import HOST
from bench.serving import Contender, ratio
from bench.stats import Spread
from bench.throughput import (
    CONNECTIONS,
    OBSERVABILITY_TARGET,
    PINNED_CONNECTIONS,
    PINNED_ROUNDS,
    PINNED_SECONDS,
    REFERENCE,
    SERVER_CPU,
    TARGET,
    WORKERS,
    WRK_CPU,
    Result,
)


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
        met_off = "met" if cost.median >= OBSERVABILITY_TARGET else "missed"
        text += (
            " The cost of observability alone, corral full over corral off in the same"
            f" round: median {cost.median:.3f} ({cost.low:.3f}-{cost.high:.3f});"
            f" **target >= {OBSERVABILITY_TARGET:.2f}: {met_off} at the median**."
        )
    return text


NOTES = [
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
    " (`corral_http_requests_total`) give the last column. The skew comes from the"
    " load: this bench's wrk opens its connections from one thread, in a burst that"
    " the first worker to wake accepts most of (libuv accepts until the queue is"
    " empty). The same corral under `wrk -t2` (two connecting threads) splits 0.50,"
    " both ways, in every round (NOTES.md, connection balance).",
    "- Hypercorn has no httptools parser; it is h11 on uvloop, so its gap is its HTTP"
    " parser, not its process model.",
    "- corral runs from the venv's `corral` script, as the README runs it, never"
    " `python -m corral`.",
    "- Commands (cwd = repository root; ports are free ones picked at run time):",
]


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
    lines += result.counting
    lines += NOTES
    lines += [f"  - {c.label}: `{shown(c.argv)}`" for c in result.hello]
    if result.hello:
        sample = wrk_argv(f"http://{HOST}:PORT/", plan.seconds, CONNECTIONS)
        lines.append(f"  - load: `{shown(sample)}`")
    if result.missing:
        lines.append(f"- Not measured (not installed): {', '.join(result.missing)}.")
    lines += ["", result.window.line(), ""]
    return "\n".join(lines)
