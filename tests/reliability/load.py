"""A loopback load generator with exact accounting: every request is one ``Attempt``.

Why not ``wrk`` or httpx: the scenarios must say *which* requests failed and
why, and attribute each failure to a fault (say, the SIGKILLed worker that
had accepted its connection). So this is a deliberately small HTTP/1.1 client
on raw asyncio streams: one fresh connection per request (``Connection:
close``), so a connection is always accepted by exactly one worker and its
client port identifies it on the server side; a bounded rate (request *i* is
due at ``t0 + i / rate``; late requests are sent at once but never bunched
ahead of schedule); a bounded duration; and a fixed number of concurrent
connections. Every attempt ends in exactly one ``Outcome``.
"""

from __future__ import annotations

import asyncio
import enum
import json
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from urllib.parse import urlsplit

# A hard cap on any run, whatever its spec says: a scenario must end.
MAX_RUN_SECONDS = 3600.0


class Outcome(enum.Enum):
    """How one request ended. Everything but ``OK`` is a failure."""

    OK = "ok"  # a complete 2xx response
    REFUSED = "refused"  # the connect was refused: nobody was listening
    RESET = "reset"  # the peer reset the connection (RST)
    DISCONNECT = "disconnect"  # the peer closed before a complete response
    TIMEOUT = "timeout"  # no complete response within the request timeout
    HTTP_ERROR = "http_error"  # a complete response, but not 2xx
    OTHER = "other"  # any other socket error (named in ``Attempt.error``)


@dataclass(frozen=True, slots=True)
class Attempt:
    """One request. Times are ``time.monotonic()``: the same clock as the events' ``monotonic``."""

    started: float
    ended: float
    outcome: Outcome
    status: int | None = None
    client_port: int | None = None  # our end of the connection, once connected
    pid: int | None = None  # who answered (from the chaos app's JSON body)
    slot: int | None = None
    error: str = ""


@dataclass(frozen=True, slots=True)
class LoadSpec:
    """What to send: ``rate`` requests/s over ``connections`` concurrent connections."""

    url: str  # e.g. http://127.0.0.1:8123/slow?seconds=0.05
    rate: float = 100.0
    connections: int = 8
    duration: float | None = 10.0  # None: until ``stop()`` (capped at MAX_RUN_SECONDS)
    timeout: float = 30.0
    max_requests: int | None = None  # stop scheduling after this many

    def describe(self) -> str:
        path = urlsplit(self.url)
        target = path.path + (f"?{path.query}" if path.query else "")
        length = f"{self.duration:g} s" if self.duration is not None else "until stopped"
        if self.max_requests is not None:
            return (
                f"{self.max_requests} x GET {target} at once over {self.connections} "
                "connections, one connection per request, loopback"
            )
        return (
            f"GET {target} at <= {self.rate:g} req/s over {self.connections} connections, "
            f"{length}, one connection per request, loopback"
        )


@dataclass(slots=True)
class LoadResult:
    spec: LoadSpec
    attempts: list[Attempt] = field(default_factory=list)
    elapsed: float = 0.0

    @property
    def sent(self) -> int:
        return len(self.attempts)

    @property
    def ok(self) -> int:
        return sum(1 for a in self.attempts if a.outcome is Outcome.OK)

    @property
    def failures(self) -> list[Attempt]:
        return [a for a in self.attempts if a.outcome is not Outcome.OK]

    @property
    def failed(self) -> int:
        return self.sent - self.ok

    def by_outcome(self) -> dict[str, int]:
        counts = Counter(a.outcome.value for a in self.attempts if a.outcome is not Outcome.OK)
        return dict(sorted(counts.items()))

    def served_by(self) -> dict[int, int]:
        """pid -> successful responses, from the chaos app's identity body."""
        counts = Counter(a.pid for a in self.attempts if a.pid is not None)
        return dict(counts)


