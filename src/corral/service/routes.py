"""The side port's endpoints, and the order in which a request is judged.

Order: authentication (so an anonymous client learns nothing, not even which
paths exist), then the path (404), then the method (405 with ``Allow``), then
the body rule (413: the port never reads request bodies), then the endpoint.
An endpoint that raises becomes a 500 with the fixed body ``internal error``
and one log line naming the route and the exception type, nothing else.

Source calls are quick by contract and run on the loop, except
``healthy()`` (which may wait ~1 s for the supervisor) and bcrypt checks,
which run on the port's small executor. Concurrent ``/healthz`` requests share
one in-flight ``healthy()`` call, so a burst of probes cannot queue up seconds
of executor work.
"""

from __future__ import annotations

import asyncio
import dataclasses
import gzip
import json
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import Executor
from typing import Any

import structlog

from corral.service import page
from corral.service.auth import Authenticator
from corral.service.http import Request, Response, Stream, error
from corral.service.sources import ServiceSources
from corral.service.sse import EventStream

log = structlog.get_logger("corral.service")

JSON = "application/json"
ALLOW = ("allow", "GET, HEAD")
HEALTH_TIMEOUT = 5.0
_SEQ = re.compile(r"[0-9]{1,18}")
_TRUE = frozenset({"1", "true", "yes", "on"})

Endpoint = Callable[[Request], Awaitable[Response | Stream]]


def json_response(value: Any, status: int = 200) -> Response:
    body = json.dumps(value, separators=(",", ":")).encode("utf-8") + b"\n"
    return Response(status, body, JSON)


def accepts_gzip(accept_encoding: str | None) -> bool:
    """Whether ``Accept-Encoding`` allows gzip (an explicit ``gzip;q=0`` wins over ``*``)."""
    if not accept_encoding:
        return False
    qualities: dict[str, float] = {}
    for item in accept_encoding.split(","):
        coding, _, params = item.partition(";")
        quality = 1.0
        for param in params.split(";"):
            name, _, value = param.strip().partition("=")
            if name.lower() == "q":
                try:
                    quality = float(value)
                except ValueError:
                    quality = 0.0
        qualities[coding.strip().lower()] = quality
    for coding in ("gzip", "x-gzip", "*"):
        if coding in qualities:
            return qualities[coding] > 0
    return False


def parse_seq(value: str) -> int | None:
    """A non-negative event sequence number, or ``None`` if ``value`` is not one."""
    return int(value) if _SEQ.fullmatch(value) else None


class Router:
    """Maps requests to endpoints over one ``ServiceSources``. Lives on the port's loop."""

    def __init__(
        self,
        sources: ServiceSources,
        authenticator: Authenticator,
        executor: Executor,
        *,
        sse_queue_size: int,
        sse_heartbeat: float,
    ) -> None:
        self._sources = sources
        self._auth = authenticator
        self._executor = executor
        self._sse_queue_size = sse_queue_size
        self._sse_heartbeat = sse_heartbeat
        self._health: asyncio.Future[bool] | None = None
        self._routes: dict[str, Endpoint] = {
            "/": self._page,
            "/metrics": self._metrics,
            "/healthz": self._healthz,
            "/readyz": self._readyz,
            "/workers": self._workers,
            "/events": self._events,
            "/debug/traces": self._traces,
        }

    async def __call__(self, request: Request) -> Response | Stream:
        if not await self._auth.authorized(request.header("authorization"), self._executor):
            return error(401, "unauthorized", *self._auth.challenges())
        endpoint = self._routes.get(request.path)
        if endpoint is None:
            return error(404, "not found")
        if request.method not in ("GET", "HEAD"):
            return error(405, "method not allowed", ALLOW)
        if request.has_body:
            return error(413, "request body not accepted")
        try:
            return await endpoint(request)
        except Exception as exc:
            log.error("service endpoint failed", route=request.path, error=type(exc).__name__)
            return error(500, "internal error")

    async def _page(self, request: Request) -> Response:
        body = page.render_page(self._sources.workers())
        return Response(200, body, "text/html; charset=utf-8", page.HEADERS)

    async def _metrics(self, request: Request) -> Response:
        payload = self._sources.metrics(request.header("accept"))
        vary = ("vary", "Accept, Accept-Encoding")
        if accepts_gzip(request.header("accept-encoding")):
            body = gzip.compress(payload.body, compresslevel=6, mtime=0)
            return Response(200, body, payload.content_type, (("content-encoding", "gzip"), vary))
        return Response(200, payload.body, payload.content_type, (vary,))

    async def _healthz(self, request: Request) -> Response:
        if self._health is None or self._health.done():
            loop = asyncio.get_running_loop()
            self._health = loop.run_in_executor(self._executor, self._sources.healthy)
        try:
            async with asyncio.timeout(HEALTH_TIMEOUT):
                healthy = await asyncio.shield(self._health)
        except TimeoutError:
            healthy = False
        if healthy:
            return Response(200, b"ok")
        return error(503, "unhealthy")

    async def _readyz(self, request: Request) -> Response:
        readiness = self._sources.readiness()
        return json_response(dataclasses.asdict(readiness), 200 if readiness.ready else 503)

    async def _workers(self, request: Request) -> Response:
        return json_response(self._sources.workers())

    async def _traces(self, request: Request) -> Response:
        return json_response(self._sources.traces())

    async def _events(self, request: Request) -> Response | Stream:
        since_values = request.query.get("since", ["0"])
        since = parse_seq(since_values[-1])
        if since is None:
            return error(400, "since must be a non-negative integer")
        follow = request.query.get("follow", ["0"])[-1].lower() in _TRUE
        if not follow:
            return json_response(self._sources.events(since))
        last_event_id = request.header("last-event-id")
        if last_event_id is not None:
            resumed = parse_seq(last_event_id.strip())
            if resumed is None:
                return error(400, "Last-Event-ID must be a non-negative integer")
            since = resumed
        stream = EventStream(
            since=since, queue_size=self._sse_queue_size, heartbeat=self._sse_heartbeat
        )
        if request.method == "GET":
            stream.open(self._sources)
        return stream
