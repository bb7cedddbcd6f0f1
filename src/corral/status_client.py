"""``corral status``: the worker table from a running corral's side port.

It reads ``/workers`` and ``/readyz`` and exits 0 when ready, 1 when not
(or unreachable), so it doubles as a container health command. It speaks each
way the side port can be protected: a bearer token, basic auth, TLS, and a
client certificate for mutual TLS. A refused credential exits with its own
code (``ExitCode.STATUS_UNAUTHORIZED``), so a health check that is set up
wrong is told apart from a corral that is not ready. Secrets come from files
or the environment (a flag's value shows in ``ps``) and are never printed:
messages name the flag or the file, not what it holds. Colour is added with
click styles, which click strips when stdout is not a terminal.
"""

from __future__ import annotations

import base64
import json
import os
import re
import socket
import ssl
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from typing import Any

import click

from corral.errors import ExitCode
from corral.states import STATE_STYLES, SlotState, parse_state

DEFAULT_URL = "http://127.0.0.1:9180"
TIMEOUT_SECONDS = 5.0
# What a health check wants: anything but 0 is "unhealthy". Not ready and
# unreachable share it; a bad credential or TLS setting has its own code.
NOT_READY = 1
# The side port's own rule for a bearer token (service/auth.py): it must fit
# in a header as is.
_TOKEN = re.compile(r"[\x21-\x7e]+")
# OpenSSL's names for the alerts a server sends when it will not take the
# client's certificate (none, unknown issuer, or bad).
_CLIENT_CERT_ALERTS = frozenset(
    {
        "TLSV13_ALERT_CERTIFICATE_REQUIRED",
        "SSLV3_ALERT_BAD_CERTIFICATE",
        "SSLV3_ALERT_CERTIFICATE_UNKNOWN",
        "TLSV1_ALERT_UNKNOWN_CA",
        "TLSV1_ALERT_ACCESS_DENIED",
        "SSLV3_ALERT_HANDSHAKE_FAILURE",
    }
)


# How a refused client certificate can look to the client: a TLS 1.3 server
# that checks it after the handshake may close without sending an alert.
_DROPPED = (ConnectionResetError, ssl.SSLEOFError, ssl.SSLZeroReturnError)
# How long a server that accepted the client's certificate is given to close
# the connection anyway (it does not, it waits for a request: the probe then
# ends without having sent one).
_REFUSAL_WAIT_SECONDS = 1.0


class StatusError(Exception):
    """The side port could not be read; the message says what to do.

    ``exit_code`` is ``NOT_READY`` for an unreachable side port, else the
    code of the setting to fix.
    """

    def __init__(self, message: str, exit_code: int = NOT_READY) -> None:
        super().__init__(message)
        self.exit_code = exit_code


@dataclass(frozen=True, slots=True)
class Credentials:
    """What ``corral status`` presents to the side port. Secrets stay out of ``repr``."""

    token: str | None = field(default=None, repr=False)
    user: str | None = None
    password: str | None = field(default=None, repr=False)
    cert: str | None = None
    key: str | None = None
    cacert: str | None = None

    def __post_init__(self) -> None:
        if self.token is not None and not _TOKEN.fullmatch(self.token):
            raise StatusError(
                "the bearer token must be printable ASCII without spaces; check where it "
                "comes from (--token-file, --token or CORRAL_METRICS_TOKEN)",
                ExitCode.CONFIG,
            )
        if self.user is not None and ":" in self.user:
            raise StatusError("--user must not contain ':' (basic auth)", ExitCode.CONFIG)

    def authorization(self) -> str | None:
        """The ``Authorization`` header value, or ``None`` without a credential."""
        if self.token is not None:
            return f"Bearer {self.token}"
        if self.user is not None and self.password is not None:
            pair = f"{self.user}:{self.password}".encode()
            return "Basic " + base64.b64encode(pair).decode("ascii")
        return None

    def describe(self) -> str:
        """What was presented, for an error message: never the secret itself."""
        if self.token is not None:
            return "the bearer token"
        if self.user is not None:
            return f"the password of user {self.user!r}"
        return "a request without credentials"

    def ssl_context(self) -> ssl.SSLContext:
        """A client context that trusts ``cacert`` (or the system CAs) and presents ``cert``."""
        try:
            context = ssl.create_default_context(cafile=self.cacert)
        except (ssl.SSLError, OSError) as exc:
            raise StatusError(
                f"cannot load --cacert {self.cacert} ({_ssl_reason(exc)}); it must be PEM",
                ExitCode.CONFIG,
            ) from None
        if self.cert is not None:
            try:
                context.load_cert_chain(self.cert, self.key, password=_no_passphrase)
            except (ssl.SSLError, OSError) as exc:
                raise StatusError(
                    f"cannot load --cert {self.cert} with --key {self.key or self.cert} "
                    f"({_ssl_reason(exc)}); the key must be unencrypted PEM and match the "
                    "certificate",
                    ExitCode.CONFIG,
                ) from None
        return context


