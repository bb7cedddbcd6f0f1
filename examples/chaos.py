"""An app that misbehaves on request, for demos and for corral's own tests.

Endpoints:

* ``/``                   who served this: ``{"pid", "thread_id", "slot", "generation"}``
* ``/slow?seconds=S``     answers after S seconds (non-blocking sleep)
* ``/crash``              makes this worker's event loop fail: a crash in both modes.
                          With ``?slot=N``, only worker slot N crashes; others answer 409.
                          Before it fails, the worker prints one JSON line naming the
                          client ports of the requests it has in flight (``chaos_crash``),
                          so a test can tell which requests the crash took down
* ``/exit?code=N``        exits the worker process with code N (process mode;
                          in thread mode it falls back to ``/crash``)
* ``/hang?seconds=S``     blocks the worker's event loop for S seconds

Set ``CHAOS_FAIL_STARTUP=1`` to make lifespan startup fail in every worker.
Set ``CHAOS_FAIL_STARTUP_FILE=PATH`` to make it fail only while that file
exists (so a test can break the successors of workers already serving).
Set ``CHAOS_STARTUP_DELAY_FILE=PATH`` to make lifespan startup wait as many
seconds as that file holds, while it exists (so a test can slow down only
the workers started after it writes the file).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import sys
import threading
import time
from collections.abc import Awaitable, Callable, Iterator, MutableMapping
from typing import Any
from urllib.parse import parse_qs

from corral.worker import current_worker

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]


async def _lifespan(receive: Receive, send: Send) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await asyncio.sleep(_startup_delay())
            failure = _startup_failure()
            if failure is not None:
                await send({"type": "lifespan.startup.failed", "message": failure})
                return
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


def _startup_failure() -> str | None:
    if os.environ.get("CHAOS_FAIL_STARTUP") == "1":
        return "CHAOS_FAIL_STARTUP=1"
    path = os.environ.get("CHAOS_FAIL_STARTUP_FILE")
    if path and os.path.exists(path):
        return f"CHAOS_FAIL_STARTUP_FILE exists: {path}"
    return None


def _startup_delay() -> float:
    path = os.environ.get("CHAOS_STARTUP_DELAY_FILE")
    if not path:
        return 0.0
    try:
        with open(path) as delay:
            return float(delay.read().strip() or 0)
    except (OSError, ValueError):
        return 0.0


async def _respond(send: Send, status: int, payload: dict[str, Any]) -> None:
    body = json.dumps(payload).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


# slot -> client ports of the requests that slot is serving now. Only the
# slot's own thread adds or removes its entries, but every slot shares the dict.
_in_flight: dict[int | None, set[int]] = {}
_in_flight_lock = threading.Lock()


@contextlib.contextmanager
def _tracked(slot: int | None, scope: Scope) -> Iterator[None]:
    client = scope.get("client")
    port = int(client[1]) if client else None
    if port is None:
        yield
        return
    with _in_flight_lock:
        _in_flight.setdefault(slot, set()).add(port)
    try:
        yield
    finally:
        with _in_flight_lock:
            _in_flight.get(slot, set()).discard(port)


def _report_crash(slot: int | None, generation: int | None, scope: Scope) -> None:
    """One JSON line on stdout: which requests this crash is about to take down."""
    client = scope.get("client")
    own = int(client[1]) if client else None
    with _in_flight_lock:
        ports = sorted(p for p in _in_flight.get(slot, set()) if p != own)
    line = {
        "event": "chaos crash",
        "chaos_crash": True,
        "pid": os.getpid(),
        "monotonic": time.monotonic(),
        "slot": slot,
        "generation": generation,
        "in_flight_clients": ports,
    }
    sys.stdout.write(json.dumps(line) + "\n")
    sys.stdout.flush()


def _crash_loop() -> None:
    """Stop the running loop mid-request: ``asyncio.run`` then raises in the worker."""
    asyncio.get_running_loop().stop()


def _in_worker_thread() -> bool:
    return threading.current_thread() is not threading.main_thread()


def _number(query: dict[str, list[str]], key: str, default: float) -> float:
    return float(query.get(key, [default])[0])


async def app(scope: Scope, receive: Receive, send: Send) -> None:
    if scope["type"] == "lifespan":
        await _lifespan(receive, send)
        return
    if scope["type"] != "http":
        return
    path = scope["path"]
    query = parse_qs(scope.get("query_string", b"").decode())
    worker = current_worker()
    identity = {
        "pid": os.getpid(),
        "thread_id": threading.get_native_id(),
        "slot": worker.slot if worker else None,
        "generation": worker.generation if worker else None,
    }
    wanted = query.get("slot")
    if wanted and worker is not None and int(wanted[0]) != worker.slot:
        await _respond(send, 409, {"error": "not this slot", **identity})
        return
    with _tracked(identity["slot"], scope):
        await _serve(path, query, identity, scope, send)


async def _serve(
    path: str, query: dict[str, list[str]], identity: dict[str, Any], scope: Scope, send: Send
) -> None:
    if path == "/slow":
        await asyncio.sleep(_number(query, "seconds", 1.0))
    elif path == "/hang":
        time.sleep(_number(query, "seconds", 60.0))
    elif path == "/crash" or (path == "/exit" and _in_worker_thread()):
        _report_crash(identity["slot"], identity["generation"], scope)
        _crash_loop()
        await asyncio.sleep(3600)  # never answered: the loop is going away
    elif path == "/exit":
        os._exit(int(_number(query, "code", 1)))
    elif path != "/":
        await _respond(send, 404, {"error": "not found"})
        return
    await _respond(send, 200, identity)
