"""The uvicorn engine adapter: what runs *inside* a worker, thread or process.

A worker serves the app with uvicorn's ``Server`` on sockets the supervisor
created. The supervisor owns every signal, so the engine installs no handlers;
it is told to drain or to stop through thread-safe methods (thread mode) or a
control pipe (process mode). It reports ``Ready`` once lifespan startup has
completed and its listeners accept connections.
"""

from __future__ import annotations

import asyncio
import contextlib
import faulthandler
import os
import signal
import socket
import ssl
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Generator
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection

import structlog
import uvicorn
from uvicorn.config import STARTUP_FAILURE

from corral.appload import ASGIApp, load_app
from corral.errors import AppImportError
from corral.liveness import TICK_SECONDS
from corral.logs import configure_logging
from corral.request_stats.recorder import RequestRecorder, open_recorder
from corral.runtime import WorkerMode
from corral.uvicorn_config import build_uvicorn_config
from corral.worker_messages import (
    BootFailed,
    ControlCommand,
    Promote,
    Raised,
    Ready,
    Recycle,
    Report,
    WorkerMessage,
    WorkerSpec,
)

# How long an orphaned worker (its supervisor died) may spend draining.
ORPHAN_GRACE_SECONDS = 1.0
EXIT_APP_IMPORT = 4
EXIT_ORPHANED = 70
EXIT_RAISED = 71
# Asks a hung process worker for its Python stacks (see ``process_main``).
DUMP_STACKS_SIGNAL = signal.SIGUSR1


@dataclass(frozen=True, slots=True)
class WorkerIdentity:
    """Which worker is running the current code, for apps that want to log or expose it."""

    slot: int
    generation: int
    mode: WorkerMode


_local = threading.local()


def current_worker() -> WorkerIdentity | None:
    """The identity of the worker serving on this thread, or ``None`` outside corral.

    Each worker runs its event loop on one thread (its own in thread mode, the
    main thread of its process in process mode), so a thread-local is exact.
    """
    identity: WorkerIdentity | None = getattr(_local, "identity", None)
    return identity


def _enter_worker(spec: WorkerSpec) -> None:
    _local.identity = WorkerIdentity(spec.slot, spec.generation, spec.mode)
    structlog.contextvars.bind_contextvars(worker_slot=spec.slot, worker_generation=spec.generation)


# --- The engine ---------------------------------------------------------------