class CredentialsUsageError(Exception):
    """Options that contradict each other or lack their partner: a usage error."""


def credentials_from_options(
    *,
    token: str | None,
    token_file: str | None,
    user: str | None,
    password_file: str | None,
    password_env: str | None,
    cert: str | None,
    key: str | None,
    cacert: str | None,
) -> Credentials:
    """``corral status``'s flags (or their variables) as credentials, secrets read.

    Exactly one way to authenticate is sent, so a contradiction is refused
    rather than resolved by a rule the operator would have to remember.
    """
    if token is not None and token_file is not None:
        raise CredentialsUsageError(
            "give the bearer token once: --token-file, or --token (CORRAL_METRICS_TOKEN)"
        )
    if user is None and (password_file is not None or password_env is not None):
        raise CredentialsUsageError("--password-file and --password-env need --user")
    if key is not None and cert is None:
        raise CredentialsUsageError("--key needs --cert")
    password = None
    if user is not None:
        if token is not None or token_file is not None:
            raise CredentialsUsageError(
                "pass a bearer token or --user, not both (CORRAL_METRICS_TOKEN counts)"
            )
        if (password_file is None) == (password_env is None):
            raise CredentialsUsageError("--user needs one of --password-file or --password-env")
        if password_file is not None:
            password = read_secret_file(password_file, "--password-file")
        else:
            password = secret_from_env(str(password_env), "--password-env")
    if token_file is not None:
        token = read_secret_file(token_file, "--token-file")
    return Credentials(token, user, password, cert, key, cacert)


def read_secret_file(path: str, flag: str) -> str:
    """A token or password from a file (a mounted secret): one line, newline dropped."""
    try:
        with open(path, encoding="utf-8") as file:
            text = file.read()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise StatusError(f"{flag} {path} cannot be read ({reason})", ExitCode.CONFIG) from None
    secret = text.rstrip("\r\n")
    if not secret:
        raise StatusError(f"{flag} {path} is empty", ExitCode.CONFIG)
    return secret


def secret_from_env(variable: str, flag: str) -> str:
    """The password held in environment variable ``variable`` (named by ``flag``)."""
    value = os.environ.get(variable)
    if not value:
        raise StatusError(
            f"{flag} {variable}: that environment variable is not set or empty", ExitCode.CONFIG
        )
    return value


def _no_passphrase() -> bytes:
    # Without a callback OpenSSL would prompt on the terminal for an encrypted
    # key, which hangs a health check; an empty passphrase makes it fail.
    return b""


def _ssl_reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc.strerror
    return str(reason) if reason else type(exc).__name__


@dataclass(frozen=True, slots=True)
class StatusReport:
    workers: dict[str, Any]
    ready: bool
    reason: str


def fetch(url: str, credentials: Credentials) -> StatusReport:
    base = url.rstrip("/")
    context = credentials.ssl_context() if base.startswith("https:") else None
    if context is None and credentials.cert is not None:
        raise StatusError(
            f"--cert needs an https:// --url (a client certificate cannot go to {base})",
            ExitCode.CONFIG,
        )
    workers_status, workers = _get_json(f"{base}/workers", credentials, context)
    if workers_status != 200:
        raise StatusError(f"{base}/workers answered HTTP {workers_status}")
    ready_status, readiness = _get_json(f"{base}/readyz", credentials, context)
    reason = str(readiness.get("reason", "")) if isinstance(readiness, dict) else ""
    return StatusReport(workers, ready_status == 200, reason)


def _get_json(
    url: str, credentials: Credentials, context: ssl.SSLContext | None
) -> tuple[int, Any]:
    request = urllib.request.Request(url, headers={"Accept": "application/json"})
    authorization = credentials.authorization()
    if authorization is not None:
        request.add_header("Authorization", authorization)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_SECONDS, context=context) as reply:
            return reply.status, json.loads(reply.read())
    except urllib.error.HTTPError as exc:
        if exc.code == 401:
            raise _refused(exc.headers.get_all("www-authenticate") or [], credentials) from None
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, None
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise _unreadable(url, exc, credentials, context) from None


def _refused(challenges: list[str], credentials: Credentials) -> StatusError:
    schemes = sorted({c.split()[0].capitalize() for c in challenges if c.strip()})
    accepts = " or ".join(schemes) or "credentials"
    if credentials.authorization() is None:
        message = (
            f"the side port wants {accepts}; pass --token-file (or --token, or set "
            "CORRAL_METRICS_TOKEN), or --user with --password-file or --password-env"
        )
    else:
        message = f"the side port refused {credentials.describe()} (it accepts {accepts})"
    return StatusError(message, ExitCode.STATUS_UNAUTHORIZED)


