"""Unit tests for ``corral.request_stats``: the middleware, the block layout and the lane pool.

The middleware is driven with tiny ASGI apps and fake ``receive``/``send``;
durations come from a scripted clock where a test asserts bucket placement.
One test runs a real separate process (spawn, like corral's forkserver
workers: nothing inherited) that writes through ``open_recorder`` and is then
killed with ``SIGKILL``, to prove the supervisor still reads and folds its
exact final counts.
"""

from __future__ import annotations

import asyncio
import multiprocessing
import os
import signal
import stat
import threading
from collections.abc import Awaitable, Callable, Generator, Iterator, MutableMapping
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import Histogram

from corral.request_stats.layout import (
    BLOCK_BYTES,
    BLOCK_CELLS,
    BUCKETS,
    HEADER_INDEX,
    LAYOUT_MAGIC,
    METHOD_LABELS,
    REQUEST_CELL,
    REQUESTS_BASE,
    REQUESTS_END,
    STARTED_INDEX,
    STATUS_CLASSES,
    SUM_INDEX,
    WS_ENDED_INDEX,
    WS_GOING_AWAY_INDEX,
    WS_OPENED_INDEX,
    bucket_counts,
    bucket_offset,
    request_cell,
    requests_by_class,
)
from corral.request_stats.pool import RequestStatsPool, SlotRequestStats, StatsLease
from corral.request_stats.recorder import RequestMetricsMiddleware, RequestRecorder, open_recorder

Message = MutableMapping[str, Any]
App = Callable[[Any, Any, Any], Awaitable[None]]


# --- Helpers --------------------------------------------------------------------


def _http_scope(method: str = "GET", path: str = "/") -> dict[str, Any]:
    return {"type": "http", "method": method, "path": path, "headers": []}


async def _receive() -> Message:
    return {"type": "http.request", "body": b"", "more_body": False}


class _Sink:
    """A fake ``send`` that keeps what it was sent."""

    def __init__(self) -> None:
        self.messages: list[dict[str, Any]] = []

    async def __call__(self, message: Message) -> None:
        self.messages.append(dict(message))


