"""Metrics for other systems to scrape: Prometheus and OpenMetrics.

    from queuelens.exposition import render_metrics
    body, content_type = render_metrics(analytics, request.headers.get("accept"))

    from prometheus_client import REGISTRY                   # embedding in an existing /metrics
    REGISTRY.register(QueueLensCollector(analytics))

Every value is read through :mod:`queuelens.analytics` at scrape time, so ``/metrics``, the
API and the dashboard agree. ``docs/metrics.md`` lists every metric and how counters behave.
"""

from __future__ import annotations

from queuelens.exposition._histogram import DEFAULT_BUCKETS, check_buckets
from queuelens.exposition._snapshot import OTHER_JOB, AnomalySource
from queuelens.exposition.prometheus import (
    DEFAULT_MAX_SERIES,
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    QueueLensCollector,
    render_metrics,
    wants_openmetrics,
)

__all__ = [
    "DEFAULT_BUCKETS",
    "DEFAULT_MAX_SERIES",
    "OPENMETRICS_CONTENT_TYPE",
    "OTHER_JOB",
    "TEXT_CONTENT_TYPE",
    "AnomalySource",
    "QueueLensCollector",
    "check_buckets",
    "render_metrics",
    "wants_openmetrics",
]
