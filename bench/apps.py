"""The ASGI app every throughput bench serves: a hello world and a CPU-bound endpoint.

* ``GET /`` (any path but ``/cpu``): a 14-byte plain-text hello world, the
  smallest useful request, so the server's own cost per request dominates.
* ``GET /cpu``: ``CPU_LOOPS`` iterations of pure-Python arithmetic (about a
  millisecond on CPython 3.11 here) before the same answer. It holds the GIL
  the whole time, so it shows whether more workers of a kind add throughput:
  processes always can, threads only on a free-threaded build.

No framework: a framework's routing would be a cost the bench does not study.
Lifespan is answered so every server can run it the same way.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

BODY = b"Hello, world!\n"
HEADERS = [(b"content-type", b"text/plain"), (b"content-length", str(len(BODY)).encode())]
CPU_LOOPS = 20_000
START = {"type": "http.response.start", "status": 200, "headers": HEADERS}
END = {"type": "http.response.body", "body": BODY}


def burn(loops: int = CPU_LOOPS) -> int:
    """Deterministic pure-Python work; the result is returned so nothing optimises it away."""
    total = 0
    for i in range(loops):
        total += i * i % 7
    return total


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    if scope["path"] == "/cpu":
        burn()
    # Fresh dicts: a server may add to or keep the messages it is sent.
    await send(dict(START))
    await send(dict(END))
