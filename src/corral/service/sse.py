"""``/events?follow=1``: lifecycle events as Server-Sent Events.

Ordering guarantee: a client sees every event with ``seq > since`` that is
still in the source's ring, then every later one, each exactly once and in
``seq`` order. To get that without a lock shared with the emitter, the stream
subscribes *before* reading the backlog, and drops live events whose ``seq``
is not above the last one already sent: an event emitted between the two
calls may arrive both ways, but is written once.

The subscription callback runs on the emitting thread. It only hands the
event to this stream's loop with ``call_soon_threadsafe``; all state below is
touched on the loop thread alone, so nothing here relies on the GIL.

A client that falls ``queue_size`` events behind is disconnected rather than
buffered without bound; its ``EventSource`` reconnects with
``Last-Event-ID`` and resumes from the backlog.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections import deque
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from corral.service.http import Stream
from corral.service.sources import ServiceSources, Unsubscribe

log = structlog.get_logger("corral.service")


def format_event(event: dict[str, Any]) -> bytes:
    """One SSE message: ``id`` (the seq), ``event`` (the kind) and one-line JSON ``data``."""
    lines = []
    seq = event.get("seq")
    if isinstance(seq, int) and not isinstance(seq, bool):
        lines.append(f"id: {seq}")
    kind = event.get("kind")
    if isinstance(kind, str) and kind:
        # A newline would end the field and let the value forge others.
        lines.append("event: " + kind.replace("\r", " ").replace("\n", " "))
    # json.dumps escapes control characters, so the data is always one line.
    lines.append("data: " + json.dumps(event, separators=(",", ":"), default=str))
    return ("\n".join(lines) + "\n\n").encode("utf-8")


def _seq(event: dict[str, Any]) -> int | None:
    seq = event.get("seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else None


class EventStream(Stream):
    """One follower's subscription, backlog and bounded queue."""

    content_type = "text/event-stream; charset=utf-8"
    # Tell nginx-style proxies not to buffer the stream.
    headers = (("x-accel-buffering", "no"),)

    def __init__(self, *, since: int, queue_size: int, heartbeat: float) -> None:
        self._loop = asyncio.get_running_loop()
        self._last = since
        self._queue_size = queue_size
        self._heartbeat = heartbeat
        self._pending: deque[dict[str, Any]] = deque()
        self._backlog: list[dict[str, Any]] = []
        self._wake = asyncio.Event()
        self._overflowed = False
        self._closed = False
        self._unsubscribe: Unsubscribe | None = None

    def open(self, sources: ServiceSources) -> None:
        """Subscribe, then read the backlog (in that order: see the module docstring)."""
        self._unsubscribe = sources.subscribe(self._on_event)
        try:
            self._backlog = sources.events(self._last)
        except BaseException:
            self.close()
            raise

    def _on_event(self, event: dict[str, Any]) -> None:
        """Called on the emitting thread: hand over and return, never block."""
        # RuntimeError: the loop is closed, so the stream is gone and unsubscribing.
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._deliver, event)

    def _deliver(self, event: dict[str, Any]) -> None:
        if self._closed:
            return
        if len(self._pending) >= self._queue_size:
            self._overflowed = True
        else:
            self._pending.append(event)
        self._wake.set()

    async def run(self, send: Callable[[bytes], Awaitable[None]], peer_gone: asyncio.Event) -> None:
        first = bytearray(b": corral lifecycle events\n\n")
        for event in self._backlog:
            first += self._take(event)
        self._backlog = []
        await send(bytes(first))
        relay = asyncio.create_task(self._relay(peer_gone))
        try:
            while True:
                try:
                    async with asyncio.timeout(self._heartbeat):
                        await self._wake.wait()
                except TimeoutError:
                    await send(b": ping\n\n")
                    continue
                self._wake.clear()
                if peer_gone.is_set():
                    return
                if self._overflowed:
                    log.warning("event follower fell behind; disconnected", queue=self._queue_size)
                    return
                chunk = bytearray()
                while self._pending:
                    chunk += self._take(self._pending.popleft())
                if chunk:
                    await send(bytes(chunk))
        finally:
            relay.cancel()
            await asyncio.wait([relay])

    def _take(self, event: dict[str, Any]) -> bytes:
        """The message for ``event``, or nothing if it was already sent."""
        seq = _seq(event)
        if seq is not None:
            if seq <= self._last:
                return b""
            self._last = seq
        return format_event(event)

    async def _relay(self, peer_gone: asyncio.Event) -> None:
        await peer_gone.wait()
        self._wake.set()

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._pending.clear()
        unsubscribe, self._unsubscribe = self._unsubscribe, None
        if unsubscribe is not None:
            try:
                unsubscribe()
            except Exception as exc:
                log.warning("event unsubscribe failed", error=type(exc).__name__)
