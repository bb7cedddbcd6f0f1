"""``--interface auto``: uvicorn's ASGI 3 test first, then WSGI by its shape, else ASGI 2."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import pytest
from a2wsgi import WSGIMiddleware

from corral.config import ServerConfig, load_config
from corral.config_choices import Interface, WebSocketLibrary
from corral.errors import ConfigError
from corral.interface import adapt, decide_interface
from corral.websocket import describe_support, require_support


async def asgi3_function(scope: Any, receive: Any, send: Any) -> None:
    """An ASGI 3 function."""


class ASGI3Object:
    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        """An ASGI 3 object."""


class ASGI3Class:
    """An ASGI 3 class: instantiated per call, awaited."""

    def __init__(self, scope: Any, receive: Any, send: Any) -> None:
        self.scope = scope

    def __await__(self) -> Any:
        yield


def asgi2_function(scope: Any) -> Callable[..., Any]:
    return asgi3_function


class ASGI2Class:
    def __init__(self, scope: Any) -> None:
        self.scope = scope


def wsgi_function(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
    start_response("200 OK", [])
    return [b""]


class WSGIObject:
    def __call__(
        self, environ: dict[str, Any], start_response: Callable[..., Any]
    ) -> Iterable[bytes]:
        return wsgi_function(environ, start_response)


@pytest.mark.parametrize(
    ("app", "expected"),
    [
        (asgi3_function, Interface.ASGI3),
        (ASGI3Object(), Interface.ASGI3),
        (ASGI3Class, Interface.ASGI3),
        (asgi2_function, Interface.ASGI2),
        (ASGI2Class, Interface.ASGI2),
        (wsgi_function, Interface.WSGI),
        (WSGIObject(), Interface.WSGI),
        (functools.partial(wsgi_function), Interface.WSGI),
    ],
)
def test_auto_detects(app: object, expected: Interface) -> None:
    decision = decide_interface(app, Interface.AUTO)
    assert decision.interface is expected
    assert decision.reason.startswith("detected")


def test_an_explicit_choice_wins_over_detection() -> None:
    decision = decide_interface(wsgi_function, Interface.ASGI2)
    assert decision == decide_interface(asgi3_function, Interface.ASGI2)
    assert decision.interface is Interface.ASGI2
    assert decision.reason == "set by --interface"


def test_wsgi_is_wrapped_in_a2wsgi_and_uvicorn_told_asgi3() -> None:
    served, told = adapt(wsgi_function, Interface.WSGI)
    assert isinstance(served, WSGIMiddleware)
    assert told == "asgi3"
    served.executor.shutdown()
    assert adapt(asgi2_function, Interface.ASGI2) == (asgi2_function, "asgi2")


def test_flask_app_is_wsgi() -> None:
    flask = pytest.importorskip("flask")
    assert decide_interface(flask.Flask("x"), Interface.AUTO).interface is Interface.WSGI


def test_interface_and_ws_settings_from_every_source(tmp_path: Path) -> None:
    (tmp_path / "corral.toml").write_text(
        'interface = "wsgi"\nws = "wsproto"\nws-max-size = 1024\n', encoding="utf-8"
    )
    loaded = load_config({}, environ={"CORRAL_WS_PING_INTERVAL": "0"}, cwd=tmp_path)
    cfg = loaded.config
    assert cfg.interface is Interface.WSGI
    assert cfg.ws is WebSocketLibrary.WSPROTO
    assert cfg.ws_max_size == 1024
    assert cfg.ws_ping_interval == 0.0
    flags = load_config({"ws": "websockets-sansio", "interface": "ASGI3"}, environ={}, cwd=tmp_path)
    assert flags.config.ws is WebSocketLibrary.WEBSOCKETS_SANSIO
    assert flags.config.interface is Interface.ASGI3


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"interface": "wsgi3"}, "invalid value 'wsgi3' for interface"),
        ({"ws": "socketio"}, "invalid value 'socketio' for ws"),
        ({"ws_max_size": "0"}, "ws_max_size and ws_max_queue must be positive"),
        ({"ws_ping_timeout": "-1"}, "ws_ping_timeout must not be negative"),
    ],
)
def test_bad_values_name_the_setting(values: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(values, environ={}, cwd=Path("/nonexistent"))


def test_websocket_support_is_described() -> None:
    assert describe_support(WebSocketLibrary.NONE).library is None
    auto = describe_support(WebSocketLibrary.AUTO)
    assert auto.library == "websockets"  # a dependency of corral
    assert require_support(WebSocketLibrary.WSPROTO).library == "wsproto"  # the test extra
    assert ServerConfig().ws is WebSocketLibrary.AUTO
