"""A FastAPI app under corral and under uvicorn: the same answers, both worker modes."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.compat.conftest import (
    Exchange,
    ReferenceServer,
    compare,
    corral_server,
    import_or_skip_on_free_threaded,
    uvicorn_server,
    websocket_transcript,
)
from tests.conftest import CorralProcess

import_or_skip_on_free_threaded(
    "fastapi",
    reason="fastapi needs pydantic-core, whose current release has no free-threaded wheel",
)

APP = "tests.compat.apps.fastapi_app:app"

EXCHANGES = (
    Exchange("GET", "/"),
    Exchange("GET", "/items/7?q=blue&offset=5&limit=2"),
    Exchange("GET", "/items/seven"),  # 422 from validation
    Exchange("GET", "/items/7?limit=1000"),  # 422 from the dependency
    Exchange("POST", "/items", json={"name": "widget", "price": 2.5, "tags": ["a"]}),
    Exchange("POST", "/items", json={"name": "widget"}),  # 422: price missing
    Exchange("GET", "/headers", headers={"x-token": "s3cret"}),
    Exchange("GET", "/stream"),
    Exchange("POST", "/notify/ada"),
    Exchange("POST", "/notify/grace"),
    Exchange("GET", "/notified"),  # the background tasks ran, in order
    Exchange("GET", "/missing"),
    Exchange("DELETE", "/"),  # 405
    Exchange("HEAD", "/"),
    Exchange("GET", "/openapi.json"),
)


@pytest.fixture(scope="module")
def reference(corral_mode: str) -> Iterator[ReferenceServer]:
    """A fresh uvicorn per corral mode: the background tasks' log is per server."""
    del corral_mode
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
