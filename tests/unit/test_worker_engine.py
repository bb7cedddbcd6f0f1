"""``WorkerEngine``'s cross-thread control: drain and force-stop only ever run on the worker's loop.

The supervisor (or a process worker's control thread) may ask an engine to
drain or stop at any point of its life. asyncio objects are not thread-safe,
with or without a GIL, so the request must run on the engine's own loop
thread: kept until the loop starts, handed over while it runs, and dropped
once it has finished.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterator

import pytest
from examples.chaos import app

from corral.config import ServerConfig
from corral.listeners import create_listeners
from corral.runtime import WorkerMode
from corral.worker import Ready, WorkerEngine, WorkerMessage, WorkerSpec

JOIN_TIMEOUT = 30.0


class Harness:
    """One engine on a loopback listener, run on its own thread like a thread worker."""

    def __init__(self) -> None:
        config = ServerConfig(port=0, workers=1, mode=WorkerMode.THREAD)
        self.listeners = create_listeners(config)
        spec = WorkerSpec(0, 1, WorkerMode.THREAD, config, None)
        self.ready = threading.Event()
        self.engine = WorkerEngine(spec, app, [s.dup() for s in self.listeners], self._report)
        self.ran_on: dict[str, list[int]] = {"drain": [], "force": []}
        self._wrap("_begin_drain", "drain")
        self._wrap("_force", "force")
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
    port = harness.listeners[0].getsockname()[1]
    idle = socket.create_connection(("127.0.0.1", port))  # an open connection to close
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