def _unreadable(
    url: str, exc: Exception, credentials: Credentials, context: ssl.SSLContext | None
) -> StatusError:
    reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    if isinstance(reason, ssl.SSLCertVerificationError):
        return StatusError(
            f"cannot read {url}: its certificate is not trusted ({reason.verify_message}); "
            "pass --cacert with the CA that signed it",
            ExitCode.CONFIG,
        )
    refused = isinstance(reason, ssl.SSLError) and reason.reason in _CLIENT_CERT_ALERTS
    if refused or (
        context is not None and isinstance(reason, _DROPPED) and _refuses_us(url, context)
    ):
        if credentials.cert is None:
            fix = "it wants a client certificate: pass --cert and --key"
        else:
            fix = f"it refused the client certificate {credentials.cert}"
        return StatusError(f"cannot read {url}: {fix}", ExitCode.STATUS_UNAUTHORIZED)
    return StatusError(
        f"cannot read {url}: {reason}; is corral running with its side port on? "
        "(pass --url if it is not on the default)"
    )


def to_json(report: StatusReport) -> str:
    """``/workers`` as served, with the readiness verdict added: one line."""
    return json.dumps({**report.workers, "ready": report.ready, "reason": report.reason})


def render(report: StatusReport, now: float | None = None) -> list[str]:
    """The table as lines, styled; click removes the styles off a terminal."""
    now = time.time() if now is None else now
    info = report.workers
    gil = "on" if info.get("gil_enabled") else "off"
    verdict = (
        click.style("ready", fg="green") if report.ready else click.style("NOT READY", fg="red")
    )
    lines = [
        f"corral: {verdict} ({report.reason}); mode {info.get('mode')}, GIL {gil}, "
        f"{info.get('desired')} worker(s) desired, phase {info.get('phase', '?')}",
        "",
    ]
    header = ("SLOT", "GEN", "STATE", "PID", "THREAD", "UPTIME", "RESTARTS", "BUDGET", "LAST EXIT")
    rows = [header]
    states: list[SlotState | None] = []
    for worker in info.get("workers", []):
        started = worker.get("started_at")
        state = parse_state(worker.get("state"))
        states.append(state)
        rows.append(
            (
                str(worker.get("slot")),
                str(worker.get("generation")),
                STATE_STYLES[state].label if state else str(worker.get("state")),
                _dash(worker.get("pid")),
                _dash(worker.get("thread_id")),
                _uptime(now - started) if isinstance(started, int | float) else "-",
                str(worker.get("restarts_in_window")),
                str(worker.get("budget_remaining")),
                _dash(worker.get("last_exit")),
            )
        )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    for index, row in enumerate(rows):
        cells = [cell.ljust(width) for cell, width in zip(row, widths, strict=True)]
        if index > 0:
            state = states[index - 1]
            if state is not None:
                cells[2] = click.style(cells[2], fg=STATE_STYLES[state].terminal)
        else:
            cells = [click.style(cell, bold=True) for cell in cells]
        lines.append("  ".join(cells).rstrip())
    spares = info.get("spares")
    if isinstance(spares, dict) and spares.get("desired"):
        lines.extend(["", _spares_line(spares, threads=info.get("mode") == "thread")])
    return lines


def _spares_line(spares: dict[str, Any], *, threads: bool) -> str:
    """Warm spares, one line: how many of how many, and each one's pid (or thread)."""
    given_up = " (given up until a reload)" if spares.get("exhausted") else ""
    each = []
    for spare in spares.get("workers") or []:
        worker = spare.get("thread_id" if threads else "pid")
        each.append(f"#{spare.get('spare')} {spare.get('state')} ({_dash(worker)})")
    listed = ": " + ", ".join(each) if each else ""
    return f"spares: {spares.get('ready')} of {spares.get('desired')} warm{given_up}{listed}"


def _dash(value: object) -> str:
    return "-" if value is None else str(value)


def _uptime(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds}s"
    if seconds < 3600:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"


def _refuses_us(url: str, context: ssl.SSLContext) -> bool:
    """Whether the server closes a TLS connection as soon as it sees our certificate.

    Under TLS 1.3 a server checks the client's certificate after the client
    has finished its handshake, and an asyncio server that refuses it just
    closes, with no alert: to the client that looks like a dropped connection.
    A second connection tells the two apart without sending anything: a server
    that accepted us waits for a request, one that refused us closes at once.
    """
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or "127.0.0.1"
    try:
        with (
            socket.create_connection((host, parts.port or 443), timeout=TIMEOUT_SECONDS) as raw,
            context.wrap_socket(raw, server_hostname=host) as tls,
        ):
            tls.settimeout(_REFUSAL_WAIT_SECONDS)
            return tls.recv(1) == b""
    except TimeoutError:
        return False
    except ssl.SSLError as exc:
        return exc.reason in _CLIENT_CERT_ALERTS or isinstance(exc, _DROPPED)
    except ConnectionResetError:
        return True
    except OSError:
        return False