class LoadGenerator:
    """Runs a ``LoadSpec`` on its own thread and event loop; ``result()`` joins it.

    Usable as a context manager: it starts on entry and is stopped (not
    waited for the full duration) on exit.
    """

    def __init__(self, spec: LoadSpec) -> None:
        parts = urlsplit(spec.url)
        if parts.scheme != "http" or parts.hostname is None or parts.port is None:
            raise ValueError(f"need an http://host:port/... URL, got {spec.url!r}")
        self.spec = spec
        self._host = parts.hostname
        self._port = parts.port
        target = parts.path or "/"
        if parts.query:
            target += "?" + parts.query
        self._request = (
            f"GET {target} HTTP/1.1\r\nHost: {self._host}:{self._port}\r\n"
            "Connection: close\r\nUser-Agent: corral-reliability\r\n\r\n"
        ).encode("ascii")
        self._result = LoadResult(spec)
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._first = threading.Event()
        self._thread = threading.Thread(target=self._run, name="load-generator", daemon=True)

    def start(self) -> LoadGenerator:
        self._thread.start()
        return self

    def stop(self) -> None:
        """Send nothing new; requests already sent still finish (or time out)."""
        self._stop.set()

    def result(self, timeout: float | None = None) -> LoadResult:
        wait = timeout if timeout is not None else self._join_budget()
        self._thread.join(wait)
        if self._thread.is_alive():
            raise AssertionError(f"the load generator did not finish within {wait:.0f}s")
        with self._lock:
            return self._result

    def wait_started(self, count: int = 1, timeout: float = 30.0) -> None:
        """Block until ``count`` requests have completed (of any outcome)."""
        deadline = time.monotonic() + timeout
        while self.completed() < count:
            if time.monotonic() > deadline:
                raise AssertionError(f"fewer than {count} requests completed in {timeout}s")
            time.sleep(0.02)

    def completed(self) -> int:
        with self._lock:
            return len(self._result.attempts)

    def snapshot(self) -> list[Attempt]:
        with self._lock:
            return list(self._result.attempts)

    def __enter__(self) -> LoadGenerator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
        self._thread.join(self._join_budget())

    def _join_budget(self) -> float:
        duration = self.spec.duration if self.spec.duration is not None else MAX_RUN_SECONDS
        return duration + self.spec.timeout + 30.0

    # --- The loop thread ---------------------------------------------------------

    def _run(self) -> None:
        began = time.monotonic()
        asyncio.run(self._main())
        with self._lock:
            self._result.elapsed = time.monotonic() - began

    async def _main(self) -> None:
        spec = self.spec
        start = time.monotonic()
        limit = spec.duration if spec.duration is not None else MAX_RUN_SECONDS
        schedule = _Schedule(start, spec.rate, start + limit, spec.max_requests)
        await asyncio.gather(*(self._connection(schedule) for _ in range(spec.connections)))

    async def _connection(self, schedule: _Schedule) -> None:
        while not self._stop.is_set():
            due = schedule.next_due()
            if due is None:
                return
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if self._stop.is_set():
                return
            attempt = await self._one()
            with self._lock:
                self._result.attempts.append(attempt)

    async def _one(self) -> Attempt:
        started = time.monotonic()
        port: int | None = None
        try:
            async with asyncio.timeout(self.spec.timeout):
                reader, writer = await asyncio.open_connection(self._host, self._port)
                port = int(writer.get_extra_info("sockname")[1])
                try:
                    writer.write(self._request)
                    await writer.drain()
                    status, body = await _read_response(reader)
                finally:
                    writer.close()
        except ConnectionRefusedError:
            return Attempt(started, time.monotonic(), Outcome.REFUSED, client_port=port)
        except (ConnectionResetError, BrokenPipeError) as exc:
            return Attempt(started, time.monotonic(), Outcome.RESET, None, port, error=repr(exc))
        except asyncio.IncompleteReadError as exc:
            got = f"EOF after {len(exc.partial)} bytes"
            return Attempt(started, time.monotonic(), Outcome.DISCONNECT, None, port, error=got)
        except TimeoutError:
            return Attempt(started, time.monotonic(), Outcome.TIMEOUT, client_port=port)
        except (OSError, ValueError, asyncio.LimitOverrunError) as exc:
            return Attempt(started, time.monotonic(), Outcome.OTHER, None, port, error=repr(exc))
        ended = time.monotonic()
        if not 200 <= status < 300:
            return Attempt(started, ended, Outcome.HTTP_ERROR, status, port)
        pid, slot = _identity(body)
        return Attempt(started, ended, Outcome.OK, status, port, pid, slot)


class _Schedule:
    """Hands out due times ``t0 + i / rate`` until ``end``; shared by the connection tasks."""

    def __init__(self, start: float, rate: float, end: float, count: int | None) -> None:
        self._start = start
        self._interval = 1.0 / rate
        self._end = end
        self._count = count
        self._index = 0

    def next_due(self) -> float | None:
        due = self._start + self._index * self._interval
        if due >= self._end or (self._count is not None and self._index >= self._count):
            return None
        self._index += 1
        return due


async def _read_response(reader: asyncio.StreamReader) -> tuple[int, bytes]:
    """Status and body of one response with a ``Content-Length`` (or read to EOF)."""
    head = await reader.readuntil(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    status = int(lines[0].split(" ", 2)[1])
    length: int | None = None
    for line in lines[1:]:
        name, _, value = line.partition(":")
        if name.strip().lower() == "content-length":
            length = int(value.strip())
    if length is None:
        return status, await reader.read()
    return status, await reader.readexactly(length)


def _identity(body: bytes) -> tuple[int | None, int | None]:
    try:
        payload = json.loads(body)
    except ValueError:
        return None, None
    if not isinstance(payload, dict):
        return None, None
    pid, slot = payload.get("pid"), payload.get("slot")
    return (pid if isinstance(pid, int) else None, slot if isinstance(slot, int) else None)
