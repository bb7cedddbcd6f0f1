"""The side port: a small HTTP server on its own thread and event loop.

It runs in the supervisor process but shares nothing with the workers: a
stuck worker, a slow scraper or a flood of idle connections cannot delay
supervision, and a supervisor busy restarting workers still answers
``/healthz``. The listening socket is bound in the constructor, in the
caller's thread, so "port in use" is a ``BindError`` at startup, not a log
line from a background thread.

Thread-safety: the loop thread owns every connection and all per-request
state. Other threads talk to it only through ``call_soon_threadsafe``
(``stop`` and the event subscription), and ``SidePort``'s own lifecycle
fields are guarded by a lock, so nothing depends on the GIL.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import functools
import socket
import ssl
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Self

import structlog

from corral.errors import BindError, ConfigError
from corral.service.auth import Authenticator, WebConfig, check_token
from corral.service.http import Connection, Limits
from corral.service.routes import Router
from corral.service.sources import ServiceSources

log = structlog.get_logger("corral.service")

BACKLOG = 1024
# healthy() may block ~1 s and bcrypt ~50 ms: a few threads are plenty, and
# a bound means a burst of slow calls queues instead of spawning threads.
EXECUTOR_THREADS = 4
STOP_GRACE = 2.0
ACCEPT_BATCH = 64
ACCEPT_PAUSE = 0.1


@dataclass(frozen=True, slots=True)
class ServiceSettings:
    """Everything the side port needs to know; validated on construction.

    ``token`` and ``web_config`` may both be set: a request passes with
    either credential. Timeouts are seconds.
    """

    host: str = "127.0.0.1"
    port: int = 9180
    token: str | None = field(default=None, repr=False)
    web_config: WebConfig | None = None
    # The whole request head must arrive within this long of its first byte
    # (of the accept, for a new connection); also bounds the TLS handshake.
    header_timeout: float = 5.0
    # An idle keep-alive connection is closed after this long.
    idle_timeout: float = 30.0
    # A response that cannot be written within this long closes the connection.
    write_timeout: float = 10.0
    # Connections beyond this are accepted and closed at once.
    max_connections: int = 1024
    max_header_bytes: int = 16 * 1024
    # An SSE comment every this many idle seconds keeps proxies from timing out.
    sse_heartbeat: float = 15.0
    # Events a follower may be behind before it is disconnected (it can resume).
    sse_queue_size: int = 1000

    def __post_init__(self) -> None:
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"metrics port {self.port} is out of range; use 0-65535")
        if self.token is not None:
            check_token(self.token)
        for name in ("header_timeout", "idle_timeout", "write_timeout", "sse_heartbeat"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"metrics {name} must be a positive number of seconds")
        for name in ("max_connections", "max_header_bytes", "sse_queue_size"):
            if getattr(self, name) < 1:
                raise ConfigError(f"metrics {name} must be at least 1")


class SidePort:
    """The running side port. Bind in ``__init__``, serve after ``start()``, ``stop()`` once.

    Usable as a context manager (``with SidePort(settings, sources) as port:``),
    which starts it and stops it.
    """

    def __init__(self, settings: ServiceSettings, sources: ServiceSources) -> None:
        self.settings = settings
        self._sources = sources
        web = settings.web_config
        # Certificates first: a ConfigError should not leave a bound socket behind.
        self._ssl: ssl.SSLContext | None = web.ssl_context() if web is not None else None
        self._auth = Authenticator(settings.token, web.basic_auth_users if web else {})
        self._sock = _bind(settings.host, settings.port)
        host, port = self._sock.getsockname()[:2]
        self._address: tuple[str, int] = (str(host), int(port))
        self._lock = threading.Lock()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self._ready = threading.Event()
        self._start_error: BaseException | None = None
        # Set on the loop thread before _ready; read by others only after it.
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_requested: asyncio.Event | None = None
        # Loop-thread only.
        self._connections: set[asyncio.Task[None]] = set()
        self._accept_pause: asyncio.TimerHandle | None = None
        self._full_warned = False

    @property
    def address(self) -> tuple[str, int]:
        """The bound ``(host, port)``: the real port when port 0 was asked for."""
        return self._address

    @property
    def url(self) -> str:
        host, port = self._address
        if ":" in host:
            host = f"[{host}]"
        scheme = "https" if self._ssl is not None else "http"
        return f"{scheme}://{host}:{port}"

    def start(self) -> None:
        """Start serving on a daemon thread; returns once the port accepts requests."""
        with self._lock:
            if self._thread is not None or self._stopped:
                raise RuntimeError("a SidePort can be started only once")
            thread = threading.Thread(target=self._run, name="corral-service", daemon=True)
            self._thread = thread
        thread.start()
        self._ready.wait()
        if self._start_error is not None:
            raise RuntimeError("the metrics service failed to start") from self._start_error

    def stop(self, timeout: float = 5.0) -> None:
        """Close the port and every connection (SSE streams too), then join the thread.

        Safe to call more than once, from any thread, started or not.
        """
        with self._lock:
            if self._stopped:
                thread = None
            else:
                self._stopped = True
                thread = self._thread
            if thread is None:
                self._sock.close()
        if thread is None:
            return
        self._ready.wait(timeout)
        loop, stop_requested = self._loop, self._stop_requested
        if loop is not None and stop_requested is not None:
            with contextlib.suppress(RuntimeError):  # the loop already ended
                loop.call_soon_threadsafe(stop_requested.set)
        if thread is not threading.current_thread():
            thread.join(timeout)
            if thread.is_alive():
                log.warning("metrics service thread did not stop in time", timeout=timeout)

    def __enter__(self) -> Self:
        if self._thread is None:
            self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # --- The loop thread ----------------------------------------------------

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        loop.set_exception_handler(_log_loop_error)
        executor = ThreadPoolExecutor(EXECUTOR_THREADS, thread_name_prefix="corral-service-io")
        try:
            loop.run_until_complete(self._serve(loop, executor))
        except BaseException as exc:
            if self._ready.is_set():
                log.error("metrics service stopped on an error", error=type(exc).__name__)
            else:
                self._start_error = exc
        finally:
            # A healthy() call still blocked must not hold up stop().
            executor.shutdown(wait=False, cancel_futures=True)
            try:
                loop.run_until_complete(loop.shutdown_asyncgens())
            finally:
                loop.close()
                self._sock.close()
                self._ready.set()

    async def _serve(self, loop: asyncio.AbstractEventLoop, executor: ThreadPoolExecutor) -> None:
        settings = self.settings
        router = Router(
            self._sources,
            self._auth,
            executor,
            sse_queue_size=settings.sse_queue_size,
            sse_heartbeat=settings.sse_heartbeat,
        )
        limits = Limits(
            header_timeout=settings.header_timeout,
            idle_timeout=settings.idle_timeout,
            write_timeout=settings.write_timeout,
            max_header_bytes=settings.max_header_bytes,
        )
        stop_requested = asyncio.Event()
        accept = functools.partial(self._on_acceptable, loop, limits, router)
        loop.add_reader(self._sock, accept)
        self._loop = loop
        self._stop_requested = stop_requested
        # Log before announcing readiness: a logging failure then surfaces as a
        # start error in start(), instead of killing a port already in use.
        log.info("metrics service listening", url=self.url, tls=self._ssl is not None)
        self._ready.set()
        try:
            await stop_requested.wait()
        finally:
            if self._accept_pause is not None:
                self._accept_pause.cancel()
            loop.remove_reader(self._sock)
            # The kernel resets connections still waiting in the backlog.
            self._sock.close()
            for task in list(self._connections):
                task.cancel()
            await _drain_tasks(STOP_GRACE)

    def _on_acceptable(
        self, loop: asyncio.AbstractEventLoop, limits: Limits, router: Router
    ) -> None:
        """Accept what the backlog holds; each connection becomes a task ``stop`` can cancel.

        A plain reader callback rather than ``asyncio.start_server`` or an
        awaited ``sock_accept``: both can drop an already-accepted socket
        unclosed when the server stops at the wrong moment (CPython 3.11), and
        owning the accept lets ``max_connections`` count connections still in
        their TLS handshake.
        """
        for _ in range(ACCEPT_BATCH):
            try:
                conn, _ = self._sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except ConnectionAbortedError:
                continue
            except OSError as exc:
                # Out of file descriptors and the like: pause accepting for a
                # moment instead of spinning, and keep serving what we have.
                log.warning("metrics service cannot accept", error=type(exc).__name__)
                loop.remove_reader(self._sock)
                self._accept_pause = loop.call_later(
                    ACCEPT_PAUSE,
                    loop.add_reader,
                    self._sock,
                    self._on_acceptable,
                    loop,
                    limits,
                    router,
                )
                return
            if len(self._connections) >= self.settings.max_connections:
                # Accept-and-close keeps the backlog moving, so the port
                # answers again as soon as a slot frees up.
                conn.close()
                if not self._full_warned:
                    self._full_warned = True
                    log.warning(
                        "metrics service at max_connections; closing new ones",
                        max_connections=self.settings.max_connections,
                    )
                continue
            self._full_warned = False
            conn.setblocking(False)
            task = loop.create_task(self._connection(conn, limits, router))
            self._connections.add(task)
            task.add_done_callback(functools.partial(self._connection_done, conn))

    def _connection_done(self, conn: socket.socket, task: asyncio.Task[None]) -> None:
        self._connections.discard(task)
        if task.cancelled():
            # Cancelled before it ran, the task never wrapped (or closed) the
            # socket. Closing the same socket object twice is harmless.
            conn.close()

    async def _connection(self, conn: socket.socket, limits: Limits, router: Router) -> None:
        loop = asyncio.get_running_loop()
        reader = asyncio.StreamReader(loop=loop)
        protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
        try:
            transport, _ = await loop.connect_accepted_socket(
                lambda: protocol,
                conn,
                ssl=self._ssl,
                ssl_handshake_timeout=self.settings.header_timeout if self._ssl else None,
                ssl_shutdown_timeout=self.settings.header_timeout if self._ssl else None,
            )
        except (OSError, TimeoutError) as exc:
            # Failed TLS handshakes (plain HTTP to the TLS port, no client
            # certificate, a silent client) end here: one debug line.
            log.debug("metrics connection failed before HTTP", error=type(exc).__name__)
            conn.close()
            return
        writer = asyncio.StreamWriter(transport, protocol, reader, loop)
        try:
            await Connection(reader, writer, limits, router).serve()
        except Exception as exc:
            log.warning("service connection error", error=type(exc).__name__)
        finally:
            if not transport.is_closing():
                transport.abort()


async def _drain_tasks(timeout: float) -> None:
    """Wait for every other task on this loop to finish; cancel stragglers at the deadline."""
    current = asyncio.current_task()
    deadline = asyncio.get_running_loop().time() + timeout
    cancelled = False
    while True:
        pending = [task for task in asyncio.all_tasks() if task is not current]
        if not pending:
            # transport.abort() closes the socket in a call_soon callback: let
            # those run, or the loop stops with accepted sockets still open.
            for _ in range(3):
                await asyncio.sleep(0)
            pending = [task for task in asyncio.all_tasks() if task is not current]
            if not pending:
                return
        remaining = deadline - asyncio.get_running_loop().time()
        if remaining <= 0:
            if cancelled:
                return
            cancelled = True
            for task in pending:
                task.cancel()
            remaining = 0.5
        await asyncio.wait(pending, timeout=remaining)


def _bind(host: str, port: int) -> socket.socket:
    where = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        infos = socket.getaddrinfo(
            host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE
        )
    except socket.gaierror as exc:
        raise BindError(
            f"cannot resolve metrics host {host!r} ({exc.strerror}); use an IP address"
        ) from None
    family, _, _, _, address = infos[0]
    try:
        sock = socket.create_server(address, family=family, backlog=BACKLOG)
    except OSError as exc:
        raise BindError(_bind_message(where, exc)) from None
    sock.setblocking(False)
    return sock


def _bind_message(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"metrics port {where} is already in use; pass --metrics-port or --no-metrics"
    if exc.errno == errno.EACCES:
        return (
            f"no permission to bind metrics port {where}; use a port above 1023 "
            "with --metrics-port, or --no-metrics"
        )
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"metrics host in {where} is not an address of this machine; use another host"
    return f"cannot bind metrics port {where} ({exc.strerror}); pass --metrics-port or --no-metrics"


def _log_loop_error(loop: asyncio.AbstractEventLoop, context: dict[str, Any]) -> None:
    """One line per loop-level error (failed TLS handshakes and the like), no traceback."""
    exc = context.get("exception")
    log.warning(
        "metrics service loop error",
        message=str(context.get("message", ""))[:200],
        error=type(exc).__name__ if exc is not None else None,
    )
