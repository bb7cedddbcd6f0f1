"""Telling systemd how corral is doing (``Type=notify``, ``WatchdogSec=``).

READY=1 goes out once, when every desired slot is ready for the first time;
STATUS= follows each change; STOPPING=1 at the drain. The watchdog is petted
from the supervision loop's own deadline, so a supervisor stuck anywhere stops
petting and systemd restarts it.
"""

from __future__ import annotations

from corral.sdnotify import SystemdNotifier


class SystemdLink:
    def __init__(self, notifier: SystemdNotifier | None) -> None:
        self._notifier = notifier
        self._told_ready = False
        self.watchdog_at: float | None = None  # the loop's deadline for the next WATCHDOG=1

    def start(self, now: float) -> None:
        if self._notifier is not None and self._notifier.watchdog_interval is not None:
            self.watchdog_at = now

    def ready_changed(self, ready: int, desired: int) -> None:
        if self._notifier is None:
            return
        status = f"STATUS={ready}/{desired} workers ready"
        if not self._told_ready and ready >= desired:
            self._told_ready = True
            self._notifier.notify("READY=1", status)
        elif self._told_ready:
            self._notifier.notify(status)

    def stopping(self) -> None:
        if self._notifier is not None:
            self._notifier.notify("STOPPING=1", "STATUS=draining")

    def pet(self, now: float) -> None:
        notifier = self._notifier
        if notifier is None or notifier.watchdog_interval is None:
            return
        notifier.notify("WATCHDOG=1")
        self.watchdog_at = now + notifier.watchdog_interval
