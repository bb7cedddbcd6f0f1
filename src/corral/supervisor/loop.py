"""The supervision loop's inputs: the mailbox, commands, and operator signals.

The loop is one thread sleeping in one ``selector.select()``. Everything that
can need its attention arrives as a readable file descriptor:

* the mailbox's socket pair, written when another thread posts an item
  (a thread worker's message, a command from the API or the side port);
* the signal wake-up socket (``signal.set_wakeup_fd``): the Python-level
  handlers do nothing, the loop reads the signal numbers from the socket;
* process workers' sentinels and event pipes (registered by the spawner).

So there is no sleep-and-poll loop anywhere.
"""

from __future__ import annotations

import contextlib
import enum
import selectors
import signal
import socket
import threading
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

# What a selector key's data is: called with the ready file object.
Ready = Callable[[object], None]


class Command(enum.Enum):
    SHUTDOWN = "shutdown"
    FORCE = "force"
    RESTART = "restart"
    SCALE_UP = "scale_up"
    SCALE_DOWN = "scale_down"


@dataclass(frozen=True, slots=True)
class Ping:
    """A liveness probe: the loop sets ``answered`` when it takes this from the mailbox."""

    answered: threading.Event


class Mailbox:
    """A thread-safe inbox whose arrivals wake the supervisor's selector.

    The lock is re-entrant and ``take`` pops one item at a time, so a signal
    handler that posts while the main thread is inside ``take`` neither
    deadlocks nor loses its item.

    The wake-up byte is written under the lock too, and ``close`` takes it:
    a worker thread that outlives the supervisor's loop (an abandoned one, or
    one exiting as ``run`` returns) must never write to the closed socket's
    file descriptor, which by then may belong to something else. Posts after
    ``close`` are dropped: nobody is left to read them.
    """

    def __init__(self) -> None:
        self._lock = threading.RLock()
        self._items: deque[object] = deque()
        self._closed = False
        self.reader, self._writer = socket.socketpair()
        self.reader.setblocking(False)
        self._writer.setblocking(False)

    def post(self, item: object) -> None:
        with self._lock:
            if self._closed:
                return
            self._items.append(item)
            with contextlib.suppress(BlockingIOError, OSError):
                self._writer.send(b"\0")  # a full buffer already guarantees a wake-up

    def take(self) -> list[object]:
        with contextlib.suppress(BlockingIOError, OSError):
            while self.reader.recv(4096):
                pass
        items: list[object] = []
        with self._lock:
            while self._items:
                items.append(self._items.popleft())
        return items

    def close(self) -> None:
        with self._lock:
            self._closed = True
            self.reader.close()
            self._writer.close()


_SIGNAL_COMMANDS: dict[signal.Signals, Command] = {
    signal.SIGTERM: Command.SHUTDOWN,
    signal.SIGQUIT: Command.FORCE,
    signal.SIGHUP: Command.RESTART,
    signal.SIGTTIN: Command.SCALE_UP,
    signal.SIGTTOU: Command.SCALE_DOWN,
}


class SignalCommands:
    """Operator signals as commands, the way gunicorn and uvicorn users expect.

    SIGTERM drains, SIGQUIT forces, SIGHUP rolls, SIGTTIN/SIGTTOU scale; the
    first SIGINT drains and a second one forces.
    """

    def __init__(self) -> None:
        self._sigints = 0

    def command_for(self, signum: int) -> Command:
        if signum == signal.SIGINT:
            self._sigints += 1
            return Command.SHUTDOWN if self._sigints == 1 else Command.FORCE
        return _SIGNAL_COMMANDS[signal.Signals(signum)]


def install_signal_wakeup(
    selector: selectors.BaseSelector, on_signal: Callable[[int], None]
) -> Callable[[], None]:
    """Route operator signals into ``selector``; returns the undo. A no-op off the main thread."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None
    reader, writer = socket.socketpair()
    reader.setblocking(False)
    writer.setblocking(False)
    previous_fd = signal.set_wakeup_fd(writer.fileno(), warn_on_full_buffer=False)
    handled = _SIGNAL_COMMANDS.keys() | {signal.SIGINT}
    previous = {signum: signal.signal(signum, _ignore_in_python) for signum in handled}

    def on_bytes(_: object) -> None:
        with contextlib.suppress(BlockingIOError):
            for signum in reader.recv(256):
                on_signal(signum)

    selector.register(reader, selectors.EVENT_READ, on_bytes)

    def restore() -> None:
        for signum, handler in previous.items():
            signal.signal(signum, handler)
        signal.set_wakeup_fd(previous_fd)
        with contextlib.suppress(KeyError, ValueError):
            selector.unregister(reader)
        reader.close()
        writer.close()

    return restore


def _ignore_in_python(signum: int, frame: object) -> None:
    """The real handling happens in the loop, from the byte the wake-up fd received."""