class _Server(uvicorn.Server):
    """uvicorn's server with signal handling removed and loop-start, ready and tick hooks.

    ``hold``, for a spare, runs between lifespan startup and the first
    ``create_server``: it returns True once the spare is promoted (go on and
    accept), False if it was told to stop first.
    """

    def __init__(
        self,
        config: uvicorn.Config,
        on_loop: Callable[[asyncio.AbstractEventLoop], None],
        on_ready: Callable[[], None],
        on_tick: Callable[[int], None],
        hold: Callable[[], Awaitable[bool]] | None = None,
    ) -> None:
        super().__init__(config)
        self._on_loop = on_loop
        self._on_ready = on_ready
        self._on_tick = on_tick
        self._hold = hold

    @contextlib.contextmanager
    def capture_signals(self) -> Generator[None, None, None]:
        yield  # the supervisor owns signals

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        self._on_loop(asyncio.get_running_loop())
        if self._hold is not None and not await self._warm_up_and_hold():
            return
        await super().startup(sockets)
        if self.started:
            self._on_ready()

    async def _warm_up_and_hold(self) -> bool:
        """A spare's lifespan startup, then the wait for its promotion.

        uvicorn's ``startup`` runs the lifespan startup and then listens; a spare
        runs the first half here and, once promoted, lets uvicorn's run the rest
        with the lifespan already started. Told to stop before that, it runs the
        app's lifespan shutdown itself: uvicorn only does for a server that started.
        """
        assert self._hold is not None
        lifespan = self.lifespan
        await lifespan.startup()
        if lifespan.should_exit:
            sys.exit(STARTUP_FAILURE)  # what uvicorn's own startup does
        if not await self._hold():
            self.should_exit = True
            await lifespan.shutdown()
            return False
        lifespan.startup = _started_already
        return True

    async def on_tick(self, counter: int) -> bool:
        """uvicorn's own 0.1 s tick: a free place for per-worker housekeeping."""
        self._on_tick(self.server_state.total_requests)
        return await super().on_tick(counter)

    async def serve(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().serve(sockets)
        finally:
            await self._release()

    async def _release(self) -> None:
        """However ``serve`` ended, leave nothing on this loop: stop accepting, see every
        other task to its end, then close every connection.

        When the loop dies under a worker (the app stopped it, say), ``asyncio.run``
        cancels the tasks it finds and closes the loop, but this worker's listeners
        were still accepting during that clean-up: a connection accepted then got a
        task nobody cancelled, which was left pending on the closed loop until the
        garbage collector destroyed it, on whichever thread, while its client waited.
        A dead process's connections are closed by the kernel; a dead thread worker
        must close its own. On a graceful stop this finds nothing left to do.
        """
        for server in getattr(self, "servers", []):
            server.close()
        current = asyncio.current_task()
        others = [task for task in asyncio.all_tasks() if task is not current]
        for task in others:
            if task.cancelling() == 0:  # those cancelled already are finishing up
                task.cancel()
        if others:
            await asyncio.gather(*others, return_exceptions=True)
        for connection in list(self.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()


async def _started_already() -> None:
    """Stands in for a promoted spare's lifespan startup, which ran before it waited."""


class WorkerEngine:
    """One app served on the given sockets; ``drain`` and ``force_stop`` are thread-safe.

    Everything that touches the uvicorn server runs on the worker's own event
    loop thread: asyncio objects are not thread-safe, with or without a GIL.
    ``drain`` and ``force_stop`` may come from any thread (the supervisor, a
    process worker's control thread, a signal handler) at any point of the
    worker's life, so the engine keeps, under ``_control_lock``, which stage
    its loop is at: not started yet (the request is kept and run first thing
    once the loop starts), running (handed over with
    ``call_soon_threadsafe``), or finished (nothing left to stop; the worker
    is exiting and its supervisor will hear so).
    """

    def __init__(
        self,
        spec: WorkerSpec,
        app: ASGIApp,
        sockets: list[socket.socket],
        report: Report,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.spec = spec
        self._sockets = sockets
        self._report = report
        # Requests are counted by the protocols uvicorn serves with (see
        # ``build_uvicorn_config``), not by a wrapper around the app.
        self._recorder: RequestRecorder | None = None
        if spec.stats_path is not None:
            self._recorder = open_recorder(spec.stats_path)
        try:
            serving = build_uvicorn_config(spec.config, app, ssl_context, self._recorder)
        except BaseException:
            if self._recorder is not None:
                self._recorder.close()
            raise
        uv_config = serving.config
        self._wsgi_pool = serving.wsgi_pool
        hold = self._hold_as_spare if spec.spare else None
        self._server = _Server(
            uv_config, self._loop_started, self._announce_ready, self._tick, hold
        )
        self._recycle_asked = False
        # Re-entrant: in a process worker, the SIGTERM handler calls ``drain``
        # on the loop's own thread, possibly while that thread holds the lock.
        self._control_lock = threading.RLock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._loop_finished = False
        self._pending: list[Callable[[], None]] = []
        # A spare's promotion: where it goes (set by ``promote``, from any thread)
        # and what wakes its wait (made on the loop, set on the loop).
        self._promote_to: Promote | None = None
        self._spare_wake: asyncio.Event | None = None

    def _announce_ready(self) -> None:
        spec = self.spec
        self._report(Ready(spec.slot, spec.generation, os.getpid(), threading.get_native_id()))

    def _tick(self, requests_served: int) -> None:
        """On the loop's thread, every 0.1 s: prove the loop runs; ask to be recycled."""
        spec = self.spec
        if spec.heartbeat is not None:
            spec.heartbeat.beat()
        limit = spec.request_limit
        if limit and requests_served >= limit and not self._recycle_asked:
            self._recycle_asked = True
            self._report(Recycle(spec.slot, spec.generation, requests_served))

    def run(self) -> None:
        """Serve until drained or stopped. Raises ``SystemExit`` if lifespan startup fails."""
        _enter_worker(self.spec)
        try:
            self._server.run(sockets=self._sockets)
        finally:
            if self._recorder is not None:
                self._recorder.close()
            if self._wsgi_pool is not None:  # a2wsgi's threads; idle once serving stopped
                self._wsgi_pool.shutdown(wait=False)
            with self._control_lock:
                self._loop = None
                self._loop_finished = True

    @property
    def started(self) -> bool:
        return self._server.started

    def _loop_started(self, loop: asyncio.AbstractEventLoop) -> None:
        """On the loop's thread, before lifespan startup: run what arrived before it."""
        with self._control_lock:
            self._loop = loop
            pending, self._pending = self._pending, []
        for fn in pending:
            fn()

    def _call_in_loop(self, fn: Callable[[], None]) -> None:
        with self._control_lock:
            if self._loop_finished:
                return
            if self._loop is None:
                self._pending.append(fn)
                return
            # The loop may have closed after serve() returned and before run()
            # marked it finished: then there is nothing left to stop.
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(fn)

    # --- Spares -----------------------------------------------------------------

    def promote(self, slot: int, generation: int) -> None:
        """A spare takes ``slot`` as ``generation`` and starts accepting; thread-safe."""
        with self._control_lock:
            self._promote_to = Promote(slot, generation)
        self._call_in_loop(self._wake_spare)

    def _wake_spare(self) -> None:
        if self._spare_wake is not None:
            self._spare_wake.set()

    async def _hold_as_spare(self) -> bool:
        """On the loop: report warm, then wait, beating, until promoted (True) or stopped.

        The heartbeat goes on while it waits, so a spare whose loop blocks is
        found hung like any worker; uvicorn's own tick only starts once it serves.
        """
        wake = self._spare_wake = asyncio.Event()
        self._announce_ready()
        server = self._server
        while True:
            with self._control_lock:
                promotion = self._promote_to
            if server.should_exit:
                return False
            if promotion is not None:
                break
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(wake.wait(), TICK_SECONDS)
            self._tick(0)
        self.spec = replace(
            self.spec, slot=promotion.slot, generation=promotion.generation, spare=False
        )
        _enter_worker(self.spec)  # in the serving task's context: its connections inherit it
        return True

    # --- Stopping ----------------------------------------------------------------

    def drain(self) -> None:
        """Stop accepting, finish in-flight requests, run lifespan shutdown, return from ``run``."""
        self._call_in_loop(self._begin_drain)

    def _begin_drain(self) -> None:
        # Close our listeners now rather than at uvicorn's next 0.1 s tick, so
        # that, with the supervisor's copy already closed, the kernel starts
        # refusing connections within the time it takes this call to arrive.
        for server in getattr(self._server, "servers", []):
            server.close()
        self._server.should_exit = True
        self._wake_spare()

    def force_stop(self) -> None:
        """Abandon in-flight work: close connections and cancel every task in the loop."""
        self._call_in_loop(self._force)

    def _force(self) -> None:
        server = self._server
        server.should_exit = True
        server.force_exit = True
        for connection in list(server.server_state.connections):
            transport = getattr(connection, "transport", None)
            if transport is not None:
                transport.close()
        for task in asyncio.all_tasks():  # only ever called on the loop's thread
            task.cancel()


# --- Process-mode entry point --------------------------------------------------


_IGNORED_IN_WORKERS = (
    signal.SIGINT,
    signal.SIGQUIT,
    signal.SIGHUP,
    signal.SIGTTIN,
    signal.SIGTTOU,
)


def process_main(
    spec: WorkerSpec,
    sockets: list[socket.socket],
    events: Connection,
    control: Connection,
    stack_dumps: Connection,
) -> None:
    """Run one process worker. Called by multiprocessing in the child."""
    # Ctrl-C and terminal hang-ups reach the whole process group; only the
    # supervisor may act on them.
    for signum in _IGNORED_IN_WORKERS:
        signal.signal(signum, signal.SIG_IGN)
    # When this worker is hung, the supervisor sends DUMP_STACKS_SIGNAL before
    # SIGKILL. faulthandler answers from C, so it works however stuck Python is.
    faulthandler.register(DUMP_STACKS_SIGNAL, file=stack_dumps.fileno(), all_threads=True)
    cfg = spec.config
    configure_logging(cfg.log_format, cfg.log_level, access_log=cfg.access_log)
    _enter_worker(spec)
    lock = threading.Lock()

    def report(message: WorkerMessage) -> None:
        with lock, contextlib.suppress(OSError):
            events.send(message)

    assert spec.app_path is not None, "process workers import the app themselves"
    try:
        app = load_app(spec.app_path, factory=cfg.factory)
    except AppImportError as exc:
        report(BootFailed(spec.slot, spec.generation, str(exc)))
        os._exit(EXIT_APP_IMPORT)
    engine = WorkerEngine(spec, app, sockets, report)
    # A SIGTERM aimed at this worker (or at the whole process group, as
    # systemd's default KillMode and timeout(1) do) means "drain", as it does
    # for a gunicorn worker. It must not kill in-flight requests: forcing is
    # the supervisor's decision, sent over the control pipe, then SIGKILL.
    signal.signal(signal.SIGTERM, lambda signum, frame: engine.drain())
    threading.Thread(
        target=_follow_control_pipe, args=(control, engine), name="corral-control", daemon=True
    ).start()
    try:
        engine.run()
    except SystemExit:
        if not engine.started:  # uvicorn exits 3 when lifespan startup fails
            report(BootFailed(spec.slot, spec.generation, "the app's lifespan startup failed"))
        raise
    except Exception as exc:
        structlog.get_logger("corral.worker").exception("worker loop failed")
        report(Raised(spec.slot, spec.generation, describe_exception(exc)))
        os._exit(EXIT_RAISED)


def describe_exception(exc: BaseException) -> str:
    """``Type: message`` on one line, for events and logs."""
    text = f"{type(exc).__name__}: {exc}".strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _follow_control_pipe(control: Connection, engine: WorkerEngine) -> None:
    """Obey the supervisor; when the pipe hits EOF the supervisor is gone, so leave.

    EOF is how an orphan notices at once: only the supervisor holds the write
    end, and the kernel closes it however the supervisor died, SIGKILL included.
    """
    while True:
        try:
            command = control.recv()
        except (EOFError, OSError):
            break
        if command is ControlCommand.DRAIN:
            engine.drain()
        elif command is ControlCommand.FORCE:
            engine.force_stop()
        elif isinstance(command, Promote):
            engine.promote(command.slot, command.generation)
    engine.drain()
    time.sleep(ORPHAN_GRACE_SECONDS)
    os._exit(EXIT_ORPHANED)
