"""One HTTP/1.1 connection on the side port: h11 for the protocol, this module for the clock.

h11 parses and frames; it never touches a socket or a timer. Everything a
hostile or broken client can do to pin a connection is bounded here:

- the request head must be complete ``header_timeout`` after its first byte
  (and, for a fresh connection, after the accept): slowloris gets a 408 or a
  plain close;
- an idle keep-alive connection is closed after ``idle_timeout``;
- a head larger than ``max_header_bytes`` gets a 431, bytes that cannot be an
  HTTP request line (a TLS ClientHello, random noise) get a 400 at once rather
  than after the head timeout;
- a write that cannot drain within ``write_timeout`` closes the connection;
- request bodies are never read: a request that announces one is answered
  (413, or the 401/404/405 it earned first) and the connection is closed.

Error closes "linger": the write side is shut first and whatever the client
still sends is read and dropped for a moment, so the kernel does not turn
unread input into an RST that destroys the error response in flight.
"""

from __future__ import annotations

import abc
import asyncio
import contextlib
import http
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from urllib.parse import parse_qs, urlsplit

import h11
import structlog

log = structlog.get_logger("corral.service")

READ_SIZE = 64 * 1024
LINGER_SECONDS = 0.5
LINGER_BYTES = 256 * 1024
CLOSE_SECONDS = 2.0
COMMON_HEADERS = (
    ("cache-control", "no-store"),
    ("x-content-type-options", "nosniff"),
)
TEXT = "text/plain; charset=utf-8"
# A request line is visible ASCII and spaces; anything else before the first
# newline means the peer is not speaking HTTP/1.x.
_NOT_REQUEST_LINE = re.compile(rb"[^\x20-\x7e]")
# Once the first line is complete it must be "METHOD target HTTP/x.y": a
# text handshake such as an SSH banner would otherwise sit in the buffer,
# waiting for a blank line that never comes, until the header timeout.
_REQUEST_LINE = re.compile(rb"[!#$%&'*+\-.^_`|~0-9A-Za-z]+ [\x21-\x7e]+ HTTP/[0-9]\.[0-9]")


@dataclass(frozen=True, slots=True)
class Limits:
    header_timeout: float
    idle_timeout: float
    write_timeout: float
    max_header_bytes: int


