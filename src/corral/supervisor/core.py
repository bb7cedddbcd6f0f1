"""The coordinator: one thread that routes what happened to whoever decides and acts.

One thread (the caller of ``run``) owns all supervision state. It sleeps in a
single ``selector.select()`` (``loop``) whose timeout is the next deadline (a
backoff ending, a liveness check, a drain overrunning), and wakes for exactly
four things: a process worker's sentinel or events pipe, the mailbox, the
signal wake-up socket, or the deadline itself.

What happened to a worker goes through its pure state machine
(``incarnation.step``, via ``incarnations.IncarnationDriver``); what follows
for its slot comes from ``policy`` (via ``restarts``); rolling operations live
in ``rolling``; starting workers in ``spawner``. Every transition is reported
to the ``LifecycleCollector`` through ``emitter``. Every state change happens
on the loop thread under ``self._lock``, so ``status()`` may read from any
thread.
"""

from __future__ import annotations

import selectors
import signal
import socket
import ssl
import threading
import time
from typing import Any

import structlog

from corral.appload import ASGIApp
from corral.config import ServerConfig
from corral.errors import ConfigError, ExitCode
from corral.handles import ExitInfo, WorkerExited, WorkerHandle
from corral.incarnation import (
    Abandon,
    Action,
    DeadlinePassed,
    DrainRequested,
    Exited,
    Failed,
    ForceRequested,
    Ready,
    StopSupervisor,
    Timing,
)
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.events import EventKind
from corral.listeners import close_listeners, share_with_workers
from corral.policy import RestartPolicy, SlotBudget
from corral.process_worker import ProcessWorker
from corral.request_stats.pool import RequestStatsPool
from corral.runtime import ModeDecision, WorkerMode, decide_mode
from corral.sdnotify import SystemdNotifier
from corral.states import Phase, SlotState, SparesView, WorkerStatus
from corral.supervisor.emitter import Emitter
from corral.supervisor.fleet import Fleet, Slot
from corral.supervisor.incarnations import IncarnationDriver
from corral.supervisor.loop import (
    Command,
    Mailbox,
    Ping,
    SignalCommands,
    install_signal_wakeup,
)
from corral.supervisor.restarts import Restarts
from corral.supervisor.rolling import Roller
from corral.supervisor.spares import Spares
from corral.supervisor.spawner import Spawner
from corral.supervisor.systemd import SystemdLink
from corral.worker_messages import SPARE_SLOT, BootFailed, Raised, Recycle
from corral.worker_messages import Ready as WorkerReady

