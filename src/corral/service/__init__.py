"""The side HTTP port: metrics, health, workers and lifecycle events, next to the workers.

``SidePort(ServiceSettings(...), sources).start()`` serves ``/metrics``,
``/healthz``, ``/readyz``, ``/workers``, ``/events`` (JSON or Server-Sent
Events), ``/debug/traces`` and a status page at ``/``, from a
``ServiceSources`` (see ``sources``). ``load_web_config`` reads an
exporter-toolkit web config for TLS, mTLS and basic auth.
"""

from __future__ import annotations

from corral.service.auth import ClientAuth, TLSConfig, WebConfig, load_web_config
from corral.service.server import ServiceSettings, SidePort
from corral.service.sources import MetricsPayload, Readiness, ServiceSources

__all__ = [
    "ClientAuth",
    "MetricsPayload",
    "Readiness",
    "ServiceSettings",
    "ServiceSources",
    "SidePort",
    "TLSConfig",
    "WebConfig",
    "load_web_config",
]
