"""Stress tests that only fully mean something without the GIL.

With a GIL, threads interleave at bytecode boundaries and many races stay
hidden; on a free-threaded build they run truly in parallel. These tests run
in both lanes (``make test`` and ``make test-ft``): every assertion holds with
or without a GIL, but only the free-threaded lane makes them hard to pass.

* ``LifecycleCollector``: 16 threads emit 25 events each, released together
  by a barrier, while readers snapshot the ring. Totals, sequence numbers,
  ring contents and every sink's delivery order must be exact.
* A real ``corral run`` with 8 thread workers takes 2000 requests from 8
  client threads while 4 workers are crashed mid-load. Every request is
  accounted for, and every crash is one crash event and one respawn.

The load scenario runs once per module (``load_run``) and leaves the server
running, so further checks of the same run (its metrics, say) are one more
test taking ``load_run``.
"""

from __future__ import annotations

import http.client
import json
import signal
import threading
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field

import pytest
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client.parser import text_string_to_metric_families

from corral.lifecycle import EventKind, LifecycleCollector, LifecycleEvent
from corral.lifecycle.metrics_sink import PrometheusSink
from corral.lifecycle.trace_sink import TraceSink
from corral.metrics import CorralMetrics
from corral.runtime import ModeDecision, WorkerMode
from corral.tracing import RecentSpans
from tests.conftest import ROOT, CorralProcess, Event, corral_env

# --- The collector under concurrent emitters -------------------------------------------------

EMITTERS = 16
EVENTS_PER_EMITTER = 25
TOTAL_EVENTS = EMITTERS * EVENTS_PER_EMITTER
READERS = 2
ROUNDS = 5
BARRIER_TIMEOUT = 30.0


class CountingSink:
    """Counts and records deliveries with *no* lock of its own.

    The collector promises to call sinks one event at a time, in ``seq``
    order. If it did not, the unlocked read-modify-write of ``count`` would
    lose updates and ``_inside`` would catch two calls overlapping.
    """

    def __init__(self, name: str) -> None:
        self.name = name
        self.count = 0
        self.seqs: list[int] = []
        self.overlaps = 0
        self._inside = False

    def handle(self, event: LifecycleEvent) -> None:
        if self._inside:
            self.overlaps += 1
        self._inside = True
        count = self.count
        self.seqs.append(event.seq)
        self.count = count + 1
        self._inside = False


class FailingSink:
    """Raises on every event: each failure must be counted, and must not stop delivery."""

    name = "failing"

    def handle(self, event: LifecycleEvent) -> None:
        raise RuntimeError(f"sink failure for seq {event.seq}")


def _event(emitter: int, index: int) -> LifecycleEvent:
    return LifecycleEvent(
        kind=EventKind.SPAWN,
        mode=WorkerMode.THREAD,
        wall_time=0.0,
        monotonic=float(index),
        slot=emitter,
        generation=index,
        message=f"{emitter}:{index}",
    )


@dataclass
class Round:
    """What one round of concurrent emission produced, per emitter and per reader."""

    stamped: dict[int, list[LifecycleEvent]] = field(default_factory=dict)
    snapshots: list[list[int]] = field(default_factory=list)
    errors: list[BaseException] = field(default_factory=list)


def _emit_concurrently(collector: LifecycleCollector) -> Round:
    """16 emitters and 2 ring readers, released at once by one barrier."""
    result = Round()
    lock = threading.Lock()
    barrier = threading.Barrier(EMITTERS + READERS)
    emitters_done = threading.Event()

    def emitter(number: int) -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT)
            mine = [collector.emit(_event(number, i)) for i in range(EVENTS_PER_EMITTER)]
            with lock:
                result.stamped[number] = mine
        except BaseException as exc:  # collected and reported by the test
            with lock:
                result.errors.append(exc)

    def reader() -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT)
            # Bounded: it stops when the emitters are done, or after this many looks.
            for _ in range(100_000):
                seqs = [event.seq for event in collector.recent()]
                with lock:
                    result.snapshots.append(seqs)
                if emitters_done.is_set():
                    break
        except BaseException as exc:  # collected and reported by the test
            with lock:
                result.errors.append(exc)

    emitter_threads = [threading.Thread(target=emitter, args=(n,)) for n in range(EMITTERS)]
    reader_threads = [threading.Thread(target=reader) for _ in range(READERS)]
    for thread in [*emitter_threads, *reader_threads]:
        thread.start()
    for thread in emitter_threads:
        thread.join(BARRIER_TIMEOUT)
    emitters_done.set()
    for thread in reader_threads:
        thread.join(BARRIER_TIMEOUT)
    assert not any(t.is_alive() for t in [*emitter_threads, *reader_threads]), "a thread hung"
    return result


