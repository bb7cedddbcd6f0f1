"""Preloaded into multiprocessing's forkserver, and imported nowhere else.

The forkserver is the parent of every process worker and sits in corral's
process group, so group-wide signals reach it: systemd's default
``KillMode=control-group``, ``timeout(1)``, ``make`` passing on a SIGTERM,
Ctrl-\\ on a terminal. Had it died of one, every worker's sentinel would read
EOF at once and multiprocessing would report each of them as exited with 255
while they were in fact still serving: a storm of false crashes and
respawns. So the forkserver ignores the signals the supervisor handles; it
still exits by itself when the supervisor does (its pipe to it closes).

Workers inherit these dispositions; ``worker.process_main`` sets the ones it
wants (SIGTERM means drain).

It also does, once, the imports every worker would otherwise repeat: uvicorn,
and what ``uvicorn.Config.load`` pulls in lazily (the httptools and h11
protocols, the WebSocket protocol, hashlib...). That took ~38 ms of each
respawn's ~50 ms from spawn to ready when it was left to the worker.
"""

from __future__ import annotations

import signal

import uvicorn

import corral.worker  # noqa: F401 - the point of the preload: uvicorn ready in every fork


async def _no_app(scope: object, receive: object, send: object) -> None:
    """Never called: only ``Config.load``'s imports are wanted."""


uvicorn.Config(_no_app, log_config=None, lifespan="off").load()

for _signum in (signal.SIGTERM, signal.SIGQUIT, signal.SIGHUP, signal.SIGTTIN, signal.SIGTTOU):
    signal.signal(_signum, signal.SIG_IGN)
