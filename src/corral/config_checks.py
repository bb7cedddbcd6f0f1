"""Checks of the serving and TLS settings, kept apart from ``config`` for size.

Called from ``ServerConfig.__post_init__``; like the rest of validation, each
error names the flag that fixes it.
"""

from __future__ import annotations

import ipaddress
import re
from typing import TYPE_CHECKING

from corral.errors import ConfigError

if TYPE_CHECKING:
    from corral.config import ServerConfig


def validate_tls(cfg: ServerConfig) -> None:
    if (cfg.ssl_certfile is None) != (cfg.ssl_keyfile is None):
        raise ConfigError("TLS needs both --ssl-certfile and --ssl-keyfile")
    uses_tls = cfg.ssl_certfile is not None
    for name in ("ssl_keyfile_password", "ssl_ca_certs", "ssl_ciphers"):
        if getattr(cfg, name) is not None and not uses_tls:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{flag} needs TLS; set --ssl-certfile and --ssl-keyfile too")
    if cfg.ssl_cert_reqs.value != "none" and cfg.ssl_ca_certs is None:
        raise ConfigError(
            "--ssl-cert-reqs checks client certificates against --ssl-ca-certs; set that too"
        )


# RFC 9110 field names are tokens; values are visible ASCII or Latin-1, no CR/LF/NUL.
_TOKEN = re.compile(r"^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$")
_BAD_VALUE = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def validate_serving(cfg: ServerConfig) -> None:
    for name in ("limit_concurrency", "h11_max_incomplete_event_size"):
        value = getattr(cfg, name)
        if value is not None and value < 1:
            flag = "--" + name.replace("_", "-")
            raise ConfigError(f"{name} must be at least 1 (got {value}); or leave {flag} unset")
    if cfg.fd is not None and cfg.fd < 0:
        raise ConfigError(f"fd must be a file descriptor number, 0 or more (got {cfg.fd})")
    if cfg.fd is not None and cfg.uds is not None:
        raise ConfigError("--fd and --uds both name the listener; pass only one")
    if cfg.root_path and (not cfg.root_path.startswith("/") or cfg.root_path.endswith("/")):
        raise ConfigError(
            f"root_path {cfg.root_path!r} must start with '/' and not end with one, e.g. /api"
        )
    _validate_forwarded_allow_ips(cfg.forwarded_allow_ips)
    for name, value in cfg.headers:
        if not _TOKEN.match(name):
            raise ConfigError(f"header name {name!r} is not a valid HTTP field name; fix --header")
        if _BAD_VALUE.search(value) or not _latin1(value):
            raise ConfigError(
                f"header {name!r} has a value HTTP cannot carry ({value!r}); fix --header"
            )


def _validate_forwarded_allow_ips(entries: tuple[str, ...]) -> None:
    """uvicorn quietly keeps an entry that is no address as a literal that never matches
    a client (a typo like 10.0.0.300 would trust nobody); corral refuses it instead."""
    if not entries:
        raise ConfigError("forwarded_allow_ips is empty; use --no-proxy-headers to trust nobody")
    if "*" in entries and len(entries) > 1:
        raise ConfigError("--forwarded-allow-ips '*' already trusts everyone; pass it alone")
    for entry in entries:
        if entry == "*":
            continue
        try:
            _address_or_network(entry)
        except ValueError:
            raise ConfigError(
                f"--forwarded-allow-ips entry {entry!r} is not an IP address or network"
                " (like 10.0.0.1 or 10.0.0.0/8, host bits zero) or *"
            ) from None


def _address_or_network(entry: str) -> object:
    """As uvicorn reads an entry: a network when it has a '/' (host bits must be 0)."""
    return ipaddress.ip_network(entry) if "/" in entry else ipaddress.ip_address(entry)


def _latin1(text: str) -> bool:
    try:
        text.encode("latin-1")
    except UnicodeEncodeError:
        return False
    return True
