"""An app that answers with what it was given: the ASGI scope's addressing, its event
loop, its process and an environment variable. ``create_app`` is the same app behind
a ``--factory``; ``broken_factory`` fails the way a user's factory can."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any
from urllib.parse import parse_qs

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[MutableMapping[str, Any]]]
Send = Callable[[MutableMapping[str, Any]], Awaitable[None]]

FACTORY_CALLS: list[int] = []


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    await _answer(scope, receive, send, built_by_factory=False)


async def _answer(scope: Scope, receive: Receive, send: Send, *, built_by_factory: bool) -> None:
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            reply = message["type"] + ".complete"
            await send({"type": reply})
            if message["type"] == "lifespan.shutdown":
                return
    if scope["type"] != "http":
        return
    query = parse_qs(scope.get("query_string", b"").decode())
    if scope["path"].endswith("/slow"):
        await asyncio.sleep(float(query.get("seconds", ["1"])[0]))
    loop = asyncio.get_running_loop()
    payload = {
        "path": scope["path"],
        "root_path": scope.get("root_path", ""),
        "client": list(scope["client"]) if scope.get("client") else None,
        "scheme": scope["scheme"],
        "loop": type(loop).__module__,
        "pid": os.getpid(),
        "greeting": os.environ.get("APP_GREETING"),
        "built_by_factory": built_by_factory,
        "factory_calls_here": FACTORY_CALLS.count(os.getpid()),
    }
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def create_app() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    FACTORY_CALLS.append(os.getpid())

    async def built(scope: Scope, receive: Receive, send: Send) -> None:
        await _answer(scope, receive, send, built_by_factory=True)

    return built


def broken_factory() -> Callable[[Scope, Receive, Send], Awaitable[None]]:
    raise RuntimeError("no database configured")
