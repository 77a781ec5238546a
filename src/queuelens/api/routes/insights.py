"""Series and where they are heading, for one queue or job or for all of them.

    GET /api/v1/timeseries?metric=wait_p95&queue=emails&window=6h&step=5m
    GET /api/v1/trends?queue=emails          trends of depth, throughput, p95s, failure rate
    GET /api/v1/anomalies?app=billing        anomalies of every job series in scope
    GET /api/v1/forecast?queue=emails&horizon=2h
    GET /api/v1/capacity                     M/M/c advice for every queue

Trends, forecasts and capacity come from :meth:`Insights.queue_detail` per queue, anomalies
from :meth:`Insights.job_detail` per job series: without a filter every queue (or job) is
computed, which costs one series read each.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Literal

from fastapi import APIRouter, Query

from queuelens.analytics.insights import METRICS, QueueDetail
from queuelens.analytics.summary import Stats
from queuelens.analytics.window import Window
from queuelens.api.convert import window_out
from queuelens.api.deps import ApiState, State, find_job, find_queue
from queuelens.api.errors import NOT_FOUND, ParameterError
from queuelens.api.params import (
    AppParam,
    HorizonParam,
    JobParam,
    QueueParam,
    SelectedWindow,
    StepParam,
    horizon_seconds,
    step_seconds,
)
from queuelens.api.schemas import (
    AnomaliesOut,
    AnomalyOut,
    CapacityListOut,
    CapacityOut,
    ForecastsOut,
    QueueCapacityOut,
    QueueForecastOut,
    SeriesPointOut,
    TimeseriesOut,
    TrendItemOut,
    TrendOut,
    TrendsOut,
)

__all__ = ["JOB_METRICS", "QUEUE_METRICS", "router"]

router = APIRouter(tags=["insights"], responses=NOT_FOUND)

#: metric -> (unit, how to read it from a step's figures); None: no value in that step
JOB_METRICS: dict[str, tuple[str, Callable[[Stats], float | None]]] = {
    "processed": ("jobs", lambda s: s.processed),
    "succeeded": ("jobs", lambda s: s.succeeded),
    "failed": ("jobs", lambda s: s.failed),
    "retried": ("jobs", lambda s: s.retried),
    "throughput": ("jobs/min", METRICS["throughput"]),
    "failure_rate": ("fraction", METRICS["failure_rate"]),
    "duration_avg": ("ms", lambda s: s.duration_ms.avg),
    "duration_p50": ("ms", lambda s: s.duration_ms.p50),
    "duration_p95": ("ms", METRICS["duration_p95"]),
    "duration_p99": ("ms", lambda s: s.duration_ms.p99),
    "duration_max": ("ms", lambda s: s.duration_ms.max),
    "wait_avg": ("ms", lambda s: s.wait_ms.avg),
    "wait_p50": ("ms", lambda s: s.wait_ms.p50),
    "wait_p95": ("ms", METRICS["wait_p95"]),
    "wait_p99": ("ms", lambda s: s.wait_ms.p99),
    "wait_max": ("ms", lambda s: s.wait_ms.max),
    "cpu_avg": ("ms", lambda s: s.cpu_ms.avg),
    "memory_max": ("MB", lambda s: s.memory_mb.max),
}
#: metric -> (unit, field of the queue's depth samples); the last sample of each step
QUEUE_METRICS: dict[str, tuple[str, str]] = {
    "depth": ("jobs", "pending"),
    "scheduled": ("jobs", "scheduled"),
    "reserved": ("jobs", "reserved"),
    "failed_depth": ("jobs", "failed"),
    "oldest_pending_age": ("s", "oldest_pending_age_s"),
}
#: every metric of JOB_METRICS and QUEUE_METRICS (a test keeps them equal)
MetricName = Literal[
    "processed",
    "succeeded",
    "failed",
    "retried",
    "throughput",
    "failure_rate",
    "duration_avg",
    "duration_p50",
    "duration_p95",
    "duration_p99",
    "duration_max",
    "wait_avg",
    "wait_p50",
    "wait_p95",
    "wait_p99",
    "wait_max",
    "cpu_avg",
    "memory_max",
    "depth",
    "scheduled",
    "reserved",
    "failed_depth",
    "oldest_pending_age",
]


@router.get("/timeseries")
def timeseries(
    state: State,
    window: SelectedWindow,
    metric: Annotated[
        MetricName,
        Query(description="Job figures per step, or a queue's depth samples (needs queue)."),
    ] = "throughput",
    app: AppParam = None,
    queue: QueueParam = None,
    job: JobParam = None,
    step: StepParam = None,
) -> TimeseriesOut:
    """One metric per step over the window, of everything or one app, queue or job."""
    analytics = state.analytics
    step_s = step_seconds(analytics, step, window)
    if metric in QUEUE_METRICS:
        if queue is None:
            raise ParameterError("queue", f"metric {metric!r} is per queue; pass queue=<name>")
        summary = find_queue(analytics, window, queue, app, given_in="query")
        unit, name = QUEUE_METRICS[metric]
        gauges = analytics.state.gauge_series("queue", summary.app, summary.queue, window, step_s)
        points = [SeriesPointOut(at=p.at, value=p.last(name)) for p in gauges]
        app = summary.app
    else:
        if job is not None:
            key = find_job(analytics, job, queue, app, given_in="query")
            app, queue = key.app, key.queue
        unit, read = JOB_METRICS[metric]
        series = analytics.jobs.timeseries(window, step_s, app=app, queue=queue, job=job)
        points = [SeriesPointOut(at=p.at, value=read(p.stats)) for p in series]
    return TimeseriesOut(
        metric=metric,
        unit=unit,
        window=window_out(window),
        step_s=step_s,
        app=app,
        queue=queue,
        job=job,
        points=points,
    )


def _queue_details(
    state: ApiState,
    window: Window,
    app: str | None,
    queue: str | None,
    step: str | None,
    horizon_s: float | None = None,
    depth_threshold: float | None = None,
) -> list[QueueDetail]:
    """Details of one queue (404 if unknown) or of every queue in scope."""
    analytics = state.analytics
    step_s = step_seconds(analytics, step, window)
    if queue is not None:
        summaries = [find_queue(analytics, window, queue, app, given_in="query")]
    else:
        summaries = analytics.queue_summaries(window, app)
    return [
        state.insights.queue_detail(
            window,
            s.app,
            s.queue,
            step_s=step_s,
            horizon_s=3600.0 if horizon_s is None else horizon_s,
            depth_threshold=depth_threshold,
        )
        for s in summaries
    ]


@router.get("/trends")
def trends(
    state: State,
    window: SelectedWindow,
    app: AppParam = None,
    queue: QueueParam = None,
    job: JobParam = None,
    step: StepParam = None,
) -> TrendsOut:
    """Least-squares trends with a significance test: per queue (depth, throughput, p95
    duration and wait, failure rate), or per job when ``job`` is given."""
    items: list[TrendItemOut] = []
    if job is not None:
        key = find_job(state.analytics, job, queue, app, given_in="query")
        step_s = step_seconds(state.analytics, step, window)
        detail = state.insights.job_detail(window, key.app, key.queue, key.job, step_s=step_s)
        for metric, trend in sorted(detail.trends.items()):
            items.append(
                TrendItemOut(
                    app=key.app,
                    queue=key.queue,
                    job=key.job,
                    metric=metric,
                    trend=TrendOut.model_validate(trend),
                )
            )
    else:
        for queue_detail in _queue_details(state, window, app, queue, step):
            summary = queue_detail.summary
            for metric, trend in sorted(queue_detail.trends.items()):
                items.append(
                    TrendItemOut(
                        app=summary.app,
                        queue=summary.queue,
                        job=None,
                        metric=metric,
                        trend=TrendOut.model_validate(trend),
                    )
                )
    return TrendsOut(window=window_out(window), trends=items)


@router.get("/anomalies")
def anomalies(
    state: State,
    window: SelectedWindow,
    app: AppParam = None,
    queue: QueueParam = None,
    job: JobParam = None,
    step: StepParam = None,
) -> AnomaliesOut:
    """Anomalies of the job series in scope, against each one's baseline, oldest first."""
    analytics = state.analytics
    step_s = step_seconds(analytics, step, window)
    if job is not None:
        keys = [find_job(analytics, job, queue, app, given_in="query")]
    else:
        keys = analytics.jobs.series(app, queue)
    found: list[AnomalyOut] = []
    for key in keys:
        detail = state.insights.job_detail(window, key.app, key.queue, key.job, step_s=step_s)
        found += [AnomalyOut.model_validate(a) for a in detail.anomalies]
    found.sort(key=lambda a: (a.start, a.metric, sorted(a.scope.items())))
    return AnomaliesOut(window=window_out(window), series_checked=len(keys), anomalies=found)


