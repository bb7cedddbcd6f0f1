"""Section 6, memory: corral's total footprint with N workers, thread mode vs process mode.

corral serves ``bench.apps:app`` with full observability. Once every slot is
ready, each worker has answered a few requests and a second has passed, the
bench sums over every process of corral's process group (supervisor,
forkserver, resource tracker, workers) three figures from ``/proc``:

* RSS (``VmRSS``): what ``ps`` shows. Summed over processes it counts pages
  shared between them (the interpreter, libraries, whatever the forkserver
  preloaded before forking) once per process, so it overstates the total.
* PSS (``Pss`` in ``smaps_rollup``): each page divided by the number of
  processes mapping it. Its sum is the fair total: what the machine spends.
* USS (``Private_Clean + Private_Dirty``): pages only that process maps;
  what killing it would free.

In thread mode there is one process, so the three say nearly the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from bench import serving
from bench.commands import shown
from bench.procfs import group_members, memory_bytes
from bench.scrape import wait_all_ready
from bench.servers import http_get
from bench.serving import corral_contender
from bench.stats import LoadWindow

FULL_COUNTS = (1, 4, 8)
QUICK_COUNTS = (4,)
MODES = ("thread", "process")
SETTLE = 1.0


@dataclass(frozen=True, slots=True)
class Footprint:
    mode: str
    workers: int
    processes: int
    rss: int
    pss: int
    uss: int


@dataclass(slots=True)
class Result:
    rows: list[Footprint] = field(default_factory=list)
    argv: list[list[str]] = field(default_factory=list)
    window: LoadWindow = field(default_factory=LoadWindow)


def footprint(pgid: int, mode: str, workers: int) -> Footprint:
    members = group_members(pgid)
    rss = pss = uss = 0
    for pid in members:
        one = memory_bytes(pid)
        rss, pss, uss = rss + one[0], pss + one[1], uss + one[2]
    return Footprint(mode, workers, len(members), rss, pss, uss)


def run(quick: bool) -> Result:
    result = Result()
    for workers in QUICK_COUNTS if quick else FULL_COUNTS:
        for mode in MODES:
            label = f"corral {mode} x{workers}"
            contender = corral_contender(f"{mode}-{workers}", label, workers=workers, mode=mode)
            result.argv.append(contender.argv)
            try:
                serving.start([contender])
                wait_all_ready(contender, workers)
                for _ in range(workers * 8):
                    http_get(contender.port, "/")
                time.sleep(SETTLE)
                result.rows.append(footprint(contender.running().pid, mode, workers))
            finally:
                serving.stop([contender])
    result.window.close()
    return result


def _mib(value: int) -> str:
    return f"{value / 2**20:.1f}"


def render(result: Result) -> str:
    lines = [
        "## 6. Memory",
        "",
        "corral with full observability, all slots ready, after a few requests each;"
        " sums over every process of corral's process group, MiB.",
        "",
        "| workers | mode | processes | RSS sum | PSS sum | USS sum | PSS vs thread mode |",
        "|--:|---|--:|--:|--:|--:|--:|",
    ]
    threads = {row.workers: row for row in result.rows if row.mode == "thread"}
    for row in result.rows:
        base = threads.get(row.workers)
        rel = f"{row.pss / base.pss:.2f}x" if base and base.pss else ""
        lines.append(
            f"| {row.workers} | {row.mode} | {row.processes} | {_mib(row.rss)}"
            f" | {_mib(row.pss)} | {_mib(row.uss)} | {rel} |"
        )
    lines += [
        "",
        "- RSS counts pages shared between processes once per process, so its sum"
        " overstates; PSS splits each shared page between the processes mapping it, so"
        " its sum is what the machine actually spends; USS is what each process has to"
        " itself. Process mode's processes are the supervisor, multiprocessing's"
        " forkserver and resource tracker, and one per worker (forked from the"
        " forkserver, which preloads uvicorn, so they share those pages).",
        "- Commands:",
        *[f"  - `{shown(argv)}`" for argv in result.argv],
        "",
        result.window.line(),
        "",
    ]
    return "\n".join(lines)
