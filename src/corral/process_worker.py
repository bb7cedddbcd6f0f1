"""The supervisor's handle on a worker process, started by the forkserver.

The process runs ``worker.process_main``; the supervisor watches its
multiprocessing sentinel (readable when it dies) and its events pipe (what it
reports), and talks to it over a control pipe whose EOF also tells the worker
that its supervisor is gone.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
from multiprocessing.context import BaseContext
from typing import Any

from corral.handles import ExitInfo, WorkerHandle
from corral.worker import DUMP_STACKS_SIGNAL, process_main
from corral.worker_messages import ControlCommand, Promote, WorkerMessage, WorkerSpec


class ProcessWorker(WorkerHandle):
    """A worker in its own process, started by the forkserver (never a plain fork)."""

    KILLABLE = True

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

    def promote(self, slot: int, generation: int) -> None:
        self._send(Promote(slot, generation))

    def _send(self, command: ControlCommand | Promote) -> None:
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
