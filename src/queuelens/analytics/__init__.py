"""The read side: every number a surface shows comes from here.

    from queuelens.analytics import open_analytics
    analytics, insights = open_analytics(storage)           # thresholds from queuelens.toml
    window = analytics.window("1h")
    overview = analytics.overview(window)                    # totals, queues, workers, servers
    detail = insights.queue_detail(window, "billing", "emails")

No web framework is imported here; the API, CLI, dashboard, alerts and Prometheus export
all read through :class:`Analytics` and :class:`Insights`, so they agree.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from queuelens.analytics.health import Health, HealthStatus, HealthThresholds, Reason
from queuelens.analytics.insights import CapacitySettings, Insights, JobDetail, QueueDetail
from queuelens.analytics.overview import Analytics, Overview, QueueSummary, ServerSummary
from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import WINDOWS, Window, WindowError

if TYPE_CHECKING:
    from queuelens.config import Settings
    from queuelens.storage.base import Storage

__all__ = [
    "WINDOWS",
    "Analytics",
    "CapacitySettings",
    "Health",
    "HealthStatus",
    "HealthThresholds",
    "Insights",
    "JobDetail",
    "JobSummary",
    "Overview",
    "QueueDetail",
    "QueueSummary",
    "Reason",
    "ServerSummary",
    "Stats",
    "Window",
    "WindowError",
    "open_analytics",
]


def open_analytics(
    storage: Storage,
    settings: Settings | None = None,
    toml_path: str | Path | None = None,
) -> tuple[Analytics, Insights]:
    """Analytics over ``storage`` with retention from the settings and thresholds from the
    ``[health]`` and ``[capacity]`` tables of ``queuelens.toml`` (ConfigError if invalid)."""
    from queuelens.analytics.health import health_thresholds
    from queuelens.analytics.insights import capacity_settings
    from queuelens.config import load_settings, load_table

    settings = settings or load_settings(toml_path)
    thresholds = health_thresholds(load_table("health", toml_path))
    analytics = Analytics(storage, retention=settings.retention, thresholds=thresholds)
    return analytics, Insights(analytics, capacity_settings(load_table("capacity", toml_path)))