@pytest.mark.parametrize("history", [TOTAL_EVENTS, 64], ids=["ring-holds-all", "ring-wraps"])
def test_concurrent_emits_are_stamped_delivered_and_kept_exactly(history: int) -> None:
    for _ in range(ROUNDS):
        sinks = [CountingSink("first"), CountingSink("second")]
        failing = FailingSink()
        collector = LifecycleCollector([sinks[0], failing, sinks[1]], history=history)

        outcome = _emit_concurrently(collector)

        assert outcome.errors == []
        assert sorted(outcome.stamped) == list(range(EMITTERS))
        everything = sorted(
            (event for events in outcome.stamped.values() for event in events),
            key=lambda event: event.seq,
        )
        # Every emit got its own sequence number, and together they are 1..N.
        assert [event.seq for event in everything] == list(range(1, TOTAL_EVENTS + 1))
        assert collector.emitted == TOTAL_EVENTS
        for number, events in outcome.stamped.items():
            # Each emitter's events are stamped in the order it emitted them, unaltered.
            assert [e.message for e in events] == [
                f"{number}:{i}" for i in range(EVENTS_PER_EMITTER)
            ]
            assert all(e.slot == number for e in events)
            seqs = [e.seq for e in events]
            assert seqs == sorted(seqs)
        # Every sink saw every event once, one at a time, in seq order.
        for sink in sinks:
            assert sink.overlaps == 0, sink.name
            assert sink.count == TOTAL_EVENTS, sink.name
            assert sink.seqs == list(range(1, TOTAL_EVENTS + 1)), sink.name
        assert collector.sink_errors() == {"failing": TOTAL_EVENTS}
        # The ring holds exactly the newest ``history`` events, oldest first.
        assert collector.recent() == everything[-history:]
        assert collector.recent(since=TOTAL_EVENTS - 10) == everything[-10:]
        # Each concurrent snapshot was a contiguous, ordered run of seq numbers.
        assert outcome.snapshots, "the readers looked at least once"
        for seqs in outcome.snapshots:
            assert len(seqs) <= history
            if seqs:
                assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))


# --- Eight thread workers under load, with crashes ---------------------------------------------

WORKERS = 8
CLIENTS = 8
REQUESTS = 2000
CRASHED_SLOTS = (1, 3, 5, 7)  # one crash each, so no slot comes near its restart budget
REQUEST_TIMEOUT = 10.0
# A few milliseconds of (non-blocking) work, so each worker has several requests
# in flight when it is crashed: they are what a crash may cost.
LOAD_PATH = "/slow?seconds=0.005"


@dataclass
class LoadOutcome:
    """Every load request's fate, as the clients saw it."""

    ok: list[dict[str, int]] = field(default_factory=list)  # the 200 bodies: who served
    statuses: Counter[int] = field(default_factory=Counter)
    transport_errors: Counter[str] = field(default_factory=Counter)
    crash_replies: list[int | str] = field(default_factory=list)  # each injection's outcome

    @property
    def issued(self) -> int:
        return sum(self.statuses.values()) + sum(self.transport_errors.values())


@dataclass
class LoadRun:
    server: CorralProcess
    outcome: LoadOutcome
    crashed_slots: tuple[int, ...]


def _request(port: int, path: str) -> tuple[int, bytes] | str:
    """One GET on a fresh connection: ``(status, body)``, or the transport error's name."""
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=REQUEST_TIMEOUT)
    try:
        connection.request("GET", path, headers={"Connection": "close"})
        response = connection.getresponse()
        return response.status, response.read()
    except (OSError, http.client.HTTPException) as exc:
        return type(exc).__name__
    finally:
        connection.close()


def _crash(port: int, slot: int) -> int | str:
    """Crash ``slot``'s worker through the chaos app; others answer 409, so retry until it lands.

    Workers share one listening socket and the kernel favours whichever loop is
    already awake, so landing on a given slot under load can take hundreds of tries.
    """
    others: Counter[int] = Counter()
    for _ in range(5000):
        reply = _request(port, f"/crash?slot={slot}")
        if isinstance(reply, str) or reply[0] != 409:
            return reply if isinstance(reply, str) else reply[0]
        others[json.loads(reply[1])["slot"]] += 1
    raise AssertionError(f"never reached slot {slot}; answered by {sorted(others.items())}")


