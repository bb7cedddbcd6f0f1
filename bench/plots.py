"""The figures in docs/img/: throughput bars, recovery distributions, free-threaded scaling.

matplotlib is a bench-only dependency (the ``bench`` dependency group); it is imported
here only, with the non-interactive Agg backend.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import matplotlib as mpl

mpl.use("Agg")

import matplotlib.pyplot as plt
from matplotlib.axes import Axes

from bench.recovery_systems import Sample, System
from bench.serving import Contender

DPI = 110


def _spawned(sample: Sample) -> float:
    return sample.spawned


def _serving(sample: Sample) -> float:
    return sample.serving


INTERVALS: tuple[tuple[str, Callable[[Sample], float]], ...] = (
    ("A: kill → replacement exists", _spawned),
    ("B: kill → replacement serving", _serving),
)


def _bars(ax: Axes, contenders: Sequence[Contender], title: str) -> None:
    labels = [c.label for c in contenders]
    spreads = [c.spread("requests_per_second") for c in contenders]
    medians = [s.median for s in spreads]
    below = [s.median - s.low for s in spreads]
    above = [s.high - s.median for s in spreads]
    colors = ["tab:green" if c.key.startswith("corral") else "tab:gray" for c in contenders]
    ax.barh(labels, medians, xerr=[below, above], color=colors, capsize=4)
    ax.invert_yaxis()
    ax.set_xlabel("requests per second (median, bars: min-max over rounds)")
    ax.set_title(title)
    for y, value in enumerate(medians):
        ax.text(0, y, f" {value:,.0f}", va="center", ha="left", fontsize=8, color="white")


def throughput(hello: Sequence[Contender], cpu: Sequence[Contender], path: Path) -> None:
    rows = 2 if cpu else 1
    fig, axes = plt.subplots(rows, 1, figsize=(9, 3.2 * rows), squeeze=False)
    _bars(axes[0][0], hello, "GET / (hello world), 2 workers")
    if cpu:
        _bars(axes[1][0], cpu, "GET /cpu (pure-Python work), 2 workers")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def recovery(systems: Sequence[System], path: Path) -> None:
    measured = [s for s in systems if s.available and s.samples]
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), sharey=True)
    for ax, (name, pick) in zip(axes, INTERVALS, strict=True):
        data = [[pick(sample) * 1000 for sample in system.samples] for system in measured]
        ax.boxplot(data, vert=False, whis=(0, 100))
        for y, values in enumerate(data, start=1):
            ax.scatter(values, [y] * len(values), s=8, alpha=0.5, color="tab:blue")
        ax.set_xscale("log")
        ax.set_xlabel("milliseconds (log scale)")
        ax.set_title(name)
    axes[0].set_yticks(range(1, len(measured) + 1), [s.label for s in measured])
    axes[0].invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)


def ft_scaling(contenders: Sequence[Contender], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(9, 3.2))
    _bars(ax, contenders, "GET /cpu: corral on the free-threaded and the GIL build, 1 vs 2 workers")
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
