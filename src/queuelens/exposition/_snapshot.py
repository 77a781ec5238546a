"""Everything one scrape shows, read through :class:`~queuelens.analytics.Analytics` first.

    snapshot = take_snapshot(analytics, max_series=2000, health_window="1h")
    snapshot.jobs.series[SeriesKey("billing", "emails", "send")].counts   # today, UTC

Counters count since the start of the current UTC day (the *epoch*), read from the day
bucket of each series: storage only ever adds to a bucket and prunes whole days long past,
so within a day the values only grow, and at 00:00 UTC they restart from zero, a reset that
``rate()`` and ``increase()`` handle. Reading is done before any metric is built, so a
storage error leaves no half-written scrape.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass

from queuelens.analytics import Analytics, QueueSummary, ServerSummary, Window
from queuelens.analytics.anomaly import Anomaly
from queuelens.analytics.health import Health, fleet_health
from queuelens.analytics.state import WorkerView
from queuelens.model import Aggregate, Resolution, SeriesKey, bucket_start

__all__ = ["OTHER_JOB", "AnomalySource", "JobsToday", "Snapshot", "take_snapshot"]

#: the job label of every job series past ``max_series``, one per queue
OTHER_JOB = "__other__"

#: returns the anomalies active now (the server's anomaly evaluation, for example)
AnomalySource = Callable[[], Iterable[Anomaly]]

_DAY = int(Resolution.day)


@dataclass(frozen=True, slots=True)
class JobsToday:
    """Job counts and histograms since ``since`` (00:00 UTC today), per exposed series."""

    since: int
    #: every exposed series, those without jobs today included (as empty aggregates)
    series: dict[SeriesKey, Aggregate]
    #: job series counted under ``job="__other__"`` because of ``max_series``
    folded: int
    #: outcomes that recorders had to drop since ``since``, per app
    dropped: dict[str, int]


@dataclass(frozen=True, slots=True)
class Snapshot:
    taken_at: float
    jobs: JobsToday
    queues: list[QueueSummary]
    workers: list[WorkerView]
    fleet: Health
    servers: list[ServerSummary]
    #: None: no anomaly source was configured
    anomalies: list[Anomaly] | None


def take_snapshot(
    analytics: Analytics,
    *,
    max_series: int,
    health_window: str,
    anomalies: AnomalySource | None = None,
) -> Snapshot:
    """Read all a scrape needs; raises :class:`~queuelens.storage.StorageError` on failure."""
    now = analytics.clock()
    window = analytics.window(health_window)
    workers = analytics.workers()
    return Snapshot(
        taken_at=now,
        jobs=jobs_today(analytics, now, max_series),
        queues=analytics.queue_summaries(window),
        workers=workers,
        fleet=fleet_health(workers, analytics.thresholds, now),
        servers=analytics.server_summaries(),
        anomalies=None if anomalies is None else list(anomalies()),
    )


def jobs_today(analytics: Analytics, now: float, max_series: int) -> JobsToday:
    """Today's day bucket of every series; past ``max_series`` the least busy of yesterday
    are merged per queue into ``job="__other__"``."""
    since = bucket_start(now, Resolution.day)
    series = analytics.jobs.series()
    kept = set(series)
    if len(series) > max_series:
        kept = _busiest_yesterday(analytics, series, since, max_series)
    today = analytics.jobs.merged(series, _day(since))
    exposed: dict[SeriesKey, Aggregate | None] = {}
    for key in series:
        name = key if key in kept else SeriesKey(key.app, key.queue, OTHER_JOB)
        aggregate = today.get(key)
        mine = exposed.get(name)
        if mine is None:
            exposed[name] = aggregate  # a fresh read result, ours to merge into
        elif aggregate is not None:
            mine.merge(aggregate)
    dropped = analytics.storage.read_dropped(since, since + _DAY)
    return JobsToday(
        since,
        {k: a if a is not None else Aggregate() for k, a in exposed.items()},
        len(series) - len(kept),
        dropped,
    )


def _busiest_yesterday(
    analytics: Analytics, series: list[SeriesKey], today: int, max_series: int
) -> set[SeriesKey]:
    """The ``max_series`` series that processed most yesterday (then by name).

    Yesterday is over, so the choice holds all day and no counter moves between a job's own
    series and ``__other__`` mid-day (which would read as a reset, or as a burst of jobs).
    """
    yesterday = analytics.jobs.merged(series, _day(today - _DAY))
    ranked = sorted(
        series,
        key=lambda k: (-(yesterday[k].total if k in yesterday else 0), k.app, k.queue, k.job),
    )
    return set(ranked[:max_series])


def _day(start: int) -> Window:
    # One whole UTC day: JobReader covers it with exactly one day bucket per series.
    return Window(float(start), float(start + _DAY), "day")
