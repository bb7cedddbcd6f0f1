"""Spawning and reaping worker incarnations: threads, or forkserver processes.

The spawner knows how to start the next incarnation of a slot and how to
watch it; it decides nothing about *when* (that is the coordinator's and the
policy's business). A worker that cannot even be started (out of fds, say)
is not an error here: it becomes a ``StillbornWorker`` whose exit is posted
to the mailbox, so it goes through the same crash accounting and backoff as
any other failure.
"""

from __future__ import annotations

import contextlib
import random
import selectors
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from multiprocessing.context import BaseContext

import structlog

from corral.appload import ASGIApp
from corral.config import ServerConfig
from corral.forkserver_context import WorkerContext
from corral.handles import ExitInfo, StillbornWorker, WorkerExited, WorkerHandle
from corral.incarnation import Incarnation, Timing
from corral.lifecycle.events import EventKind
from corral.liveness import Heartbeat
from corral.process_worker import ProcessWorker
from corral.request_stats.pool import RequestStatsPool
from corral.runtime import WorkerMode
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Slot
from corral.thread_worker import ThreadWorker
from corral.worker_messages import WorkerSpec

log = structlog.get_logger("corral.supervisor")

# Called with a process worker whose sentinel (it died) or events pipe (it spoke) is readable.
ProcessCallback = Callable[[ProcessWorker], None]


@dataclass(frozen=True, slots=True)
class Started:
    """An incarnation that runs but is not announced yet, and when it was started."""

    handle: WorkerHandle
    at: float  # time.monotonic() once the process or thread existed (or failed to)


class Spawner:
    """Starts incarnations of ``app`` on the supervisor's sockets and watches them."""

    def __init__(
        self,
        config: ServerConfig,
        mode: WorkerMode,
        *,
        app: ASGIApp,
        app_path: str | None,
        ssl_context: ssl.SSLContext | None,
        request_stats: RequestStatsPool | None,
        emitter: Emitter,
        selector: selectors.BaseSelector,
        post: Callable[[object], None],
        on_process_died: ProcessCallback,
        on_process_spoke: ProcessCallback,
    ) -> None:
        self.config = config
        self.mode = mode
        self.app = app  # replaced by a thread-mode reload
        self.sockets: list[socket.socket] = []
        self._app_path = app_path
        self._ssl_context = ssl_context
        self._request_stats = request_stats
        self._emitter = emitter
        self._selector = selector
        self._post = post
        self._timing = Timing.from_config(config)
        self._ctx: BaseContext | None = None
        self._on_died = on_process_died
        self._on_spoke = on_process_spoke

    def spawn(self, slot: Slot, *, spare: bool = False) -> WorkerHandle:
        """Start the slot's next incarnation and announce it; the caller places it."""
        return self.announce(self.start(slot, spare=spare))

    def start(self, slot: Slot, *, spare: bool = False) -> Started:
        """Start the slot's next incarnation without a word: ``announce`` must follow.

        Split so that a respawn can ask the forkserver first and report the crash
        while the replacement boots (``Restarts.on_failed``).
        """
        slot.generation += 1
        lease = self._request_stats.acquire(slot.index) if self._request_stats else None
        spec = WorkerSpec(
            slot.index,
            slot.generation,
            self.mode,
            self.config,
            self._app_path,
            stats_path=lease.path if lease else None,
            heartbeat=self._new_heartbeat(),
            request_limit=self._request_limit(),
            spare=spare,
        )
        try:
            handle = self._start(spec)
        except (OSError, RuntimeError) as exc:
            log.error("could not start worker", slot=slot.index, error=str(exc))
            handle = StillbornWorker(spec)
            info = ExitInfo(message=f"could not start: {exc}")
            self._post(WorkerExited(slot.index, slot.generation, info))
        at = time.monotonic()
        handle.stats_lease = lease
        handle.life = Incarnation.spawned(
            killable=handle.KILLABLE, now=handle.started_monotonic, timing=self._timing
        )
        return Started(handle, at)

    def announce(self, started: Started) -> WorkerHandle:
        """The ``spawn`` event, stamped with when the incarnation was started."""
        self._emitter.emit(EventKind.SPAWN, started.handle, at=started.at)
        return started.handle

    def hand_over(self, spare: WorkerHandle, slot: Slot) -> None:
        """A warm spare becomes ``slot``'s next incarnation, and is told so at once.

        Its spec (the supervisor's copy) names the slot from here on, so what
        it reports next is found in the slot; its request metrics count for
        the slot from here on too.
        """
        slot.generation += 1
        spare.spec = replace(spare.spec, slot=slot.index, generation=slot.generation, spare=False)
        if spare.stats_lease is not None and self._request_stats is not None:
            spare.stats_lease = self._request_stats.reassign(spare.stats_lease, slot.index)
        spare.promote(slot.index, slot.generation)

    def bury(self, handle: WorkerHandle) -> None:
        """Release what a dead (or abandoned) incarnation held."""
        if isinstance(handle, ProcessWorker):
            for fileobj in (handle.sentinel, handle.events):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fileobj)
        handle.close()
        if handle.stats_lease is not None and self._request_stats is not None:
            # Dead: its counts are final, so they are folded into the slot's.
            self._request_stats.release(handle.stats_lease)
            handle.stats_lease = None

    def stop_listening_to(self, handle: ProcessWorker) -> None:
        """Its events pipe hit EOF: it is exiting, and the sentinel will say how."""
        with contextlib.suppress(KeyError, ValueError):
            self._selector.unregister(handle.events)

    def _context(self) -> BaseContext:
        """The forkserver context: children fork from a clean, single-threaded server
        that has uvicorn preloaded, never from this (multi-threaded) process, and
        do not re-run this process's ``__main__`` (see ``forkserver_context``)."""
        if self._ctx is None:
            ctx = WorkerContext()
            # Preloads uvicorn, and makes the forkserver outlive group-wide signals.
            ctx.set_forkserver_preload(["corral.forkserver_init"])
            self._ctx = ctx
        return self._ctx

    def _new_heartbeat(self) -> Heartbeat | None:
        if not self.config.worker_timeout:
            return None
        if self.mode is WorkerMode.THREAD:
            return Heartbeat.in_process()
        return Heartbeat.shared(self._context())

    def _request_limit(self) -> int:
        """This incarnation's --max-requests, jittered so that workers recycle apart."""
        limit = self.config.max_requests
        if not limit:
            return 0
        return limit + random.randint(0, self.config.max_requests_jitter)

    def _start(self, spec: WorkerSpec) -> WorkerHandle:
        if self.mode is WorkerMode.THREAD:
            thread = ThreadWorker(spec, self.app, self.sockets, self._post, self._ssl_context)
            try:
                thread.start()
            except BaseException:
                thread.close()
                raise
            return thread
        process = ProcessWorker(spec, self.sockets, self._context())
        try:
            process.start()
        except BaseException:
            process.close()
            raise
        died, spoke = self._on_died, self._on_spoke
        self._selector.register(process.sentinel, selectors.EVENT_READ, lambda _: died(process))
        self._selector.register(process.events, selectors.EVENT_READ, lambda _: spoke(process))
        return process
