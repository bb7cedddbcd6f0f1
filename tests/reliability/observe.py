"""What a scenario observes: lifecycle events in each sink, and the supervisor's resources.

Every lifecycle event is seen three ways (README): a structlog line on
stdout, the ``corral_lifecycle_events_total{kind}`` counter on ``/metrics``,
and an OpenTelemetry span. A scenario counts each kind in every sink it can
still reach, so the report shows "expected N, seen N / N / N" rather than
trusting one of them.
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass

import psutil

from tests.conftest import CorralProcess, Metrics
from tests.otlp_receiver import OtlpReceiver

SPAN_SETTLE = 15.0


@dataclass(frozen=True, slots=True)
class SinkCount:
    """One event kind: what the scenario expected and what each sink holds.

    ``None`` means the sink could not be asked (say, ``/metrics`` after exit).
    """

    kind: str
    expected: str
    log: int
    metrics: int | None
    spans: int | None

    def consistent(self) -> bool:
        """The sinks that were asked agree with the log."""
        return all(seen in (None, self.log) for seen in (self.metrics, self.spans))


def sink_counts(
    server: CorralProcess,
    expected: dict[str, str],
    metrics: Metrics | None,
    spans: OtlpReceiver | None,
) -> list[SinkCount]:
    """Count each kind in ``expected`` in the log, the given scrape and the span receiver.

    Spans are exported in batches (every 100 ms) and a drain's span only ends
    with the drain, so this first gives the receiver up to ``SPAN_SETTLE``
    seconds to catch up with the log; whatever it holds then is reported.
    """
    if spans is not None:
        receiver = spans
        deadline = time.monotonic() + SPAN_SETTLE
        while time.monotonic() < deadline and any(
            receiver.count(kind) < len(server.events(kind)) for kind in expected
        ):
            time.sleep(0.05)
    return [
        SinkCount(
            kind=kind,
            expected=want,
            log=len(server.events(kind)),
            metrics=None
            if metrics is None
            else int(metrics.sum("corral_lifecycle_events_total", kind=kind)),
            spans=None if spans is None else spans.count(kind),
        )
        for kind, want in expected.items()
    ]


def untracked_incarnations(server: CorralProcess) -> list[tuple[int, int]]:
    """(slot, generation) of workers that were spawned, never ended, and are not current.

    Every incarnation must end in a crash, exit or drain_end event, or be the
    one ``/workers`` shows for its slot; anything else runs on untracked.
    """
    ended = {
        (e["slot"], e["generation"])
        for kind in ("crash", "exit", "drain_end")
        for e in server.events(kind)
    }
    rows = server.side("/workers").json()["workers"]
    current = {(row["slot"], row["generation"]) for row in rows}
    spawned = {(e["slot"], e["generation"]) for e in server.events("spawn")}
    return sorted(spawned - ended - current)


@dataclass(frozen=True, slots=True)
class Resources:
    """One process's own figures (children excluded), from psutil."""

    cpu_seconds: float  # user + system since it started
    rss_bytes: int
    fds: int  # entries in /proc/<pid>/fd
    threads: int
    children: int  # live descendants (workers, the forkserver)

    @property
    def rss_mib(self) -> float:
        return self.rss_bytes / 2**20


def sample(pid: int) -> Resources:
    process = psutil.Process(pid)
    with process.oneshot():
        times = process.cpu_times()
        return Resources(
            cpu_seconds=times.user + times.system,
            rss_bytes=process.memory_info().rss,
            fds=process.num_fds(),
            threads=process.num_threads(),
            children=len(_live_children(process)),
        )


def _live_children(process: psutil.Process) -> list[psutil.Process]:
    alive = []
    for child in process.children(recursive=True):
        with contextlib.suppress(psutil.Error):
            if child.status() != psutil.STATUS_ZOMBIE:
                alive.append(child)
    return alive


def descendants(pid: int) -> list[int]:
    """Pids of ``pid``'s live descendants; empty if ``pid`` is gone."""
    try:
        return [child.pid for child in _live_children(psutil.Process(pid))]
    except psutil.NoSuchProcess:
        return []
