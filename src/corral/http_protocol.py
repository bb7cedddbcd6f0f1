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

``with_request_metrics`` goes one subclass further for a worker that keeps
request metrics: its protocol builds corral's counting request cycle
(``request_stats.cycle``) instead of uvicorn's, so the app is called as
uvicorn calls it, with no wrapper frame around it.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import time
import types
from collections.abc import Callable
from typing import Any, Protocol, cast

from corral.request_stats.cycle import metered_cycle, uncount_unstarted

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


# The module global through which uvicorn's protocols name their request cycle class.
_CYCLE_NAME = "RequestResponseCycle"


def with_request_metrics(
    base: type[asyncio.Protocol],
    cells: memoryview[float],
    *,
    clock: Callable[[], float] = time.perf_counter,
) -> type[asyncio.Protocol]:
    """A subclass of ``base`` (uvicorn's h11 or httptools protocol, or a subclass
    of it) whose requests count themselves into ``cells``, a worker's block.

    uvicorn builds each request's cycle in one method (``handle_events`` for
    h11, ``on_headers_complete`` for httptools), naming the class through its
    module's globals. The subclass runs that very method's code with one name
    changed: ``RequestResponseCycle`` is corral's counting subclass. Nothing
    of uvicorn is copied, and nothing is added per request but the counting.
    Made per worker (the cells are per worker), never cached: a recycled
    worker's classes go with it.
    """
    uvicorn_class = _uvicorn_protocol_class(base)
    module = sys.modules[uvicorn_class.__module__]
    cycle = metered_cycle(getattr(module, _CYCLE_NAME), cells, clock=clock)
    names = dict(vars(module))
    names[_CYCLE_NAME] = cycle
    rebound: dict[str, Any] = {}
    for name, attribute in vars(uvicorn_class).items():
        if isinstance(attribute, types.FunctionType) and _CYCLE_NAME in attribute.__code__.co_names:
            rebound[name] = _with_globals(attribute, names)
    if not rebound:
        raise TypeError(
            f"{uvicorn_class.__qualname__} builds no {_CYCLE_NAME}: "
            "this uvicorn is not one corral supports (see pyproject.toml's bound)"
        )
    base_connection_lost = base.connection_lost

    def connection_lost(self: Any, exc: Exception | None) -> None:
        # httptools queues pipelined requests; those still queued will never run.
        for queued, _app in getattr(self, "pipeline", ()):
            uncount_unstarted(queued, cells)
        base_connection_lost(self, exc)

    rebound["connection_lost"] = connection_lost
    rebound["__module__"] = __name__
    rebound["__doc__"] = f"{base.__qualname__}, counting its requests into a worker's block."
    return cast(type[asyncio.Protocol], type(f"Metered{base.__name__}", (base,), rebound))


def _uvicorn_protocol_class(base: type[asyncio.Protocol]) -> type:
    """The class of uvicorn's own in ``base``'s ancestry: the one whose module names the cycle."""
    for klass in base.__mro__:
        module = sys.modules.get(klass.__module__)
        if klass.__module__.startswith("uvicorn.") and hasattr(module, _CYCLE_NAME):
            return klass
    raise TypeError(f"{base.__qualname__} is not one of uvicorn's HTTP protocol classes")


def _with_globals(function: types.FunctionType, names: dict[str, Any]) -> types.FunctionType:
    """``function``'s code with ``names`` as its module globals."""
    clone = types.FunctionType(
        function.__code__, names, function.__name__, function.__defaults__, function.__closure__
    )
    clone.__kwdefaults__ = function.__kwdefaults__
    clone.__qualname__ = function.__qualname__
    clone.__doc__ = function.__doc__
    return clone


__all__ = ["with_fresh_connection_grace", "with_request_metrics"]
