"""Contenders side by side, driven with wrk in rotating rounds: the one way to load a server.

Used by serving overhead (section 1), idle cost, scrape cost, memory and
free-threaded scaling. Every contender is started once and stays up, idle,
while the others are measured; each round runs wrk once against every
contender, in an order that rotates by one each round (A B C, B C A, ...),
so no server always goes first or always follows the same neighbour.
Figures are the median, min and max over rounds.

How evenly load spread over a contender's workers is measured the same way
for every server: the CPU seconds each process of its group used during the
wrk run (from ``/proc``). The ``workers`` busiest processes are its workers;
the busiest one's share of their total is reported (0.5 is perfectly even
with two workers). For corral the per-slot ``corral_http_requests_total``
from ``/metrics`` is reported too. The same CPU readings, summed over the
whole group and divided by the requests wrk completed, give the server's CPU
time per request: less sensitive than req/s to how the kernel spread
connections and to other load on the machine, though not immune to either.
"""

from __future__ import annotations

import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from bench.commands import corral_argv, gunicorn_argv
from bench.load import WrkResult, pinned, run_wrk
from bench.procfs import group_cpu
from bench.servers import (
    HOST,
    BenchError,
    ServerProcess,
    free_port,
    http_get_raw,
    stop_all_servers,
    wait_http,
)
from bench.stats import Spread, ratios

APP = "bench.apps:app"
STARTUP_TIMEOUT = 60.0
WARMUP_SECONDS = 1.0
OBSERVABILITY_OFF = {"OTEL_SDK_DISABLED": "true"}


@dataclass(slots=True)
class Contender:
    """One server configuration under load; ``argv`` is built with its ``port``."""

    key: str
    label: str
    argv: list[str]
    port: int
    workers: int
    metrics_port: int | None = None
    env: dict[str, str] = field(default_factory=dict)
    runs: list[WrkResult] = field(default_factory=list)
    busiest_share: list[float] = field(default_factory=list)
    slot_share: list[float] = field(default_factory=list)
    cpu_us_per_request: list[float] = field(default_factory=list)
    server: ServerProcess | None = None

    def spread(self, attribute: str) -> Spread:
        return Spread.of([getattr(run, attribute) for run in self.runs])

    def running(self) -> ServerProcess:
        assert self.server is not None, "start() first"
        self.server.check_running()
        return self.server

    def twin(self) -> Contender:
        """The same running server, with fresh result lists (to measure another path)."""
        return replace(self, runs=[], busiest_share=[], slot_share=[], cpu_us_per_request=[])


def corral_contender(
    key: str,
    label: str,
    *,
    workers: int,
    mode: str = "process",
    observability: bool = True,
    python: str = sys.executable,
    cpu: str | None = None,
    extra: Sequence[str] = (),
) -> Contender:
    """corral on fresh ports, through its console script (pinned to ``cpu`` if given)."""
    port = free_port()
    metrics_port = free_port() if observability else None
    argv = corral_argv(APP, port, metrics_port, workers=workers, mode=mode, python=python)
    env = {} if observability else dict(OBSERVABILITY_OFF)
    return Contender(key, label, [*pinned(cpu), *argv, *extra], port, workers, metrics_port, env)


def gunicorn_contender(worker_class: str, workers: int) -> Contender:
    """gunicorn with uvicorn's worker class, on a fresh port: the same in every section."""
    port = free_port()
    argv = gunicorn_argv(APP, port, workers, worker_class)
    return Contender("gunicorn", "gunicorn + UvicornWorker", argv, port, workers)


def ratio(contender: Contender, reference: Contender) -> Spread:
    """Each round's throughput over the reference's in the same round."""
    mine = [r.requests_per_second for r in contender.runs]
    return ratios(mine, [r.requests_per_second for r in reference.runs])


def slot_requests(metrics_port: int) -> dict[str, float]:
    """``corral_http_requests_total`` summed per slot, from one /metrics scrape."""
    status, body = http_get_raw(metrics_port, "/metrics", timeout=10.0)
    if status != 200:
        raise BenchError(f"/metrics answered {status}")
    counts: dict[str, float] = {}
    for labels, value in re.findall(_REQUESTS_LINE, body, re.MULTILINE):
        slot = re.search(r'slot="(\d+)"', labels)
        if slot:
            counts[slot.group(1)] = counts.get(slot.group(1), 0.0) + float(value)
    return counts


_REQUESTS_LINE = r"^corral_http_requests_total\{([^}]*)\} ([0-9.e+]+)$"


def start(contenders: Sequence[Contender], path: str = "/") -> None:
    """Start each contender and wait until ``GET path`` answers 200."""
    for contender in contenders:
        print(f"  starting {contender.label}", file=sys.stderr, flush=True)
        contender.server = ServerProcess(contender.label, contender.argv, contender.env)
        wait_http(contender.port, path, STARTUP_TIMEOUT, contender.server)


def stop(contenders: Sequence[Contender]) -> None:
    """Stop every started contender, whatever happens; print what was unclean."""
    servers = [c.server for c in contenders if c.server is not None]
    for note in stop_all_servers(servers):
        print(f"  note: {note}", file=sys.stderr)


def _busiest_share(before: dict[int, float], after: dict[int, float], workers: int) -> float:
    used = sorted((after[p] - before.get(p, 0.0) for p in after), reverse=True)[:workers]
    total = sum(used)
    return used[0] / total if total > 0 else float("nan")


def measure_once(
    contender: Contender, path: str, seconds: float, connections: int, *, wrk_cpu: str | None = None
) -> WrkResult:
    """One wrk run, with the CPU each process used and (corral) each slot's requests."""
    pgid = contender.running().pid
    slots_before = slot_requests(contender.metrics_port) if contender.metrics_port else {}
    cpu_before = group_cpu(pgid)
    result = run_wrk(f"http://{HOST}:{contender.port}{path}", seconds, connections, cpu=wrk_cpu)
    cpu_after = group_cpu(pgid)
    contender.busiest_share.append(_busiest_share(cpu_before, cpu_after, contender.workers))
    if result.requests:
        used = sum(after - cpu_before.get(pid, 0.0) for pid, after in cpu_after.items())
        contender.cpu_us_per_request.append(used * 1e6 / result.requests)
    if contender.metrics_port:
        slots_after = slot_requests(contender.metrics_port)
        served = [slots_after[s] - slots_before.get(s, 0.0) for s in slots_after]
        if sum(served) > 0:
            contender.slot_share.append(max(served) / sum(served))
    return result


def alternate(
    contenders: Sequence[Contender],
    path: str,
    rounds: int,
    seconds: float,
    connections: int,
    *,
    wrk_cpu: str | None = None,
) -> None:
    """Warm each contender up, then ``rounds`` rounds in rotating order."""
    for contender in contenders:
        url = f"http://{HOST}:{contender.port}{path}"
        run_wrk(url, WARMUP_SECONDS, connections, cpu=wrk_cpu)
    order = list(contenders)
    for number in range(rounds):
        for contender in order:
            result = measure_once(contender, path, seconds, connections, wrk_cpu=wrk_cpu)
            contender.runs.append(result)
        summary = ", ".join(f"{c.key} {c.runs[-1].requests_per_second:,.0f}" for c in contenders)
        print(f"  round {number + 1}/{rounds} ({path}): {summary}", file=sys.stderr, flush=True)
        order = order[1:] + order[:1]
        time.sleep(0.2)
