"""Fault injection that knows which requests each fault may take down.

A worker killed with requests in flight takes exactly those requests with
it: that failure is unavoidable. Every other failure is a bug. To tell them
apart, each kill records the client ports of the connections the victim held
at the moment it died:

* process mode: the victim is SIGSTOPped first (so it cannot accept another
  connection), its TCP connections are read from ``/proc`` with psutil, then
  it gets a real SIGKILL. Connections still in the shared listener's backlog
  belong to nobody and are served by a sibling.
* thread mode: a thread cannot be SIGKILLed; the equivalent is its event loop
  failing. The chaos app's ``/crash?slot=N`` prints the client ports of the
  requests that worker has in flight (a ``chaos_crash`` line) and stops its loop.
  A connection the loop accepted whose request its app had not yet seen is
  not in that list: when the loop is torn down it is closed without an
  answer (or uvicorn answers 500). Such a failure is attributed by time
  instead: it must have ended between the loop's stop (the ``chaos_crash``
  line's ``monotonic``) and the supervisor's ``crash`` event, plus a short
  grace for the teardown. Kills are 1 s or more apart, and a healthy worker
  never closes a connection without answering, so nothing else fits.
"""

from __future__ import annotations

import os
import random
import signal
import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from urllib.parse import urlsplit

import psutil

from tests.conftest import CorralProcess, eventually
from tests.reliability.load import Attempt, Outcome

# What a request in flight on a killed worker can see: the kernel resets or
# closes a dead process's sockets; a thread worker's loop being torn down
# cancels its request tasks, which uvicorn answers with a 500.
PROCESS_KILL_OUTCOMES = frozenset({Outcome.RESET, Outcome.DISCONNECT})
THREAD_CRASH_OUTCOMES = frozenset({Outcome.RESET, Outcome.DISCONNECT, Outcome.HTTP_ERROR})
# An unanswered connection closes as the dead loop's transports are closed,
# which can trail the crash event by a moment.
TEARDOWN_GRACE = 0.5


@dataclass(frozen=True, slots=True)
class Kill:
    """One injected worker death and the client ports it took down."""

    at: float  # monotonic, when injecting began
    done: float  # monotonic, when the worker was surely dead
    slot: int
    pid: int | None
    client_ports: frozenset[int] = field(default_factory=frozenset)
    # Thread mode: the loop's teardown, from its stop to the crash event (monotonic).
    teardown: tuple[float, float] | None = None


def ready_workers(server: CorralProcess) -> list[dict[str, object]]:
    """Rows of ``/workers`` whose worker is ready now."""
    rows: list[dict[str, object]] = server.side("/workers").json()["workers"]
    return [row for row in rows if row["state"] == "ready"]


def kill_random_worker(server: CorralProcess, mode: str, rng: random.Random) -> Kill:
    """Kill one random ready worker, the hard way its mode allows."""
    deadline = time.monotonic() + 30
    while not (ready := ready_workers(server)):
        assert time.monotonic() < deadline, "no worker became ready within 30 s"
        time.sleep(0.05)
    row = rng.choice(ready)
    slot = int(str(row["slot"]))
    if mode == "process":
        return sigkill(server, slot, int(str(row["pid"])))
    return crash_thread(server, slot)


def sigkill(server: CorralProcess, slot: int, pid: int) -> Kill:
    """SIGSTOP, list its connections to the app port, SIGKILL."""
    app_port = urlsplit(server.base_url).port
    at = time.monotonic()
    os.kill(pid, signal.SIGSTOP)
    try:
        eventually(lambda: _stopped(pid), timeout=10, what=f"pid {pid} stopped")
        connections = psutil.Process(pid).net_connections(kind="tcp")
        ports = frozenset(c.raddr.port for c in connections if c.raddr and c.laddr.port == app_port)
    finally:
        os.kill(pid, signal.SIGKILL)
    return Kill(at, time.monotonic(), slot, pid, ports)


