"""uvicorn's HTTP protocol, taught to tell a fresh connection from an idle one on drain.

When a drain starts, uvicorn closes every connection that has no request in
progress. That is right for an idle keep-alive connection: its client has had a
response and knows a reused connection may be closed under it (RFC 9112 §9.3.1
lets it retry). It is wrong for a connection the worker accepted a moment before
the drain, whose client has not sent its request yet: that client has never
been answered, will not retry, and sees "server disconnected" on a request it
did send. Under load during a rolling restart, that happens.

So a connection that has not yet sent a complete request head is given until
the keep-alive timeout to do so, and that request is answered, then the
connection closed (with ``Connection: close`` when the request is still
running as the watch below sees it). One still silent when the time is up is closed, so a slow
or silent client cannot hold a drain for longer than ``--timeout-keep-alive``.
Such connections are watched on a short timer while the drain lasts, rather
than by hooking ``data_received``: every request would pay for the hook.
nginx draws the same line between a new connection and an idle one.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Protocol, cast

# How often a draining connection that has not sent its request is looked at.
_WATCH_SECONDS = 0.02


class _Cycle(Protocol):
    keep_alive: bool


class _UvicornHTTP(Protocol):
    """The parts of uvicorn's h11 and httptools protocols this module relies on."""

    cycle: _Cycle | None
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: float

    def connection_lost(self, exc: Exception | None) -> None: ...
    def shutdown(self) -> None: ...


# One subclass per protocol class, however many workers start (thread workers
# are started from the supervisor's thread, but keep the cache safe anyway).
_subclasses: dict[type[asyncio.Protocol], type[asyncio.Protocol]] = {}
_subclasses_lock = threading.Lock()


def with_fresh_connection_grace(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's HTTP protocol class ``base`` that keeps fresh
    connections open through a drain, as the module docstring explains."""
    with _subclasses_lock:
        made = _subclasses.get(base)
        if made is None:
            made = _subclasses[base] = _fresh_connection_grace(base)
        return made


def _fresh_connection_grace(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:

    class FreshConnectionGrace(base):  # type: ignore[valid-type, misc]
        _first_request_deadline: float = 0.0
        _watch: asyncio.TimerHandle | None = None

        def shutdown(self) -> None:
            me = cast(_UvicornHTTP, self)
            if me.cycle is not None:  # a request is running, or was answered
                super().shutdown()
                return
            # No request yet: fresh, or its first request is still arriving.
            self._first_request_deadline = me.loop.time() + me.timeout_keep_alive
            self._watch_for_first_request()

        def _watch_for_first_request(self) -> None:
            """Only draining connections are watched, so serving pays nothing for this."""
            self._watch = None
            me = cast(_UvicornHTTP, self)
            if me.cycle is not None:
                super().shutdown()  # answered already: close; else: answer, then close
            elif me.loop.time() >= self._first_request_deadline:
                super().shutdown()  # silent all along: close
            else:
                self._watch = me.loop.call_later(_WATCH_SECONDS, self._watch_for_first_request)

        def connection_lost(self, exc: Exception | None) -> None:
            if self._watch is not None:
                self._watch.cancel()
                self._watch = None
            super().connection_lost(exc)

    FreshConnectionGrace.__name__ = f"FreshConnectionGrace{base.__name__}"
    FreshConnectionGrace.__qualname__ = FreshConnectionGrace.__name__
    return cast(type[asyncio.Protocol], FreshConnectionGrace)


__all__ = ["with_fresh_connection_grace"]
