"""``corral status``'s credentials: where each comes from, what is sent, what is never shown.

The exchanges with a real side port are in tests/integration/test_status_command.py.
"""

from __future__ import annotations

import base64
from pathlib import Path

import pytest

from corral.cli_status import status
from corral.config_sources import OTHER_CORRAL_VARIABLES
from corral.errors import ExitCode
from corral.status_client import (
    Credentials,
    CredentialsUsageError,
    StatusError,
    credentials_from_options,
    read_secret_file,
)

NONE: dict[str, str | None] = {
    "token": None,
    "token_file": None,
    "user": None,
    "password_file": None,
    "password_env": None,
    "cert": None,
    "key": None,
    "cacert": None,
}


def options(**given: str) -> Credentials:
    return credentials_from_options(**{**NONE, **given})


def test_a_token_file_is_read_and_sent_as_a_bearer_header(tmp_path: Path) -> None:
    token = tmp_path / "token"
    token.write_text("abc123\n")
    credentials = options(token_file=str(token))
    assert credentials.authorization() == "Bearer abc123"
    assert "abc123" not in repr(credentials)
    assert credentials.describe() == "the bearer token"


def test_basic_auth_from_a_file_or_a_variable(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    password = tmp_path / "password"
    password.write_text("pa ss:wörd\r\n")  # spaces, a colon and UTF-8 are all allowed
    from_file = options(user="alice", password_file=str(password))
    expected = "Basic " + base64.b64encode("alice:pa ss:wörd".encode()).decode()
    assert from_file.authorization() == expected
    monkeypatch.setenv("HEALTH_PW", "pa ss:wörd")
    assert options(user="alice", password_env="HEALTH_PW").authorization() == expected
    assert "wörd" not in repr(from_file)
    assert from_file.describe() == "the password of user 'alice'"


def test_nothing_given_sends_nothing() -> None:
    credentials = options()
    assert credentials.authorization() is None
    assert credentials.describe() == "a request without credentials"


@pytest.mark.parametrize(
    ("given", "needle"),
    [
        ({"token": "t", "token_file": "/f"}, "once"),
        ({"token": "t", "user": "u", "password_env": "X"}, "not both"),
        ({"user": "u"}, "--password-file or --password-env"),
        ({"user": "u", "password_env": "X", "password_file": "/f"}, "one of"),
        ({"password_file": "/f"}, "need --user"),
        ({"key": "/k"}, "--key needs --cert"),
    ],
)
def test_contradictions_and_missing_partners_are_usage_errors(
    given: dict[str, str], needle: str
) -> None:
    with pytest.raises(CredentialsUsageError, match=needle):
        options(**given)


def test_unusable_secrets_name_the_flag_not_the_secret(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    empty = tmp_path / "empty"
    empty.write_text("\n")
    with pytest.raises(StatusError, match=r"--token-file .* is empty") as caught:
        read_secret_file(str(empty), "--token-file")
    assert caught.value.exit_code == ExitCode.CONFIG
    with pytest.raises(StatusError, match="No such file") as caught:
        read_secret_file(str(tmp_path / "missing"), "--password-file")
    assert caught.value.exit_code == ExitCode.CONFIG
    spaced = tmp_path / "spaced"
    spaced.write_text("has a space")
    with pytest.raises(StatusError, match="printable ASCII") as caught:
        options(token_file=str(spaced))
    assert "has a space" not in str(caught.value)
    monkeypatch.delenv("NOT_SET_HERE", raising=False)
    with pytest.raises(StatusError, match="NOT_SET_HERE"):
        options(user="u", password_env="NOT_SET_HERE")


def test_a_certificate_that_does_not_load_is_a_config_error(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pem"
    junk.write_text("not a certificate")
    with pytest.raises(StatusError, match="cannot load --cert") as caught:
        options(cert=str(junk)).ssl_context()
    assert caught.value.exit_code == ExitCode.CONFIG
    with pytest.raises(StatusError, match="cannot load --cacert"):
        options(cacert=str(junk)).ssl_context()


def test_corral_run_knows_every_status_variable() -> None:
    """A container sets them beside corral's own: ``corral run`` must not warn about them."""
    variables = {p.envvar for p in status.params if isinstance(p.envvar, str)}
    assert "CORRAL_STATUS_PASSWORD_FILE" in variables
    assert variables - {"CORRAL_METRICS_TOKEN"} <= OTHER_CORRAL_VARIABLES
