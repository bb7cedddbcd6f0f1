"""Lifecycle events, the collector that fans them out, and the sinks that receive them."""

from __future__ import annotations

from corral.lifecycle.collector import LifecycleCollector, LifecycleSink
from corral.lifecycle.events import CrashReason, EventKind, LifecycleEvent

__all__ = ["CrashReason", "EventKind", "LifecycleCollector", "LifecycleEvent", "LifecycleSink"]
