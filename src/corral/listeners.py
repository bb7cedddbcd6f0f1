"""The listening sockets, created by the supervisor before any worker and owned for its life.

All workers accept from *one* shared listening socket (no ``SO_REUSEPORT``).
That gives two guarantees the supervisor relies on: connections waiting in
the backlog survive a worker's death, because the supervisor still holds the
socket; and when a slot is given up on, nothing is stranded in a per-worker
backlog, because there is none: the surviving workers drain the same queue.
"""

from __future__ import annotations

import contextlib
import errno
import os
import socket
import ssl
import stat
from collections.abc import MutableMapping

from corral.config import ServerConfig
from corral.errors import BindError, ConfigError
from corral.inherited import adopt_fd, adopt_systemd_sockets, is_inherited


def create_listeners(
    config: ServerConfig, environ: MutableMapping[str, str] | None = None
) -> list[socket.socket]:
    """Adopt the sockets systemd passed, or ``--fd``, or bind according to ``config``;
    raises ``BindError`` naming the fix."""
    activated = adopt_systemd_sockets(os.environ if environ is None else environ, config.backlog)
    if activated and config.fd is not None:
        close_listeners(activated)
        raise ConfigError("--fd and systemd socket activation (LISTEN_FDS) both; use one")
    if activated:
        return activated
    if config.fd is not None:
        return [adopt_fd(config.fd, config.backlog, "--fd")]
    if config.uds:
        return [_bind_unix(config.uds, config.backlog)]
    return [_bind_tcp(config.host, config.port, config.backlog)]


def _bind_tcp(host: str, port: int, backlog: int) -> socket.socket:
    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    except socket.gaierror as exc:
        raise BindError(f"cannot resolve --host {host!r} ({exc.strerror}); use an IP") from None
    family, _, _, _, address = infos[0]
    try:
        return socket.create_server(address, family=family, backlog=backlog)
    except OSError as exc:
        raise BindError(_bind_message(f"{host}:{port}", exc)) from None


def _bind_unix(path: str, backlog: int) -> socket.socket:
    _remove_stale_unix_socket(path)
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.bind(path)
        sock.listen(backlog)
    except OSError as exc:
        sock.close()
        raise BindError(_bind_message(path, exc)) from None
    return sock


def _remove_stale_unix_socket(path: str) -> None:
    """Unlink a socket file left by a dead server; refuse if a live one answers on it."""
    try:
        if not stat.S_ISSOCK(os.stat(path).st_mode):
            raise BindError(f"{path} exists and is not a socket; remove it or pick another --uds")
    except FileNotFoundError:
        return
    probe = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        probe.connect(path)
    except OSError:
        os.unlink(path)  # nobody is listening: stale
        return
    finally:
        probe.close()
    raise BindError(f"{path} is already in use by a running server; stop it or pick another --uds")


def _bind_message(where: str, exc: OSError) -> str:
    if exc.errno == errno.EADDRINUSE:
        return f"{where} is already in use; stop the other server or choose another --port"
    if exc.errno == errno.EACCES:
        return f"permission denied binding {where}; use a port above 1023 or grant the capability"
    if exc.errno == errno.EADDRNOTAVAIL:
        return f"{where} is not an address of this machine; fix --host"
    return f"cannot listen on {where}: {exc.strerror}"


def describe(sock: socket.socket, *, tls: bool = False) -> str:
    """A URL-ish name for a listener, with the real port when ``--port 0`` was used."""
    if sock.family == socket.AF_UNIX:
        return f"unix:{sock.getsockname()}"
    host, port = sock.getsockname()[:2]
    scheme = "https" if tls else "http"
    shown = f"[{host}]" if ":" in host else host
    return f"{scheme}://{shown}:{port}"


def share_with_workers(sockets: list[socket.socket]) -> None:
    """Put the listening sockets in non-blocking mode before any worker serves on them.

    Every worker's event loop watches the same listening socket, and on each
    new connection all of them may wake and call ``accept()``; the losers rely
    on it failing with ``EAGAIN``. Blocking mode is a flag of the socket's open
    file description, which every ``dup()`` and every process worker shares, so
    one blocking copy anywhere puts a losing worker's loop to sleep *inside*
    ``accept()`` until some later connection arrives: meanwhile it serves
    nothing, never hears it should drain, and misses its liveness ticks.
    """
    for sock in sockets:
        sock.setblocking(False)


def worker_copy(sock: socket.socket) -> socket.socket:
    """A second descriptor for the listening ``sock``, for a thread worker to own and close.

    Not ``sock.dup()``: that copies the Python object's timeout onto the copy,
    and for a socket made in blocking mode (Python's default) it clears
    ``O_NONBLOCK`` on the shared description, under every worker already
    serving (see ``share_with_workers``). A thread worker whose app failed its
    startup never reached uvicorn's ``create_server``, which would have set the
    flag back, so the listener stayed blocking until the next worker started.
    """
    copy = socket.socket(sock.family, sock.type, sock.proto, fileno=os.dup(sock.fileno()))
    copy.setblocking(False)
    return copy


def close_listeners(sockets: list[socket.socket]) -> None:
    """Close the supervisor's copies; unlink Unix socket files it created."""
    for sock in sockets:
        if sock.fileno() == -1:
            continue  # already closed: closing is idempotent for callers
        owned = sock.family == socket.AF_UNIX and not is_inherited(sock)
        path = sock.getsockname() if owned else None
        sock.close()
        if isinstance(path, str) and path:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)


def load_tls(config: ServerConfig) -> ssl.SSLContext | None:
    """Load every TLS setting once, up front, so a bad path, a wrong key password or a
    cipher list OpenSSL rejects fails at start-up with a clear error rather than in
    every worker. Workers build their own context from the same settings (uvicorn's
    ``create_ssl_context``): an ``SSLContext`` cannot cross into a worker process."""
    if config.ssl_certfile is None or config.ssl_keyfile is None:
        return None
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    password = config.ssl_keyfile_password
    try:
        context.load_cert_chain(config.ssl_certfile, config.ssl_keyfile, password or None)
    except (OSError, ssl.SSLError) as exc:
        raise ConfigError(
            f"cannot load TLS certificate {config.ssl_certfile!r} with key "
            f"{config.ssl_keyfile!r} ({_reason(exc)}); check --ssl-certfile, --ssl-keyfile"
            " and --ssl-keyfile-password"
        ) from None
    context.verify_mode = config.ssl_cert_reqs.verify_mode
    _load_tls_extras(context, config)
    return context


def _load_tls_extras(context: ssl.SSLContext, config: ServerConfig) -> None:
    if config.ssl_ca_certs is not None:
        try:
            context.load_verify_locations(config.ssl_ca_certs)
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load CA certificates {config.ssl_ca_certs!r} ({_reason(exc)});"
                " fix --ssl-ca-certs"
            ) from None
    if config.ssl_ciphers is not None:
        try:
            context.set_ciphers(config.ssl_ciphers)
        except ssl.SSLError:
            raise ConfigError(
                f"OpenSSL accepts none of the ciphers {config.ssl_ciphers!r}; fix --ssl-ciphers"
            ) from None


def _reason(exc: OSError | ssl.SSLError) -> str:
    return exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
