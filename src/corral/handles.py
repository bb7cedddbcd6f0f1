"""Supervisor-side handles on one worker incarnation: a process or a thread.

Both kinds expose the same small surface to the supervisor: file
descriptors to watch, the pid or thread id, ``drain``/``force_stop``/``kill``,
and an ``ExitInfo`` once dead. Death is *signalled*, never polled for:

* a process's multiprocessing sentinel becomes readable when it exits;
* a thread posts ``WorkerExited`` to the supervisor's mailbox from its
  ``finally`` block, which also wakes the supervisor's selector.
"""

from __future__ import annotations

import abc
import contextlib
import os
import signal
import socket
import ssl
import sys
import threading
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from multiprocessing.context import BaseContext
from typing import Any

import structlog

from corral.appload import ASGIApp
from corral.request_stats import StatsLease
from corral.worker import (
    DUMP_STACKS_SIGNAL,
    ControlCommand,
    WorkerEngine,
    WorkerMessage,
    WorkerSpec,
    describe_exception,
    process_main,
)


@dataclass(frozen=True, slots=True)
class ExitInfo:
    """How an incarnation ended. ``signal_number`` is set when a signal killed a process."""

    exit_code: int | None = None
    signal_number: int | None = None
    raised: bool = False
    message: str | None = None

    def describe(self) -> str:
        if self.signal_number is not None:
            return signal.Signals(self.signal_number).name
        if self.raised:
            return f"exception: {self.message}"
        return f"exit {self.exit_code}"


@dataclass(frozen=True, slots=True)
class WorkerExited:
    """Posted by a thread worker as the very last thing it does, and by the
    supervisor for a worker that could not even be started."""

    slot: int
    generation: int
    info: ExitInfo


class WorkerHandle(abc.ABC):
    """State the supervisor keeps for one incarnation, whatever its kind."""

    def __init__(self, spec: WorkerSpec) -> None:
        self.spec = spec
        self.started_monotonic = time.monotonic()
        self.started_wall = time.time()
        self.ready = False
        self.stop_requested = False
        self.drain_started: float | None = None
        self.forced = False
        # Escalation deadlines (monotonic), set by the supervisor as a drain
        # overruns: force the stop, then SIGKILL, then give up waiting.
        self.stats_lease: StatsLease | None = None  # its request-metrics block, if any
        self.force_at: float | None = None
        self.kill_at: float | None = None
        self.abandon_at: float | None = None
        self.exit_info: ExitInfo | None = None
        # Liveness (``--worker-timeout``): when to read the heartbeat next,
        # and whether this incarnation was found hung.
        self.check_at: float | None = None
        self.hung = False
        self.hang_recorded = False  # its crash event was emitted when it hung (threads)
        self.hang_message: str | None = None
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


