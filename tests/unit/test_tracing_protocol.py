"""Which OTLP exporter the ``OTEL_EXPORTER_OTLP_*PROTOCOL`` variables choose, and the
one-line errors when the chosen one cannot be had."""

from __future__ import annotations

import sys

import pytest

from corral import tracing
from corral.errors import ConfigError
from corral.runtime import is_free_threaded_build
from corral.tracing import make_exporter

_GRPC_MODULE = "opentelemetry.exporter.otlp.proto.grpc.trace_exporter"


def _module_of(environ: dict[str, str]) -> str:
    exporter = make_exporter("otlp", environ)
    try:
        return type(exporter).__module__
    finally:
        exporter.shutdown()


def test_http_protobuf_is_the_default_and_the_traces_variable_wins() -> None:
    http = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    assert _module_of({}) == http
    assert _module_of({"OTEL_EXPORTER_OTLP_PROTOCOL": " HTTP/Protobuf "}) == http
    assert (
        _module_of(
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "http/protobuf",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
            }
        )
        == http
    )


def test_grpc_where_grpcio_installs() -> None:
    if is_free_threaded_build():
        pytest.skip("grpcio has no free-threaded wheel; the refusal is tested below")
    assert _module_of({"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"}) == _GRPC_MODULE
    assert (
        _module_of(
            {
                "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc",
                "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
            }
        )
        == _GRPC_MODULE
    )


def test_grpc_is_refused_on_a_free_threaded_build(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "is_free_threaded_build", lambda: True)
    with pytest.raises(ConfigError) as caught:
        make_exporter("otlp", {"OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "grpc"})
    message = str(caught.value)
    assert message.startswith("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL=grpc is not available")
    assert "grpcio has no free-threaded wheel" in message
    assert "OTEL_EXPORTER_OTLP_PROTOCOL=http/protobuf" in message
    assert "\n" not in message


def test_a_missing_grpc_exporter_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(tracing, "is_free_threaded_build", lambda: False)
    monkeypatch.setitem(sys.modules, _GRPC_MODULE, None)  # what an absent package looks like
    with pytest.raises(ConfigError, match=r"pip install 'corral\[otlp-grpc\]'"):
        make_exporter("otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"})


def test_an_unknown_protocol_names_both_that_work() -> None:
    with pytest.raises(ConfigError, match=r"'http/json' is not supported.*http/protobuf or grpc"):
        make_exporter("otlp", {"OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"})
