"""Section 7, free-threaded scaling: the CPU-bound endpoint on 1 and 2 workers,
then hello world on 2 workers per interpreter and mode, to choose a mode.

corral runs from ``.venv-ft`` (CPython 3.13t, GIL off; ``make venv-ft``) in
thread mode and in process mode, with 1 and 2 workers, plus corral on the
GIL build in thread mode with 1 and 2 workers to show what the GIL does to
the same setup (2 threads cannot beat 1 there). wrk (driven from this, the GIL, interpreter) loads
``GET /cpu``, which is pure-Python arithmetic: a worker can only go faster
by running on another core at the same time. On 2 cores ideal scaling from
1 to 2 workers is 2x, less whatever wrk and the kernel's loopback take.

The mode table serves ``GET /`` (hello world) with 2 workers on the GIL
build in process mode (the default there) and on 3.13t in process and thread
mode, in rotating rounds: throughput, server CPU per request, and the PSS of
each server's whole process group, read while it runs.

CPython 3.14t (``.venv-ft314``, ``make venv-ft314``) adds its own rows to
both tables when this machine could provide it; the report says why not
otherwise.
"""

from __future__ import annotations

import platform
import sys
from dataclasses import dataclass, field

from bench import serving
from bench.apps import CPU_LOOPS
from bench.commands import shown
from bench.load import wrk_argv
from bench.machine import FT314_PYTHON, FT_PYTHON
from bench.memory import footprint
from bench.servers import HOST, ROOT
from bench.serving import Contender, corral_contender
from bench.stats import LoadWindow, Spread

PATH = "/cpu"
CONNECTIONS = 16
FULL_ROUNDS, FULL_SECONDS = 6, 4.0
QUICK_ROUNDS, QUICK_SECONDS = 2, 2.0
HELLO_PATH, HELLO_CONNECTIONS = "/", 64


@dataclass(slots=True)
class Result:
    contenders: list[Contender] = field(default_factory=list)
    rounds: int = 0
    seconds: float = 0.0
    skipped: str | None = None
    window: LoadWindow = field(default_factory=LoadWindow)
    # Hello world, 2 workers, per interpreter and mode; PSS MiB by contender key.
    modes: list[Contender] = field(default_factory=list)
    pss_mib: dict[str, float] = field(default_factory=dict)
    # Why there are no 3.14t rows, if there are none.
    no_314: str | None = None


def _contender(python: str, build: str, mode: str, workers: int) -> Contender:
    return corral_contender(
        f"{build}-{mode}-{workers}",
        f"{build}, {mode} mode, {workers} worker{'s' if workers > 1 else ''}",
        workers=workers,
        mode=mode,
        python=python,
    )


def contenders(quick: bool) -> list[Contender]:
    ft = str(FT_PYTHON)
    made = [_contender(ft, "3.13t", "thread", 1), _contender(ft, "3.13t", "thread", 2)]
    if quick:
        return made
    made += [_contender(ft, "3.13t", "process", 1), _contender(ft, "3.13t", "process", 2)]
    if FT314_PYTHON.exists():
        ft314 = str(FT314_PYTHON)
        made += [_contender(ft314, "3.14t", "thread", 1), _contender(ft314, "3.14t", "thread", 2)]
    gil = f"{platform.python_version()} (GIL)"
    made += [
        _contender(sys.executable, gil, "thread", 1),
        _contender(sys.executable, gil, "thread", 2),
    ]
    return made


def mode_contenders() -> list[Contender]:
    gil = f"{platform.python_version()} (GIL)"
    ft = str(FT_PYTHON)
    made = [
        _contender(sys.executable, gil, "process", 2),
        _contender(ft, "3.13t", "process", 2),
        _contender(ft, "3.13t", "thread", 2),
    ]
    if FT314_PYTHON.exists():
        ft314 = str(FT314_PYTHON)
        made += [_contender(ft314, "3.14t", "process", 2), _contender(ft314, "3.14t", "thread", 2)]
    return made


def _measure_modes(result: Result) -> None:
    """Hello world on 2 workers per interpreter and mode, and each one's PSS."""
    result.modes = mode_contenders()
    try:
        serving.start(result.modes)
        serving.alternate(
            result.modes, HELLO_PATH, result.rounds, result.seconds, HELLO_CONNECTIONS
        )
        for c in result.modes:
            mode = "thread" if "-thread-" in c.key else "process"
            used = footprint(c.running().pid, mode, c.workers)
            result.pss_mib[c.key] = used.pss / 2**20
    finally:
        serving.stop(result.modes)


