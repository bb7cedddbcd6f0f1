"""Unit tests for lifecycle events, the collector's fan-out, and the structlog sink."""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from collections.abc import Iterator
from typing import Any

import pytest
import structlog

from corral.config import LogFormat
from corral.lifecycle import (
    CrashReason,
    EventKind,
    LifecycleCollector,
    LifecycleEvent,
    LifecycleSink,
)
from corral.lifecycle.collector import sink_name
from corral.lifecycle.log_sink import StructlogSink
from corral.logs import configure_logging
from corral.runtime import WorkerMode


def _event(kind: EventKind = EventKind.SPAWN, **fields: Any) -> LifecycleEvent:
    base: dict[str, Any] = {
        "kind": kind,
        "mode": WorkerMode.PROCESS,
        "wall_time": 1_700_000_000.0,
        "monotonic": 42.0,
    }
    base.update(fields)
    return LifecycleEvent(**base)


class RecordingSink:
    """Remembers every event it is handed."""

    def __init__(self) -> None:
        self.events: list[LifecycleEvent] = []

    def handle(self, event: LifecycleEvent) -> None:
        self.events.append(event)

    @property
    def seqs(self) -> list[int]:
        return [event.seq for event in self.events]


class ExplodingSink:
    """Fails on every event; named through its ``name`` attribute."""

    name = "exploder"

    def __init__(self) -> None:
        self.calls = 0

    def handle(self, event: LifecycleEvent) -> None:
        self.calls += 1
        raise RuntimeError(f"boom on {event.seq}")


class AnonymousFailingSink:
    """Fails on every event; no ``name``, so it is known by its class name."""

    def handle(self, event: LifecycleEvent) -> None:
        raise ValueError("nope")


class NonStringNameSink:
    name = 7

    def handle(self, event: LifecycleEvent) -> None:
        raise KeyError("x")


# --- Events ----------------------------------------------------------------------------


def test_as_dict_drops_none_and_turns_enums_into_values() -> None:
    event = _event(
        EventKind.CRASH,
        slot=2,
        generation=3,
        pid=1234,
        exit_code=1,
        reason=CrashReason.EXIT_CODE,
        uptime=0.25,
        seq=9,
    )
    assert event.as_dict() == {
        "kind": "crash",
        "mode": "process",
        "wall_time": 1_700_000_000.0,
        "monotonic": 42.0,
        "slot": 2,
        "generation": 3,
        "pid": 1234,
        "seq": 9,
        "exit_code": 1,
        "reason": "exit_code",
        "uptime": 0.25,
    }


def test_as_dict_keeps_falsy_non_none_values() -> None:
    out = _event(
        EventKind.RESPAWN, mode=WorkerMode.THREAD, slot=0, backoff=0.0, message=""
    ).as_dict()
    assert out["slot"] == 0
    assert out["backoff"] == 0.0
    assert out["message"] == ""
    assert out["generation"] == 0
    assert out["mode"] == "thread"
    assert "pid" not in out
    assert "reason" not in out
    json.dumps(out)  # JSON-ready


def test_event_is_frozen() -> None:
    event = _event()
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.seq = 5  # type: ignore[misc]


def test_sinks_satisfy_the_protocol() -> None:
    assert isinstance(RecordingSink(), LifecycleSink)
    assert isinstance(StructlogSink(), LifecycleSink)
    assert not isinstance(object(), LifecycleSink)


def test_sink_name() -> None:
    assert sink_name(ExplodingSink()) == "exploder"
    assert sink_name(AnonymousFailingSink()) == "AnonymousFailingSink"
    assert sink_name(NonStringNameSink()) == "NonStringNameSink"
    assert sink_name(StructlogSink()) == "log"


# --- Collector: ordering and fan-out -------------------------------------------------------


def test_seq_numbers_are_one_to_n_in_delivery_order() -> None:
    sink = RecordingSink()
    collector = LifecycleCollector([sink])
    kinds = [EventKind.SUPERVISOR_START, EventKind.SPAWN, EventKind.READY, EventKind.EXIT]
    stamped = [collector.emit(_event(kind)) for kind in kinds]
    assert [e.seq for e in stamped] == [1, 2, 3, 4]
    assert [e.kind for e in stamped] == kinds
    assert sink.events == stamped
    assert collector.emitted == 4


