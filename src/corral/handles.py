"""The supervisor's handle on one worker incarnation, whatever its kind.

Every kind (``ProcessWorker`` in ``process_worker``, ``ThreadWorker`` in
``thread_worker``, ``StillbornWorker`` here) exposes the same small surface:
the pid or thread id, ``drain``/``force_stop``/``kill``, and how to read its
heartbeat and stacks. Where the incarnation is in its life is one value,
``life`` (an ``incarnation.Incarnation``), which only the supervisor's loop
replaces, through ``incarnation.step``.

Death is *signalled*, never polled for:

* a process's multiprocessing sentinel becomes readable when it exits;
* a thread posts ``WorkerExited`` to the supervisor's mailbox from its
  ``finally`` block, which also wakes the supervisor's selector.
"""

from __future__ import annotations

import abc
import time
from dataclasses import dataclass

from corral.incarnation import ExitInfo, Incarnation
from corral.request_stats.pool import StatsLease
from corral.worker_messages import WorkerSpec

__all__ = ["ExitInfo", "StillbornWorker", "WorkerExited", "WorkerHandle"]


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """Posted by a thread worker as the very last thing it does, and by the
    supervisor for a worker that could not even be started."""

    slot: int
    generation: int
    info: ExitInfo


class WorkerHandle(abc.ABC):
    """What the supervisor holds for one incarnation, whatever its kind."""

    # Whether the last resort (SIGKILL) exists for this kind; a thread has none.
    KILLABLE = False

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.started_monotonic = time.monotonic()
        self.started_wall = time.time()
        self.life = Incarnation(killable=self.KILLABLE, started=self.started_monotonic)
        self.exit_info: ExitInfo | None = None
        self.stats_lease: StatsLease | None = None  # its request-metrics block, if any
        self.boot_message: str | None = None  # BootFailed, from a process worker
        self.raised_message: str | None = None  # Raised, from a process worker

    @property
    def slot(self) -> int:
        return self.spec.slot

    @property
    def generation(self) -> int:
        return self.spec.generation

    @property
    @abc.abstractmethod
    def pid(self) -> int | None: ...

    @property
    @abc.abstractmethod
    def thread_id(self) -> int | None: ...

    @abc.abstractmethod
    def start(self) -> None: ...

    @abc.abstractmethod
    def drain(self) -> None: ...

    @abc.abstractmethod
    def force_stop(self) -> None: ...

    def promote(self, slot: int, generation: int) -> None:  # noqa: B027 - no-op by default
        """Tell a warm spare to take ``slot`` as ``generation`` and start accepting."""

    def kill(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """Last resort once ``force_stop`` was ignored; a no-op where impossible."""

    def last_sign_of_life(self) -> float:
        """Monotonic time of its last heartbeat, or of its spawn if it never beat."""
        heartbeat = self.spec.heartbeat
        last = heartbeat.last() if heartbeat is not None else 0.0
        return max(last, self.started_monotonic)

    def request_stack_dump(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """Ask the worker to write its Python stacks where ``stack_dump`` will find them."""

    def stack_dump(self) -> str:
        """The Python stacks of a hung worker, as text, for the log."""
        return ""

    def close(self) -> None:  # noqa: B027 - deliberately a no-op by default
        """Release the handle's resources once it is dead and accounted for."""


class StillbornWorker(WorkerHandle):
    """Stands in for an incarnation whose creation failed (out of fds, say), so the
    failure goes through the same crash accounting and backoff as any other."""

    @property
    def pid(self) -> int | None:
        return None

    @property
    def thread_id(self) -> int | None:
        return None

    def start(self) -> None:
        pass

    def drain(self) -> None:
        pass

    def force_stop(self) -> None:
        pass