def _plan() -> list[int | None]:
    """The work items in order: ``None`` is one load request, an int is a crash of that
    slot. Crashes sit evenly through the load, so whichever client draws one injects
    it while the other clients keep the load going."""
    plan: list[int | None] = [None] * REQUESTS
    step = REQUESTS // (len(CRASHED_SLOTS) + 1)
    for number, slot in enumerate(CRASHED_SLOTS, start=1):
        plan.insert(number * step + number - 1, slot)
    return plan


def _drive_load(port: int) -> LoadOutcome:
    """REQUESTS load requests and one crash per CRASHED_SLOTS, from CLIENTS threads."""
    outcome = LoadOutcome()
    lock = threading.Lock()
    work = iter(_plan())
    barrier = threading.Barrier(CLIENTS)
    errors: list[BaseException] = []

    def client() -> None:
        try:
            barrier.wait(BARRIER_TIMEOUT)
            while True:
                with lock:
                    item = next(work, "done")
                if item == "done":
                    return
                if isinstance(item, int):
                    crashed = _crash(port, item)
                    with lock:
                        outcome.crash_replies.append(crashed)
                    continue
                reply = _request(port, LOAD_PATH)
                with lock:
                    if isinstance(reply, str):
                        outcome.transport_errors[reply] += 1
                    else:
                        outcome.statuses[reply[0]] += 1
                        if reply[0] == 200:
                            outcome.ok.append(json.loads(reply[1]))
        except BaseException as exc:  # collected and re-raised below
            with lock:
                errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(CLIENTS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not any(thread.is_alive() for thread in threads), "load threads hung"
    assert errors == []
    return outcome


@pytest.fixture(scope="module")
def load_run() -> Iterator[LoadRun]:
    """The load-with-crashes scenario, run once; the server is still up for the tests."""
    server = CorralProcess(
        ["examples.chaos:app", "--workers", str(WORKERS), "--mode", "thread", "--port", "0"],
        corral_env(),
        ROOT,
    )
    try:
        server.wait_ready(WORKERS)
        port = int(server.base_url.rsplit(":", 1)[1])
        outcome = _drive_load(port)
        for slot in CRASHED_SLOTS:  # every crashed slot is serving again
            server.wait_event("ready", slot=slot, generation=2)
        yield LoadRun(server, outcome, CRASHED_SLOTS)
        server.send(signal.SIGTERM)
        server.wait_exit(30)
    finally:
        server.kill_hard()


def _crash_errors(records: list[Event], incarnations: set[tuple[int, int]]) -> int:
    """'Exception in ASGI application' lines from the crashed incarnations: each is a
    request whose task was cancelled as its worker's loop died, and which got a 500.

    The line carries the slot of the thread that logged it. A dying worker finishes
    its own tasks on its own thread; one left pending for the garbage collector would
    be logged by whichever thread collected it, and show up here as a healthy slot."""
    count = 0
    for record in records:
        if str(record.get("event", "")).startswith("Exception in ASGI application"):
            where = (record.get("worker_slot"), record.get("worker_generation"))
            assert where in incarnations, f"a request failed on a healthy worker: {record}"
            count += 1
    return count


@pytest.mark.integration
def test_every_request_is_answered_or_was_in_flight_on_a_crashed_worker(load_run: LoadRun) -> None:
    outcome = load_run.outcome
    crashed = {(slot, 1) for slot in load_run.crashed_slots}
    assert outcome.issued == REQUESTS
    assert len(outcome.crash_replies) == len(load_run.crashed_slots)
    # A request in flight on a worker whose loop dies is cancelled and answered 500
    # (or, if it had not been read yet, loses its connection). Each client has at
    # most one request in flight, so a crash can take at most CLIENTS of them.
    lost = outcome.statuses[500] + sum(outcome.transport_errors.values())
    assert set(outcome.statuses) <= {200, 500}, outcome.statuses
    assert lost <= CLIENTS * len(load_run.crashed_slots), outcome
    assert outcome.statuses[200] == REQUESTS - lost
    # The server's count of cancelled requests matches the clients': every 500 the
    # load got, plus the crash requests themselves that were answered 500.
    injected_500s = outcome.crash_replies.count(500)
    records = list(load_run.server.records)  # a copy: the reader thread may still append
    assert _crash_errors(records, crashed) == outcome.statuses[500] + injected_500s
    # Every 200 came from this process, from an incarnation that existed.
    pids = {body["pid"] for body in outcome.ok}
    assert pids == {load_run.server.pid}
    served = {(body["slot"], body["generation"]) for body in outcome.ok}
    possible = {(slot, 1) for slot in range(WORKERS)}
    possible |= {(slot, 2) for slot in load_run.crashed_slots}
    assert served <= possible
    assert {slot for slot, _ in served} == set(range(WORKERS)), "every worker took load"


@pytest.mark.integration
def test_each_injected_crash_is_one_crash_event_and_one_respawn(load_run: LoadRun) -> None:
    server = load_run.server
    crashes = len(load_run.crashed_slots)
    crash_events = server.events("crash")
    assert sorted(event["slot"] for event in crash_events) == list(load_run.crashed_slots)
    assert all(event["generation"] == 1 for event in crash_events)
    assert all(event["reason"] == "exception" for event in crash_events)
    respawns = server.events("respawn")
    assert sorted(event["slot"] for event in respawns) == list(load_run.crashed_slots)
    assert len(server.events("spawn")) == WORKERS + crashes
    assert len(server.events("ready")) == WORKERS + crashes
    assert server.events("exit") == []
    assert server.events("budget_exhausted") == []
    # Nothing else went wrong: the only error lines are the injected crashes' own.
    expected = {"worker loop failed", "Exception in ASGI application\n"}
    unexpected = [
        record
        for record in server.records
        if record.get("level") in ("error", "critical") and record.get("event") not in expected
    ]
    assert unexpected == []
    failed_loops = [r for r in server.records if r.get("event") == "worker loop failed"]
    assert len(failed_loops) == crashes


# --- The same concurrency, through the real metrics and tracing sinks ---------------------------


def test_concurrent_emits_reach_prometheus_and_spans_exactly() -> None:
    """Prometheus counters and the span ring see every concurrent event exactly once."""
    for _ in range(ROUNDS):
        metrics = CorralMetrics(
            ModeDecision(WorkerMode.THREAD, "stress", free_threaded_build=True, gil_enabled=False)
        )
        spans = RecentSpans(limit=TOTAL_EVENTS)
        provider = TracerProvider()
        provider.add_span_processor(spans)
        collector = LifecycleCollector(
            [PrometheusSink(metrics)], tracer=TraceSink(provider), history=TOTAL_EVENTS
        )

        outcome = _emit_concurrently(collector)

        assert outcome.errors == []
        text = metrics.expose(None)[0].decode()
        samples = {
            (sample.name, tuple(sorted(sample.labels.items()))): sample.value
            for family in text_string_to_metric_families(text)
            for sample in family.samples
        }
        assert samples[("corral_lifecycle_events_total", (("kind", "spawn"),))] == TOTAL_EVENTS
        for slot in range(EMITTERS):
            key = ("corral_worker_spawns_total", (("slot", str(slot)),))
            assert samples[key] == EVENTS_PER_EMITTER, slot
        recorded = spans.snapshot()
        assert len(recorded) == TOTAL_EVENTS
        assert len({span["span_id"] for span in recorded}) == TOTAL_EVENTS
        # Every event in the ring names exactly one of those spans.
        assert {e.span_id for e in collector.recent()} == {s["span_id"] for s in recorded}
        assert collector.sink_errors() == {}
        provider.shutdown()


@pytest.mark.integration
def test_request_metrics_under_load_match_what_the_clients_saw(load_run: LoadRun) -> None:
    """Eight threads counting into their own blocks, read by the scrape thread: exact."""
    outcome = load_run.outcome
    metrics = load_run.server.scrape()
    ok = metrics.sum("corral_http_requests_total", status_class="2xx")
    assert ok == len(outcome.ok), "every 200 a client received was counted once"
    total = metrics.sum("corral_http_requests_total")
    # The crash injections' retries were answered 409 by other slots; leave them out.
    counted = total - metrics.sum("corral_http_requests_total", status_class="4xx")
    answered = sum(outcome.statuses.values()) + sum(
        1 for reply in outcome.crash_replies if isinstance(reply, int)
    )
    issued = outcome.issued + len(outcome.crash_replies)
    # A request the client saw fail may or may not have reached a worker's app.
    assert answered <= counted <= issued
    assert metrics.sum("corral_http_requests_in_flight") == 0
    assert metrics.sum("corral_http_request_duration_seconds_count") == total
    assert metrics.sum("corral_worker_crashes_total") == len(load_run.crashed_slots)
    assert metrics.sum("corral_worker_restarts_total") == len(load_run.crashed_slots)