def test_emit_returns_stamped_copy_and_ignores_callers_seq() -> None:
    collector = LifecycleCollector()
    original = _event(seq=99, slot=1)
    stamped = collector.emit(original)
    assert stamped.seq == 1
    assert original.seq == 99
    assert stamped == dataclasses.replace(original, seq=1)


def test_every_sink_sees_every_event_in_same_order() -> None:
    first, second, third = RecordingSink(), RecordingSink(), RecordingSink()
    collector = LifecycleCollector([first, second])
    collector.add_sink(third)
    for slot in range(10):
        collector.emit(_event(slot=slot))
    assert first.events == second.events == third.events
    assert first.seqs == list(range(1, 11))
    assert [e.slot for e in first.events] == list(range(10))


def test_sink_added_later_only_sees_later_events() -> None:
    early, late = RecordingSink(), RecordingSink()
    collector = LifecycleCollector([early])
    collector.emit(_event())
    collector.add_sink(late)
    collector.emit(_event())
    assert early.seqs == [1, 2]
    assert late.seqs == [2]


def test_failing_sink_is_counted_and_does_not_stop_others(
    caplog: pytest.LogCaptureFixture,
) -> None:
    before, after = RecordingSink(), RecordingSink()
    exploder, anonymous = ExplodingSink(), AnonymousFailingSink()
    collector = LifecycleCollector([before, exploder, anonymous, after])
    with caplog.at_level(logging.ERROR, logger="corral.lifecycle"):
        stamped = [collector.emit(_event()) for _ in range(3)]
    assert [e.seq for e in stamped] == [1, 2, 3]
    assert before.seqs == after.seqs == [1, 2, 3]
    assert exploder.calls == 3
    assert collector.sink_errors() == {"exploder": 3, "AnonymousFailingSink": 3}
    # The first failure of each sink is reported with its traceback; later ones are only counted.
    failures = [r for r in caplog.records if r.name == "corral.lifecycle"]
    assert [r.getMessage() for r in failures] == [
        "lifecycle sink exploder failed; counting further errors",
        "lifecycle sink AnonymousFailingSink failed; counting further errors",
    ]
    assert all(r.exc_info is not None for r in failures)


def test_sink_errors_is_a_copy() -> None:
    collector = LifecycleCollector([ExplodingSink()])
    collector.emit(_event())
    errors = collector.sink_errors()
    errors["exploder"] = 100
    assert collector.sink_errors() == {"exploder": 1}


def test_no_sinks_no_errors() -> None:
    collector = LifecycleCollector()
    assert collector.sink_errors() == {}
    assert collector.emitted == 0
    assert collector.recent() == []


# --- Collector: the ring of recent events ----------------------------------------------------


def test_recent_since_filters_by_seq() -> None:
    collector = LifecycleCollector()
    for _ in range(5):
        collector.emit(_event())
    assert [e.seq for e in collector.recent()] == [1, 2, 3, 4, 5]
    assert [e.seq for e in collector.recent(since=3)] == [4, 5]
    assert collector.recent(since=5) == []
    assert collector.recent(since=100) == []


def test_recent_ring_is_bounded() -> None:
    collector = LifecycleCollector(history=3)
    for _ in range(10):
        collector.emit(_event())
    assert [e.seq for e in collector.recent()] == [8, 9, 10]
    assert [e.seq for e in collector.recent(since=2)] == [8, 9, 10]
    assert [e.seq for e in collector.recent(since=9)] == [10]
    assert collector.emitted == 10


def test_recent_returns_a_new_list() -> None:
    collector = LifecycleCollector()
    collector.emit(_event())
    snapshot = collector.recent()
    snapshot.clear()
    assert len(collector.recent()) == 1


# --- Collector: thread safety ----------------------------------------------------------------


THREADS = 16
PER_THREAD = 200