def _status_app(status: int | None) -> App:
    """Answers with ``status``, or returns without starting a response when ``None``."""

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await receive()
        if status is None:
            return
        await send({"type": "http.response.start", "status": status, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    return app


async def _serve(middleware: RequestMetricsMiddleware, method: str = "GET") -> list[dict[str, Any]]:
    sink = _Sink()
    await middleware(_http_scope(method), _receive, sink)
    return sink.messages


def _request(middleware: RequestMetricsMiddleware, method: str = "GET") -> list[dict[str, Any]]:
    return asyncio.run(_serve(middleware, method))


class _ScriptedClock:
    """Returns 0.0 at each request's start and the next scripted duration at its end."""

    def __init__(self, durations: list[float]) -> None:
        self._durations = iter(durations)
        self._starting = True

    def __call__(self) -> float:
        starting, self._starting = self._starting, not self._starting
        return 0.0 if starting else next(self._durations)


def _zeros(methods: tuple[str, ...] = ("GET",)) -> dict[tuple[str, str], float]:
    return {(m, c): 0.0 for m in methods for c in STATUS_CLASSES}


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[RequestStatsPool]:
    with RequestStatsPool(tmp_path) as stats_pool:
        yield stats_pool


@pytest.fixture
def recorder(pool: RequestStatsPool) -> Iterator[RequestRecorder]:
    with open_recorder(pool.acquire(0).path) as rec:
        yield rec


# --- Layout -----------------------------------------------------------------------


def test_layout_is_fixed_and_matches_prometheus_default_buckets() -> None:
    assert Histogram.DEFAULT_BUCKETS == BUCKETS
    assert METHOD_LABELS == ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS", "other")
    assert STATUS_CLASSES == ("1xx", "2xx", "3xx", "4xx", "5xx")
    assert (HEADER_INDEX, STARTED_INDEX, SUM_INDEX) == (0, 1, 2)
    assert (WS_OPENED_INDEX, WS_ENDED_INDEX, WS_GOING_AWAY_INDEX) == (3, 4, 5)
    assert (REQUESTS_BASE, REQUESTS_END) == (6, 6 + 8 * 5 * 15)
    assert BLOCK_CELLS == 606
    assert BLOCK_BYTES == 4848
    assert float(int(LAYOUT_MAGIC)) == LAYOUT_MAGIC < 2**53


def test_every_method_status_and_bucket_has_its_own_cell_and_the_lookups_agree() -> None:
    """The hot path's table and the fallback name the same cells, and the
    (method, class, bucket) cells tile the request area exactly once."""
    seen: set[int] = set()
    for m, method in enumerate(METHOD_LABELS):
        name = method if method != "other" else "BREW"
        for c, status in enumerate((101, 204, 302, 418, 503)):
            first = request_cell(name, status)
            assert first == REQUESTS_BASE + (m * 5 + c) * 15
            if method != "other":
                assert REQUEST_CELL[method][status] == first
            seen.update(first + b for b in range(len(BUCKETS)))
    assert seen == set(range(REQUESTS_BASE, REQUESTS_END))
    five_hundred = request_cell("GET", 500)
    for odd in (0, 99, 600, 1000, -1, "200", None, [200]):
        assert request_cell("GET", odd) == five_hundred, odd


def test_the_reader_sums_one_cell_per_request_into_both_views() -> None:
    values = [0.0] * BLOCK_CELLS
    values[request_cell("GET", 200) + bucket_offset(0.001)] += 1  # GET 2xx, first bucket
    values[request_cell("GET", 404) + bucket_offset(0.3)] += 2  # GET 4xx, 0.5 bucket
    values[request_cell("PURGE", 200) + bucket_offset(60.0)] += 1  # other 2xx, +Inf
    counts = requests_by_class(values)
    assert counts[0 * 5 + 1] == 1
    assert counts[0 * 5 + 3] == 2
    assert counts[7 * 5 + 1] == 1
    assert sum(counts) == 4
    assert bucket_counts(values) == [1, 0, 0, 0, 0, 0, 0, 2, 0, 0, 0, 0, 0, 0, 1]


# --- Middleware: counting -----------------------------------------------------------


def test_counts_each_method_and_status_class(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    cases: list[tuple[str, int | None]] = [
        ("GET", 200),
        ("GET", 200),
        ("GET", 204),
        ("GET", 304),
        ("GET", None),  # no response started: uvicorn answers 500
        ("POST", 201),
        ("POST", 422),
        ("HEAD", 101),
        ("DELETE", 404),
        ("BREW", 418),  # an unlisted method is "other"
        ("PROPFIND", 207),
        ("OPTIONS", 799),  # out of range: counted as 5xx, never dropped
    ]
    for method, status in cases:
        _request(RequestMetricsMiddleware(_status_app(status), recorder), method)

    stats = pool.snapshot()
    assert list(stats) == [0]
    expected = _zeros(("GET", "HEAD", "POST", "DELETE", "OPTIONS", "other"))
    expected.update(
        {
            ("GET", "2xx"): 3.0,
            ("GET", "3xx"): 1.0,
            ("GET", "5xx"): 1.0,
            ("POST", "2xx"): 1.0,
            ("POST", "4xx"): 1.0,
            ("HEAD", "1xx"): 1.0,
            ("DELETE", "4xx"): 1.0,
            ("other", "4xx"): 1.0,
            ("other", "2xx"): 1.0,
            ("OPTIONS", "5xx"): 1.0,
        }
    )
    assert stats[0].requests == expected
    assert stats[0].duration_count == 12.0
    assert stats[0].bucket_counts[-1] == 12.0
    assert stats[0].in_flight == 0.0


def test_the_app_sees_every_message_unchanged(recorder: RequestRecorder) -> None:
    messages = _request(RequestMetricsMiddleware(_status_app(201), recorder))
    assert messages == [
        {"type": "http.response.start", "status": 201, "headers": []},
        {"type": "http.response.body", "body": b"ok"},
    ]


def test_a_fresh_slot_has_only_get_series_at_zero(pool: RequestStatsPool) -> None:
    pool.acquire(3)
    assert pool.snapshot() == {
        3: SlotRequestStats(
            requests=_zeros(),
            bucket_counts=(0.0,) * len(BUCKETS),
            duration_sum=0.0,
            duration_count=0.0,
            in_flight=0.0,
        )
    }


def test_an_app_that_raises_counts_as_5xx_and_the_error_propagates(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        raise RuntimeError("boom")

    middleware = RequestMetricsMiddleware(app, recorder)
    with pytest.raises(RuntimeError, match="boom"):
        _request(middleware, "PUT")

    stats = pool.snapshot()[0]
    assert stats.requests[("PUT", "5xx")] == 1.0
    assert stats.requests[("PUT", "2xx")] == 0.0
    assert stats.duration_count == 1.0
    assert stats.in_flight == 0.0


def test_in_flight_rises_while_a_request_runs_and_comes_back_down(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    async def scenario() -> tuple[float, float, float]:
        release = asyncio.Event()

        async def slow(scope: Any, receive: Any, send: Any) -> None:
            await release.wait()
            await _status_app(200)(scope, receive, send)

        middleware = RequestMetricsMiddleware(slow, recorder)
        tasks = [asyncio.create_task(_serve(middleware)) for _ in range(3)]
        await asyncio.sleep(0)
        during = pool.snapshot()[0]
        release.set()
        await asyncio.gather(*tasks)
        after = pool.snapshot()[0]
        return during.in_flight, after.in_flight, after.requests[("GET", "2xx")]

    assert asyncio.run(scenario()) == (3.0, 0.0, 3.0)


def test_a_cancelled_request_is_counted_as_5xx_and_leaves_nothing_in_flight(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    async def scenario() -> None:
        started = asyncio.Event()

        async def hangs(scope: Any, receive: Any, send: Any) -> None:
            await send({"type": "http.response.start", "status": 200, "headers": []})
            started.set()
            await asyncio.Event().wait()

        task = asyncio.create_task(_serve(RequestMetricsMiddleware(hangs, recorder)))
        await started.wait()
        assert pool.snapshot()[0].in_flight == 1.0
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert stats.in_flight == 0.0
    assert stats.requests == {**_zeros(), ("GET", "5xx"): 1.0}
    assert stats.duration_count == 1.0


def test_lifespan_passes_straight_through(recorder: RequestRecorder) -> None:
    scope_type = "lifespan"
    seen: list[tuple[Any, Any, Any]] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        seen.append((scope, receive, send))
        await send({"type": f"{scope_type}.ping"})

    sink = _Sink()
    scope = {"type": scope_type}
    before = bytes(recorder.cells.cast("B"))
    asyncio.run(RequestMetricsMiddleware(app, recorder)(scope, _receive, sink))
    assert seen == [(scope, _receive, sink)]  # the very same objects, unwrapped
    assert sink.messages == [{"type": f"{scope_type}.ping"}]
    assert bytes(recorder.cells.cast("B")) == before


def test_websockets_are_counted_open_from_accept_to_return(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/accept":
            await send({"type": "websocket.accept"})
            assert pool.snapshot()[0].websockets_open == 1.0
        else:
            await send({"type": "websocket.close", "code": 1008})

    sink = _Sink()
    middleware = RequestMetricsMiddleware(app, recorder)
    for path in ("/accept", "/reject", "/accept"):
        asyncio.run(middleware({"type": "websocket", "path": path}, _receive, sink))
    recorder.count_going_away()
    stats = pool.snapshot()[0]
    assert (stats.websockets_opened, stats.websockets_open) == (2.0, 0.0)
    assert stats.websockets_going_away == 1.0
    assert stats.in_flight == 0.0  # not HTTP requests
    assert stats.duration_count == 0.0
    sent = [m["type"] for m in sink.messages]
    assert sent == ["websocket.accept", "websocket.close", "websocket.accept"]


# --- Middleware: the histogram ------------------------------------------------------


def test_durations_land_in_the_right_bucket_and_read_back_cumulative(
    pool: RequestStatsPool, recorder: RequestRecorder
) -> None:
    # A bound is inclusive ("le"): 0.005 goes in the 0.005 bucket, 0.0051 in 0.01.
    durations = [0.001, 0.005, 0.0051, 0.3, 0.3, 1.0, 9.99, 10.0, 10.5, 120.0]
    clock = _ScriptedClock(durations)
    middleware = RequestMetricsMiddleware(_status_app(200), recorder, clock=clock)
    for _ in durations:
        _request(middleware)

    raw = bucket_counts(recorder.cells.tolist())
    assert raw == [2, 1, 0, 0, 0, 0, 0, 2, 0, 1, 0, 0, 0, 2, 2]  # stored non-cumulative

    stats = pool.snapshot()[0]
    assert dict(zip(BUCKETS, stats.bucket_counts, strict=True)) == {
        0.005: 2.0,
        0.01: 3.0,
        0.025: 3.0,
        0.05: 3.0,
        0.075: 3.0,
        0.1: 3.0,
        0.25: 3.0,
        0.5: 5.0,
        0.75: 5.0,
        1.0: 6.0,
        2.5: 6.0,
        5.0: 6.0,
        7.5: 6.0,
        10.0: 8.0,
        float("inf"): 10.0,
    }
    expected_sum = 0.0
    for duration in durations:
        expected_sum += duration  # the same additions in the same order: exact
    assert stats.duration_sum == expected_sum
    assert stats.duration_count == 10.0
    assert stats.requests[("GET", "2xx")] == 10.0


# --- A real worker process, killed ----------------------------------------------------


def _child_serve(path: str, hanging: Any) -> None:
    """Runs in a spawned process: 12 finished requests, then one that never ends."""

    async def main() -> None:
        recorder = open_recorder(path)
        for status, method, times in ((200, "GET", 7), (404, "POST", 3)):
            middleware = RequestMetricsMiddleware(_status_app(status), recorder)
            for _ in range(times):
                await _serve(middleware, method)

        async def raises(scope: Any, receive: Any, send: Any) -> None:
            raise ValueError("app bug")

        for _ in range(2):
            with pytest.raises(ValueError, match="app bug"):
                await _serve(RequestMetricsMiddleware(raises, recorder), "PATCH")

        async def hangs(scope: Any, receive: Any, send: Any) -> None:
            hanging.set()
            await asyncio.Event().wait()

        await _serve(RequestMetricsMiddleware(hangs, recorder), "DELETE")

    asyncio.run(main())


def test_a_sigkilled_worker_process_loses_nothing_and_is_folded_on_release(
    pool: RequestStatsPool,
) -> None:
    ctx = multiprocessing.get_context("spawn")
    lease = pool.acquire(1)
    hanging = ctx.Event()
    child = ctx.Process(target=_child_serve, args=(lease.path, hanging), daemon=True)
    child.start()
    try:
        assert hanging.wait(timeout=60), "the child never reached its hanging request"
        assert child.pid is not None
        os.kill(child.pid, signal.SIGKILL)
    finally:
        child.join(timeout=30)
    assert child.exitcode == -signal.SIGKILL

    counts = _zeros(("GET", "POST", "PATCH"))
    counts.update({("GET", "2xx"): 7.0, ("POST", "4xx"): 3.0, ("PATCH", "5xx"): 2.0})
    dead_but_leased = pool.snapshot()[1]
    assert dead_but_leased.requests == counts
    assert dead_but_leased.duration_count == 12.0
    assert dead_but_leased.in_flight == 1.0  # the killed request, until the lane is released

    pool.release(lease)
    retired = pool.snapshot()[1]
    assert retired.requests == counts
    assert retired.duration_count == 12.0
    assert retired.bucket_counts == dead_but_leased.bucket_counts
    assert retired.duration_sum == dead_but_leased.duration_sum
    assert retired.in_flight == 0.0

    # The next incarnation reuses the zeroed lane; the slot's totals keep counting up.
    successor = pool.acquire(1)
    assert (successor.lane, successor.path) == (lease.lane, lease.path)
    with open_recorder(successor.path) as recorder:
        assert recorder.cells.tolist() == [LAYOUT_MAGIC] + [0.0] * (BLOCK_CELLS - 1)
        _request(RequestMetricsMiddleware(_status_app(200), recorder))
    assert pool.snapshot()[1].requests[("GET", "2xx")] == 8.0


# --- The pool ---------------------------------------------------------------------------


def test_the_pool_directory_is_private_and_removed_on_close(tmp_path: Path) -> None:
    pool = RequestStatsPool(tmp_path)
    assert pool.directory.parent == tmp_path
    assert pool.directory.name.startswith("corral-stats-")
    assert stat.S_IMODE(pool.directory.stat().st_mode) == 0o700
    lease = pool.acquire(0)
    assert Path(lease.path).parent == pool.directory
    assert stat.S_IMODE(Path(lease.path).stat().st_mode) == 0o600
    assert Path(lease.path).stat().st_size == BLOCK_BYTES
    pool.close()
    assert not pool.directory.exists()
    pool.close()  # idempotent
    pool.release(lease)  # a late release after close does nothing
    assert pool.snapshot() == {}
    with pytest.raises(RuntimeError, match="closed"):
        pool.acquire(0)


def test_the_default_directory_is_dev_shm_when_writable() -> None:
    with RequestStatsPool() as pool:
        if os.access("/dev/shm", os.W_OK | os.X_OK):
            assert pool.directory.parent == Path("/dev/shm")
        assert pool.directory.is_dir()
    assert not pool.directory.exists()


def test_releasing_a_lease_twice_is_an_error(pool: RequestStatsPool) -> None:
    lease = pool.acquire(0)
    pool.release(lease)
    with pytest.raises(ValueError, match="not a live lease"):
        pool.release(lease)
    reused = pool.acquire(2)
    with pytest.raises(ValueError, match="not a live lease"):
        pool.release(lease)  # the same lane, now someone else's
    with pytest.raises(ValueError, match="not a live lease"):
        pool.release(StatsLease(path="/nowhere", lane=99, slot=0))
    pool.release(reused)


def test_open_recorder_rejects_a_file_that_is_not_a_block(
    tmp_path: Path, pool: RequestStatsPool
) -> None:
    short = tmp_path / "short"
    short.write_bytes(b"\0" * 100)
    with pytest.raises(ValueError, match="100 bytes, not the 4848"):
        open_recorder(str(short))
    unprepared = tmp_path / "unprepared"
    unprepared.write_bytes(b"\0" * BLOCK_BYTES)
    with pytest.raises(ValueError, match="layout version 3"):
        open_recorder(str(unprepared))
    released = pool.acquire(0)
    pool.release(released)  # a free lane is zeroed, header included
    with pytest.raises(ValueError, match="layout version 3"):
        open_recorder(released.path)


def test_a_recorder_closes_idempotently() -> None:
    with RequestStatsPool() as pool:
        recorder = open_recorder(pool.acquire(0).path)
        recorder.close()
        recorder.close()
        with pytest.raises(ValueError, match="released"):
            recorder.cells[SUM_INDEX] = 1.0


class _Suspend:
    """An awaitable that suspends its coroutine once, like a request waiting on I/O."""

    def __await__(self) -> Generator[None, None, None]:
        yield


def test_an_orphaned_request_closed_after_its_recorder_raises_nothing_new() -> None:
    """A thread worker whose loop died can leave a request coroutine behind; the garbage
    collector closes it later, after the worker closed its recorder. Its GeneratorExit
    must not turn into a ValueError from the released block."""

    async def waiting_app(scope: Any, receive: Any, send: Any) -> None:
        await _Suspend()

    with RequestStatsPool() as pool:
        recorder = open_recorder(pool.acquire(0).path)
        middleware = RequestMetricsMiddleware(waiting_app, recorder)
        request = middleware(_http_scope(), _receive, _Sink())
        request.send(None)  # started, then suspended inside the app
        recorder.close()
        request.close()  # what the garbage collector does: no ValueError escapes


def test_lane_reuse_keeps_the_file_count_bounded(pool: RequestStatsPool) -> None:
    workers = 4
    live: list[StatsLease] = [pool.acquire(slot) for slot in range(workers)]
    for cycle in range(500):
        slot = cycle % workers
        old = live[slot]
        live[slot] = pool.acquire(slot)  # rolling restart: the successor starts first
        with open_recorder(old.path) as recorder:
            _request(RequestMetricsMiddleware(_status_app(200), recorder))
        pool.release(old)

    assert len(list(pool.directory.glob("lane-*.stats"))) == workers + 1
    stats = pool.snapshot()
    assert sorted(stats) == list(range(workers))
    for slot in range(workers):
        assert stats[slot].requests == {**_zeros(), ("GET", "2xx"): 125.0}
        assert stats[slot].in_flight == 0.0


def test_two_live_lanes_of_one_slot_add_up(pool: RequestStatsPool) -> None:
    old, new = pool.acquire(0), pool.acquire(0)
    other = pool.acquire(1)
    assert len({old.lane, new.lane, other.lane}) == 3
    with open_recorder(old.path) as a, open_recorder(new.path) as b:
        clock = _ScriptedClock([0.02, 0.2, 2.0])
        _request(RequestMetricsMiddleware(_status_app(200), a, clock=clock))
        _request(RequestMetricsMiddleware(_status_app(500), b, clock=clock), "POST")
        _request(RequestMetricsMiddleware(_status_app(200), b, clock=clock))
        a.cells[STARTED_INDEX] += 1.0  # one request still running in each
        b.cells[STARTED_INDEX] += 1.0

    stats = pool.snapshot()
    expected = _zeros(("GET", "POST"))
    expected.update({("GET", "2xx"): 2.0, ("POST", "5xx"): 1.0})
    assert stats[0].requests == expected
    assert stats[0].in_flight == 2.0
    assert stats[0].duration_sum == 0.02 + 0.2 + 2.0
    assert stats[0].bucket_counts == (0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3, 3)
    assert stats[1].requests == _zeros()

    pool.release(old)
    stats = pool.snapshot()
    assert stats[0].requests == expected  # folded, not lost
    assert stats[0].in_flight == 1.0


def test_snapshots_from_many_threads_during_churn_are_monotonic_and_end_exact(
    pool: RequestStatsPool,
) -> None:
    workers, cycles, readers = 3, 300, 4
    stop = threading.Event()
    errors: list[BaseException] = []
    reads = [0] * readers

    def reader(index: int) -> None:
        last = dict.fromkeys(range(workers), 0.0)
        try:
            while not stop.is_set():
                for slot, stats in pool.snapshot().items():
                    total = sum(stats.requests.values())
                    assert total >= last[slot], "a counter went backwards"
                    assert stats.bucket_counts == tuple(sorted(stats.bucket_counts))
                    last[slot] = total
                reads[index] += 1
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(readers)]
    for thread in threads:
        thread.start()
    try:
        live = [pool.acquire(slot) for slot in range(workers)]
        for cycle in range(cycles):
            slot = cycle % workers
            with open_recorder(live[slot].path) as recorder:
                middleware = RequestMetricsMiddleware(_status_app(200), recorder)
                for _ in range(3):
                    _request(middleware)
            pool.release(live[slot])
            live[slot] = pool.acquire(slot)
    finally:
        stop.set()
        for thread in threads:
            thread.join(timeout=30)

    assert errors == []
    assert all(count > 0 for count in reads)
    stats = pool.snapshot()
    for slot in range(workers):
        assert stats[slot].requests == {**_zeros(), ("GET", "2xx"): cycles / workers * 3}
        assert stats[slot].duration_count == cycles / workers * 3
    assert len(list(pool.directory.glob("lane-*.stats"))) == workers


def test_a_spares_lane_counts_for_no_slot_until_it_is_reassigned_to_one(
    pool: RequestStatsPool,
) -> None:
    served = pool.acquire(0)
    spare = pool.acquire(-1)  # a warm spare's lane: no slot yet
    assert list(pool.snapshot()) == [0], "a spare is not a slot"
    promoted = pool.reassign(spare, 1)  # it took slot 1
    assert (promoted.path, promoted.lane, promoted.slot) == (spare.path, spare.lane, 1)
    with open_recorder(promoted.path) as rec:
        _request(RequestMetricsMiddleware(_status_app(200), rec))
        _request(RequestMetricsMiddleware(_status_app(200), rec))
    stats = pool.snapshot()
    assert list(stats) == [0, 1]
    assert stats[1].requests[("GET", "2xx")] == 2
    pool.release(promoted)  # its counts stay with slot 1 once it is gone
    assert pool.snapshot()[1].requests[("GET", "2xx")] == 2
    with pytest.raises(ValueError, match="not a live lease"):
        pool.reassign(spare, 0)  # the spare's old lease is gone with the move
    pool.release(pool.acquire(-1))  # a spare that dies unpromoted leaves nothing behind
    assert list(pool.snapshot()) == [0, 1]
    pool.release(served)
