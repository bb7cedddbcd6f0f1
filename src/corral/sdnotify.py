"""The systemd notification protocol (sd_notify), in the standard library.

Under ``Type=notify`` systemd passes ``NOTIFY_SOCKET``, a Unix datagram socket
(a path, or an abstract name starting with ``@``), and waits for ``READY=1``
before it considers the service started. With ``WatchdogSec=`` it also passes
``WATCHDOG_USEC`` and restarts the service if ``WATCHDOG=1`` does not arrive
within that time; ``WATCHDOG_PID``, when set, names the process that must send
it. The protocol is one datagram of ``KEY=VALUE`` lines per message, which is
small enough that linking libsystemd for it would be a poor trade.

A send that fails is logged once and otherwise ignored: losing systemd's
attention must never stop corral from serving.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

import structlog

log = structlog.get_logger("corral.sdnotify")


class SystemdNotifier:
    """Sends sd_notify messages to ``NOTIFY_SOCKET``; build one with ``from_environ``."""

    def __init__(self, address: str, watchdog_interval: float | None) -> None:
        # An abstract socket's name starts with a NUL byte where systemd writes "@".
        self._address = "\0" + address[1:] if address.startswith("@") else address
        # Pet the watchdog at half its timeout, as sd_watchdog_enabled(3) advises.
        self.watchdog_interval = watchdog_interval
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC)
        self._failed = False

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> SystemdNotifier | None:
        """A notifier when systemd asked for notifications, else ``None``."""
        address = environ.get("NOTIFY_SOCKET", "")
        if not address or address[0] not in "/@":
            return None
        return cls(address, _watchdog_interval(environ))

    def notify(self, *lines: str) -> None:
        message = "\n".join(lines).encode()
        try:
            self._socket.sendto(message, self._address)
        except OSError as exc:
            if not self._failed:
                self._failed = True
                log.warning("systemd notification failed", error=str(exc))

    def close(self) -> None:
        self._socket.close()


def _watchdog_interval(environ: Mapping[str, str]) -> float | None:
    usec = environ.get("WATCHDOG_USEC", "")
    pid = environ.get("WATCHDOG_PID", "")
    if not usec.isdigit() or int(usec) == 0:
        return None
    if pid and pid != str(os.getpid()):
        return None  # the watchdog is some other process's job
    return int(usec) / 2_000_000
