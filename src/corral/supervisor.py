"""The supervision mechanism: spawning, watching, draining and replacing workers.

One thread (the caller of ``run``) owns all supervision state. It sleeps in a
single ``selector.select()`` whose timeout is the next deadline (a backoff
ending, a drain overrunning), and wakes for exactly four things:

* a process worker's sentinel (it died) or events pipe (it reported);
* the mailbox, where thread workers report and other threads leave commands;
* the signal wake-up socket (``signal.set_wakeup_fd``);
* the deadline itself.

There is no sleep-and-poll loop anywhere. Decisions about restarts and
escalation are delegated to the pure ``policy`` module; this module only
carries them out and reports each transition to the ``LifecycleCollector``.
"""

from __future__ import annotations

import contextlib
import enum
import multiprocessing
import os
import random
import selectors
import signal
import socket
import ssl
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

import structlog

from corral.appload import ASGIApp, reload_app
from corral.config import HungThreadAction, ServerConfig
from corral.errors import AppImportError, ConfigError, ExitCode
from corral.handles import (
    ExitInfo,
    ProcessWorker,
    StillbornWorker,
    ThreadWorker,
    WorkerExited,
    WorkerHandle,
)
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.events import CrashReason, EventKind, LifecycleEvent
from corral.listeners import close_listeners
from corral.liveness import Heartbeat, next_check
from corral.policy import (
    ExitClass,
    GiveUp,
    RestartPolicy,
    SlotBudget,
    classify_exit,
    escalate,
)
from corral.request_stats import RequestStatsPool
from corral.runtime import ModeDecision, WorkerMode, decide_mode
from corral.sdnotify import SystemdNotifier
from corral.worker import BootFailed, Raised, Ready, Recycle, WorkerSpec

log = structlog.get_logger("corral.supervisor")

# After SIGKILL, how long to wait for the kernel to report the deaths before
# giving up on a process that is stuck in the kernel (state D).
_REAP_GRACE_SECONDS = 2.0
# How long a hung process worker gets to write its stacks before SIGKILL.
_STACK_DUMP_GRACE_SECONDS = 0.5
# How often a hung thread under --on-hung-thread ignore is looked at again.
_HUNG_RECHECK_SECONDS = 1.0


class SlotState(enum.Enum):
    STARTING = "starting"
    READY = "ready"
    DRAINING = "draining"
    BACKOFF = "backoff"
    EXHAUSTED = "exhausted"
    HUNG = "hung"  # a thread worker whose event loop stopped (a thread cannot be killed)
    STOPPED = "stopped"


class Phase(enum.Enum):
    NEW = "new"
    RUNNING = "running"
    DRAINING = "draining"
    FORCING = "forcing"
    DONE = "done"


class Command(enum.Enum):
    SHUTDOWN = "shutdown"
    FORCE = "force"
    RESTART = "restart"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"


@dataclass(frozen=True, slots=True)
class WorkerStatus:
    """One row of ``Supervisor.status()``: a consistent snapshot of one slot."""

    slot: int
    mode: str
    pid: int | None
    thread_id: int | None
    generation: int
    state: str
    started_at: float | None
    restarts_in_window: int
    budget_remaining: int
    last_exit: str | None


@dataclass(frozen=True, slots=True)
class _Ping:
    """A liveness probe: the loop sets ``answered`` when it takes this from the mailbox."""

    answered: threading.Event


class _Slot:
    """A worker position that outlives its incarnations, and so keeps their restart history."""

    def __init__(self, index: int, budget: SlotBudget) -> None:
        self.index = index
        self.budget = budget
        self.generation = 0
        self.worker: WorkerHandle | None = None
        self.incoming: WorkerHandle | None = None  # rolling-restart replacement, not yet ready
        self.retiring: list[WorkerHandle] = []  # older incarnations still draining
        self.state = SlotState.STARTING
        self.respawn_at: float | None = None
        self.last_exit: str | None = None
        self.removing = False  # scaled down: goes away once its workers are gone

    def handles(self) -> Iterator[WorkerHandle]:
        if self.worker is not None:
            yield self.worker
        if self.incoming is not None:
            yield self.incoming
        yield from self.retiring


