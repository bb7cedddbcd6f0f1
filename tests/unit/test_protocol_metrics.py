"""Request metrics counted inside uvicorn's protocols: real servers, real sockets, in-process.

Each test serves a small ASGI app with uvicorn's ``Server`` on a loopback
socket, with the protocol classes ``build_uvicorn_config`` makes for a worker
that keeps request metrics, and talks raw HTTP/1.1 (or WebSocket) to it, so
the paths a middleware could not see (a client hanging up, a force-stop, a
pipelined request, a limit_concurrency 503) are driven for real, for h11 and
httptools alike. The block is read back through the supervisor's pool.
"""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import socket
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import uvicorn

from corral.config import HttpImpl, ServerConfig
from corral.config_choices import Lifespan, WebSocketLibrary
from corral.http_protocol import with_request_metrics
from corral.request_stats.layout import STATUS_CLASSES
from corral.request_stats.pool import RequestStatsPool
from corral.request_stats.recorder import RequestRecorder, open_recorder
from corral.uvicorn_config import build_uvicorn_config

App = Callable[[Any, Any, Any], Awaitable[None]]


@pytest.fixture(params=[HttpImpl.H11, HttpImpl.HTTPTOOLS], ids=["h11", "httptools"])
def http(request: pytest.FixtureRequest) -> HttpImpl:
    if request.param is HttpImpl.HTTPTOOLS:
        pytest.importorskip("httptools")
    impl: HttpImpl = request.param
    return impl


@pytest.fixture
def pool(tmp_path: Path) -> Iterator[RequestStatsPool]:
    with RequestStatsPool(tmp_path) as stats_pool:
        yield stats_pool


@pytest.fixture
def recorder(pool: RequestStatsPool) -> Iterator[RequestRecorder]:
    with open_recorder(pool.acquire(0).path) as rec:
        yield rec


def _zeros(*methods: str) -> dict[tuple[str, str], float]:
    return {(m, c): 0.0 for m in ("GET", *methods) for c in STATUS_CLASSES}


class _Served:
    """A running uvicorn server and how to reach it."""

    def __init__(self, server: uvicorn.Server, port: int) -> None:
        self.server = server
        self.port = port

    async def connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        return await asyncio.open_connection("127.0.0.1", self.port)

    async def exchange(self, raw: bytes) -> bytes:
        """Send ``raw`` (its last request asks to close) and read until the server closes."""
        reader, writer = await self.connect()
        writer.write(raw)
        try:
            return await asyncio.wait_for(reader.read(), 10)
        finally:
            writer.close()

    def force(self) -> None:
        """What ``WorkerEngine.force_stop`` does to a loop."""
        for connection in list(self.server.server_state.connections):
            connection.transport.close()
        for task in list(self.server.server_state.tasks):
            task.cancel()


@contextlib.asynccontextmanager
async def _serving(
    app: App, recorder: RequestRecorder, http: HttpImpl, **settings: Any
) -> AsyncIterator[_Served]:
    cfg = ServerConfig(http=http, lifespan=Lifespan.OFF, **settings)
    config = build_uvicorn_config(cfg, app, recorder=recorder).config
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    server = uvicorn.Server(config)
    server.lifespan = config.lifespan_class(config)  # what Server.serve does first
    await server.startup(sockets=[sock])
    try:
        yield _Served(server, sock.getsockname()[1])
    finally:
        server.should_exit = True
        await server.shutdown(sockets=[sock])
        sock.close()


def _request(method: str = "GET", path: str = "/", *, close: bool = True) -> bytes:
    connection = "connection: close\r\n" if close else ""
    return f"{method} {path} HTTP/1.1\r\nhost: t\r\n{connection}\r\n".encode()


async def _answer(send: Any, status: int) -> None:
    await send({"type": "http.response.start", "status": status, "headers": []})
    await send({"type": "http.response.body", "body": b"ok"})


def _status_app(scope: Any, receive: Any, send: Any) -> Awaitable[None]:
    """``/<status>`` answers that status; ``/raise`` raises before answering."""
    if scope["path"] == "/raise":
        raise RuntimeError("boom")
    return _answer(send, int(scope["path"][1:]))


async def _status_app_async(scope: Any, receive: Any, send: Any) -> None:
    await _status_app(scope, receive, send)


async def _eventually(check: Callable[[], bool]) -> None:
    for _ in range(500):
        if check():
            return
        await asyncio.sleep(0.01)
    raise AssertionError("never happened")


# --- HTTP -----------------------------------------------------------------------------


