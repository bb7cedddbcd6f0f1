"""A Flask (WSGI) app under corral and under gunicorn: the same answers, both modes.

corral detects the WSGI interface by itself (no ``--interface`` flag) and
serves the app through a2wsgi.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.conftest import (
    Exchange,
    ReferenceServer,
    compare,
    corral_server,
    gunicorn_server,
)
from tests.conftest import CorralProcess, run_cli

APP = "tests.compat.apps.flask_app:app"

EXCHANGES = (
    Exchange("GET", "/"),
    Exchange("GET", "/items/3?q=red"),
    Exchange("POST", "/echo", json={"a": [1, 2]}),
    Exchange("POST", "/echo", data={"name": "ada", "lang": "en"}),
    Exchange("GET", "/old"),
    Exchange("GET", "/teapot"),
    Exchange("GET", "/cookie"),
    Exchange("GET", "/stream"),
    Exchange("GET", "/missing"),
    Exchange("POST", "/"),  # 405
    Exchange("HEAD", "/"),
)


@pytest.fixture(scope="module")
def reference() -> Iterator[ReferenceServer]:
    with gunicorn_server(APP) as server:
        yield server


@pytest.fixture(scope="module")
def served(corral_mode: str) -> Iterator[CorralProcess]:
    with corral_server(APP, corral_mode) as server:
        yield server


def test_http_responses_match_gunicorn(reference: ReferenceServer, served: CorralProcess) -> None:
    compare(reference.base_url, served.base_url, EXCHANGES)


def test_corral_logs_the_detected_interface(served: CorralProcess) -> None:
    listening = served.wait_for(lambda r: r.get("event") == "corral listening")[0]
    assert listening["interface"] == "wsgi"


def test_check_prints_the_detected_interface() -> None:
    result = run_cli("check", APP)
    assert result.returncode == 0, result.stderr
    assert "interface: wsgi (detected: a plain callable taking (environ, start_response))" in (
        result.stdout
    )
    assert "websockets: off: a WSGI app has no WebSockets" in result.stdout
