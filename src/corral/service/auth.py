"""Who may read the side port: a bearer token, basic-auth users, and TLS.

The web config file follows the Prometheus exporter-toolkit format, so an
operator can reuse the file (and the habits) they already have for
node_exporter::

    tls_server_config:
      cert_file: server.crt
      key_file: server.key
      client_ca_file: clients-ca.crt          # optional: mTLS
      client_auth_type: RequireAndVerifyClientCert
      min_version: TLS12                      # or TLS13
    basic_auth_users:
      alice: $2y$10$...                       # htpasswd -nBC 10 "" | tr -d ':\\n'

Relative paths are resolved against the file's own directory, as the toolkit
does. Every problem is a ``ConfigError`` naming the file and the key, never a
secret. Unlike the toolkit, corral always verifies a client certificate it is
given (Python's ``ssl`` cannot accept one unverified), so ``RequestClientCert``
and ``RequireAnyClientCert`` behave as their verifying twins and need
``client_ca_file``.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import enum
import hashlib
import hmac
import re
import secrets
import ssl
import threading
from collections import OrderedDict
from collections.abc import Mapping
from concurrent.futures import Executor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import yaml

from corral.errors import ConfigError

REALM = "corral"
# bcrypt only ever looks at the first 72 bytes; bcrypt>=5 raises instead of
# truncating, but hashes made by htpasswd and friends were made truncated.
_BCRYPT_MAX_BYTES = 72
_BCRYPT_HASH = re.compile(r"\$2[abxy]?\$(0[4-9]|[12][0-9]|3[01])\$[./A-Za-z0-9]{53}")
# Checked when the user is unknown, so a wrong user name costs as much time as
# a wrong password and the response time does not reveal which users exist.
_DUMMY_HASH = b"$2b$10$6tAURZhsobu61azaD.4mT.UONejFP0wK3up.yx37kaSvk9YBgC9Im"
_TOKEN = re.compile(r"[\x21-\x7e]+")


class ClientAuth(enum.Enum):
    """exporter-toolkit's ``client_auth_type`` values, by their spelling in the file."""

    NO_CLIENT_CERT = "NoClientCert"
    REQUEST_CLIENT_CERT = "RequestClientCert"
    REQUIRE_ANY_CLIENT_CERT = "RequireAnyClientCert"
    VERIFY_CLIENT_CERT_IF_GIVEN = "VerifyClientCertIfGiven"
    REQUIRE_AND_VERIFY_CLIENT_CERT = "RequireAndVerifyClientCert"

    @property
    def verify_mode(self) -> ssl.VerifyMode:
        if self is ClientAuth.NO_CLIENT_CERT:
            return ssl.CERT_NONE
        if self in (ClientAuth.REQUEST_CLIENT_CERT, ClientAuth.VERIFY_CLIENT_CERT_IF_GIVEN):
            return ssl.CERT_OPTIONAL
        return ssl.CERT_REQUIRED


_TLS_VERSIONS = {"TLS12": ssl.TLSVersion.TLSv1_2, "TLS13": ssl.TLSVersion.TLSv1_3}
_TLS_KEYS = ("cert_file", "key_file", "client_ca_file", "client_auth_type", "min_version")
_TOP_KEYS = ("tls_server_config", "basic_auth_users")


@dataclass(frozen=True, slots=True)
class TLSConfig:
    """The ``tls_server_config`` block, with paths already resolved."""

    cert_file: Path
    key_file: Path
    client_ca_file: Path | None = None
    client_auth: ClientAuth = ClientAuth.NO_CLIENT_CERT
    min_version: ssl.TLSVersion = ssl.TLSVersion.TLSv1_2


@dataclass(frozen=True, slots=True)
class WebConfig:
    """A loaded web config file. ``source`` names the file in error messages."""

    tls: TLSConfig | None = None
    # user -> bcrypt hash. Kept out of repr so a logged config shows no hashes.
    basic_auth_users: Mapping[str, str] = field(default_factory=dict, repr=False, hash=False)
    source: str = "web config"

    def ssl_context(self) -> ssl.SSLContext | None:
        """A fresh server context (TLS 1.2+), or ``None`` for plain HTTP.

        Raises ``ConfigError`` when a certificate or key cannot be loaded.
        """
        if self.tls is None:
            return None
        return _build_ssl_context(self.tls, self.source)


