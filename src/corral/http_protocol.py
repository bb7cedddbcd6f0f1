"""uvicorn's HTTP protocol, taught to tell a fresh connection from an idle one on drain.

When a drain starts, uvicorn closes every connection that has no request in
progress. That is right for an idle keep-alive connection: its client has had a
response and knows a reused connection may be closed under it (RFC 9112 §9.3.1
lets it retry). It is wrong for a connection the worker accepted a moment before
the drain, whose client has not sent its request yet: that client has never
been answered, will not retry, and sees "server disconnected" on a request it
did send. Under load during a rolling restart, that happens.

So a connection that has not yet sent a complete request head is given until
the keep-alive timeout to do so, and that request is served with
``Connection: close``. One still silent when the time is up is closed, so a slow
or silent client cannot hold a drain for longer than ``--timeout-keep-alive``.
nginx draws the same line between a new connection and an idle one.
"""

from __future__ import annotations

import asyncio
from typing import Protocol, cast


class _Cycle(Protocol):
    keep_alive: bool


class _UvicornHTTP(Protocol):
    """The parts of uvicorn's h11 and httptools protocols this module relies on."""

    cycle: _Cycle | None
    loop: asyncio.AbstractEventLoop
    timeout_keep_alive: float

    def data_received(self, data: bytes) -> None: ...
    def connection_lost(self, exc: Exception | None) -> None: ...
    def shutdown(self) -> None: ...


def with_fresh_connection_grace(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """Return a subclass of uvicorn's HTTP protocol class ``base`` that keeps fresh
    connections open through a drain, as the module docstring explains."""

    class FreshConnectionGrace(base):  # type: ignore[valid-type, misc]
        _draining: bool = False
        _first_request_deadline: asyncio.TimerHandle | None = None

        def data_received(self, data: bytes) -> None:
            super().data_received(data)
            me = cast(_UvicornHTTP, self)
            if self._draining and me.cycle is not None:
                self._cancel_deadline()
                me.cycle.keep_alive = False  # answer this one, then close

        def shutdown(self) -> None:
            me = cast(_UvicornHTTP, self)
            if me.cycle is not None:  # a request is running, or was answered
                super().shutdown()
                return
            # No request yet: fresh, or its first request is still arriving.
            self._draining = True
            self._first_request_deadline = me.loop.call_later(
                me.timeout_keep_alive, self._close_if_still_waiting
            )

        def _close_if_still_waiting(self) -> None:
            self._first_request_deadline = None
            super().shutdown()

        def connection_lost(self, exc: Exception | None) -> None:
            self._cancel_deadline()
            super().connection_lost(exc)

        def _cancel_deadline(self) -> None:
            if self._first_request_deadline is not None:
                self._first_request_deadline.cancel()
                self._first_request_deadline = None

    FreshConnectionGrace.__name__ = f"FreshConnectionGrace{base.__name__}"
    FreshConnectionGrace.__qualname__ = FreshConnectionGrace.__name__
    return cast(type[asyncio.Protocol], FreshConnectionGrace)


__all__ = ["with_fresh_connection_grace"]
