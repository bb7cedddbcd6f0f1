"""Run every benchmark section and write BENCHMARKS.md and the plots in docs/img/.

``make bench`` runs ``python -m bench.run --output BENCHMARKS.md --plots docs/img``
(about 15 minutes); ``make bench-quick`` runs ``python -m bench.run --quick``, a
~60 second subset that prints its report instead of replacing BENCHMARKS.md,
because every number there must come from the last full run.

Sections, in order (``--only`` picks some, by number):

1. serving overhead (``bench/throughput.py``)
2. recovery after SIGKILL (``bench/recovery.py``)
3. supervisor idle cost (``bench/idle.py``)
4. scrape cost (``bench/scrape.py``)
5. event pipeline (``bench/events.py``)
6. memory (``bench/memory.py``)
7. free-threaded scaling (``bench/ft_scaling.py``)

A section that fails is reported in place and the run goes on; the exit
status is then 1. Each section records the 1-minute load average at its
start and end: the machine may be shared, and readers should see how busy it
was.
"""

from __future__ import annotations

import argparse
import datetime
import importlib
import signal
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType

from bench import (
    events,
    ft_scaling,
    idle,
    memory,
    recovery,
    recovery_report,
    scrape,
    serving,
    throughput,
    throughput_report,
)
from bench.load import require_wrk
from bench.machine import machine_lines
from bench.servers import ROOT, BenchError, Interrupted
from bench.stats import LoadWindow, loadavg, summarize

FULL_KILLS = recovery.DEFAULT_KILLS
QUICK_KILLS = recovery.QUICK_KILLS
RECOVERY_TIME_LIMIT = 400.0
QUICK_RECOVERY = ("corral-process", "uvicorn")
SECTIONS = (1, 2, 3, 4, 5, 6, 7)


@dataclass(slots=True)
class Outcome:
    number: int
    markdown: str
    headline: str
    failed: bool = False


