"""``WorkerEngine``'s cross-thread control: drain and force-stop only ever run on the worker's loop.

The supervisor (or a process worker's control thread) may ask an engine to
drain or stop at any point of its life. asyncio objects are not thread-safe,
with or without a GIL, so the request must run on the engine's own loop
thread: kept until the loop starts, handed over while it runs, and dropped
once it has finished.
"""

from __future__ import annotations

import asyncio
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from examples.chaos import app

from corral.appload import ASGIApp
from corral.config import ServerConfig
from corral.listeners import create_listeners
from corral.runtime import WorkerMode
from corral.worker import WorkerEngine
from corral.worker_messages import Ready, WorkerMessage, WorkerSpec

JOIN_TIMEOUT = 30.0


class Harness:
    """One engine on a loopback listener, run on its own thread like a thread worker."""

    def __init__(self, served: ASGIApp = app) -> None:
        config = ServerConfig(port=0, workers=1, mode=WorkerMode.THREAD)
        self.listeners = create_listeners(config)
        self.port: int = self.listeners[0].getsockname()[1]
        spec = WorkerSpec(0, 1, WorkerMode.THREAD, config, None)
        self.ready = threading.Event()
        self.engine = WorkerEngine(spec, served, [s.dup() for s in self.listeners], self._report)
        self.ran_on: dict[str, list[int]] = {"drain": [], "force": []}
        self._wrap("_begin_drain", "drain")
        self._wrap("_force", "force")
        self.loops: list[asyncio.AbstractEventLoop] = []
        loop_started = self.engine._loop_started

        def record_loop(loop: asyncio.AbstractEventLoop) -> None:
            self.loops.append(loop)
            loop_started(loop)

        self.engine._server._on_loop = record_loop
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.outcome: BaseException | None = None

    def _wrap(self, method: str, name: str) -> None:
        original: Callable[[], None] = getattr(self.engine, method)

        def recorded() -> None:
            self.ran_on[name].append(threading.get_ident())
            original()

        setattr(self.engine, method, recorded)

    def _report(self, message: WorkerMessage) -> None:
        if isinstance(message, Ready):
            self.ready.set()

    def _run(self) -> None:
        try:
            self.engine.run()
        except BaseException as exc:  # inspected by the tests
            self.outcome = exc

    def finish(self) -> None:
        self.engine.force_stop()
        if self.thread.ident is not None:
            self.thread.join(JOIN_TIMEOUT)
        for sock in self.listeners:
            sock.close()


@pytest.fixture
def harness() -> Iterator[Harness]:
    running = Harness()
    yield running
    running.finish()


def test_a_drain_before_the_loop_starts_runs_on_the_loop_and_stops_it(harness: Harness) -> None:
    harness.engine.drain()  # the worker thread has not even started
    assert harness.ran_on["drain"] == [], "never on the caller's thread"
    harness.thread.start()
    harness.thread.join(JOIN_TIMEOUT)
    assert not harness.thread.is_alive(), "the early drain was kept and honoured"
    assert harness.outcome is None
    assert harness.ran_on["drain"] == [harness.thread.ident]


def test_drain_and_force_while_serving_run_on_the_loop(harness: Harness) -> None:
    harness.thread.start()
    assert harness.ready.wait(JOIN_TIMEOUT)
    idle = socket.create_connection(("127.0.0.1", harness.port))  # an open connection to close
    try:
        harness.engine.drain()
        harness.engine.force_stop()
        harness.thread.join(JOIN_TIMEOUT)
    finally:
        idle.close()
    assert not harness.thread.is_alive()
    assert harness.ran_on["drain"] == [harness.thread.ident]
    assert harness.ran_on["force"] == [harness.thread.ident]


def test_requests_after_the_loop_finished_are_dropped(harness: Harness) -> None:
    harness.engine.drain()
    harness.thread.start()
    harness.thread.join(JOIN_TIMEOUT)
    assert not harness.thread.is_alive()
    harness.engine.drain()
    harness.engine.force_stop()
    assert harness.ran_on["drain"] == [harness.thread.ident], "the late drain did not run"
    assert harness.ran_on["force"] == [], "nor the late force-stop, on any thread"


class DyingApp:
    """An app whose ``/die`` stops the worker's loop, then holds the clean-up open until
    the test says so, so that a connection can arrive while the loop is dying."""

    def __init__(self) -> None:
        self.dying = threading.Event()
        self.proceed = threading.Event()
        self.late_request_started = threading.Event()

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":
            while (await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        if scope["path"] == "/die":
            asyncio.get_running_loop().stop()
            try:
                await asyncio.sleep(3600)
            finally:  # cancelled by the loop's clean-up
                self.dying.set()
                await asyncio.get_running_loop().run_in_executor(None, self.proceed.wait, 30)
        self.late_request_started.set()
        await asyncio.sleep(3600)


def _send_request(port: int, path: str) -> socket.socket:
    client = socket.create_connection(("127.0.0.1", port), timeout=30)
    client.sendall(f"GET {path} HTTP/1.1\r\nhost: test\r\n\r\n".encode())
    return client


def test_a_dying_loop_stops_accepting_and_leaves_no_task_behind() -> None:
    dying_app = DyingApp()
    harness = Harness(dying_app)
    harness.thread.start()
    try:
        assert harness.ready.wait(JOIN_TIMEOUT)
        doomed = _send_request(harness.port, "/die")
        assert dying_app.dying.wait(JOIN_TIMEOUT)
        late = _send_request(harness.port, "/late")  # arrives while the loop is dying
        # It must not be accepted (it stays in the backlog for other workers). This
        # waits for something that must not happen, so only a bounded time.
        accepted = dying_app.late_request_started.wait(0.5)
        dying_app.proceed.set()
        harness.thread.join(JOIN_TIMEOUT)
        assert not harness.thread.is_alive()
        assert not accepted, "the dying worker accepted a new connection"
        # Nothing was left pending on the closed loop for the garbage collector.
        assert [t for t in asyncio.all_tasks(harness.loops[0]) if not t.done()] == []
        assert doomed.recv(1024).startswith(b"HTTP/1.1 500"), "in-flight: answered 500"
        doomed.close()
        late.close()
    finally:
        dying_app.proceed.set()
        harness.finish()
