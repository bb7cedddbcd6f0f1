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

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from bench import serving
from bench.common import LoadWindow, group_members, shown
from bench.recovery import http_get
from bench.scrape import wait_all_ready
from bench.serving import Contender, corral_argv

APP = "bench.apps:app"
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


def _kib_fields(path: Path, names: tuple[str, ...]) -> dict[str, int]:
    found = dict.fromkeys(names, 0)
    try:
        text = path.read_text()
    except OSError:
        return found
    for line in text.splitlines():
        key, _, rest = line.partition(":")
        if key in found:
            found[key] = int(rest.split()[0]) * 1024
    return found


def footprint(pgid: int, mode: str, workers: int) -> Footprint:
    rss = pss = uss = 0
    members = group_members(pgid)
    for pid in members:
        rss += _kib_fields(Path(f"/proc/{pid}/status"), ("VmRSS",))["VmRSS"]
        rollup = _kib_fields(
            Path(f"/proc/{pid}/smaps_rollup"), ("Pss", "Private_Clean", "Private_Dirty")
        )
        pss += rollup["Pss"]
        uss += rollup["Private_Clean"] + rollup["Private_Dirty"]
    return Footprint(mode, workers, len(members), rss, pss, uss)


def run(quick: bool) -> Result:
    result = Result()
    for workers in QUICK_COUNTS if quick else FULL_COUNTS:
        for mode in MODES:
            port, mport = serving.new_port(), serving.new_port()
            argv = corral_argv(sys.executable, APP, port, mport, workers=workers, mode=mode)
            contender = Contender(f"{mode}-{workers}", f"corral {mode} x{workers}", argv, port, 1)
            contender.metrics_port = mport
            result.argv.append(argv)
            try:
                serving.start([contender], "/")
                wait_all_ready(contender, workers)
                for _ in range(workers * 8):
                    http_get(port, "/")
                time.sleep(SETTLE)
                assert contender.server is not None
                result.rows.append(footprint(contender.server.pid, mode, workers))
            finally:
                for note in serving.stop([contender]):
                    print(f"  note: {note}", file=sys.stderr)
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