def load_web_config(path: str | Path) -> WebConfig:
    """Read and validate an exporter-toolkit web config; raises ``ConfigError``.

    The TLS context is built once here too, so a bad certificate is reported
    when the config is loaded (``corral check``), not when the port starts.
    """
    where = f"web config {path}"
    file = Path(path)
    try:
        text = file.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{where} does not exist; check the path") from None
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) else "not UTF-8 text"
        raise ConfigError(f"{where} cannot be read ({reason})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        at = f" at line {mark.line + 1}" if mark is not None else ""
        raise ConfigError(f"{where} is not valid YAML{at}; fix the syntax there") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{where} must be a mapping with {' and/or '.join(_TOP_KEYS)}")
    _reject_unknown(data, _TOP_KEYS, where, "")
    tls = None
    if data.get("tls_server_config") is not None:
        tls = _parse_tls(data["tls_server_config"], file.parent, where)
    users = _parse_users(data.get("basic_auth_users"), where)
    config = WebConfig(tls=tls, basic_auth_users=users, source=where)
    config.ssl_context()
    return config


def _reject_unknown(data: dict[Any, Any], known: tuple[str, ...], where: str, prefix: str) -> None:
    for key in data:
        if key not in known:
            raise ConfigError(
                f"{where}: unknown key {prefix}{key!s:.40} (corral supports {', '.join(known)})"
            )


def _parse_tls(block: object, base: Path, where: str) -> TLSConfig:
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: tls_server_config must be a mapping")
    _reject_unknown(block, _TLS_KEYS, where, "tls_server_config.")
    values: dict[str, str] = {}
    for key, value in block.items():
        if value is None:
            continue
        if not isinstance(value, str) or not value:
            raise ConfigError(f"{where}: tls_server_config.{key} must be a non-empty string")
        values[key] = value
    for key in ("cert_file", "key_file"):
        if key not in values:
            raise ConfigError(f"{where}: tls_server_config.{key} is required")
    paths = {
        key: _existing_file(base / values[key], where, key)
        for key in ("cert_file", "key_file", "client_ca_file")
        if key in values
    }
    auth_name = values.get("client_auth_type", ClientAuth.NO_CLIENT_CERT.value)
    try:
        client_auth = ClientAuth(auth_name)
    except ValueError:
        choices = ", ".join(item.value for item in ClientAuth)
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type {auth_name!r:.60} is not one of {choices}"
        ) from None
    ca = paths.get("client_ca_file")
    if ca is not None and client_auth is ClientAuth.NO_CLIENT_CERT:
        raise ConfigError(
            f"{where}: tls_server_config.client_ca_file is set but client_auth_type is "
            "NoClientCert; set client_auth_type (e.g. RequireAndVerifyClientCert)"
        )
    if ca is None and client_auth is not ClientAuth.NO_CLIENT_CERT:
        raise ConfigError(
            f"{where}: tls_server_config.client_auth_type {client_auth.value} needs "
            "client_ca_file to verify client certificates against"
        )
    version_name = values.get("min_version", "TLS12")
    if version_name not in _TLS_VERSIONS:
        raise ConfigError(
            f"{where}: tls_server_config.min_version must be TLS12 or TLS13 "
            f"(older versions are not offered)"
        )
    return TLSConfig(
        cert_file=paths["cert_file"],
        key_file=paths["key_file"],
        client_ca_file=ca,
        client_auth=client_auth,
        min_version=_TLS_VERSIONS[version_name],
    )


def _existing_file(path: Path, where: str, key: str) -> Path:
    if not path.is_file():
        raise ConfigError(f"{where}: tls_server_config.{key} {path} does not exist")
    return path


def _parse_users(block: object, where: str) -> dict[str, str]:
    if block is None:
        return {}
    if not isinstance(block, dict):
        raise ConfigError(f"{where}: basic_auth_users must be a mapping of user name to hash")
    users: dict[str, str] = {}
    for user, hashed in block.items():
        if not isinstance(user, str) or not user or ":" in user:
            raise ConfigError(
                f"{where}: basic_auth_users has a user name that is empty, not a string "
                "or contains ':'"
            )
        if not isinstance(hashed, str) or not _BCRYPT_HASH.fullmatch(hashed):
            raise ConfigError(
                f"{where}: basic_auth_users.{user:.40} is not a bcrypt hash; make one with "
                "htpasswd -nBC 10 \"\" | tr -d ':\\n'"
            )
        users[user] = hashed
    return users


def _no_passphrase() -> bytes:
    # Without a callback, OpenSSL would prompt on the terminal for an
    # encrypted key; an empty passphrase makes it fail instead.
    return b""


def _build_ssl_context(tls: TLSConfig, where: str) -> ssl.SSLContext:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = tls.min_version
    try:
        context.load_cert_chain(tls.cert_file, tls.key_file, password=_no_passphrase)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"{where}: cannot load cert_file {tls.cert_file} with key_file {tls.key_file} "
            f"({_ssl_reason(exc)}); the key must be unencrypted PEM and match the certificate"
        ) from None
    if tls.client_ca_file is not None:
        try:
            context.load_verify_locations(cafile=tls.client_ca_file)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(
                f"{where}: cannot load client_ca_file {tls.client_ca_file} ({_ssl_reason(exc)})"
            ) from None
    context.verify_mode = tls.client_auth.verify_mode
    context.set_alpn_protocols(["http/1.1"])
    return context