@dataclass(frozen=True, slots=True)
class Request:
    """A parsed request head. Header names are lower-case; values are latin-1 text."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: tuple[tuple[str, str], ...]
    has_body: bool

    def header(self, name: str) -> str | None:
        """Every value of ``name`` joined by ``", "`` (RFC 9110 list syntax), or ``None``."""
        values = [value for key, value in self.headers if key == name]
        return ", ".join(values) if values else None


@dataclass(frozen=True, slots=True)
class Response:
    """A complete response; ``Content-Length`` and the common headers are added on send."""

    status: int
    body: bytes = b""
    content_type: str = TEXT
    headers: tuple[tuple[str, str], ...] = ()


class Stream(abc.ABC):
    """A response whose body is produced over time (Server-Sent Events).

    It is sent without ``Content-Length`` (chunked), and the connection is
    closed when it ends. ``close`` is called exactly once, whether or not
    ``run`` ran (it does not for HEAD), so resources taken at creation are
    always released.
    """

    status: int = 200
    content_type: str = "application/octet-stream"
    headers: tuple[tuple[str, str], ...] = ()

    @abc.abstractmethod
    async def run(self, send: Callable[[bytes], Awaitable[None]], peer_gone: asyncio.Event) -> None:
        """Write the body through ``send`` until done; return early once ``peer_gone`` is set."""

    @abc.abstractmethod
    def close(self) -> None: ...


Handler = Callable[[Request], Awaitable[Response | Stream]]


def error(status: int, body: str, *headers: tuple[str, str]) -> Response:
    """A short fixed-text error: never exception text, paths or request data."""
    return Response(status, body.encode("ascii"), TEXT, headers)


def looks_like_http(pending: bytes) -> bool:
    """Whether ``pending`` (the start of a request head) can still become a request line."""
    line, newline, _ = pending.lstrip(b"\r\n").partition(b"\n")
    line = line.removesuffix(b"\r")
    if _NOT_REQUEST_LINE.search(line) is not None:
        return False
    return not newline or _REQUEST_LINE.fullmatch(line) is not None


class _Closed(Exception):
    """The connection is over (peer gone, timed out, or we chose to close)."""


class Connection:
    """Serves requests on one accepted connection until it closes."""

    def __init__(
        self,
        reader: asyncio.StreamReader,
        writer: asyncio.StreamWriter,
        limits: Limits,
        handler: Handler,
    ) -> None:
        self._reader = reader
        self._writer = writer
        self._limits = limits
        self._handler = handler
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=limits.max_header_bytes)

    async def serve(self) -> None:
        linger = False
        try:
            linger = await self._serve_requests()
        except _Closed:
            pass
        except (ConnectionError, OSError) as exc:
            log.debug("service connection failed", error=type(exc).__name__)
        finally:
            await self._close(linger=linger)

    async def _serve_requests(self) -> bool:
        """Serve until the connection should close; returns whether to close lingering."""
        first = True
        while True:
            try:
                event = await self._read_head(first=first)
            except h11.RemoteProtocolError as exc:
                status = exc.error_status_hint if exc.error_status_hint >= 400 else 400
                body = "request header too large" if status == 431 else "bad request"
                await self._send_error(error(status, body))
                return True
            except TimeoutError:
                if self._h11.trailing_data[0]:
                    await self._send_error(error(408, "request timeout"))
                    return True
                return False
            if event is None:
                return False
            try:
                request = self._parse(event)
            except ValueError:  # parse_qs's field limit
                await self._send_error(error(400, "bad request"))
                return True
            keep_alive = await self._respond(request)
            if not keep_alive:
                return request.has_body
            if self._h11.our_state is not h11.DONE or self._h11.their_state is not h11.DONE:
                return False
            self._h11.start_next_cycle()
            first = False

    async def _read_head(self, *, first: bool) -> h11.Request | None:
        """The next request head, ``None`` on a clean close; raises on timeout or garbage."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self._limits.header_timeout if first else None
        received = len(self._h11.trailing_data[0])  # pipelined bytes count too
        while True:
            event = self._h11.next_event()
            if isinstance(event, h11.Request):
                # h11 only limits heads that are still incomplete; one that
                # arrived whole in a single read is measured here.
                if received - len(self._h11.trailing_data[0]) > self._limits.max_header_bytes:
                    raise h11.RemoteProtocolError("head too large", error_status_hint=431)
                return event
            if isinstance(event, h11.ConnectionClosed):
                return None
            if event is not h11.NEED_DATA:
                raise h11.RemoteProtocolError("unexpected event", error_status_hint=400)
            pending = self._h11.trailing_data[0]
            if pending and not looks_like_http(pending[:READ_SIZE]):
                raise h11.RemoteProtocolError("not an HTTP request", error_status_hint=400)
            if deadline is None and pending:
                deadline = loop.time() + self._limits.header_timeout
            wait = self._limits.idle_timeout if deadline is None else deadline - loop.time()
            async with asyncio.timeout(max(wait, 0.0)):
                data = await self._reader.read(READ_SIZE)
            if deadline is None:
                deadline = loop.time() + self._limits.header_timeout
            received += len(data)
            self._h11.receive_data(data)

    def _parse(self, event: h11.Request) -> Request:
        headers = tuple(
            (name.decode("ascii").lower(), value.decode("latin-1")) for name, value in event.headers
        )
        has_body = any(
            (name == "content-length" and value.strip() != "0") or name == "transfer-encoding"
            for name, value in headers
        )
        if not has_body:
            # A body-less request's EndOfMessage is already parsed; consume it
            # so the next request can start.
            end = self._h11.next_event()
            has_body = not isinstance(end, h11.EndOfMessage)
        parts = urlsplit(event.target.decode("ascii", "replace"))
        return Request(
            method=event.method.decode("ascii", "replace"),
            path=parts.path,
            query=parse_qs(parts.query, keep_blank_values=True, max_num_fields=64),
            headers=headers,
            has_body=has_body,
        )

    async def _respond(self, request: Request) -> bool:
        """Answer one request; returns whether the connection may serve another."""
        try:
            result = await self._handler(request)
        except Exception as exc:
            log.error("service request failed", error=type(exc).__name__)
            result = error(500, "internal error")
        keep_alive = not request.has_body
        if isinstance(result, Stream):
            try:
                await self._send_stream(request, result)
            finally:
                result.close()
            return False
        await self._send_response(request, result, keep_alive=keep_alive)
        return keep_alive and self._h11.our_state is not h11.MUST_CLOSE

    async def _send_response(
        self, request: Request, response: Response, *, keep_alive: bool
    ) -> None:
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *COMMON_HEADERS,
            *response.headers,
        ]
        if not keep_alive:
            headers.append(("connection", "close"))
        await self._send(_h11_response(response.status, headers))
        if request.method != "HEAD" and response.body:
            await self._send(h11.Data(data=response.body))
        await self._send(h11.EndOfMessage())

    async def _send_stream(self, request: Request, stream: Stream) -> None:
        headers = [
            ("content-type", stream.content_type),
            *COMMON_HEADERS,
            *stream.headers,
            ("connection", "close"),
        ]
        await self._send(_h11_response(stream.status, headers))
        if request.method != "HEAD":
            peer_gone = asyncio.Event()
            watcher = asyncio.create_task(self._watch_peer(peer_gone))
            try:
                await stream.run(lambda data: self._send(h11.Data(data=data)), peer_gone)
            except (_Closed, ConnectionError, OSError):
                raise
            except Exception as exc:
                log.error("service stream failed", error=type(exc).__name__)
                raise _Closed from None
            finally:
                watcher.cancel()
                await asyncio.wait([watcher])
            if peer_gone.is_set():
                raise _Closed
        await self._send(h11.EndOfMessage())

    async def _watch_peer(self, gone: asyncio.Event) -> None:
        """Read and drop input while a stream runs, to notice the client leaving at once."""
        try:
            while await self._reader.read(READ_SIZE):
                pass
        except (ConnectionError, OSError):
            pass
        gone.set()

    async def _send_error(self, response: Response) -> None:
        """Answer a request we could not parse, if the state machine still allows it."""
        headers = [
            ("content-type", response.content_type),
            ("content-length", str(len(response.body))),
            *COMMON_HEADERS,
            ("connection", "close"),
        ]
        try:
            await self._send(_h11_response(response.status, headers))
            await self._send(h11.Data(data=response.body))
            await self._send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            pass

    async def _send(self, event: h11.Event) -> None:
        data = self._h11.send(event)
        if not data:
            return
        if self._writer.is_closing():
            raise _Closed
        self._writer.write(data)
        try:
            async with asyncio.timeout(self._limits.write_timeout):
                await self._writer.drain()
        except TimeoutError:
            raise _Closed from None

    async def _close(self, *, linger: bool) -> None:
        writer = self._writer
        try:
            if linger and writer.can_write_eof() and not writer.is_closing():
                writer.write_eof()
                async with asyncio.timeout(LINGER_SECONDS):
                    dropped = 0
                    while dropped < LINGER_BYTES:
                        chunk = await self._reader.read(READ_SIZE)
                        if not chunk:
                            break
                        dropped += len(chunk)
        except (TimeoutError, ConnectionError, OSError):
            pass
        writer.close()
        try:
            async with asyncio.timeout(CLOSE_SECONDS):
                await writer.wait_closed()
        except (TimeoutError, ConnectionError, OSError):
            writer.transport.abort()


def _h11_response(status: int, headers: list[tuple[str, str]]) -> h11.Response:
    with contextlib.suppress(ValueError):
        return h11.Response(
            status_code=status, headers=headers, reason=http.HTTPStatus(status).phrase
        )
    return h11.Response(status_code=status, headers=headers)