def test_concurrent_emits_are_counted_ordered_and_fanned_out_exactly() -> None:
    sinks = [RecordingSink() for _ in range(3)]
    exploder = ExplodingSink()
    collector = LifecycleCollector([sinks[0], exploder, *sinks[1:]], history=THREADS * PER_THREAD)
    barrier = threading.Barrier(THREADS)
    returned: list[list[int]] = [[] for _ in range(THREADS)]

    def worker(index: int) -> None:
        barrier.wait()
        for i in range(PER_THREAD):
            stamped = collector.emit(_event(slot=index, generation=i))
            returned[index].append(stamped.seq)

    threads = [threading.Thread(target=worker, args=(n,)) for n in range(THREADS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    total = THREADS * PER_THREAD
    assert collector.emitted == total
    all_seqs = sorted(seq for seqs in returned for seq in seqs)
    assert all_seqs == list(range(1, total + 1))  # unique and contiguous
    for seqs in returned:
        assert len(seqs) == PER_THREAD
        assert seqs == sorted(seqs)  # a thread's own emits are stamped in its program order
    for sink in sinks:
        assert sink.seqs == list(range(1, total + 1))  # each saw all, strictly increasing
        assert sink.events == sinks[0].events
    assert exploder.calls == total
    assert collector.sink_errors() == {"exploder": total}
    recent = collector.recent()
    assert [e.seq for e in recent] == list(range(1, total + 1))
    # Each thread's events kept their payloads, in that thread's order.
    for index in range(THREADS):
        mine = [e.generation for e in recent if e.slot == index]
        assert mine == list(range(PER_THREAD))


# --- StructlogSink -------------------------------------------------------------------------


@pytest.fixture
def restore_logging() -> Iterator[None]:
    """Put the root logger, uvicorn's loggers and structlog back as they were."""
    root = logging.getLogger()
    saved_root = (list(root.handlers), root.level)
    names = ("uvicorn", "uvicorn.error", "uvicorn.access")
    saved = {
        name: (
            list(logging.getLogger(name).handlers),
            logging.getLogger(name).propagate,
            logging.getLogger(name).level,
            logging.getLogger(name).disabled,
        )
        for name in names
    }
    saved_structlog = structlog.get_config()
    yield
    root.handlers, level = saved_root
    root.setLevel(level)
    for name, (handlers, propagate, lvl, disabled) in saved.items():
        logger = logging.getLogger(name)
        logger.handlers = handlers
        logger.propagate = propagate
        logger.setLevel(lvl)
        logger.disabled = disabled
    structlog.configure(**saved_structlog)


def _json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


@pytest.mark.usefixtures("restore_logging")
def test_structlog_sink_writes_one_json_line_per_event(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.JSON, "info")
    collector = LifecycleCollector([StructlogSink()])
    collector.emit(_event(EventKind.SPAWN, slot=0, pid=4321))
    collector.emit(
        _event(
            EventKind.CRASH,
            slot=0,
            pid=4321,
            signal="SIGKILL",
            reason=CrashReason.SIGNAL,
            uptime=1.5,
        )
    )
    collector.emit(_event(EventKind.BUDGET_EXHAUSTED, slot=0, budget_remaining=0))
    records = _json_lines(capsys.readouterr().err)
    assert [r["event"] for r in records] == ["spawn", "crash", "budget_exhausted"]
    assert [r["level"] for r in records] == ["info", "warning", "error"]
    spawn, crash, exhausted = records
    assert spawn["lifecycle"] is True
    assert spawn["logger"] == "corral.lifecycle"
    assert spawn["seq"] == 1
    assert spawn["slot"] == 0
    assert spawn["pid"] == 4321
    assert spawn["mode"] == "process"
    assert "kind" not in spawn
    assert "exit_code" not in spawn  # None fields are left out
    assert "timestamp" in spawn
    assert crash["reason"] == "signal"
    assert crash["signal"] == "SIGKILL"
    assert crash["uptime"] == 1.5
    assert crash["seq"] == 2
    assert exhausted["budget_remaining"] == 0
    assert collector.sink_errors() == {}


@pytest.mark.usefixtures("restore_logging")
def test_structlog_sink_respects_the_configured_level(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging(LogFormat.JSON, "warning")
    sink = StructlogSink("corral.test")
    sink.handle(_event(EventKind.READY, seq=1))
    sink.handle(_event(EventKind.FORCE_STOP, seq=2, duration=3.0))
    records = _json_lines(capsys.readouterr().err)
    assert len(records) == 1
    assert records[0]["event"] == "force_stop"
    assert records[0]["level"] == "warning"
    assert records[0]["logger"] == "corral.test"
    assert records[0]["duration"] == 3.0