@router.get("/forecast")
def forecast(
    state: State,
    window: SelectedWindow,
    app: AppParam = None,
    queue: QueueParam = None,
    step: StepParam = None,
    horizon: HorizonParam = "1h",
    depth_threshold: Annotated[
        float | None,
        Query(ge=0, description="Forecast when the pending depth reaches this many jobs."),
    ] = None,
) -> ForecastsOut:
    """Depth and arrival-rate forecasts with prediction intervals, and time to drain."""
    horizon_s = horizon_seconds(horizon, step_seconds(state.analytics, step, window))
    details = _queue_details(state, window, app, queue, step, horizon_s, depth_threshold)
    return ForecastsOut(
        window=window_out(window),
        horizon_s=horizon_s,
        forecasts=[
            QueueForecastOut.model_validate(
                {
                    "app": d.summary.app,
                    "queue": d.summary.queue,
                    "depth": d.depth_forecast,
                    "arrival": d.arrival_forecast,
                    "arrival_per_s": d.arrival_per_s,
                    "time_to_drain_s": d.time_to_drain_s,
                    "time_to_threshold_s": d.time_to_threshold_s,
                    "notes": d.notes,
                }
            )
            for d in details
        ],
    )


@router.get("/capacity")
def capacity(
    state: State, window: SelectedWindow, app: AppParam = None, queue: QueueParam = None
) -> CapacityListOut:
    """How many workers each queue needs for its p95 wait target, and why."""
    details = _queue_details(state, window, app, queue, None)
    return CapacityListOut(
        window=window_out(window),
        queues=[
            QueueCapacityOut(
                app=d.summary.app,
                queue=d.summary.queue,
                advice=CapacityOut.model_validate(d.capacity),
            )
            for d in details
        ],
    )
