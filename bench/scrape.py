"""Section 4, scrape cost: ``/metrics`` latency and size by worker count, and after respawns.

corral in process mode serves ``bench.apps:app`` with 1, 8 and 32 workers
(full observability: request metrics on, so every slot adds its
``corral_http_*`` series). Once every slot is ready and has served a request,
the bench scrapes ``/metrics`` sequentially, one fresh connection each, and
times request to last byte.

Then, on the 8-worker server, it drives ``RESPAWNS`` respawns: it SIGKILLs
every ready worker it has not killed yet (pids from ``/workers``), over and
over, until it has killed that many; corral runs with a large restart budget
and a tiny backoff so the respawns come as fast as the machine can start
processes. Once all 8 are ready again it scrapes again: what 1,000 dead
incarnations leave behind in the exposition (nothing per incarnation is
expected: counters are per slot, request-metric lanes are reused).
"""

from __future__ import annotations

import contextlib
import os
import signal
import sys
import time
from dataclasses import dataclass, field

from bench import serving
from bench.commands import shown
from bench.servers import REQUEST_ERRORS, BenchError, http_get, http_get_raw
from bench.serving import Contender, corral_contender
from bench.stats import LoadWindow, Spread, percentile

FULL_COUNTS = (1, 8, 32)
QUICK_COUNTS = (8,)
RESPAWN_WORKERS = 8
FULL_RESPAWNS = 1000
QUICK_RESPAWNS = 100
FULL_SCRAPES = 50
QUICK_SCRAPES = 20
READY_TIMEOUT = 120.0
RESPAWN_FLAGS = ["--max-restarts", "1000000", "--restart-window", "1"]
RESPAWN_FLAGS += ["--backoff-base", "0.001", "--backoff-cap", "0.005"]


@dataclass(frozen=True, slots=True)
class ScrapeRow:
    label: str
    workers: int
    latency_ms: list[float]
    size_bytes: int
    series: int
    spawns: float


@dataclass(slots=True)
class Result:
    rows: list[ScrapeRow] = field(default_factory=list)
    argv: list[list[str]] = field(default_factory=list)
    respawn_seconds: float = 0.0
    respawns: int = 0
    window: LoadWindow = field(default_factory=LoadWindow)


def timed_scrape(port: int) -> tuple[float, str]:
    """Milliseconds from request to last byte of one ``GET /metrics``, and the body."""
    t0 = time.perf_counter()
    status, body = http_get_raw(port, "/metrics", timeout=30)
    elapsed = time.perf_counter() - t0
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    return elapsed * 1000.0, body


def workers_table(metrics_port: int) -> list[dict[str, object]]:
    status, body = http_get(metrics_port, "/workers", timeout=10)
    rows = body.get("workers") if status == 200 else None
    return rows if isinstance(rows, list) else []


def wait_all_ready(contender: Contender, count: int) -> None:
    assert contender.metrics_port is not None
    assert contender.server is not None
    deadline = time.monotonic() + READY_TIMEOUT
    while True:
        contender.server.check_running()
        rows = []
        with contextlib.suppress(*REQUEST_ERRORS):
            rows = workers_table(contender.metrics_port)
        if len(rows) == count and all(r.get("state") == "ready" for r in rows):
            return
        if time.monotonic() > deadline:
            raise BenchError(f"{contender.label}: not all {count} workers ready: {rows}")
        time.sleep(0.05)


def measure(contender: Contender, label: str, workers: int, scrapes: int) -> ScrapeRow:
    assert contender.metrics_port is not None
    for _ in range(workers * 4):  # let (most) slots serve, so their request series exist
        http_get(contender.port, "/")
    timed_scrape(contender.metrics_port)  # warm-up
    latencies = []
    body = ""
    for _ in range(scrapes):
        ms, body = timed_scrape(contender.metrics_port)
        latencies.append(ms)
    series = sum(1 for line in body.splitlines() if line and not line.startswith("#"))
    spawns = sum(
        float(line.rsplit(" ", 1)[1])
        for line in body.splitlines()
        if line.startswith("corral_worker_spawns_total{")
    )
    return ScrapeRow(label, workers, latencies, len(body.encode()), series, spawns)


