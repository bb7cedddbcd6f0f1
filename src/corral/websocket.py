"""WebSockets: which library serves them, and a 1001 "going away" close on drain.

corral depends on ``websockets``, so ``pip install corral`` serves WebSockets
(``--ws auto`` picks it, as uvicorn's does; ``wsproto`` is the fallback when
it is installed). On a free-threaded build ``websockets`` has no wheel of its
own and pip installs its pure-Python one: it serves the same, without its C
masking speedup, and the GIL stays off. ``corral check`` says which.

uvicorn closes open WebSockets at shutdown with 1012 "service restart". A
corral drain is not always a restart (SIGTERM is a shutdown; a recycled or
rolled worker leaves while its siblings serve on), so corral sends what RFC
6455 defines for a server going down or away: 1001. A client that reconnects
lands on a live worker. The protocol subclasses below do only that, and count
each such close for the metrics; every other path is uvicorn's own.

A worker that keeps request metrics subclasses once more
(``with_websocket_metrics``): a WebSocket counts as open from the app's
``websocket.accept`` until its app call returns, counted in the protocol, not
by a wrapper around the app.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib.metadata
import importlib.util
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, cast

from corral.config_choices import WebSocketLibrary
from corral.errors import ConfigError
from corral.request_stats.layout import WS_ENDED_INDEX, WS_OPENED_INDEX

GOING_AWAY = 1001
GOING_AWAY_REASON = "going away"


@dataclass(frozen=True, slots=True)
class WebSocketSupport:
    """What ``--ws`` resolves to on this interpreter, for ``corral check``."""

    library: str | None  # the distribution serving WebSockets, or None
    version: str | None
    note: str


def _installed(name: str) -> str | None:
    if importlib.util.find_spec(name) is None:
        return None
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "unknown version"


def describe_support(choice: WebSocketLibrary) -> WebSocketSupport:
    """Which library ``choice`` serves WebSockets with here, and how."""
    if choice is WebSocketLibrary.NONE:
        return WebSocketSupport(None, None, "off (--ws none): upgrades get a plain HTTP answer")
    wanted = {
        WebSocketLibrary.AUTO: ("websockets", "wsproto"),
        WebSocketLibrary.WEBSOCKETS: ("websockets",),
        WebSocketLibrary.WEBSOCKETS_SANSIO: ("websockets",),
        WebSocketLibrary.WSPROTO: ("wsproto",),
    }[choice]
    for name in wanted:
        version = _installed(name)
        if version is None:
            continue
        if name == "websockets" and importlib.util.find_spec("websockets.speedups") is None:
            note = "pure Python (no wheel with C speedups for this interpreter)"
        else:
            note = "C speedups" if name == "websockets" else "pure Python"
        return WebSocketSupport(name, version, note)
    missing = " or ".join(wanted)
    return WebSocketSupport(
        None, None, f"not installed: upgrades get a plain HTTP answer; pip install {missing}"
    )


# uvicorn's module for each choice, once resolved to an installed library.
_UVICORN_MODULES = {
    (WebSocketLibrary.AUTO, "websockets"): "websockets_sansio_impl",
    (WebSocketLibrary.AUTO, "wsproto"): "wsproto_impl",
    (WebSocketLibrary.WEBSOCKETS, "websockets"): "websockets_impl",
    (WebSocketLibrary.WEBSOCKETS_SANSIO, "websockets"): "websockets_sansio_impl",
    (WebSocketLibrary.WSPROTO, "wsproto"): "wsproto_impl",
}


def require_support(choice: WebSocketLibrary) -> WebSocketSupport:
    """``describe_support``, but a library named with ``--ws`` must be installed.

    The protocol module the workers will use is imported here, in the
    supervisor, before the worker mode is decided: were a future wheel of the
    library to turn the GIL back on, the decision would see it, rather than
    thread workers finding out after the fact.
    """
    support = describe_support(choice)
    if support.library is None:
        if choice in (WebSocketLibrary.AUTO, WebSocketLibrary.NONE):
            return support
        package = "wsproto" if choice is WebSocketLibrary.WSPROTO else "websockets"
        raise ConfigError(
            f"--ws {choice.value} needs the {package} package; pip install {package} "
            "or pass --ws auto"
        )
    module = _UVICORN_MODULES[(choice, support.library)]
    importlib.import_module(f"uvicorn.protocols.websockets.{module}")
    return support


# --- The going-away close ------------------------------------------------------


def _on_going_away(protocol: Any) -> None:
    """Tell the worker (through uvicorn's per-worker ``config``) that one more closed."""
    hook: Callable[[], None] | None = getattr(protocol.config, "on_websocket_going_away", None)
    if hook is not None:
        hook()


def _close_sansio(protocol: Any) -> None:
    """uvicorn's websockets-sansio protocol: queue the disconnect, send 1001, close."""
    protocol.stop_keepalive()
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
    protocol.conn.send_close(GOING_AWAY, GOING_AWAY_REASON)
    protocol.close_sent = True
    protocol.transport.write(b"".join(protocol.conn.data_to_send()))
    protocol.transport.close()


def _close_wsproto(protocol: Any) -> None:
    """uvicorn's wsproto protocol: the same steps through wsproto's events."""
    from wsproto.events import CloseConnection  # noqa: PLC0415 (optional; loaded if in use)

    protocol.stop_keepalive()
    protocol.queue.put_nowait({"type": "websocket.disconnect", "code": GOING_AWAY})
    data = protocol.conn.send(CloseConnection(code=GOING_AWAY, reason=GOING_AWAY_REASON))
    protocol.close_sent = True
    protocol.transport.write(data)
    protocol.transport.close()


def _close_legacy(protocol: Any) -> None:
    """uvicorn's protocol on websockets' legacy API: fail_connection sends the frame."""
    protocol.ws_server.closing = True
    protocol.fail_connection(GOING_AWAY, GOING_AWAY_REASON)
    protocol.transport.close()


def _sansio_is_open(protocol: Any) -> bool:
    """sansio and wsproto: handshake done and no close frame sent yet."""
    return bool(protocol.handshake_complete and not protocol.close_sent)


def _legacy_is_open(protocol: Any) -> bool:
    # websockets' State enum is compared by name to keep websockets out of
    # corral's own import.
    state = getattr(protocol.state, "name", "")
    return bool(protocol.handshake_completed_event.is_set() and state == "OPEN")


_Family = tuple[Callable[[Any], bool], Callable[[Any], None]]


def _family(base: type[asyncio.Protocol]) -> _Family:
    """How to tell an open WebSocket, and how to close it, for uvicorn's class ``base``."""
    if base.__module__.endswith("wsproto_impl"):
        return _sansio_is_open, _close_wsproto
    if base.__module__.endswith("websockets_sansio_impl"):
        return _sansio_is_open, _close_sansio
    return _legacy_is_open, _close_legacy


_subclasses: dict[type[asyncio.Protocol], type[asyncio.Protocol]] = {}
_subclasses_lock = threading.Lock()


def with_going_away(base: type[asyncio.Protocol]) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's WebSocket protocol ``base`` whose drain sends 1001."""
    with _subclasses_lock:
        made = _subclasses.get(base)
        if made is None:
            made = _subclasses[base] = _going_away(base, *_family(base))
        return made


def _going_away(
    base: type[asyncio.Protocol], is_open: Callable[[Any], bool], close: Callable[[Any], None]
) -> type[asyncio.Protocol]:

    class GoingAway(base):  # type: ignore[valid-type, misc]
        def shutdown(self) -> None:
            if not is_open(self):  # still in its handshake, or closing: uvicorn's way
                super().shutdown()
                return
            close(self)
            _on_going_away(self)

    GoingAway.__name__ = f"GoingAway{base.__name__}"
    GoingAway.__qualname__ = GoingAway.__name__
    return cast(type[asyncio.Protocol], GoingAway)


# --- Counting open WebSockets -----------------------------------------------------


def _app_send_name(base: type[asyncio.Protocol]) -> str:
    """The method uvicorn's class in ``base``'s ancestry hands the app as ``send``: the
    legacy protocol's own ``send`` is websockets' data frame sender."""
    for klass in base.__mro__:
        if klass.__module__.startswith("uvicorn.protocols.websockets."):
            return "asgi_send" if klass.__module__.endswith(".websockets_impl") else "send"
    raise TypeError(f"{base.__qualname__} is not one of uvicorn's WebSocket protocol classes")


def with_websocket_metrics(
    base: type[asyncio.Protocol], cells: memoryview[float]
) -> type[asyncio.Protocol]:
    """A subclass of uvicorn's WebSocket protocol ``base`` (or of a subclass of it) that
    counts, into ``cells`` (a worker's block), each WebSocket the app accepts and
    each of those whose app call has returned. Made per worker, never cached."""
    send_name = _app_send_name(base)
    base_send: Callable[[Any, Any], Coroutine[Any, Any, None]] = getattr(base, send_name)

    class CountedWebSocket(base):  # type: ignore[valid-type, misc]
        _corral_accepted = False

        def _counting_send(self, message: Any) -> Coroutine[Any, Any, None]:
            # A plain method returning uvicorn's coroutine: no extra frame per message.
            if not self._corral_accepted and message["type"] == "websocket.accept":
                self._corral_accepted = True
                cells[WS_OPENED_INDEX] += 1.0
            return base_send(self, message)

        async def run_asgi(self) -> None:
            try:
                await super().run_asgi()
            finally:
                if self._corral_accepted:
                    with contextlib.suppress(ValueError):  # the recorder closed under an orphan
                        cells[WS_ENDED_INDEX] += 1.0

    setattr(CountedWebSocket, send_name, CountedWebSocket._counting_send)
    CountedWebSocket.__name__ = f"Counted{base.__name__}"
    CountedWebSocket.__qualname__ = CountedWebSocket.__name__
    return cast(type[asyncio.Protocol], CountedWebSocket)


__all__ = [
    "GOING_AWAY",
    "WebSocketLibrary",
    "WebSocketSupport",
    "describe_support",
    "require_support",
    "with_going_away",
    "with_websocket_metrics",
]
