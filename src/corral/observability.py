"""Everything that watches a supervisor, assembled in one place.

The data flow: the supervisor emits a ``LifecycleEvent`` into the
``LifecycleCollector``; the collector has the tracing sink stamp it with
its span's ids, then fans it out to the log sink, the Prometheus sink and
the live feed (the side port's event stream). The side port reads metrics,
the worker table and recent events and spans on its own thread.

``Observability`` is built in two steps because the pieces depend on each
other in that order: the collector (with tracing) must exist before the
supervisor, and the metrics need the supervisor's mode decision.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping

import structlog
from opentelemetry.sdk.trace import TracerProvider

from corral.config import ServerConfig
from corral.lifecycle.collector import LifecycleCollector
from corral.lifecycle.feed import EventFeed
from corral.lifecycle.log_sink import StructlogSink
from corral.lifecycle.metrics_sink import PrometheusSink
from corral.lifecycle.trace_sink import TraceSink
from corral.metrics import CorralMetrics, SupervisionLimits
from corral.request_stats.pool import RequestStatsPool
from corral.runtime import WorkerMode
from corral.service.auth import load_web_config
from corral.service.figures import BudgetLimit
from corral.service.live import LiveSources, SupervisorView, fleet_view
from corral.service.server import ServiceSettings, SidePort
from corral.span_export import SpanDrops
from corral.tracing import RecentSpans, build_tracer_provider

log = structlog.get_logger("corral.tracing")


class Observability:
    """Sinks, metrics, tracing and the side port for one supervisor run."""

    def __init__(self, config: ServerConfig, environ: Mapping[str, str]) -> None:
        self.config = config
        self.spans = RecentSpans()
        self.span_drops = SpanDrops()
        self.provider: TracerProvider | None = build_tracer_provider(
            environ, self.spans, self.span_drops
        )
        self.trace_sink = TraceSink(self.provider) if self.provider else None
        self.feed = EventFeed()
        self.collector = LifecycleCollector([StructlogSink(), self.feed], tracer=self.trace_sink)
        wants_requests = config.metrics and config.request_metrics
        self.request_stats = RequestStatsPool() if wants_requests else None
        self.metrics: CorralMetrics | None = None
        self.side_port: SidePort | None = None

    def attach(self, supervisor: SupervisorView) -> None:
        """Register the metrics and bind the side port; raises ``BindError``/``ConfigError``."""
        metrics = CorralMetrics(supervisor.mode_decision)
        self.metrics = metrics
        self.collector.add_sink(PrometheusSink(metrics))
        metrics.add_scrape_collectors(
            fleet=lambda: fleet_view(supervisor),
            limits=SupervisionLimits(
                self.config.max_restarts, self.config.restart_window, self.config.min_ready
            ),
            sink_errors=self.collector.sink_errors,
            sink_names=self.collector.sink_names,
            request_stats=self.request_stats,
            threads=supervisor.mode_decision.mode is WorkerMode.THREAD,
        )
        metrics.add_span_drops(self.span_drops.snapshot)
        if not self.config.metrics:
            return
        cfg = self.config
        settings = ServiceSettings(
            host=cfg.metrics_host,
            port=cfg.metrics_port,
            token=cfg.metrics_token,
            web_config=load_web_config(cfg.metrics_web_config) if cfg.metrics_web_config else None,
        )
        sources = LiveSources(
            supervisor,
            self.collector,
            metrics,
            self.feed,
            spans=self.spans,
            min_ready=cfg.min_ready,
            budget=BudgetLimit(cfg.max_restarts, cfg.restart_window),
            request_stats=self.request_stats.snapshot if self.request_stats else None,
        )
        self.side_port = SidePort(settings, sources)

    def start(self) -> None:
        if self.side_port is not None:
            self.side_port.start()

    def close(self) -> None:
        """Stop the side port, flush spans and remove the request-stats blocks. Idempotent."""
        if self.side_port is not None:
            self.side_port.stop()
            self.side_port = None
        if self.trace_sink is not None:
            self.trace_sink.close()
        if self.provider is not None:
            with contextlib.suppress(Exception):  # an unreachable collector must not block exit
                self.provider.shutdown()
            self.provider = None
            self._report_span_drops()
        if self.request_stats is not None:
            self.request_stats.close()
            self.request_stats = None

    def _report_span_drops(self) -> None:
        """At exit nothing can scrape ``corral_spans_dropped_total`` any more: log the figure."""
        dropped = self.span_drops.snapshot()
        if any(dropped.values()):
            log.warning(
                "spans dropped",
                dropped=sum(dropped.values()),
                exported=self.span_drops.exported,
                **{f"dropped_{reason}": count for reason, count in dropped.items()},
            )
