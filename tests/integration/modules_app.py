"""An app that reports what its worker process has imported, for the worker-imports tests.

``GET /`` answers ``{"pid", "generation", "main", "present"}``: ``main`` is the
file of the worker's ``__main__`` (``None`` for the forkserver's own; a path
if the parent's script was re-run in there), ``present`` which of the
supervisor-only modules are in its ``sys.modules``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from corral.worker import current_worker

# Imported by the supervisor only: a worker that has them paid for them for nothing.
SUPERVISOR_ONLY = (
    "corral.cli",
    "corral.supervisor",
    "corral.observability",
    "opentelemetry.sdk",
    "prometheus_client",
    "yaml",
    "psutil",
)


async def app(
    scope: MutableMapping[str, Any],
    receive: Callable[[], Awaitable[MutableMapping[str, Any]]],
    send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
) -> None:
    if scope["type"] != "http":
        return
    worker = current_worker()
    body = {
        "pid": os.getpid(),
        "generation": worker.generation if worker else None,
        "main": getattr(sys.modules.get("__main__"), "__file__", None),
        "present": [name for name in SUPERVISOR_ONLY if name in sys.modules],
    }
    headers = [(b"content-type", b"application/json")]
    await send({"type": "http.response.start", "status": 200, "headers": headers})
    await send({"type": "http.response.body", "body": json.dumps(body).encode()})
