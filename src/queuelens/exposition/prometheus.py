"""``/metrics``: Prometheus text 0.0.4 or OpenMetrics 1.0.0, built from storage at each scrape.

    body, content_type = render_metrics(analytics, request.headers.get("accept"))

    from prometheus_client import REGISTRY                  # or embed in an existing /metrics
    REGISTRY.register(QueueLensCollector(analytics, max_series=500))

Nothing is kept between scrapes: every value is read through
:class:`~queuelens.analytics.Analytics`, so two server replicas answer the same and a restart
loses nothing. Job counters count since 00:00 UTC (see :mod:`._snapshot` and
``docs/metrics.md``); every metric is listed in ``docs/metrics.md``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable, Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.openmetrics.exposition import generate_latest as generate_openmetrics

from queuelens.analytics import Analytics, Health, HealthStatus
from queuelens.exposition._families import snapshot_families, storage_up
from queuelens.exposition._histogram import DEFAULT_BUCKETS, check_buckets
from queuelens.exposition._snapshot import AnomalySource, JobsToday, Snapshot, take_snapshot
from queuelens.storage import StorageError

__all__ = [
    "DEFAULT_MAX_SERIES",
    "OPENMETRICS_CONTENT_TYPE",
    "TEXT_CONTENT_TYPE",
    "QueueLensCollector",
    "render_metrics",
    "wants_openmetrics",
]

OPENMETRICS_CONTENT_TYPE = "application/openmetrics-text; version=1.0.0; charset=utf-8"
TEXT_CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
#: job series exposed before the rest are counted under ``job="__other__"``
DEFAULT_MAX_SERIES = 2000

_log = logging.getLogger("queuelens.exposition")


class QueueLensCollector:
    """A prometheus_client collector of every queuelens metric, read at each scrape.

        registry = CollectorRegistry()
        registry.register(QueueLensCollector(analytics, buckets=[0.1, 1, 10, 60]))
        prometheus_client.generate_latest(registry)

    ``buckets`` (and ``wait_buckets``, the same by default) are the histogram upper bounds in
    seconds; past ``max_series`` job series the least busy of yesterday are counted per queue
    under ``job="__other__"``; queue health is judged over ``health_window`` as in the API's
    overview; ``anomalies`` returns the anomalies active now (no metric without it);
    ``created`` adds OpenMetrics ``_created`` samples (00:00 UTC, when counters restarted).
    """

    def __init__(
        self,
        analytics: Analytics,
        *,
        buckets: Iterable[float] = DEFAULT_BUCKETS,
        wait_buckets: Iterable[float] | None = None,
        max_series: int = DEFAULT_MAX_SERIES,
        health_window: str = "1h",
        anomalies: AnomalySource | None = None,
        created: bool = True,
    ) -> None:
        if isinstance(max_series, bool) or not isinstance(max_series, int) or max_series < 0:
            raise ValueError(
                f"metrics_max_series = {max_series!r} is invalid: expected a whole number "
                f">= 0, e.g. {DEFAULT_MAX_SERIES}"
            )
        analytics.window(health_window)  # WindowError now, naming the accepted windows
        self.analytics = analytics
        self.buckets = check_buckets(buckets, "metrics_buckets")
        self.wait_buckets = (
            self.buckets
            if wait_buckets is None
            else check_buckets(wait_buckets, "metrics_wait_buckets")
        )
        self.max_series = max_series
        self.health_window = health_window
        self.anomalies = anomalies
        self.created = created

    def describe(self) -> list[Metric]:
        """The metric families without samples, so registering reads no storage."""
        empty = Snapshot(
            0.0,
            JobsToday(0, {}, 0, {}),
            [],
            [],
            Health(100, HealthStatus.healthy),
            [],
            None if self.anomalies is None else [],
        )
        return list(self._families(empty, 0.0))

    def collect(self) -> Iterator[Metric]:
        started = time.perf_counter()
        try:
            snapshot = take_snapshot(
                self.analytics,
                max_series=self.max_series,
                health_window=self.health_window,
                anomalies=self.anomalies,
            )
        except StorageError as exc:
            # No job series at all rather than zeros: a zero would read as a counter reset.
            _log.warning("metrics: storage could not be read, exporting storage_up 0: %s", exc)
            yield storage_up(False)
            return
        yield from self._families(snapshot, time.perf_counter() - started)

    def _families(self, snapshot: Snapshot, read_s: float) -> Iterator[Metric]:
        return snapshot_families(
            snapshot,
            buckets=self.buckets,
            wait_buckets=self.wait_buckets,
            created=self.created,
            read_s=read_s,
        )


def render_metrics(
    analytics: Analytics,
    accept: str | None,
    *,
    buckets: Iterable[float] = DEFAULT_BUCKETS,
    wait_buckets: Iterable[float] | None = None,
    max_series: int = DEFAULT_MAX_SERIES,
    health_window: str = "1h",
    anomalies: AnomalySource | None = None,
) -> tuple[bytes, str]:
    """The body and content type of a ``/metrics`` answer to the ``Accept`` header ``accept``:
    OpenMetrics 1.0.0 if the scraper prefers it, else the Prometheus text format 0.0.4."""
    openmetrics = wants_openmetrics(accept)
    registry = CollectorRegistry(auto_describe=False)
    registry.register(
        QueueLensCollector(
            analytics,
            buckets=buckets,
            wait_buckets=wait_buckets,
            max_series=max_series,
            health_window=health_window,
            anomalies=anomalies,
            # _created tells OpenMetrics scrapers when counters restarted; in the text format
            # it would be one more gauge series per counter, so it is left out there.
            created=openmetrics,
        )
    )
    if openmetrics:
        body: bytes = generate_openmetrics(registry)  # type: ignore[no-untyped-call]
        return body, OPENMETRICS_CONTENT_TYPE
    return generate_latest(registry), TEXT_CONTENT_TYPE


def wants_openmetrics(accept: str | None) -> bool:
    """True if ``accept`` ranks OpenMetrics 1.0.0 (or unversioned) at least as high as plain
    text (``q`` values honoured), as Prometheus's scrape header does."""
    openmetrics_q = text_q = 0.0
    for media_range in (accept or "").split(","):
        media, *params = (part.strip() for part in media_range.split(";"))
        q, version = 1.0, ""
        for param in params:
            key, _, value = param.partition("=")
            key, value = key.strip().lower(), value.strip().strip('"')
            if key == "q":
                try:
                    q = float(value)
                except ValueError:
                    q = 0.0
            elif key == "version":
                version = value
        media = media.lower()
        if media == "application/openmetrics-text" and version in ("", "1.0.0"):
            openmetrics_q = max(openmetrics_q, q)
        elif media in ("text/plain", "text/*", "*/*"):
            text_q = max(text_q, q)
    return openmetrics_q > 0 and openmetrics_q >= text_q
