"""ASGI 2 and WSGI apps served in both modes; the interface detected or chosen."""

from __future__ import annotations

from collections.abc import Callable

import httpx

from tests.conftest import CorralProcess, run_cli


def test_asgi2_app_is_detected_and_served(corral: Callable[..., CorralProcess], mode: str) -> None:
    server = corral("--mode", mode, app="tests.integration.interface_apps:asgi2")
    server.wait_ready(1)
    assert server.get("/there").text == "asgi2 /there"
    listening = server.wait_for(lambda r: r.get("event") == "corral listening")[0]
    assert listening["interface"] == "asgi2"


def test_wsgi_function_served_with_explicit_interface(
    corral: Callable[..., CorralProcess], mode: str
) -> None:
    server = corral(
        "--mode", mode, "--interface", "wsgi", "--workers", "2",
        app="tests.integration.interface_apps:wsgi",
    )  # fmt: skip
    server.wait_ready(2)
    response = httpx.post(server.base_url + "/", content=b"payload", timeout=10)
    assert (response.status_code, response.text) == (200, "wsgi POST payload")
    # An upgrade reaches a WSGI app as plain HTTP: WSGI has no WebSockets.
    upgrade = httpx.get(
        server.base_url + "/",
        headers={
            "connection": "upgrade",
            "upgrade": "websocket",
            "sec-websocket-version": "13",
            "sec-websocket-key": "dGhlIHNhbXBsZSBub25jZQ==",
        },
        timeout=10,
    )
    assert (upgrade.status_code, upgrade.text) == (200, "wsgi GET ")


def test_unknown_interface_is_a_usage_error() -> None:
    result = run_cli("run", "tests.integration.interface_apps:wsgi", "--interface", "wsgi3")
    assert result.returncode == 2
    assert "wsgi3" in result.stderr
