"""A sink that forwards each event to live subscribers (the side port's SSE streams).

Subscribers are called from the emitting thread with the collector's lock
held, so a callback must only hand the event over (``call_soon_threadsafe``)
and return. A callback that raises is dropped, so a dead stream cannot make
every later event fail.
"""

from __future__ import annotations

import itertools
import logging
import threading
from collections.abc import Callable
from typing import Any

from corral.lifecycle.events import LifecycleEvent

EventCallback = Callable[[dict[str, Any]], None]

_log = logging.getLogger("corral.lifecycle")


class EventFeed:
    name = "feed"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._ids = itertools.count(1)
        self._subscribers: dict[int, EventCallback] = {}

    def subscribe(self, callback: EventCallback) -> Callable[[], None]:
        """Start calling ``callback`` for each new event; returns the unsubscribe function."""
        with self._lock:
            key = next(self._ids)
            self._subscribers[key] = callback

        def unsubscribe() -> None:
            with self._lock:
                self._subscribers.pop(key, None)

        return unsubscribe

    @property
    def subscribers(self) -> int:
        with self._lock:
            return len(self._subscribers)

    def handle(self, event: LifecycleEvent) -> None:
        with self._lock:
            subscribers = list(self._subscribers.items())
        if not subscribers:
            return
        record = event.as_dict()
        for key, callback in subscribers:
            try:
                callback(record)
            except Exception:
                _log.warning("dropping an event subscriber that failed", exc_info=True)
                with self._lock:
                    self._subscribers.pop(key, None)
