"""A plain Starlette app under corral and under uvicorn: the same answers, both modes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.conftest import (
    Exchange,
    ReferenceServer,
    compare,
    corral_server,
    uvicorn_server,
    websocket_transcript,
)
from tests.conftest import CorralProcess

APP = "tests.compat.apps.starlette_app:app"

EXCHANGES = (
    Exchange("GET", "/"),
    Exchange("GET", "/users/ada?q=x"),
    Exchange("POST", "/echo", body=b'{"a": 1}', headers={"content-type": "application/json"}),
    Exchange("POST", "/echo", body=b"x" * 70_000),  # more than one read
    Exchange("GET", "/old"),
    Exchange("GET", "/cookie"),
    Exchange("GET", "/stream"),
    Exchange("GET", "/missing"),
    Exchange("PUT", "/echo"),  # 405
    Exchange("HEAD", "/"),
)


@pytest.fixture(scope="module")
def reference() -> Iterator[ReferenceServer]:
    with uvicorn_server(APP) as server:
        yield server


@pytest.fixture(scope="module")
def served(corral_mode: str) -> Iterator[CorralProcess]:
    with corral_server(APP, corral_mode) as server:
        yield server


def test_http_responses_match_uvicorn(reference: ReferenceServer, served: CorralProcess) -> None:
    compare(reference.base_url, served.base_url, EXCHANGES)


def test_websocket_matches_uvicorn(reference: ReferenceServer, served: CorralProcess) -> None:
    messages = ["one", "two", "bye"]
    want = websocket_transcript(reference.base_url + "/ws", messages)
    got = websocket_transcript(served.base_url + "/ws", messages)
    assert want.received == ("echo: one", "echo: two")
    assert got == want
