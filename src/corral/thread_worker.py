"""The supervisor's handle on a worker thread in the supervisor's own process."""

from __future__ import annotations

import os
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable

import structlog

from corral.appload import ASGIApp
from corral.handles import ExitInfo, WorkerExited, WorkerHandle
from corral.listeners import worker_copy
from corral.worker import WorkerEngine, describe_exception
from corral.worker_messages import WorkerSpec


class ThreadWorker(WorkerHandle):
    """A worker thread in the supervisor's process, sharing the app object.

    It serves on its own copy of each listening socket (``listeners.worker_copy``):
    uvicorn closes the sockets it serves on when it stops, and one worker
    stopping must not close the listener under its siblings.
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
        self._sockets = [worker_copy(sock) for sock in sockets]
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

    def promote(self, slot: int, generation: int) -> None:
        self._engine.promote(slot, generation)

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
