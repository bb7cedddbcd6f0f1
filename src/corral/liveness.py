"""Heartbeats: how the supervisor tells a hung worker from a busy one, without polling.

Each worker stamps ``time.monotonic()`` into its own shared 8-byte cell from
uvicorn's 0.1 s main-loop tick, so a stamp is proof that the worker's event
loop ran recently. ``CLOCK_MONOTONIC`` is system-wide on Linux, so a stamp made
in a worker process compares directly with the supervisor's clock.

The supervisor never wakes up to look at the cells. It keeps, per worker, one
deadline: last sign of life + ``--worker-timeout`` (+ one tick). Only when that
deadline comes does it read the cell; if the worker beat in the meantime the
deadline simply moves on. So with the default 30 s timeout an idle supervisor
wakes once per worker per 30 s, and a loop blocked for longer than the timeout
is caught at most one tick after the timeout has passed.

The cell is written by one thread or process and read by another, with no lock:
a lock shared with a process that may be SIGKILLed while holding it would hang
the supervisor. An aligned 8-byte store is one instruction on the platforms we
run on, but nothing in C guarantees it, so ``last`` reads until two reads agree:
a torn value can never be returned twice in a row.
"""

from __future__ import annotations

import ctypes
import time
from multiprocessing.context import BaseContext
from typing import Any

# uvicorn's main loop ticks every 0.1 s; workers beat on that tick.
TICK_SECONDS = 0.1


class Heartbeat:
    """One worker's last sign of life: a monotonic timestamp it writes, its supervisor reads."""

    __slots__ = ("_cell",)

    def __init__(self, cell: Any) -> None:
        self._cell = cell

    @classmethod
    def in_process(cls) -> Heartbeat:
        """For a thread worker: plain memory in this process."""
        return cls(ctypes.c_double(time.monotonic()))

    @classmethod
    def shared(cls, ctx: BaseContext) -> Heartbeat:
        """For a process worker: shared memory that pickles across the forkserver."""
        return cls(ctx.RawValue(ctypes.c_double, time.monotonic()))

    def beat(self) -> None:
        self._cell.value = time.monotonic()

    def last(self) -> float:
        previous = float(self._cell.value)
        while True:
            current = float(self._cell.value)
            if current == previous:
                return current
            previous = current


def next_check(last_sign_of_life: float, timeout: float) -> float:
    """When to look again: a loop silent past this moment was blocked for over ``timeout``."""
    return last_sign_of_life + timeout + TICK_SECONDS