def run(quick: bool) -> Result:
    result = Result()
    if not FT_PYTHON.exists():
        result.skipped = f"{FT_PYTHON} does not exist; run `make venv-ft`"
        result.window.close()
        return result
    result.contenders = contenders(quick)
    if not FT314_PYTHON.exists():
        result.no_314 = (
            f"{FT314_PYTHON.relative_to(ROOT)} does not exist: `make"
            " venv-ft314` could not provide a free-threaded CPython 3.14 on this machine"
            " (`make bench` keeps its output in build/venv-ft314.log)"
        )
    result.rounds = QUICK_ROUNDS if quick else FULL_ROUNDS
    result.seconds = QUICK_SECONDS if quick else FULL_SECONDS
    try:
        serving.start(result.contenders)
        serving.alternate(result.contenders, PATH, result.rounds, result.seconds, CONNECTIONS)
    finally:
        serving.stop(result.contenders)
    if not quick:
        _measure_modes(result)
    result.window.close()
    return result


def scaling(two: Contender, one: Contender) -> Spread:
    return serving.ratio(two, one)


def render(result: Result) -> str:
    lines = ["## 7. Free-threaded scaling", ""]
    if result.skipped:
        return "\n".join([*lines, f"Not measured: {result.skipped}.", ""])
    singles = {c.key.rsplit("-", 1)[0]: c for c in result.contenders if c.workers == 1}
    lines += [
        f"`GET /cpu` ({CPU_LOOPS:,} iterations of pure-Python arithmetic per request), wrk"
        f" with {CONNECTIONS} connections, {result.rounds} rounds of {result.seconds:g} s in"
        " rotating order. Scaling = each round's 2-worker figure over the same build and"
        " mode's 1-worker figure in that round; ideal on 2 cores is 2x.",
        "",
        "| corral | req/s median (min-max) | p50 ms | p99 ms | 2 workers vs 1, per round |",
        "|---|--:|--:|--:|--:|",
    ]
    for c in result.contenders:
        single = singles.get(c.key.rsplit("-", 1)[0])
        scale = ""
        if c.workers == 2 and single is not None:
            s = scaling(c, single)
            scale = f"{s.median:.2f}x ({s.low:.2f}-{s.high:.2f})"
        lines.append(
            f"| {c.label} | {c.spread('requests_per_second').fmt()}"
            f" | {c.spread('p50_ms').median:.1f} | {c.spread('p99_ms').median:.1f} | {scale} |"
        )
    lines += ["", "![free-threaded scaling](docs/img/ft_scaling.png)", "", *_mode_table(result)]
    if result.no_314:
        lines += [f"No 3.14t rows: {result.no_314}.", ""]
    lines += [
        "- Commands:",
        *[f"  - {c.label}: `{shown(c.argv)}`" for c in [*result.contenders, *result.modes]],
        f"  - load: `{shown(wrk_argv(f'http://{HOST}:PORT{PATH}', result.seconds, CONNECTIONS))}`",
        "",
        result.window.line(),
        "",
    ]
    return "\n".join(lines)


def _mode_table(result: Result) -> list[str]:
    """Which mode on which interpreter: hello world, 2 workers, relative to the GIL build."""
    if not result.modes:
        return []
    base = result.modes[0]  # the GIL build in process mode: the default there
    lines = [
        f"Choosing a mode: `GET /` (hello world), 2 workers, wrk with {HELLO_CONNECTIONS}"
        f" keep-alive connections, {result.rounds} rounds of {result.seconds:g} s in rotating"
        f" order; \"vs\" divides each round's figure by the first row's in that round. PSS is"
        " the sum over the server's whole process group (supervisor, forkserver, workers),"
        " read after the rounds.",
        "",
        "| corral | req/s median (min-max) | vs GIL build, process mode | server CPU µs per"
        " request | PSS MiB |",
        "|---|--:|--:|--:|--:|",
    ]
    for c in result.modes:
        versus = serving.ratio(c, base)
        cpu = Spread.of(c.cpu_us_per_request)
        lines.append(
            f"| {c.label} | {c.spread('requests_per_second').fmt()}"
            f" | {versus.median:.3f} ({versus.low:.3f}-{versus.high:.3f})"
            f" | {cpu.median:.1f} | {result.pss_mib.get(c.key, float('nan')):.1f} |"
        )
    return [*lines, ""]
