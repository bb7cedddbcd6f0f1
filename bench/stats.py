"""Statistics every section reports with, and the load window each section records."""

from __future__ import annotations

import math
import os
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class Spread:
    """The median of several runs with the lowest and highest, as the issue asks."""

    median: float
    low: float
    high: float
    n: int

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        if not values:
            return cls(math.nan, math.nan, math.nan, 0)
        return cls(statistics.median(values), min(values), max(values), len(values))

    def fmt(self, digits: int = 0) -> str:
        return f"{self.median:,.{digits}f} ({self.low:,.{digits}f}-{self.high:,.{digits}f})"


def percentile(values: Sequence[float], q: float) -> float:
    """Nearest-rank percentile; with 30 samples p99 is the maximum."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]


@dataclass(frozen=True, slots=True)
class Stats:
    """A spread with its p99, for latencies where the tail matters."""

    n: int
    median: float
    p99: float
    low: float
    high: float


def summarize(seconds: Sequence[float]) -> Stats | None:
    """Milliseconds from seconds; ``None`` when there is nothing to summarize."""
    if not seconds:
        return None
    ms = [v * 1000.0 for v in seconds]
    spread = Spread.of(ms)
    return Stats(spread.n, spread.median, percentile(ms, 99), spread.low, spread.high)


def ratios(mine: Sequence[float], theirs: Sequence[float]) -> Spread:
    """Each round's figure over the other's in the same round."""
    return Spread.of([a / b for a, b in zip(mine, theirs, strict=True)])


def loadavg() -> float:
    """The 1-minute load average: how busy the machine was around a measurement."""
    return os.getloadavg()[0]


@dataclass(slots=True)
class LoadWindow:
    """The 1-minute load average at the start and the end of one bench section."""

    start: float = field(default_factory=loadavg)
    end: float = math.nan
    began: float = field(default_factory=time.monotonic)
    seconds: float = math.nan

    def close(self) -> None:
        self.end = loadavg()
        self.seconds = time.monotonic() - self.began

    def line(self) -> str:
        return (
            f"Load (1-minute average) {self.start:.2f} at the start, {self.end:.2f} at the end;"
            f" {self.seconds:.0f} s."
        )