class Runner:
    """Runs the sections, collects their markdown and headlines, draws the plots."""

    def __init__(self, quick: bool, plots: Path | None, invocation: str) -> None:
        self.quick = quick
        self.plots = plots
        self.invocation = invocation

    def _plot(self, draw: Callable[[Path], None], name: str) -> None:
        if self.plots is None:
            return
        self.plots.mkdir(parents=True, exist_ok=True)
        draw(self.plots / name)

    def serving(self) -> tuple[str, str]:
        result = throughput.run(self.quick)
        self._plot(lambda p: _plots().throughput(result.hello, result.cpu, p), "throughput.png")
        corral = next((c for c in result.hello if c.key == "corral"), None)
        reference = next((c for c in result.hello if c.key == throughput.REFERENCE), None)
        headline = "corral or uvicorn missing"
        if corral and reference:
            rel = serving.ratio(corral, reference)
            headline = (
                f"corral (full observability) / uvicorn --workers 2 throughput:"
                f" {rel.median:.3f} (per-round {rel.low:.3f}-{rel.high:.3f}),"
                f" target {throughput.TARGET:.2f}"
            )
        return throughput_report.render(result), headline

    def recovery(self) -> tuple[str, str]:
        kills = QUICK_KILLS if self.quick else FULL_KILLS
        window = LoadWindow()
        keys = QUICK_RECOVERY if self.quick else None
        run = recovery.measure(kills, RECOVERY_TIME_LIMIT, seed=1, keys=keys)
        window.close()
        if run.failure is not None:
            raise BenchError(run.failure + "".join(f"\n  note: {n}" for n in run.notes))
        self._plot(lambda p: _plots().recovery(run.systems, p), "recovery.png")
        section = recovery_report.render_section(
            run.systems, kills, run.started_utc, run.runtime, run.notes, invocation=self.invocation
        )
        section += "\n![recovery](docs/img/recovery.png)\n\n" + window.line() + "\n"
        parts = []
        for system in run.systems:
            stats = summarize([s.serving for s in system.samples])
            if stats is not None:
                parts.append(f"{system.label} {stats.median:.0f}/{stats.p99:.0f}")
        return section, "recovery B (kill → serving) median/p99 ms: " + "; ".join(parts)

    def idle(self) -> tuple[str, str]:
        result = idle.run(self.quick)
        parts = [
            f"{r.contender.label} main {r.per_minute.main:.3f}"
            + (
                f" (loop thread {r.per_minute.supervisor_thread:.3f})"
                if r.per_minute.supervisor_thread is not None
                else ""
            )
            for r in result.rows
        ]
        return idle.render(result), "idle CPU s/min, 8 workers: " + "; ".join(parts)

    def scrape(self) -> tuple[str, str]:
        result = scrape.run(self.quick)
        parts = [
            f"{r.workers}w {r.label}: {sorted(r.latency_ms)[len(r.latency_ms) // 2]:.1f} ms,"
            f" {r.size_bytes / 1024:.0f} KiB"
            for r in result.rows
        ]
        return scrape.render(result), "/metrics median latency and size: " + "; ".join(parts)

    def events(self) -> tuple[str, str]:
        result = events.run(self.quick)
        last = result.configs[-1]
        rate = sorted(last.rates)[len(last.rates) // 2]
        median = sorted(last.medians_us)[len(last.medians_us) // 2]
        headline = f"events, all sinks: {rate:,.0f}/s, {median:.0f} µs per event (median)"
        return events.render(result), headline

    def memory(self) -> tuple[str, str]:
        result = memory.run(self.quick)
        parts = [f"{r.mode} x{r.workers} {r.pss / 2**20:.0f}" for r in result.rows]
        return memory.render(result), "memory, PSS MiB: " + "; ".join(parts)

    def ft(self) -> tuple[str, str]:
        result = ft_scaling.run(self.quick)
        if result.contenders:
            self._plot(lambda p: _plots().ft_scaling(result.contenders, p), "ft_scaling.png")
        singles = {c.key.rsplit("-", 1)[0]: c for c in result.contenders if c.workers == 1}
        parts = []
        for c in result.contenders:
            single = singles.get(c.key.rsplit("-", 1)[0])
            if c.workers == 2 and single is not None:
                parts.append(f"{c.label}: {ft_scaling.scaling(c, single).median:.2f}x")
        text = "; ".join(parts) or (result.skipped or "not measured")
        return ft_scaling.render(result), "free-threaded scaling 1 → 2 workers: " + text

    def run(self, number: int) -> Outcome:
        step: dict[int, Callable[[], tuple[str, str]]] = {
            1: self.serving,
            2: self.recovery,
            3: self.idle,
            4: self.scrape,
            5: self.events,
            6: self.memory,
            7: self.ft,
        }
        print(f"section {number} (load {loadavg():.2f})", file=sys.stderr, flush=True)
        try:
            markdown, headline = step[number]()
        except BenchError as exc:
            text = f"## {number}. Failed\n\nThis section failed in this run: {exc}\n"
            return Outcome(number, text, f"section {number} failed", failed=True)
        except Exception:
            text = f"## {number}. Failed\n\n```\n{traceback.format_exc()}```\n"
            return Outcome(number, text, f"section {number} failed", failed=True)
        return Outcome(number, markdown, headline)


def _plots() -> ModuleType:
    """matplotlib is imported only when a plot is drawn (bench-quick draws none)."""
    return importlib.import_module("bench.plots")


def document(
    outcomes: Sequence[Outcome], quick: bool, started: datetime.datetime, whole: LoadWindow
) -> str:
    mode = "`make bench-quick` (a subset, short runs)" if quick else "`make bench`"
    lines = [
        "# Benchmarks",
        "",
        f"Generated by {mode} on {started:%Y-%m-%d %H:%M} UTC in {whole.seconds / 60:.1f}"
        " minutes; every number below comes from that one run. Do not edit by hand:"
        " re-run `make bench` (it installs wrk and the `bench` group, then runs"
        " `.venv/bin/python -m bench.run --output BENCHMARKS.md --plots docs/img`).",
        "",
        *machine_lines(),
        f"- Load (1-minute average): {whole.start:.2f} at the start of the run,"
        f" {whole.end:.2f} at the end; each section gives its own. This machine has few"
        " cores and may be shared: a load near or above the core count means other work"
        " competed with the servers and with wrk, and single figures are then noisy.",
        "",
        "## Headlines",
        "",
        *[f"- {o.headline}" for o in outcomes],
        "",
    ]
    for outcome in outcomes:
        lines += [outcome.markdown.rstrip("\n"), ""]
    return "\n".join(lines)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="the ~60 s subset")
    parser.add_argument("--output", type=Path, help="write the Markdown report here")
    parser.add_argument("--plots", type=Path, help="write the PNG plots into this directory")
    parser.add_argument(
        "--only",
        type=lambda text: [int(n) for n in text.split(",")],
        default=list(SECTIONS),
        help="comma-separated section numbers (default: all)",
    )
    return parser.parse_args(argv)


def _interrupt(signum: int, frame: object) -> None:
    raise Interrupted(signal.Signals(signum).name)


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    require_wrk()
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    started = datetime.datetime.now(datetime.UTC)
    whole = LoadWindow()
    shown_argv = [".venv/bin/python", "-m", "bench.run", *(argv or sys.argv[1:])]
    runner = Runner(args.quick, args.plots, " ".join(shown_argv))
    outcomes = []
    for number in args.only:
        t0 = time.monotonic()
        outcomes.append(runner.run(number))
        print(f"section {number} took {time.monotonic() - t0:.0f} s", file=sys.stderr)
    whole.close()
    text = document(outcomes, args.quick, started, whole)
    if args.output is not None:
        path = args.output if args.output.is_absolute() else ROOT / args.output
        path.write_text(text)
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        print(text)
    for outcome in outcomes:
        print(f"- {outcome.headline}", file=sys.stderr)
    print(f"bench: {whole.seconds:.0f} s in all", file=sys.stderr)
    return 1 if any(o.failed for o in outcomes) else 0


if __name__ == "__main__":
    sys.exit(main())