def _stopped(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() in (psutil.STATUS_STOPPED, psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return True


def crash_thread(server: CorralProcess, slot: int) -> Kill:
    """Crash thread worker ``slot`` through the chaos app and read what it had in flight."""
    before = len(_chaos_crashes(server, slot))
    at = time.monotonic()
    server.crash_slot("thread", slot)
    lines = server.wait_for(lambda r: _is_chaos_crash(r, slot), timeout=10, count=before + 1)
    ports = frozenset(int(port) for port in lines[before]["in_flight_clients"])
    stopped = float(lines[before]["monotonic"])
    crashed = float(server.events("crash", slot=slot)[-1]["monotonic"])
    teardown = (stopped, crashed + TEARDOWN_GRACE)
    return Kill(at, time.monotonic(), slot, server.pid, ports, teardown)


def _chaos_crashes(server: CorralProcess, slot: int) -> list[dict[str, object]]:
    with server._cond:
        return [r for r in server.records if _is_chaos_crash(r, slot)]


def _is_chaos_crash(record: dict[str, object], slot: int) -> bool:
    return record.get("chaos_crash") is True and record.get("slot") == slot


@dataclass(frozen=True, slots=True)
class Attribution:
    """Failures split into the ones a kill explains and the ones nothing does."""

    explained: list[tuple[Attempt, Kill]]
    unexplained: list[Attempt]
    by_time: int = 0  # of ``explained``: attributed by the teardown window, not the port

    def unexplained_summary(self, kills: list[Kill], limit: int = 5) -> str:
        """The first few unexplained failures, timed against the nearest kill, for the report."""
        parts = []
        for attempt in self.unexplained[:limit]:
            nearest = min((abs(attempt.ended - k.at) for k in kills), default=float("nan"))
            what = attempt.outcome.value + (f" {attempt.status}" if attempt.status else "")
            parts.append(f"{what} {nearest:.2f} s from a kill")
        return "; ".join(parts) or "none"

    def describe(self) -> str:
        """The report's "why these failures were unavoidable" text."""
        exact = len(self.explained) - self.by_time
        text = f"{exact} in flight on the killed worker (it held their connection when it died)"
        if self.by_time:
            text += (
                f"; {self.by_time} accepted by the dying loop before its app saw them "
                "(closed unanswered during that loop's teardown)"
            )
        return text + f"; {len(self.unexplained)} unexplained"


def attribute(failures: Iterable[Attempt], kills: list[Kill], mode: str) -> Attribution:
    """A failure is explained only by a kill that held its connection, with a fitting outcome."""
    allowed = PROCESS_KILL_OUTCOMES if mode == "process" else THREAD_CRASH_OUTCOMES
    by_port: dict[int, list[Kill]] = {}
    for kill in kills:
        for port in kill.client_ports:
            by_port.setdefault(port, []).append(kill)
    explained: list[tuple[Attempt, Kill]] = []
    unexplained: list[Attempt] = []
    by_time = 0
    for attempt in failures:
        candidates = by_port.get(attempt.client_port or -1, [])
        holder = next(
            (k for k in candidates if attempt.started <= k.done and attempt.ended >= k.at), None
        )
        if holder is not None and attempt.outcome in allowed:
            explained.append((attempt, holder))
            continue
        torn_down = _torn_down_by(attempt, kills)
        if torn_down is not None:
            explained.append((attempt, torn_down))
            by_time += 1
        else:
            unexplained.append(attempt)
    return Attribution(explained, unexplained, by_time)


def _torn_down_by(attempt: Attempt, kills: list[Kill]) -> Kill | None:
    """The thread kill whose loop teardown closed this unanswered connection, if any."""
    # uvicorn answers 500 for a request whose task the teardown cancelled
    # before the app ran (say, inside a middleware's await).
    cut = attempt.outcome in (Outcome.DISCONNECT, Outcome.RESET) or attempt.status == 500
    if not cut:
        return None
    for kill in kills:
        if kill.teardown is not None and kill.teardown[0] <= attempt.ended <= kill.teardown[1]:
            return kill
    return None