class ProcessWorker(WorkerHandle):
    """A worker in its own process, started by the forkserver (never a plain fork)."""

    def __init__(self, spec: WorkerSpec, sockets: list[socket.socket], ctx: BaseContext) -> None:
        super().__init__(spec)
        self.events, events_w = ctx.Pipe(duplex=False)
        control_r, self._control = ctx.Pipe(duplex=False)
        self._dumps, dumps_w = ctx.Pipe(duplex=False)
        os.set_blocking(self._dumps.fileno(), False)
        self._child_ends = (events_w, control_r, dumps_w)
        self._process: Any = ctx.Process(  # type: ignore[attr-defined]
            target=process_main,
            args=(spec, sockets, events_w, control_r, dumps_w),
            name=f"corral-worker-{spec.slot}",
        )

    @property
    def pid(self) -> int | None:
        pid: int | None = self._process.pid
        return pid

    @property
    def thread_id(self) -> int | None:
        return None

    @property
    def sentinel(self) -> int:
        sentinel: int = self._process.sentinel
        return sentinel

    def start(self) -> None:
        self._process.start()
        for end in self._child_ends:  # the child has its copies; ours would hide EOF
            end.close()

    def read_messages(self) -> list[WorkerMessage]:
        """Everything the worker has sent so far; empty once the pipe is at EOF."""
        messages: list[WorkerMessage] = []
        try:
            while self.events.poll():
                messages.append(self.events.recv())
        except (EOFError, OSError):
            pass
        return messages

    def reap(self) -> ExitInfo:
        """How the (dead) process ended; the supervisor records it in ``exit_info``."""
        self._process.join(timeout=0)
        code = self._process.exitcode
        if code is not None and code < 0:
            return ExitInfo(signal_number=-code)
        message = self.raised_message or self.boot_message
        return ExitInfo(exit_code=code, raised=self.raised_message is not None, message=message)

    def _send(self, command: ControlCommand) -> None:
        with contextlib.suppress(OSError, ValueError):  # dead or closed: the sentinel says so
            self._control.send(command)

    def drain(self) -> None:
        self._send(ControlCommand.DRAIN)

    def force_stop(self) -> None:
        """Close connections and cancel tasks in the worker; ``kill`` follows if it lingers."""
        self._send(ControlCommand.FORCE)

    def kill(self) -> None:
        self._signal(signal.SIGKILL)

    def request_stack_dump(self) -> None:
        self._signal(DUMP_STACKS_SIGNAL)

    def stack_dump(self) -> str:
        """What faulthandler wrote into the dump pipe (a pipe holds 64 KiB: plenty)."""
        chunks: list[bytes] = []
        with contextlib.suppress(BlockingIOError, OSError):
            while chunk := os.read(self._dumps.fileno(), 65536):
                chunks.append(chunk)
        return b"".join(chunks).decode("utf-8", "replace")

    def _signal(self, signum: signal.Signals) -> None:
        pid = self.pid
        if pid is None or self._process.exitcode is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signum)

    def close(self) -> None:
        for end in (*self._child_ends, self._control, self.events, self._dumps):
            end.close()
        with contextlib.suppress(ValueError):  # still running: abandoned after SIGKILL
            self._process.close()


class ThreadWorker(WorkerHandle):
    """A worker thread in the supervisor's process, sharing the app object.

    It serves on its own ``dup()`` of each listening socket: uvicorn closes the
    sockets it serves on when it stops, and one worker stopping must not close
    the listener under its siblings.
    """

    def __init__(
        self,
        spec: WorkerSpec,
        app: ASGIApp,
        sockets: list[socket.socket],
        post: Callable[[object], None],
        ssl_context: ssl.SSLContext | None,
    ) -> None:
        super().__init__(spec)
        self._post = post
        self._sockets = [sock.dup() for sock in sockets]
        self._engine = WorkerEngine(spec, app, self._sockets, post, ssl_context)
        self._thread = threading.Thread(
            target=self._main, name=f"corral-worker-{spec.slot}", daemon=True
        )

    @property
    def pid(self) -> int | None:
        return os.getpid()

    @property
    def thread_id(self) -> int | None:
        return self._thread.native_id

    def start(self) -> None:
        self._thread.start()

    def _main(self) -> None:
        info = ExitInfo(exit_code=0)
        try:
            self._engine.run()
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 1
            message = None if self._engine.started else "the app's lifespan startup failed"
            info = ExitInfo(exit_code=code, message=message)
        except BaseException as exc:  # a crash of this worker must not take others down
            structlog.get_logger("corral.worker").exception("worker loop failed")
            info = ExitInfo(raised=True, message=describe_exception(exc))
        finally:
            for sock in self._sockets:
                sock.close()
            self._post(WorkerExited(self.spec.slot, self.spec.generation, info))

    def drain(self) -> None:
        self._engine.drain()

    def force_stop(self) -> None:
        self._engine.force_stop()

    def stack_dump(self) -> str:
        """The worker thread's stack, read from here: its own thread cannot answer."""
        frame = sys._current_frames().get(self._thread.ident or -1)
        if frame is None:
            return ""
        return f"Thread {self._thread.name} (most recent call last):\n" + "".join(
            traceback.format_stack(frame)
        )

    def close(self) -> None:
        if self._thread.ident is None:  # never started: its socket copies are still ours
            for sock in self._sockets:
                sock.close()
