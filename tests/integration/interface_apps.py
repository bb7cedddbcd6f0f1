"""One tiny app per interface corral detects: ASGI 2 and a bare WSGI function."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Iterable
from typing import Any

Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


def asgi2(scope: dict[str, Any]) -> Callable[[Receive, Send], Awaitable[None]]:
    """ASGI 2: called with the scope, returns the coroutine function that serves it."""

    async def instance(receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"asgi2 " + scope["path"].encode()})

    return instance


def wsgi(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    body = environ["wsgi.input"].read()
    start_response("200 OK", [("content-type", "text/plain")])
    return [b"wsgi ", environ["REQUEST_METHOD"].encode(), b" ", body]