class _Mailbox:
    """A thread-safe inbox whose arrivals wake the supervisor's selector.

    The lock is re-entrant and ``take`` pops one item at a time, so a signal
    handler that posts while the main thread is inside ``take`` neither
    deadlocks nor loses its item.

    The wake-up byte is written under the lock too, and ``close`` takes it:
    a worker thread that outlives the supervisor's loop (an abandoned one, or
    one exiting as ``run`` returns) must never write to the closed socket's
    file descriptor, which by then may belong to something else. Posts after
    ``close`` are dropped: nobody is left to read them.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._items: deque[object] = deque()
        self._closed = False
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def post(self, item: object) -> None:
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            with contextlib.suppress(BlockingIOError, OSError):
                self._writer.send(b"\0")  # a full buffer already guarantees a wake-up

    def take(self) -> list[object]:
        with contextlib.suppress(BlockingIOError, OSError):
            while self.reader.recv(4096):
                pass
        items: list[object] = []
        with self._lock:
            while self._items:
                items.append(self._items.popleft())
        return items

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.reader.close()
            self._writer.close()


class Supervisor:
    """Runs ``config.workers`` workers of ``app`` and keeps them alive until shut down."""

    def __init__(
        self,
        config: ServerConfig,
        app: ASGIApp,
        *,
        mode: WorkerMode | None = None,
        ssl_context: ssl.SSLContext | None = None,
        lifecycle_collector: LifecycleCollector | None = None,
        app_path: str | None = None,
        request_stats: RequestStatsPool | None = None,
        notifier: SystemdNotifier | None = None,
    ) -> None:
        self.config = config
        self._app = app
        self._app_path = app_path
        self._ssl_context = ssl_context
        self._decision = decide_mode(mode or config.mode)
        if self._decision.mode is WorkerMode.PROCESS and app_path is None:
            raise ConfigError(
                "process mode needs app_path ('module:attr') so workers can import it"
            )
        if self._decision.mode is WorkerMode.PROCESS and ssl_context is not None:
            raise ConfigError("an SSLContext cannot cross into worker processes; set ssl_certfile")
        self._collector = lifecycle_collector or LifecycleCollector()
        self._request_stats = request_stats
        self._notifier = notifier
        self._told_ready = False
        self._watchdog_at: float | None = None
        self._loop_thread: threading.Thread | None = None
        self._policy = RestartPolicy.from_config(config)
        self._lock = threading.RLock()
        self._mailbox = _Mailbox()
        self._selector = selectors.DefaultSelector()
        self._slots: dict[int, _Slot] = {}
        self._desired = config.workers
        self._phase = Phase.NEW
        self._exit_code = ExitCode.OK
        self._any_ready = False
        self._sockets: list[socket.socket] = []
        self._roll: deque[int] = deque()
        self._roll_again = False
        self._sigints = 0
        self._ctx: BaseContext | None = None

    # --- Public API -------------------------------------------------------

    @property
    def mode(self) -> WorkerMode:
        return self._decision.mode

    @property
    def mode_decision(self) -> ModeDecision:
        return self._decision

    @property
    def worker_count(self) -> int:
        with self._lock:
            return self._desired

    @property
    def collector(self) -> LifecycleCollector:
        return self._collector

    def shutdown(self) -> None:
        """Begin a graceful drain; returns at once. Safe from any thread or signal handler."""
        self._mailbox.post(Command.SHUTDOWN)

    def restart_workers(self) -> None:
        """Rolling restart, one slot at a time; the supervisor keeps running."""
        self._mailbox.post(Command.RESTART)

    def scale(self, delta: int) -> None:
        """Add (``delta > 0``) or remove worker slots at run time."""
        command = Command.SCALE_UP if delta > 0 else Command.SCALE_DOWN
        for _ in range(abs(delta)):
            self._mailbox.post(command)

    @property
    def phase(self) -> Phase:
        with self._lock:
            return self._phase

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the supervision loop is alive and answers within ``timeout`` seconds.

        Liveness is proved by a round trip through the mailbox, not by a
        heartbeat, so an idle supervisor still does no work at all.
        """
        thread = self._loop_thread
        if thread is None or not thread.is_alive() or self.phase is Phase.DONE:
            return False
        answered = threading.Event()
        self._mailbox.post(_Ping(answered))
        return answered.wait(timeout)

    def status(self) -> list[WorkerStatus]:
        """A consistent snapshot of every slot, safe to call from any thread."""
        with self._lock:
            now = time.monotonic()
            return [self._row(slot, now) for slot in sorted(self._slots.values(), key=_index)]

    def _row(self, slot: _Slot, now: float) -> WorkerStatus:
        worker = slot.worker
        return WorkerStatus(
            slot=slot.index,
            mode=self.mode.value,
            pid=worker.pid if worker else None,
            thread_id=worker.thread_id if worker else None,
            generation=slot.generation,
            state=slot.state.value,
            started_at=worker.started_wall if worker else None,
            restarts_in_window=slot.budget.restarts_in_window(now),
            budget_remaining=slot.budget.remaining(now),
            last_exit=slot.last_exit,
        )

    def run(self, sockets: list[socket.socket]) -> ExitCode:
        """Supervise until shutdown completes; returns the exit code corral should use."""
        self._sockets = list(sockets)
        self._loop_thread = threading.current_thread()
        self._selector.register(self._mailbox.reader, selectors.EVENT_READ, self._on_mailbox)
        restore_signals = self._install_signals()
        try:
            with self._lock:
                self._start()
            while self._phase is not Phase.DONE:
                self._loop_once()
        finally:
            restore_signals()
            with self._lock:
                self._kill_leftovers()
                self._emit(EventKind.SUPERVISOR_STOP, message=f"exit code {int(self._exit_code)}")
            self._selector.close()
            self._mailbox.close()
        return self._exit_code

    # --- The loop -----------------------------------------------------------

    def _start(self) -> None:
        self._phase = Phase.RUNNING
        if self._notifier is not None and self._notifier.watchdog_interval is not None:
            self._watchdog_at = time.monotonic()
        self._emit(EventKind.SUPERVISOR_START, message=self._decision.reason, workers=self._desired)
        for index in range(self._desired):
            slot = _Slot(index, SlotBudget(self._policy))
            self._slots[index] = slot
            slot.worker = self._spawn(slot)

    def _loop_once(self) -> None:
        ready = self._selector.select(self._timeout())
        with self._lock:
            for key, _ in ready:
                key.data(key.fileobj)
            self._on_deadlines(time.monotonic())
            if self._phase in (Phase.DRAINING, Phase.FORCING) and not self._live():
                self._phase = Phase.DONE

    def _timeout(self) -> float | None:
        with self._lock:
            deadlines = [s.respawn_at for s in self._slots.values() if s.respawn_at is not None]
            for handle in self._live():
                deadlines.extend(_escalation_deadlines(handle))
                if handle.check_at is not None:
                    deadlines.append(handle.check_at)
            if self._watchdog_at is not None:
                deadlines.append(self._watchdog_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_deadlines(self, now: float) -> None:
        for slot in list(self._slots.values()):
            if slot.respawn_at is not None and slot.respawn_at <= now:
                slot.respawn_at = None
                slot.worker = self._spawn(slot)
        for handle in self._live():
            self._escalate(handle, now)
            if handle.check_at is not None and handle.check_at <= now:
                self._check_liveness(handle, now)
        if self._watchdog_at is not None and self._watchdog_at <= now:
            self._pet_watchdog(now)

    def _live(self) -> list[WorkerHandle]:
        return [
            handle
            for slot in self._slots.values()
            for handle in slot.handles()
            if handle.exit_info is None
        ]

    # --- Spawning -----------------------------------------------------------

    def _context(self) -> BaseContext:
        """The forkserver context: children fork from a clean, single-threaded server
        that has uvicorn preloaded, never from this (multi-threaded) process."""
        if self._ctx is None:
            ctx = multiprocessing.get_context("forkserver")
            # Preloads uvicorn, and makes the forkserver outlive group-wide signals.
            ctx.set_forkserver_preload(["corral.forkserver_init"])
            self._ctx = ctx
        return self._ctx

    def _spawn(self, slot: _Slot, *, replacement: bool = False) -> WorkerHandle:
        """Start the slot's next incarnation; a rolling ``replacement`` leaves its state alone."""
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
            max_requests=self._request_limit(),
        )
        try:
            handle = self._start_worker(spec)
        except (OSError, RuntimeError) as exc:
            # Out of fds or processes, say. Account for it like a crash at
            # boot, on the next loop pass, so backoff and the budget apply.
            log.error("could not start worker", slot=slot.index, error=str(exc))
            handle = StillbornWorker(spec)
            info = ExitInfo(message=f"could not start: {exc}")
            self._mailbox.post(WorkerExited(slot.index, slot.generation, info))
        handle.stats_lease = lease
        if spec.heartbeat is not None:
            handle.check_at = next_check(handle.started_monotonic, self.config.worker_timeout)
        if not replacement:
            slot.state = SlotState.STARTING
        self._emit(EventKind.SPAWN, handle)
        return handle

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

    def _start_worker(self, spec: WorkerSpec) -> WorkerHandle:
        if self.mode is WorkerMode.THREAD:
            thread = ThreadWorker(
                spec, self._app, self._sockets, self._mailbox.post, self._ssl_context
            )
            try:
                thread.start()
            except BaseException:
                thread.close()
                raise
            return thread
        process = ProcessWorker(spec, self._sockets, self._context())
        try:
            process.start()
        except BaseException:
            process.close()
            raise
        self._selector.register(process.sentinel, selectors.EVENT_READ, self._process_died(process))
        self._selector.register(process.events, selectors.EVENT_READ, self._process_spoke(process))
        return process

    def _process_died(self, handle: ProcessWorker) -> Callable[[object], None]:
        def on_sentinel(_: object) -> None:
            self._on_messages(handle.read_messages())
            self._on_exit(handle, handle.reap())

        return on_sentinel

    def _process_spoke(self, handle: ProcessWorker) -> Callable[[object], None]:
        def on_events(_: object) -> None:
            if handle.exit_info is not None:
                return
            messages = handle.read_messages()
            if not messages:  # EOF: it is exiting; the sentinel will tell us how
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(handle.events)
            self._on_messages(messages)

        return on_events

    # --- Messages, commands and signals -------------------------------------

    def _on_mailbox(self, _: object) -> None:
        for item in self._mailbox.take():
            if isinstance(item, Command):
                self._on_command(item)
            elif isinstance(item, _Ping):
                item.answered.set()
            elif isinstance(item, WorkerExited):
                handle = self._find(item.slot, item.generation)
                if handle is not None and handle.exit_info is None:
                    self._on_exit(handle, item.info)
            else:
                self._on_messages([item])

    def _on_messages(self, messages: list[Any]) -> None:
        for message in messages:
            handle = self._find(message.slot, message.generation)
            if handle is None or handle.exit_info is not None:
                continue
            if isinstance(message, Ready):
                self._on_ready(handle)
            elif isinstance(message, BootFailed):
                handle.boot_message = message.message
            elif isinstance(message, Raised):
                handle.raised_message = message.message
            elif isinstance(message, Recycle):
                self._recycle(handle, message.requests)

    def _on_command(self, command: Command) -> None:
        if command is Command.SHUTDOWN:
            self._begin_shutdown()
        elif command is Command.FORCE:
            self._begin_shutdown()
            self._phase = Phase.FORCING
            for handle in self._live():
                self._force(handle, "forced by operator signal")
        elif command is Command.RESTART:
            self._begin_roll()
        elif command is Command.SCALE_UP:
            self._scale_up()
        elif command is Command.SCALE_DOWN:
            self._scale_down()

    def _install_signals(self) -> Callable[[], None]:
        """Route operator signals into the selector; a no-op off the main thread."""
        if threading.current_thread() is not threading.main_thread():
            return lambda: None
        reader, writer = socket.socketpair()
        reader.setblocking(False)
        writer.setblocking(False)
        previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
        handled = _SIGNAL_COMMANDS.keys() | {signal.SIGINT}
        previous = {signum: signal.signal(signum, _ignore_in_python) for signum in handled}
        self._selector.register(reader, selectors.EVENT_READ, self._on_signal_bytes)

        def restore() -> None:
            for signum, handler in previous.items():
                signal.signal(signum, handler)
            signal.set_wakeup_fd(previous_fd)
            with contextlib.suppress(KeyError, ValueError):
                self._selector.unregister(reader)
            reader.close()
            writer.close()

        return restore

    def _on_signal_bytes(self, reader: object) -> None:
        assert isinstance(reader, socket.socket)
        with contextlib.suppress(BlockingIOError):
            for signum in reader.recv(256):
                self._on_signal(signum)

    def _on_signal(self, signum: int) -> None:
        log.info("signal received", signal=signal.Signals(signum).name)
        if signum == signal.SIGINT:
            self._sigints += 1
            command = Command.SHUTDOWN if self._sigints == 1 else Command.FORCE
        else:
            command = _SIGNAL_COMMANDS[signal.Signals(signum)]
        self._on_command(command)

    # --- Transitions ------------------------------------------------------------

    def _find(self, index: int, generation: int) -> WorkerHandle | None:
        slot = self._slots.get(index)
        if slot is None:
            return None
        return next((h for h in slot.handles() if h.generation == generation), None)

    def _on_ready(self, handle: WorkerHandle) -> None:
        now = time.monotonic()
        handle.ready = True
        self._any_ready = True
        self._emit(EventKind.READY, handle, duration=now - handle.started_monotonic)
        slot = self._slots[handle.slot]
        if handle is slot.incoming and self._phase is Phase.RUNNING:
            self._promote(slot, handle)
        elif handle is slot.worker and not handle.stop_requested:
            slot.state = SlotState.READY
        self._tell_systemd_if_ready()

    def _on_exit(self, handle: WorkerHandle, info: ExitInfo) -> None:
        now = time.monotonic()
        slot = self._slots[handle.slot]
        handle.exit_info = info
        if handle.hung and not handle.hang_recorded:
            self._log_stacks(handle)  # what faulthandler wrote before the SIGKILL
        if handle.stop_requested:
            self._emit_drain_end(handle, info, now)
        else:
            self._record_failure(slot, handle, info, now)
        self._detach(slot, handle)
        self._unwatch(handle)
        handle.close()
        if handle.stats_lease is not None and self._request_stats is not None:
            # Dead (or abandoned): its counts are final. Fold them into the slot.
            self._request_stats.release(handle.stats_lease)
            handle.stats_lease = None

    def _unwatch(self, handle: WorkerHandle) -> None:
        if isinstance(handle, ProcessWorker):
            for fileobj in (handle.sentinel, handle.events):
                with contextlib.suppress(KeyError, ValueError):
                    self._selector.unregister(fileobj)

    def _record_failure(
        self, slot: _Slot, handle: WorkerHandle, info: ExitInfo, now: float
    ) -> None:
        if handle.hang_recorded:  # a hung thread, its crash already told: only tidy up
            slot.last_exit = info.describe()
            return
        verdict = classify_exit(
            exit_code=info.exit_code,
            signal_number=info.signal_number,
            raised=info.raised,
            was_ready=handle.ready,
            stop_requested=False,
            hung=handle.hung,
        )
        uptime = now - handle.started_monotonic
        kind = EventKind.EXIT if verdict.kind is ExitClass.CLEAN else EventKind.CRASH
        signame = signal.Signals(info.signal_number).name if info.signal_number else None
        self._emit(
            kind,
            handle,
            exit_code=info.exit_code,
            signal=signame,
            reason=verdict.reason,
            uptime=uptime,
            message=self._exit_message(handle, info),
        )
        slot.last_exit = info.describe()
        decision = slot.budget.on_failure(now, uptime)
        if handle is slot.incoming:
            self._abort_roll(f"replacement for slot {slot.index} failed: {info.describe()}")
            if slot.worker is not None or self._phase is not Phase.RUNNING:
                return
            # The worker it was replacing died first: restart the slot like any crash.
        elif handle is not slot.worker or self._phase is not Phase.RUNNING:
            return
        if isinstance(decision, GiveUp):
            self._exhaust(slot, decision.restarts_in_window)
            return
        self._emit(
            EventKind.RESPAWN,
            handle,
            restart_number=decision.restart_number,
            backoff=decision.delay,
            budget_remaining=decision.budget_remaining,
        )
        slot.worker = None
        if slot.incoming is not None and slot.incoming is not handle:
            # A rolling restart's replacement is already starting: it takes the
            # slot once ready. A backoff respawn here would later overwrite it
            # and leave it running untracked, serving and never drained.
            slot.state = SlotState.STARTING
        elif decision.delay > 0:
            slot.state = SlotState.BACKOFF
            slot.respawn_at = now + decision.delay
        else:
            slot.worker = self._spawn(slot)

    def _detach(self, slot: _Slot, handle: WorkerHandle) -> None:
        """Forget a dead handle; drop the slot if it was scaled away and is now empty."""
        if slot.worker is handle:
            slot.worker = None
            if slot.state is SlotState.DRAINING or self._phase is not Phase.RUNNING:
                slot.state = SlotState.STOPPED
        if slot.incoming is handle:
            slot.incoming = None
        if handle in slot.retiring:
            slot.retiring.remove(handle)
        if slot.removing and next(slot.handles(), None) is None:
            del self._slots[slot.index]

    def _exhaust(self, slot: _Slot, restarts: int) -> None:
        slot.worker = None
        slot.state = SlotState.EXHAUSTED
        self._emit(
            EventKind.BUDGET_EXHAUSTED,
            slot=slot.index,
            budget_remaining=0,
            restart_number=restarts,
            message=f"on_exhausted={self.config.on_exhausted.value}",
        )
        flags = [s.state is SlotState.EXHAUSTED for s in self._slots.values() if not s.removing]
        escalation = escalate(flags, self.config.on_exhausted, self._any_ready)
        if escalation.stop:
            self._exit_code = escalation.exit_code
            self._begin_shutdown()

    def _drain(self, handle: WorkerHandle) -> None:
        if handle.stop_requested:
            return
        handle.stop_requested = True
        handle.drain_started = time.monotonic()
        handle.force_at = handle.drain_started + self.config.shutdown_timeout
        slot = self._slots[handle.slot]
        if handle is slot.worker:
            slot.state = SlotState.DRAINING
        self._emit(EventKind.DRAIN_START, handle)
        handle.drain()

    def _emit_drain_end(self, handle: WorkerHandle, info: ExitInfo, now: float) -> None:
        started = handle.drain_started if handle.drain_started is not None else now
        self._emit(
            EventKind.DRAIN_END,
            handle,
            duration=now - started,
            exit_code=info.exit_code,
            signal=signal.Signals(info.signal_number).name if info.signal_number else None,
            message="forced" if handle.forced else "graceful",
        )

    # --- Shutdown -------------------------------------------------------------

    def _begin_shutdown(self) -> None:
        if self._phase is not Phase.RUNNING:
            return
        self._phase = Phase.DRAINING
        if self._notifier is not None:
            self._notifier.notify("STOPPING=1", "STATUS=draining")
        # Refuse new connections from this moment: with the supervisor's copy
        # closed here and each worker closing its own as its drain starts, the
        # kernel has no listener left and answers connects with RST.
        close_listeners(self._sockets)
        self._roll.clear()
        for slot in self._slots.values():
            slot.respawn_at = None
            if slot.state in (SlotState.BACKOFF, SlotState.STARTING) and slot.worker is None:
                slot.state = SlotState.STOPPED
        for handle in self._live():
            self._drain(handle)

    # --- Escalation: every draining worker, at shutdown or retiring in a roll ---

    def _escalate(self, handle: WorkerHandle, now: float) -> None:
        """Take the next step for a drain that overran: force, then SIGKILL, then give up."""
        if handle.force_at is not None and now >= handle.force_at:
            self._force(handle, "drain timeout exceeded")
        if handle.kill_at is not None and now >= handle.kill_at:
            self._kill(handle)
        if handle.abandon_at is not None and now >= handle.abandon_at:
            self._abandon(handle)

    def _force(self, handle: WorkerHandle, reason: str) -> None:
        if handle.forced:
            return
        self._drain(handle)
        handle.forced = True
        handle.force_at = None
        handle.kill_at = time.monotonic() + self.config.force_stop_grace
        self._emit(EventKind.FORCE_STOP, handle, message=reason)
        handle.force_stop()

    def _kill(self, handle: WorkerHandle) -> None:
        """SIGKILL a process that outlived the force-stop, or hung; a thread gets one last grace."""
        handle.kill_at = None
        handle.abandon_at = time.monotonic() + _REAP_GRACE_SECONDS
        if isinstance(handle, ProcessWorker):
            if not handle.hung:  # a hang is told by its crash event, not as a force-stop
                self._emit(EventKind.FORCE_STOP, handle, message="still running; SIGKILL")
            handle.kill()

    def _abandon(self, handle: WorkerHandle) -> None:
        """Give up on a worker that ignores even the last resort (a thread stuck in C code)."""
        handle.abandon_at = None
        message = "thread did not exit; abandoned" if handle.thread_id else "not reaped"
        self._emit(EventKind.FORCE_STOP, handle, message=message)
        log.error("worker could not be stopped", slot=handle.slot, detail=message)
        # A stuck thread may still count requests: keep its block out of reuse.
        handle.stats_lease = None
        handle.forced = True
        self._on_exit(handle, ExitInfo(message=message))

    def _kill_leftovers(self) -> None:
        """If ``run`` is unwinding from an error, leave no process behind."""
        for handle in self._live():
            handle.kill()

    # --- Liveness: hung workers (--worker-timeout) ----------------------------------

    def _check_liveness(self, handle: WorkerHandle, now: float) -> None:
        """The worker's deadline came: it either beat since (move on) or it is hung."""
        handle.check_at = None
        if handle.stop_requested or handle.exit_info is not None:
            return  # draining: the drain timeout and force-stop own it now
        last = handle.last_sign_of_life()
        silent = now - last
        if silent <= self.config.worker_timeout:
            if handle.hung:
                self._recovered(handle)
            handle.check_at = next_check(last, self.config.worker_timeout)
            return
        if handle.hung:  # still hung, under --on-hung-thread ignore: look again later
            handle.check_at = now + _HUNG_RECHECK_SECONDS
            return
        handle.hang_message = _hang_message(handle, self.config.worker_timeout)
        handle.hung = True
        handle.ready = False
        slot = self._slots[handle.slot]
        if handle is slot.worker:
            slot.state = SlotState.HUNG
        log.error(
            "worker hung",
            slot=handle.slot,
            generation=handle.generation,
            silent_seconds=round(silent, 3),
            worker_timeout=self.config.worker_timeout,
        )
        if isinstance(handle, ThreadWorker):
            self._on_hung_thread(handle, now)
        else:
            # faulthandler writes the stacks from C; SIGKILL follows shortly.
            handle.request_stack_dump()
            handle.kill_at = now + _STACK_DUMP_GRACE_SECONDS

    def _on_hung_thread(self, handle: WorkerHandle, now: float) -> None:
        """A thread cannot be killed: record the hang, stop counting it, apply the policy."""
        self._log_stacks(handle)
        handle.hang_recorded = True
        self._emit(
            EventKind.CRASH,
            handle,
            reason=CrashReason.HANG,
            uptime=now - handle.started_monotonic,
            message=handle.hang_message,
        )
        if self.config.on_hung_thread is HungThreadAction.IGNORE:
            handle.check_at = now + _HUNG_RECHECK_SECONDS
            return
        self._exit_code = ExitCode.WORKER_HUNG
        self._begin_shutdown()
        # The healthy workers drain as usual; this one cannot, so it is given
        # only the force-stop grace before the process leaves it behind.
        handle.force_at = None
        handle.abandon_at = now + self.config.force_stop_grace

    def _recovered(self, handle: WorkerHandle) -> None:
        """A hung thread's loop ran again (--on-hung-thread ignore): it serves again."""
        handle.hung = False
        handle.hang_recorded = False
        handle.hang_message = None
        handle.ready = True
        slot = self._slots[handle.slot]
        if handle is slot.worker and slot.state is SlotState.HUNG:
            slot.state = SlotState.READY
        log.warning("hung worker recovered", slot=handle.slot, generation=handle.generation)

    def _exit_message(self, handle: WorkerHandle, info: ExitInfo) -> str | None:
        return handle.hang_message or info.message or handle.boot_message

    def _log_stacks(self, handle: WorkerHandle) -> None:
        log.error(
            "hung worker stacks",
            slot=handle.slot,
            generation=handle.generation,
            stacks=handle.stack_dump() or "(no stack dump was received)",
        )

    # --- Recycling (--max-requests) ---------------------------------------------------

    def _recycle(self, handle: WorkerHandle, requests: int) -> None:
        """Replace a worker that served its quota, rolling: its successor must be
        ready before it drains, so the slot never stops serving."""
        slot = self._slots[handle.slot]
        if (
            self._phase is not Phase.RUNNING
            or handle is not slot.worker
            or handle.stop_requested
            or slot.incoming is not None
            or slot.index in self._roll
        ):
            return  # a rolling restart is replacing it anyway, or we are stopping
        limit = handle.spec.max_requests
        message = f"served {requests} requests; its max_requests is {limit}"
        self._emit(EventKind.RECYCLE, handle, message=message)
        slot.incoming = self._spawn(slot, replacement=True)

    # --- systemd (Type=notify, WatchdogSec=) -------------------------------------------

    def _tell_systemd_if_ready(self) -> None:
        if self._notifier is None or self._phase is not Phase.RUNNING:
            return
        ready = sum(1 for slot in self._slots.values() if slot.state is SlotState.READY)
        status = f"STATUS={ready}/{self._desired} workers ready"
        if not self._told_ready and ready >= self._desired:
            self._told_ready = True
            self._notifier.notify("READY=1", status)
        elif self._told_ready:
            self._notifier.notify(status)

    def _pet_watchdog(self, now: float) -> None:
        """Sent from this loop, so a supervisor stuck anywhere stops petting and is restarted."""
        notifier = self._notifier
        if notifier is None or notifier.watchdog_interval is None:
            return
        notifier.notify("WATCHDOG=1")
        self._watchdog_at = now + notifier.watchdog_interval

    # --- Rolling restart and scaling ----------------------------------------------

    def _begin_roll(self) -> None:
        if self._phase is not Phase.RUNNING:
            return
        if self._roll or any(s.incoming for s in self._slots.values()):
            self._roll_again = True  # coalesce a burst of SIGHUPs into one more pass
            return
        if self.mode is WorkerMode.THREAD and self._app_path is not None:
            try:
                self._app = reload_app(self._app_path, factory=self.config.factory)
            except AppImportError as exc:
                self._emit(EventKind.RELOAD, message=f"reload failed, keeping old code: {exc}")
                return
        ready = [s.index for s in sorted(self._slots.values(), key=_index) if _rollable(s)]
        self._emit(EventKind.RELOAD, workers=len(ready), message="rolling restart")
        self._revive_exhausted()
        self._roll.extend(ready)
        self._roll_next()

    def _revive_exhausted(self) -> None:
        """A reload is how an operator ships a fix: exhausted slots get a fresh budget."""
        for slot in self._slots.values():
            if slot.state is SlotState.EXHAUSTED and not slot.removing:
                slot.budget = SlotBudget(self._policy)
                slot.worker = self._spawn(slot)

    def _roll_next(self) -> None:
        while self._roll:
            slot = self._slots.get(self._roll.popleft())
            if slot is not None and _rollable(slot):
                slot.incoming = self._spawn(slot, replacement=True)
                return
        if self._roll_again:
            self._roll_again = False
            self._begin_roll()

    def _promote(self, slot: _Slot, handle: WorkerHandle) -> None:
        """The replacement is ready: it takes the slot, then the old incarnation drains."""
        old = slot.worker
        slot.incoming = None
        slot.worker = handle
        slot.state = SlotState.READY
        if old is not None:
            slot.retiring.append(old)
            self._drain(old)
        self._roll_next()

    def _abort_roll(self, reason: str) -> None:
        self._roll.clear()
        self._roll_again = False
        log.warning("rolling restart aborted; old workers keep serving", reason=reason)

    def _scale_up(self) -> None:
        if self._phase is not Phase.RUNNING:
            return
        index = max(self._slots, default=-1) + 1
        slot = _Slot(index, SlotBudget(self._policy))
        self._slots[index] = slot
        self._desired += 1
        self._emit(EventKind.SCALE_UP, slot=index, workers=self._desired)
        slot.worker = self._spawn(slot)

    def _scale_down(self) -> None:
        remaining = [s for s in self._slots.values() if not s.removing]
        if self._phase is not Phase.RUNNING or len(remaining) <= 1:
            log.warning("scale down ignored", reason="at least one worker must remain")
            return
        # Give up an exhausted slot first: removing a healthy one could leave
        # nothing but exhausted slots, serving nobody.
        slot = max(remaining, key=lambda s: (s.state is SlotState.EXHAUSTED, s.index))
        slot.removing = True
        slot.respawn_at = None
        self._desired -= 1
        self._emit(EventKind.SCALE_DOWN, slot=slot.index, workers=self._desired)
        for handle in list(slot.handles()):
            self._drain(handle)
        if next(slot.handles(), None) is None:
            del self._slots[slot.index]

    # --- Events -------------------------------------------------------------------

    def _emit(
        self,
        kind: EventKind,
        handle: WorkerHandle | None = None,
        *,
        slot: int | None = None,
        **details: Any,
    ) -> LifecycleEvent:
        event = LifecycleEvent(
            kind=kind,
            mode=self.mode,
            wall_time=time.time(),
            monotonic=time.monotonic(),
            slot=handle.slot if handle else slot,
            generation=handle.generation if handle else 0,
            pid=handle.pid if handle else os.getpid(),
            thread_id=handle.thread_id if handle else None,
            **details,
        )
        return self._collector.emit(event)


_SIGNAL_COMMANDS: dict[signal.Signals, Command] = {
    signal.SIGTERM: Command.SHUTDOWN,
    signal.SIGQUIT: Command.FORCE,
    signal.SIGHUP: Command.RESTART,
    signal.SIGTTIN: Command.SCALE_UP,
    signal.SIGTTOU: Command.SCALE_DOWN,
}


def _ignore_in_python(signum: int, frame: object) -> None:
    """The real handling happens in the loop, from the byte the wake-up fd received."""


def _hang_message(handle: WorkerHandle, timeout: float) -> str:
    what = "event loop blocked" if handle.ready else "not ready"
    return f"{what}: no sign of life for over {timeout:g}s"


def _escalation_deadlines(handle: WorkerHandle) -> list[float]:
    return [t for t in (handle.force_at, handle.kill_at, handle.abandon_at) if t is not None]


def _index(slot: _Slot) -> int:
    return slot.index


def _rollable(slot: _Slot) -> bool:
    return slot.state is SlotState.READY and slot.worker is not None and not slot.removing