log = structlog.get_logger("corral.supervisor")


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
        self._decision = decide_mode(mode or config.mode)
        _check_mode(self._decision.mode, app_path, ssl_context)
        self._collector = lifecycle_collector or LifecycleCollector()
        self._policy = RestartPolicy.from_config(config)
        self._lock = threading.RLock()
        self._mailbox = Mailbox()
        self._selector = selectors.DefaultSelector()
        self._fleet = Fleet(config.workers)
        self._exit_code = ExitCode.OK
        self._signals = SignalCommands()
        self._systemd = SystemdLink(notifier)
        self._loop_thread: threading.Thread | None = None
        emitter = Emitter(self._collector, self._decision.mode)
        self._emit = emitter.emit
        self._spawner = Spawner(
            config,
            self._decision.mode,
            app=app,
            app_path=app_path,
            ssl_context=ssl_context,
            request_stats=request_stats,
            emitter=emitter,
            selector=self._selector,
            post=self._mailbox.post,
            on_process_died=self._process_died,
            on_process_spoke=self._process_spoke,
        )
        self._driver = IncarnationDriver(Timing.from_config(config), emitter)
        self._spares = Spares(
            config.spares,
            self._policy,
            fleet=self._fleet,
            spawner=self._spawner,
            emitter=emitter,
            drain=self._drain,
        )
        self._roller = Roller(
            self._fleet,
            self._spawner,
            emitter,
            self._policy,
            app_path=app_path,
            drain=self._drain,
            spares=self._spares,
        )
        self._restarts = Restarts(
            config, self._fleet, self._spawner, self._roller, emitter, spares=self._spares
        )

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
            return self._fleet.desired

    @property
    def collector(self) -> LifecycleCollector:
        return self._collector

    @property
    def phase(self) -> Phase:
        with self._lock:
            return self._fleet.phase

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

    def ping(self, timeout: float = 1.0) -> bool:
        """Whether the supervision loop is alive and answers within ``timeout`` seconds.

        Liveness is proved by a round trip through the mailbox, not by a
        heartbeat, so an idle supervisor still does no work at all.
        """
        thread = self._loop_thread
        if thread is None or not thread.is_alive() or self.phase is Phase.DONE:
            return False
        answered = threading.Event()
        self._mailbox.post(Ping(answered))
        return answered.wait(timeout)

    def status(self) -> list[WorkerStatus]:
        """A consistent snapshot of every slot, safe to call from any thread."""
        with self._lock:
            now = time.monotonic()
            mode = self.mode.value
            return [self._fleet.row(slot, mode, now) for slot in self._fleet.ordered()]

    def spares(self) -> SparesView:
        """The warm spares now (``--spares``), safe to call from any thread."""
        with self._lock:
            return self._spares.view(time.monotonic())

    def run(self, sockets: list[socket.socket]) -> ExitCode:
        """Supervise until shutdown completes; returns the exit code corral should use."""
        share_with_workers(sockets)
        self._spawner.sockets = list(sockets)
        self._loop_thread = threading.current_thread()
        self._selector.register(self._mailbox.reader, selectors.EVENT_READ, self._on_mailbox)
        restore_signals = install_signal_wakeup(self._selector, self._on_signal)
        try:
            with self._lock:
                self._start()
            while self._fleet.phase is not Phase.DONE:
                self._loop_once()
        finally:
            restore_signals()
            with self._lock:
                for handle in self._live():  # unwinding from an error: leave nothing
                    handle.kill()
                self._emit(EventKind.SUPERVISOR_STOP, message=f"exit code {int(self._exit_code)}")
            self._selector.close()
            self._mailbox.close()
        return self._exit_code

    # --- The loop -----------------------------------------------------------

    def _start(self) -> None:
        fleet = self._fleet
        fleet.phase = Phase.RUNNING
        self._systemd.start(time.monotonic())
        self._emit(EventKind.SUPERVISOR_START, message=self._decision.reason, workers=fleet.desired)
        for index in range(fleet.desired):
            slot = Slot(index, SlotBudget(self._policy))
            fleet.slots[index] = slot
            slot.worker = self._spawner.spawn(slot)
        self._spares.fill()

    def _live(self) -> list[WorkerHandle]:
        """Every incarnation not exited yet: the slots' and the spares'."""
        spares = [h for h in self._spares.handles() if h.exit_info is None]
        return [*self._fleet.live(), *spares]

    def _find(self, slot: int, generation: int) -> WorkerHandle | None:
        if slot == SPARE_SLOT:
            return self._spares.find(generation)
        return self._fleet.find(slot, generation)

    def _loop_once(self) -> None:
        ready = self._selector.select(self._timeout())
        with self._lock:
            for key, _ in ready:
                key.data(key.fileobj)
            self._on_deadlines(time.monotonic())
            fleet = self._fleet
            if fleet.phase in (Phase.DRAINING, Phase.FORCING) and not self._live():
                fleet.phase = Phase.DONE

    def _timeout(self) -> float | None:
        with self._lock:
            fleet = self._fleet
            deadlines = fleet.deadlines()
            if self._spares.respawn_at is not None:
                deadlines.append(self._spares.respawn_at)
            deadlines.extend(h.life.deadline for h in self._live() if h.life.deadline is not None)
            if self._systemd.watchdog_at is not None:
                deadlines.append(self._systemd.watchdog_at)
        if not deadlines:
            return None
        return max(0.0, min(deadlines) - time.monotonic())

    def _on_deadlines(self, now: float) -> None:
        self._restarts.respawn_due(now)
        self._roller.successors_due(now)
        self._spares.due(now)
        for handle in self._live():
            due = handle.life.deadline
            if handle.exit_info is None and due is not None and due <= now:
                happening = DeadlinePassed(now, handle.last_sign_of_life())
                self._settle(handle, self._driver.feed(handle, happening))
        watchdog = self._systemd.watchdog_at
        if watchdog is not None and watchdog <= now:
            self._systemd.pet(now)

    # --- What workers and other threads tell us ------------------------------------

    def _process_died(self, handle: ProcessWorker) -> None:
        self._on_messages(handle.read_messages())
        self._on_exit(handle, handle.reap())

    def _process_spoke(self, handle: ProcessWorker) -> None:
        if handle.exit_info is not None:
            return
        messages = handle.read_messages()
        if not messages:  # EOF: it is exiting; the sentinel will tell us how
            self._spawner.stop_listening_to(handle)
        self._on_messages(messages)

    def _on_mailbox(self, _: object) -> None:
        for item in self._mailbox.take():
            if isinstance(item, Command):
                self._on_command(item)
            elif isinstance(item, Ping):
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
            if isinstance(message, WorkerReady):
                self._on_ready(handle)
            elif isinstance(message, BootFailed):
                handle.boot_message = message.message
            elif isinstance(message, Raised):
                handle.raised_message = message.message
            elif isinstance(message, Recycle):
                self._roller.recycle(handle, message.requests)

    def _on_signal(self, signum: int) -> None:
        log.info("signal received", signal=signal.Signals(signum).name)
        self._on_command(self._signals.command_for(signum))

    def _on_command(self, command: Command) -> None:
        if command is Command.SHUTDOWN:
            self._begin_shutdown()
        elif command is Command.FORCE:
            self._begin_shutdown()
            self._fleet.phase = Phase.FORCING
            for handle in self._live():
                self._force(handle, "forced by operator signal")
        elif command is Command.RESTART:
            self._roller.begin()
        elif command is Command.SCALE_UP:
            self._roller.scale_up()
        elif command is Command.SCALE_DOWN:
            self._roller.scale_down()

    # --- Transitions ------------------------------------------------------------

    def _on_ready(self, handle: WorkerHandle) -> None:
        self._settle(handle, self._driver.feed(handle, Ready(time.monotonic())))
        if handle.spec.spare:
            self._spares.on_ready(handle)
            return
        fleet = self._fleet
        fleet.any_ready = True
        slot = fleet.slots[handle.slot]
        if handle is slot.incoming and fleet.running:
            self._roller.promote(slot, handle)
        if fleet.running:
            self._systemd.ready_changed(fleet.count(SlotState.READY), fleet.desired)

    def _on_exit(self, handle: WorkerHandle, info: ExitInfo) -> None:
        handle.exit_info = info
        self._settle(handle, self._driver.feed(handle, Exited(time.monotonic(), info)))
        if handle.spec.spare:
            self._spares.detach(handle)
            self._spawner.bury(handle)
            return
        slot = self._fleet.slots[handle.slot]
        slot.detach(handle)
        if slot.removing and slot.empty():
            del self._fleet.slots[slot.index]
        self._spawner.bury(handle)

    def _settle(self, handle: WorkerHandle, actions: list[Action]) -> None:
        """Carry out what a worker's transition means beyond the worker itself."""
        for action in actions:
            if isinstance(action, Failed) and handle.spec.spare:
                self._spares.on_failed(handle, action, time.monotonic())
            elif isinstance(action, Failed):
                slot = self._fleet.slots[handle.slot]
                escalation = self._restarts.on_failed(slot, handle, action, time.monotonic())
                if escalation is not None:
                    self._exit_code = escalation.exit_code
                    self._begin_shutdown()
            elif isinstance(action, StopSupervisor):
                self._exit_code = action.exit_code
                self._begin_shutdown()
            elif isinstance(action, Abandon):
                self._abandon(handle, action.message)

    def _drain(self, handle: WorkerHandle) -> None:
        self._settle(handle, self._driver.feed(handle, DrainRequested(time.monotonic())))

    def _force(self, handle: WorkerHandle, reason: str) -> None:
        happening = ForceRequested(time.monotonic(), reason)
        self._settle(handle, self._driver.feed(handle, happening))

    def _abandon(self, handle: WorkerHandle, message: str) -> None:
        """Give up on a worker that ignores even the last resort (a thread stuck in C code)."""
        log.error("worker could not be stopped", slot=handle.slot, detail=message)
        handle.stats_lease = None  # a stuck thread may still count: keep its block out of reuse
        self._on_exit(handle, ExitInfo(message=message))

    def _begin_shutdown(self) -> None:
        fleet = self._fleet
        if not fleet.running:
            return
        fleet.phase = Phase.DRAINING
        self._systemd.stopping()
        # Refuse new connections from this moment: with the supervisor's copy
        # closed here and each worker closing its own as its drain starts, the
        # kernel has no listener left and answers connects with RST.
        close_listeners(self._spawner.sockets)
        self._roller.clear()
        self._spares.stop()
        for slot in fleet.slots.values():
            slot.respawn_at = None
        for handle in self._live():
            self._drain(handle)


def _check_mode(mode: WorkerMode, app_path: str | None, ssl_context: ssl.SSLContext | None) -> None:
    if mode is WorkerMode.PROCESS and app_path is None:
        raise ConfigError("process mode needs app_path ('module:attr') so workers can import it")
    if mode is WorkerMode.PROCESS and ssl_context is not None:
        raise ConfigError("an SSLContext cannot cross into worker processes; set ssl_certfile")
