"""Recovery (section 2): corral as a system under test, in process or thread mode.

Launched through the ``corral`` console script, as the README does. The
kill is a SIGKILL to slot 0's process, or in thread mode ``GET /crash?slot=0``
(threads cannot be killed); the times come from corral's own lifecycle
events (their ``monotonic`` stamps) and from polling ``/?slot=0``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Callable
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from urllib.parse import urlsplit

from bench.commands import corral_argv
from bench.recovery_systems import (
    APP,
    RECOVERY_TIMEOUT,
    STARTUP_TIMEOUT,
    WORKERS,
    CrashOutcome,
    ExitWatch,
    Poll,
    Sample,
    System,
    lifecycle,
    poll_http,
)
from bench.servers import REQUEST_ERRORS, BenchError, Record, ServerProcess, http_get

RESTART_WINDOW = 1.0
MIN_UPTIME = RESTART_WINDOW + 0.25  # never kill a corral worker younger than this
EVENT_GRACE = 2.0  # how long an expected-but-optional log event may lag
CRASH_REQUEST_TIMEOUT = 5.0
MAX_CRASH_ATTEMPTS = 200


class CorralSystem(System):
    """corral in ``mode``; with ``spares``, a warm spare takes each killed worker's slot."""

    def __init__(self, mode: str, spares: int = 0) -> None:
        super().__init__()
        self.mode = mode
        self.spares = spares
        self.key = f"corral-{mode}" + (f"-spares{spares}" if spares else "")
        self.label = f"corral, {mode} mode" + (f", --spares {spares}" if spares else "")
        self.port = 0
        self.argv = corral_argv(APP, 0, 0, workers=WORKERS, mode=mode)
        self.argv += ["--max-restarts", "1000", "--restart-window", f"{RESTART_WINDOW:g}"]
        if spares:
            self.argv += ["--spares", str(spares)]
        self._pool = ThreadPoolExecutor(max_workers=4, thread_name_prefix=f"crash-{mode}")
        self._crash_requests: list[Future[CrashOutcome]] = []

    def start(self) -> None:
        self.server = server = ServerProcess(self.label, self.argv)
        listening = server.wait_for(
            lambda r: r.get("event") == "corral listening", STARTUP_TIMEOUT, "'corral listening'"
        )
        port = urlsplit(listening["urls"][0]).port
        if port is None:
            raise BenchError(f"{self.label}: no port in {listening['urls']!r}")
        self.port = port
        for slot in range(WORKERS):
            server.wait_for(lifecycle("ready", slot=slot), STARTUP_TIMEOUT, f"slot {slot} ready")

    def kill_once(self) -> Sample:
        server = self.running()
        spawn = self._isolated_victim(server)
        generation: int = spawn["generation"]
        new = generation + 1
        exited = None
        if self.mode == "process":
            exited = ExitWatch(spawn["pid"])
            t_kill = time.monotonic()
            os.kill(spawn["pid"], signal.SIGKILL)
        else:  # a thread worker's death is its loop's, not a process's: no exit to watch
            t_kill = self._crash_slot0(server, generation)
        poll = poll_http(
            self.port,
            "/?slot=0",
            lambda status, body: status == 200 and body.get("generation", 0) > generation,
            RECOVERY_TIMEOUT,
            f"{self.label}: a 200 from slot 0 generation {new}",
        )
        if poll.payload.get("generation") != new:
            self.notes.append(
                f"slot 0 answered as generation {poll.payload.get('generation')}, expected {new}"
            )
        gone = exited.since(t_kill) if exited else None
        return self._sample(server, generation, t_kill, poll, gone)

    def _isolated_victim(self, server: ServerProcess) -> Record:
        """Slot 0's latest ``spawn`` event, once that worker is ready and old enough that its
        death is an isolated crash (a younger one's would be respawned after a backoff)."""
        spawn = _latest(server, lifecycle("spawn", slot=0), lifecycle("promote", slot=0))
        if spawn is None:
            raise BenchError(f"{self.label}: no spawn event for slot 0; log tail:\n{server.tail()}")
        generation = spawn["generation"]
        if spawn["event"] == "spawn":  # a promoted spare serves from its promotion on
            server.wait_for(
                lifecycle("ready", slot=0, generation=generation),
                RECOVERY_TIMEOUT,
                f"ready event for slot 0 generation {generation}",
            )
        if self.spares:
            self._wait_for_a_warm_spare(server)
        time.sleep(max(0.0, spawn["monotonic"] + MIN_UPTIME - time.monotonic()))
        return spawn

    def _wait_for_a_warm_spare(self, server: ServerProcess) -> None:
        """Each kill measures a promotion: the spare booted after the last one must be warm."""
        spare = server.find(lambda r: r.get("event") == "spawn" and "spare" in r)
        if spare is None:
            raise BenchError(f"{self.label}: no spare was started; log tail:\n{server.tail()}")
        number = spare["spare"]
        server.wait_for(lifecycle("ready", spare=number), RECOVERY_TIMEOUT, f"spare {number}")

    def _sample(
        self, server: ServerProcess, generation: int, t_kill: float, poll: Poll, gone: float | None
    ) -> Sample:
        """The kill's figures from the lifecycle events of the old and the new generation."""
        new = generation + 1
        if self.spares:  # the promoted spare exists and is ready at its promotion
            spawned = ready = server.wait_for(
                lifecycle("promote", slot=0, generation=new), RECOVERY_TIMEOUT, f"promotion {new}"
            )
        else:
            spawned = server.wait_for(
                lifecycle("spawn", slot=0, generation=new), RECOVERY_TIMEOUT, f"spawn of gen {new}"
            )
            ready = server.wait_for(
                lifecycle("ready", slot=0, generation=new), RECOVERY_TIMEOUT, f"ready of gen {new}"
            )
        crash = server.wait_optional(lifecycle("crash", slot=0, generation=generation), EVENT_GRACE)
        respawn = server.wait_optional(
            lifecycle("respawn", slot=0, generation=generation), EVENT_GRACE
        )
        if crash is None:
            self.notes.append(f"no crash event for slot 0 generation {generation}")
        if respawn is None:
            self.notes.append(f"no respawn event for slot 0 generation {generation}")
        elif respawn.get("backoff"):
            self.notes.append(
                f"generation {generation} was respawned after a {respawn['backoff']:.3f} s backoff"
            )
        return Sample(
            spawned=spawned["monotonic"] - t_kill,
            serving=poll.at - t_kill,
            gone=gone,
            crash_event=crash["monotonic"] - t_kill if crash else None,
            ready_event=ready["monotonic"] - t_kill,
            requests=poll.requests,
            failed_requests=poll.failures,
            other_after_ready=sum(1 for t in poll.rejected_at if t > ready["monotonic"]),
        )

    def _crash_slot0(self, server: ServerProcess, generation: int) -> float:
        """Send ``/crash?slot=0`` until one reaches slot 0; the send time of that one."""
        crashed = lifecycle("crash", slot=0, generation=generation)
        deadline = time.monotonic() + RECOVERY_TIMEOUT
        for _ in range(MAX_CRASH_ATTEMPTS):
            t_send = time.monotonic()
            future = self._pool.submit(_crash_request, self.port)
            while not future.done():
                # The crashing request may never be answered: the crash event says it landed.
                if server.find(crashed) is not None:
                    self._crash_requests.append(future)
                    return t_send
                if time.monotonic() > deadline:
                    raise BenchError(
                        f"{self.label}: /crash?slot=0 neither answered nor crashed slot 0"
                        f" within {RECOVERY_TIMEOUT:.0f} s; log tail:\n{server.tail()}"
                    )
                server.pause(0.002)
            if future.result().status == 409:
                continue
            # Anything else reached slot 0: a failed request, or whatever the dying loop
            # managed to send. kill_once then insists on the crash and a new generation.
            self._crash_requests.append(future)
            return t_send
        raise BenchError(f"{self.label}: /crash never reached slot 0 in {MAX_CRASH_ATTEMPTS} tries")

    def crash_request_outcomes(self) -> list[CrashOutcome]:
        outcomes = []
        for future in self._crash_requests:
            with contextlib.suppress(TimeoutError, CancelledError):
                outcomes.append(future.result(timeout=CRASH_REQUEST_TIMEOUT + 1))
        return outcomes

    def stop(self) -> list[str]:
        notes = super().stop()
        self._pool.shutdown(wait=False, cancel_futures=True)
        return notes


def _latest(server: ServerProcess, *predicates: Callable[[Record], bool]) -> Record | None:
    """The latest record matching any of ``predicates``."""
    return server.find(lambda record: any(p(record) for p in predicates))


def _crash_request(port: int) -> CrashOutcome:
    start = time.monotonic()
    try:
        status, _ = http_get(port, "/crash?slot=0", timeout=CRASH_REQUEST_TIMEOUT)
    except REQUEST_ERRORS as exc:
        return CrashOutcome(None, type(exc).__name__, time.monotonic() - start)
    return CrashOutcome(status, None, time.monotonic() - start)
