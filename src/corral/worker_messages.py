"""What a worker and its supervisor tell each other, in either worker mode.

``WorkerSpec`` is what a worker is told when it starts (pickled through the
forkserver in process mode); the messages are what it reports back (over a
pipe in process mode, through the mailbox in thread mode); ``ControlCommand``
is what a process worker is told over its control pipe. Both sides import
this module, and it imports nothing of either side's machinery.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from corral.config import ServerConfig
from corral.liveness import Heartbeat
from corral.runtime import WorkerMode


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    """Everything a worker needs to know about itself; picklable for process mode."""

    slot: int
    generation: int
    mode: WorkerMode
    config: ServerConfig
    app_path: str | None
    # The shared-memory block this incarnation counts its requests in, if any.
    stats_path: str | None = None
    # Where its event loop stamps its sign of life; None when --worker-timeout is 0.
    heartbeat: Heartbeat | None = None
    # This incarnation's --max-requests plus its jitter: ask for a replacement
    # after serving this many requests; 0 means never.
    request_limit: int = 0
    # A warm spare (``--spares``): it runs lifespan startup, reports ``Ready``,
    # and does not accept connections until it is promoted into a slot. Until
    # then ``slot`` is ``SPARE_SLOT`` and ``generation`` the spare's number.
    spare: bool = False


# The slot a spare's spec names until it is promoted into a real one.
SPARE_SLOT = -1


# --- Messages from a worker to its supervisor ---------------------------------


@dataclass(frozen=True, slots=True)
class Ready:
    slot: int
    generation: int
    pid: int
    thread_id: int


@dataclass(frozen=True, slots=True)
class BootFailed:
    """The worker could not start the app; ``message`` is the one-line cause."""

    slot: int
    generation: int
    message: str


@dataclass(frozen=True, slots=True)
class Raised:
    """The worker's loop raised after start-up; ``message`` is the exception, one line."""

    slot: int
    generation: int
    message: str


@dataclass(frozen=True, slots=True)
class Recycle:
    """The worker served its ``--max-requests``: please replace me (rolling)."""

    slot: int
    generation: int
    requests: int


WorkerMessage = Ready | BootFailed | Raised | Recycle
Report = Callable[[WorkerMessage], None]


class ControlCommand(enum.Enum):
    """What the supervisor can tell a process worker over its control pipe."""

    DRAIN = "drain"
    FORCE = "force"


@dataclass(frozen=True, slots=True)
class Promote:
    """To a spare: take ``slot`` as its ``generation`` and start accepting connections."""

    slot: int
    generation: int