def new_corral(workers: int, extra: list[str]) -> Contender:
    label = f"corral, {workers} workers"
    return corral_contender(f"corral-{workers}", label, workers=workers, extra=extra)


def drive_respawns(contender: Contender, total: int) -> tuple[int, float]:
    """SIGKILL ready workers until ``total`` kills; (kills, seconds)."""
    assert contender.metrics_port is not None
    killed: set[int] = set()
    t0 = time.monotonic()
    deadline = t0 + READY_TIMEOUT * 3
    while len(killed) < total:
        if contender.server is not None:
            contender.server.check_running()
        try:
            rows = workers_table(contender.metrics_port)
        except REQUEST_ERRORS:
            rows = []
        for row in rows:
            pid = row.get("pid")
            if row.get("state") == "ready" and isinstance(pid, int) and pid not in killed:
                if len(killed) >= total:
                    break
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    continue
                killed.add(pid)
        if time.monotonic() > deadline:
            raise BenchError(f"only {len(killed)} of {total} respawns driven in time")
        time.sleep(0.002)
    return len(killed), time.monotonic() - t0


def run(quick: bool) -> Result:
    result = Result()
    counts = QUICK_COUNTS if quick else FULL_COUNTS
    scrapes = QUICK_SCRAPES if quick else FULL_SCRAPES
    respawns = QUICK_RESPAWNS if quick else FULL_RESPAWNS
    for workers in counts:
        extra = RESPAWN_FLAGS if workers == RESPAWN_WORKERS else []
        contender = new_corral(workers, extra)
        result.argv.append(contender.argv)
        try:
            serving.start([contender])
            wait_all_ready(contender, workers)
            print(f"  scraping with {workers} workers", file=sys.stderr, flush=True)
            result.rows.append(measure(contender, "fresh", workers, scrapes))
            if workers == RESPAWN_WORKERS:
                print(f"  driving {respawns} respawns", file=sys.stderr, flush=True)
                result.respawns, result.respawn_seconds = drive_respawns(contender, respawns)
                wait_all_ready(contender, workers)
                label = f"after {result.respawns:,} respawns"
                result.rows.append(measure(contender, label, workers, scrapes))
        finally:
            serving.stop([contender])
    result.window.close()
    return result


def render(result: Result) -> str:
    lines = [
        "## 4. Scrape cost",
        "",
        "corral in process mode, full observability; sequential `GET /metrics` on a fresh"
        f" connection each, {len(result.rows[0].latency_ms) if result.rows else 0} per row"
        " after one warm-up, timed from request to last byte.",
        "",
        "| workers | state | median ms (min-max) | p99 ms | size bytes | samples"
        " | spawns counted |",
        "|--:|---|--:|--:|--:|--:|--:|",
    ]
    for row in result.rows:
        spread = Spread.of(row.latency_ms)
        p99 = percentile(row.latency_ms, 99)
        lines.append(
            f"| {row.workers} | {row.label} | {spread.fmt(2)} | {p99:.2f}"
            f" | {row.size_bytes:,} | {row.series:,} | {row.spawns:,.0f} |"
        )
    if result.respawns:
        lines += [
            "",
            f"{result.respawns:,} respawns (SIGKILL of every ready worker, again and again)"
            f" took {result.respawn_seconds:.1f} s"
            f" ({result.respawns / max(result.respawn_seconds, 1e-9):.0f} per second)."
            " Samples = non-comment lines of the exposition; spawns counted = the sum of"
            " `corral_worker_spawns_total` in the last scrape.",
        ]
    lines += [
        "",
        "- Commands:",
        *[f"  - `{shown(argv)}`" for argv in result.argv],
        "",
        result.window.line(),
        "",
    ]
    return "\n".join(lines)