def _ssl_reason(exc: OSError) -> str:
    reason = getattr(exc, "reason", None) or exc.strerror
    return str(reason) if reason else type(exc).__name__


def check_token(token: str) -> None:
    """Raise ``ConfigError`` unless ``token`` can travel in a bearer header.

    The message never contains the token itself.
    """
    if not _TOKEN.fullmatch(token):
        raise ConfigError(
            "metrics token must be non-empty printable ASCII without spaces; "
            "generate one with: openssl rand -hex 32"
        )


class Authenticator:
    """Checks an ``Authorization`` header against a token and/or basic-auth users.

    Either credential is accepted when both are configured. Comparisons of the
    token are constant-time. A bcrypt check costs tens of milliseconds by
    design, so it runs on an executor, and successful checks are remembered in
    a small LRU keyed by an HMAC of the credentials under a per-process random
    key: a scraper that authenticates every second costs one bcrypt, and the
    cache holds nothing an attacker could brute-force offline. Nothing here
    ever logs or returns a credential.
    """

    def __init__(
        self, token: str | None, users: Mapping[str, str], *, cache_size: int = 256
    ) -> None:
        self._token = token.encode("ascii") if token is not None else None
        self._users = {user: hashed.encode("ascii") for user, hashed in users.items()}
        self._cache_size = cache_size
        self._cache: OrderedDict[bytes, None] = OrderedDict()
        self._cache_key = secrets.token_bytes(32)
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self._token is not None or bool(self._users)

    def challenges(self) -> tuple[tuple[str, str], ...]:
        """The ``WWW-Authenticate`` headers of a 401, one per accepted scheme."""
        out: list[tuple[str, str]] = []
        if self._token is not None:
            out.append(("www-authenticate", f'Bearer realm="{REALM}"'))
        if self._users:
            out.append(("www-authenticate", f'Basic realm="{REALM}", charset="UTF-8"'))
        return tuple(out)

    async def authorized(self, header: str | None, executor: Executor | None) -> bool:
        """Whether ``header`` (the raw ``Authorization`` value) grants access."""
        if not self.enabled:
            return True
        if header is None:
            return False
        scheme, _, credentials = header.strip().partition(" ")
        scheme = scheme.lower()
        if scheme == "bearer" and self._token is not None:
            return self.check_bearer(credentials.strip())
        if scheme == "basic" and self._users:
            parsed = _parse_basic(credentials.strip())
            if parsed is None:
                return False
            user, password = parsed
            if self._cached(user, password):
                return True
            loop = asyncio.get_running_loop()
            return await loop.run_in_executor(executor, self.check_basic, user, password)
        return False

    def check_bearer(self, presented: str) -> bool:
        if self._token is None:
            return False
        # The header arrived as latin-1 text: encode back to the raw bytes.
        return hmac.compare_digest(presented.encode("latin-1", "replace"), self._token)

    def check_basic(self, user: bytes, password: bytes) -> bool:
        """The slow path: one bcrypt comparison. Thread-safe; call it off the event loop."""
        try:
            name = user.decode("utf-8")
        except UnicodeDecodeError:
            name = ""
        hashed = self._users.get(name)
        try:
            ok = bcrypt.checkpw(password[:_BCRYPT_MAX_BYTES], hashed or _DUMMY_HASH)
        except ValueError:
            return False
        if not ok or hashed is None:
            return False
        key = self._cache_key_for(user, password)
        with self._lock:
            self._cache[key] = None
            self._cache.move_to_end(key)
            while len(self._cache) > self._cache_size:
                self._cache.popitem(last=False)
        return True

    def _cached(self, user: bytes, password: bytes) -> bool:
        key = self._cache_key_for(user, password)
        with self._lock:
            if key not in self._cache:
                return False
            self._cache.move_to_end(key)
            return True

    def _cache_key_for(self, user: bytes, password: bytes) -> bytes:
        message = len(user).to_bytes(4, "big") + user + password
        return hmac.new(self._cache_key, message, hashlib.sha256).digest()


def _parse_basic(credentials: str) -> tuple[bytes, bytes] | None:
    try:
        decoded = base64.b64decode(credentials.encode("latin-1"), validate=True)
    except (binascii.Error, UnicodeEncodeError):
        return None
    user, colon, password = decoded.partition(b":")
    if not colon:
        return None
    return user, password
