"""Carrying out an incarnation's actions: liveness and the force-stop ladder.

``incarnation.step`` decides; this module does. Each action that concerns
only the worker itself (signal it, drain it, log its stacks, emit its event)
is carried out here. The ones with consequences for the slot or the whole
supervisor (``Failed``, ``Abandon``, ``StopSupervisor``) are
handed back to the coordinator.
"""

from __future__ import annotations

import signal

import structlog

from corral.handles import WorkerHandle
from corral.incarnation import (
    Action,
    DumpStacks,
    EmitDrainEnd,
    EmitDrainStart,
    EmitForceStop,
    EmitHangCrash,
    EmitReady,
    Exited,
    Happening,
    Kill,
    LogHung,
    LogRecovered,
    LogStacks,
    SendDrain,
    SendForce,
    Timing,
    step,
)
from corral.lifecycle.events import CrashReason, EventKind
from corral.supervisor.emitter import Emitter

log = structlog.get_logger("corral.supervisor")


class IncarnationDriver:
    """Feeds what happened to an incarnation through ``step`` and acts on the result."""

    def __init__(self, timing: Timing, emitter: Emitter) -> None:
        self._timing = timing
        self._emitter = emitter

    def feed(self, handle: WorkerHandle, happening: Happening) -> list[Action]:
        """Step ``handle``; returns the actions only the coordinator can carry out."""
        handle.life, actions = step(handle.life, happening, self._timing)
        return [a for a in actions if not self._carry_out(handle, a, happening)]

    def _carry_out(self, handle: WorkerHandle, action: Action, happening: Happening) -> bool:
        """Do ``action`` if it is the worker's own business; False if it is not."""
        emit = self._emitter.emit
        match action:
            case EmitReady(boot_seconds):
                emit(EventKind.READY, handle, duration=boot_seconds)
            case EmitDrainStart():
                emit(EventKind.DRAIN_START, handle)
            case SendDrain():
                handle.drain()
            case EmitForceStop(message):
                emit(EventKind.FORCE_STOP, handle, message=message)
            case SendForce():
                handle.force_stop()
            case Kill():
                handle.kill()
            case DumpStacks():
                handle.request_stack_dump()
            case LogHung(silent):
                self._log_hung(handle, silent)
            case LogStacks():
                log_stacks(handle)
            case EmitHangCrash(message, uptime):
                emit(
                    EventKind.CRASH, handle, reason=CrashReason.HANG, uptime=uptime, message=message
                )
            case LogRecovered():
                log.warning("hung worker recovered", slot=handle.slot, generation=handle.generation)
            case EmitDrainEnd(seconds, forced):
                assert isinstance(happening, Exited)
                self._emit_drain_end(handle, happening, seconds, forced)
            case _:
                return False
        return True

    def _log_hung(self, handle: WorkerHandle, silent: float) -> None:
        log.error(
            "worker hung",
            slot=handle.slot,
            generation=handle.generation,
            silent_seconds=round(silent, 3),
            worker_timeout=self._timing.worker_timeout,
        )

    def _emit_drain_end(
        self, handle: WorkerHandle, exited: Exited, seconds: float, forced: bool
    ) -> None:
        info = exited.info
        self._emitter.emit(
            EventKind.DRAIN_END,
            handle,
            duration=seconds,
            exit_code=info.exit_code,
            signal=signal.Signals(info.signal_number).name if info.signal_number else None,
            message="forced" if forced else "graceful",
        )


def log_stacks(handle: WorkerHandle) -> None:
    log.error(
        "hung worker stacks",
        slot=handle.slot,
        generation=handle.generation,
        stacks=handle.stack_dump() or "(no stack dump was received)",
    )