def test_status_classes_methods_and_durations_are_counted(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    async def scenario() -> None:
        async with _serving(_status_app_async, recorder, http) as served:
            for method, path in [
                ("GET", "/200"), ("GET", "/201"), ("POST", "/301"), ("GET", "/404"),
                ("PUT", "/503"), ("DELETE", "/raise"), ("PROPFIND", "/200"), ("GET", "/299"),
            ]:  # fmt: skip
                await served.exchange(_request(method, path))
            await _eventually(lambda: pool.snapshot()[0].duration_count == 8)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    expected = _zeros("POST", "PUT", "DELETE", "other")
    expected.update({
        ("POST", "3xx"): 1.0, ("GET", "4xx"): 1.0, ("PUT", "5xx"): 1.0,
        ("DELETE", "5xx"): 1.0, ("other", "2xx"): 1.0, ("GET", "2xx"): 3.0,
    })  # fmt: skip
    assert stats.requests == expected
    assert stats.in_flight == 0.0
    assert stats.duration_count == 8.0
    assert 0.0 < stats.duration_sum < 8 * 10.0


def test_the_app_is_called_by_uvicorn_itself_with_no_frame_between(
    recorder: RequestRecorder, http: HttpImpl
) -> None:
    callers: list[str] = []

    async def app(scope: Any, receive: Any, send: Any) -> None:
        frame = inspect.currentframe()
        assert frame is not None
        assert frame.f_back is not None
        callers.append(frame.f_back.f_code.co_name + "@" + frame.f_back.f_globals["__name__"])
        await _answer(send, 200)

    async def scenario() -> None:
        # uvicorn's own proxy-headers middleware is a frame of uvicorn's, on or off corral.
        async with _serving(app, recorder, http, proxy_headers=False) as served:
            await served.exchange(_request())

    asyncio.run(scenario())
    module = "h11_impl" if http is HttpImpl.H11 else "httptools_impl"
    assert callers == [f"run_asgi@uvicorn.protocols.http.{module}"]


def test_in_flight_rises_while_requests_run_and_comes_back_down(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await _answer(send, 200)

    async def scenario() -> None:
        async with _serving(slow, recorder, http) as served:
            requests = [asyncio.create_task(served.exchange(_request())) for _ in range(3)]
            await _eventually(lambda: pool.snapshot()[0].in_flight == 3.0)
            release.set()
            await asyncio.gather(*requests)
            await _eventually(lambda: pool.snapshot()[0].in_flight == 0.0)

    asyncio.run(scenario())
    assert pool.snapshot()[0].requests == {**_zeros(), ("GET", "2xx"): 3.0}


def test_a_client_that_hangs_up_is_counted_with_what_the_app_sent(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    """Not a server error: the app answered, to a client no longer there."""
    hung_up = asyncio.Event()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        await hung_up.wait()
        while (await receive())["type"] != "http.disconnect":
            pass
        await _answer(send, 200)

    async def scenario() -> None:
        async with _serving(app, recorder, http) as served:
            _, writer = await served.connect()
            writer.write(_request(close=False))
            await _eventually(lambda: pool.snapshot()[0].in_flight == 1.0)
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            hung_up.set()
            await _eventually(lambda: pool.snapshot()[0].in_flight == 0.0)

    asyncio.run(scenario())
    assert pool.snapshot()[0].requests == {**_zeros(), ("GET", "2xx"): 1.0}


def test_a_response_the_app_cuts_short_counts_as_5xx(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"part", "more_body": True})
        if scope["path"] == "/raise":
            raise RuntimeError("boom")
        # "/return": returns without finishing; uvicorn closes the connection

    async def scenario() -> None:
        async with _serving(app, recorder, http) as served:
            for path in ("/raise", "/return"):
                reader, writer = await served.connect()
                writer.write(_request("POST", path, close=False))
                await asyncio.wait_for(reader.read(), 10)  # until uvicorn closes it
                writer.close()
            await _eventually(lambda: pool.snapshot()[0].duration_count == 2.0)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert stats.requests == {**_zeros("POST"), ("POST", "5xx"): 2.0}
    assert stats.in_flight == 0.0


def test_a_force_stop_counts_the_cancelled_requests_as_5xx(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["path"] == "/streaming":
            await send({"type": "http.response.start", "status": 200, "headers": []})
        await asyncio.Event().wait()

    async def scenario() -> None:
        async with _serving(app, recorder, http) as served:
            writers = []
            for path in ("/streaming", "/silent"):
                _, writer = await served.connect()
                writer.write(_request("GET", path, close=False))
                writers.append(writer)
            await _eventually(lambda: pool.snapshot()[0].in_flight == 2.0)
            served.force()
            await _eventually(lambda: pool.snapshot()[0].in_flight == 0.0)
            for writer in writers:
                writer.close()

    asyncio.run(scenario())
    assert pool.snapshot()[0].requests == {**_zeros(), ("GET", "5xx"): 2.0}


def test_pipelined_requests_are_each_counted_once(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    async def scenario() -> None:
        async with _serving(_status_app_async, recorder, http) as served:
            keep_alive = _request("GET", "/200", close=False)
            data = await served.exchange(keep_alive * 2 + _request("GET", "/200"))
            assert data.count(b"HTTP/1.1 200") == 3
            await _eventually(lambda: pool.snapshot()[0].duration_count == 3.0)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert stats.requests == {**_zeros(), ("GET", "2xx"): 3.0}
    assert stats.in_flight == 0.0


def test_a_pipelined_request_dropped_with_its_connection_is_never_in_flight(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    """httptools makes the second request's cycle while the first runs, and queues it."""
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await _answer(send, 200)

    async def scenario() -> None:
        async with _serving(slow, recorder, http) as served:
            _, writer = await served.connect()
            writer.write(_request(close=False) * 2)
            await _eventually(lambda: pool.snapshot()[0].in_flight >= 1.0)
            await asyncio.sleep(0.05)  # the second request's head has been parsed
            writer.close()
            await writer.wait_closed()
            await asyncio.sleep(0.05)
            release.set()
            await _eventually(lambda: pool.snapshot()[0].duration_count == 1.0)
            await asyncio.sleep(0.05)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert stats.in_flight == 0.0
    assert stats.requests == {**_zeros(), ("GET", "2xx"): 1.0}


def test_a_limit_concurrency_503_is_counted(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    """uvicorn answers it in place of the app; a wrapper around the app never saw it."""
    release = asyncio.Event()

    async def slow(scope: Any, receive: Any, send: Any) -> None:
        await release.wait()
        await _answer(send, 200)

    async def scenario() -> None:
        async with _serving(slow, recorder, http, limit_concurrency=2) as served:
            first = asyncio.create_task(served.exchange(_request()))
            await _eventually(lambda: pool.snapshot()[0].in_flight == 1.0)
            refused = await served.exchange(_request())
            assert refused.startswith(b"HTTP/1.1 503")
            release.set()
            await first

    asyncio.run(scenario())
    assert pool.snapshot()[0].requests == {**_zeros(), ("GET", "2xx"): 1.0, ("GET", "5xx"): 1.0}


def test_a_wsgi_app_is_counted_like_an_asgi_one(
    pool: RequestStatsPool, recorder: RequestRecorder, http: HttpImpl
) -> None:
    def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> list[bytes]:
        status = "404 Not Found" if environ["PATH_INFO"] == "/missing" else "200 OK"
        start_response(status, [("content-type", "text/plain")])
        return [b"ok"]

    async def scenario() -> None:
        async with _serving(wsgi, recorder, http) as served:  # type: ignore[arg-type]
            for path in ("/", "/missing", "/"):
                await served.exchange(_request("POST", path))
            await _eventually(lambda: pool.snapshot()[0].duration_count == 3.0)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert stats.requests == {**_zeros("POST"), ("POST", "2xx"): 2.0, ("POST", "4xx"): 1.0}
    assert stats.in_flight == 0.0


def test_a_protocol_that_is_not_uvicorns_is_refused_at_worker_start(
    recorder: RequestRecorder,
) -> None:
    with pytest.raises(TypeError, match="not one of uvicorn's HTTP protocol classes"):
        with_request_metrics(asyncio.Protocol, recorder.cells)


def test_without_a_recorder_uvicorns_cycle_is_untouched(http: HttpImpl) -> None:
    config = build_uvicorn_config(ServerConfig(http=http), _status_app_async).config
    assert config.http_protocol_class.__name__.startswith("FreshConnectionGrace")


# --- WebSockets -----------------------------------------------------------------------


async def _ws_app(scope: Any, receive: Any, send: Any) -> None:
    if scope["type"] == "http":
        await _answer(send, 200)
        return
    await receive()  # websocket.connect
    if scope["path"] == "/reject":
        await send({"type": "websocket.close", "code": 1008})
        return
    await send({"type": "websocket.accept"})
    while (await receive())["type"] != "websocket.disconnect":
        pass


@pytest.mark.parametrize(
    "library",
    [WebSocketLibrary.AUTO, WebSocketLibrary.WSPROTO, WebSocketLibrary.WEBSOCKETS],
    ids=lambda library: library.value,
)
def test_websockets_are_counted_open_from_accept_to_return(
    pool: RequestStatsPool, recorder: RequestRecorder, library: WebSocketLibrary
) -> None:
    pytest.importorskip("wsproto" if library is WebSocketLibrary.WSPROTO else "websockets")
    from websockets.asyncio.client import connect  # noqa: PLC0415
    from websockets.exceptions import InvalidStatus  # noqa: PLC0415

    async def scenario() -> None:
        async with _serving(_ws_app, recorder, HttpImpl.H11, ws=library) as served:
            url = f"ws://127.0.0.1:{served.port}"
            async with connect(url + "/a"), connect(url + "/b"):
                await _eventually(lambda: pool.snapshot()[0].websockets_open == 2.0)
            with pytest.raises(InvalidStatus):
                async with connect(url + "/reject"):
                    pass
            await _eventually(lambda: pool.snapshot()[0].websockets_open == 0.0)

    asyncio.run(scenario())
    stats = pool.snapshot()[0]
    assert (stats.websockets_opened, stats.websockets_open) == (2.0, 0.0)
    assert stats.duration_count == 0.0  # not HTTP requests
    assert stats.in_flight == 0.0
