"""The enumerated choices of corral's settings: each is one field of ``ServerConfig``.

They live apart from ``config`` so that a module needing one choice (the
policy needs ``ExhaustedAction``, the logs ``LogFormat``) reads a short list
of values, and ``config`` stays the list of settings. ``config`` re-exports
them all.
"""

from __future__ import annotations

import enum
import ssl


class ExhaustedAction(enum.Enum):
    """What happens when a worker slot runs out of restarts."""

    DEGRADE = "degrade"
    EXIT = "exit"


class HungThreadAction(enum.Enum):
    """What happens when a thread worker's event loop is hung: a thread cannot be killed."""

    EXIT = "exit"  # drain the healthy workers and exit, for the orchestrator to restart us
    IGNORE = "ignore"  # keep serving on the others; the slot comes back if the loop recovers


class LogFormat(enum.Enum):
    AUTO = "auto"  # console on a terminal, JSON otherwise (structlog's recommendation)
    JSON = "json"
    CONSOLE = "console"


class Lifespan(enum.Enum):
    AUTO = "auto"
    ON = "on"
    OFF = "off"


class HttpImpl(enum.Enum):
    """uvicorn's HTTP/1.1 implementation; corral's drain subclass wraps either."""

    AUTO = "auto"  # httptools when it imports, else h11
    H11 = "h11"
    HTTPTOOLS = "httptools"


class LoopImpl(enum.Enum):
    AUTO = "auto"  # uvloop when it imports, else asyncio
    ASYNCIO = "asyncio"
    UVLOOP = "uvloop"


class CertRequirement(enum.Enum):
    """Whether the app port asks TLS clients for a certificate (``ssl.VerifyMode``)."""

    NONE = "none"
    OPTIONAL = "optional"
    REQUIRED = "required"

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        return {
            "none": ssl.CERT_NONE,
            "optional": ssl.CERT_OPTIONAL,
            "required": ssl.CERT_REQUIRED,
        }[self.value]


class Interface(enum.Enum):
    """``--interface``: uvicorn's names for the app's calling convention."""

    AUTO = "auto"
    ASGI3 = "asgi3"
    ASGI2 = "asgi2"
    WSGI = "wsgi"


class WebSocketLibrary(enum.Enum):
    """``--ws``: uvicorn's names for its WebSocket implementations."""

    AUTO = "auto"
    NONE = "none"
    WEBSOCKETS = "websockets"  # uvicorn's implementation on websockets' legacy API
    WEBSOCKETS_SANSIO = "websockets-sansio"  # on websockets' sans-I/O core (auto's pick)
    WSPROTO = "wsproto"
