"""Listening sockets corral is handed rather than binds: ``--fd N`` and systemd socket
activation (``LISTEN_FDS``/``LISTEN_PID``, descriptors from 3).

corral adopts such a socket as its one shared listener and owns it for the
rest of its life, exactly like one it bound: workers accept from it, the
supervisor's copy outlives any worker, and it is closed at shutdown. One
difference: a Unix socket's path belongs to whoever created the socket
(systemd re-uses it for the next start), so corral never unlinks it.
"""

from __future__ import annotations

import os
import socket
import stat
import weakref
from collections.abc import MutableMapping

from corral.errors import BindError

SD_LISTEN_FDS_START = 3
_SYSTEMD_VARIABLES = ("LISTEN_PID", "LISTEN_FDS", "LISTEN_FDNAMES")
_FAMILIES = (socket.AF_INET, socket.AF_INET6, socket.AF_UNIX)

# Sockets adopted rather than bound (see ``is_inherited``). A WeakSet, not a
# socket subclass: multiprocessing pickles sockets by their exact type.
_inherited: weakref.WeakSet[socket.socket] = weakref.WeakSet()


def is_inherited(sock: socket.socket) -> bool:
    """True for a socket corral was handed: close it, but leave its path alone."""
    return sock in _inherited


def adopt_fd(fd: int, backlog: int, origin: str) -> socket.socket:
    """The listening stream socket open as ``fd``; ``origin`` names it in errors."""
    try:
        mode = os.fstat(fd).st_mode
    except OSError:
        raise BindError(
            f"{origin} {fd} is not an open file descriptor; pass the fd of a listening socket"
        ) from None
    if not stat.S_ISSOCK(mode):
        raise BindError(f"{origin} {fd} is not a socket; pass the fd of a listening socket")
    sock = socket.socket(fileno=fd)
    problem = _unusable(sock)
    if problem:
        sock.detach()  # the descriptor is not ours to close
        raise BindError(f"{origin} {fd} is {problem}; pass a listening TCP or Unix socket")
    if not sock.getsockopt(socket.SOL_SOCKET, socket.SO_ACCEPTCONN):
        sock.listen(backlog)  # bound but not listening yet: corral makes it listen
    sock.set_inheritable(False)
    _inherited.add(sock)
    return sock


def _unusable(sock: socket.socket) -> str | None:
    if sock.type != socket.SOCK_STREAM:
        return "not a stream socket"
    if sock.family not in _FAMILIES:
        return f"a socket of family {sock.family.name}"
    address = sock.getsockname()
    unbound = address in ("", b"") if sock.family == socket.AF_UNIX else address[1] == 0
    return "not bound to an address" if unbound else None


def systemd_fds(environ: MutableMapping[str, str]) -> list[int]:
    """The descriptors systemd passed *this* process, per sd_listen_fds(3).

    ``LISTEN_PID`` must name this process (a child that inherited the
    variables is not the one they were meant for). The variables are removed
    once read, as ``sd_listen_fds(1)`` does, so no worker mistakes them for its own.
    """
    pid_text = environ.get("LISTEN_PID")
    if pid_text is None:
        return []
    count_text = environ.get("LISTEN_FDS", "")
    if not pid_text.strip().isdigit():
        raise BindError(f"LISTEN_PID={pid_text!r} is not a process id; fix the socket unit")
    if int(pid_text) != os.getpid():
        return []
    if not count_text.strip().isdigit() or int(count_text) < 1:
        raise BindError(
            f"LISTEN_FDS={count_text!r} is not a positive count of sockets; fix the socket unit"
        )
    for name in _SYSTEMD_VARIABLES:
        environ.pop(name, None)
    return list(range(SD_LISTEN_FDS_START, SD_LISTEN_FDS_START + int(count_text)))


def adopt_systemd_sockets(environ: MutableMapping[str, str], backlog: int) -> list[socket.socket]:
    """Every socket systemd passed, adopted; none when not socket-activated."""
    adopted: list[socket.socket] = []
    try:
        for fd in systemd_fds(environ):
            adopted.append(adopt_fd(fd, backlog, "LISTEN_FDS: descriptor"))
    except BindError:
        for sock in adopted:
            sock.close()
        raise
    return adopted
