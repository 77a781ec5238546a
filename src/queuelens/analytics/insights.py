"""Where a queue or job is heading: trends, baselines, anomalies, forecasts, capacity.

    insights = Insights(Analytics(storage))
    detail = insights.queue_detail(window, "billing", "emails")
    detail.trends["depth"].direction, detail.time_to_drain_s, detail.capacity.recommended_workers
    job = insights.job_detail(window, "billing", "emails", "app.tasks.send_mail")
    [(a.metric, a.start, a.observed) for a in job.anomalies]

Metrics of a series, per step: ``throughput`` (jobs/min), ``failure_rate`` (0..1),
``duration_p95`` and ``wait_p95`` (ms), and for a queue ``depth`` (pending jobs, from the
probe's samples). Arrival rate is what was processed plus what the backlog grew by:
``processed/s + Δpending/Δt``, since brokers do not count enqueues for us.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from queuelens.analytics.anomaly import Anomaly, change_point_anomalies, detect_anomalies
from queuelens.analytics.baseline import Baseline, ExpectedRange, fit_baseline
from queuelens.analytics.capacity import CapacityAdvice, advise
from queuelens.analytics.forecast import Forecast, forecast, time_to_drain, time_to_threshold
from queuelens.analytics.overview import Analytics, QueueSummary
from queuelens.analytics.query import Point
from queuelens.analytics.state import GaugePoint
from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.trend import Trend, fit_trend
from queuelens.analytics.window import Window, parse_step, resolution_for_step
from queuelens.model import bucket_start

__all__ = [
    "METRICS",
    "CapacitySettings",
    "Insights",
    "JobDetail",
    "QueueDetail",
    "capacity_settings",
]

#: metric name -> how to read it from a step's figures (None: no value in that step)
METRICS: dict[str, Callable[[Stats], float | None]] = {
    "throughput": lambda s: s.throughput_per_min,
    "failure_rate": lambda s: s.failure_rate if s.processed else None,
    "duration_p95": lambda s: s.duration_ms.p95,
    "wait_p95": lambda s: s.wait_ms.p95,
}
#: metrics searched for step changes (on a log scale: "twice as slow" is the same step at
#: any level); throughput and failure rate follow daily cycles that would read as steps
CHANGE_POINT_METRICS = ("duration_p95", "wait_p95")
#: how far back a baseline looks, at most (the retention of the step's buckets may be less)
BASELINE_LOOKBACK_S = 28 * 86400


@dataclass(frozen=True, slots=True)
class CapacitySettings:
    """The ``[capacity]`` table of ``queuelens.toml``."""

    #: price of one CPU-hour, for the cost estimate (None: no estimate)
    price_per_cpu_hour: float | None = None
    #: how soon an existing backlog should be gone (None: max(wait target, 10 min))
    drain_within_s: float | None = None
    #: the wait quantile the target applies to
    quantile: float = 0.95


def capacity_settings(
    table: Mapping[str, Any] | None, where: str = "[capacity]"
) -> CapacitySettings:
    """Parse ``[capacity]``; ConfigError names the bad key and what is accepted."""
    from queuelens.config import ConfigError, parse_duration

    if not table:
        return CapacitySettings()
    accepted = {"price_per_cpu_hour", "drain_within", "quantile"}
    unknown = set(table) - accepted
    if unknown:
        raise ConfigError(
            f"unknown key {sorted(unknown)[0]!r} in {where}; "
            f"known keys: {', '.join(sorted(accepted))}"
        )
    price = table.get("price_per_cpu_hour")
    if price is not None and (
        isinstance(price, bool) or not isinstance(price, int | float) or price < 0
    ):
        raise ConfigError(
            f"price_per_cpu_hour = {price!r} in {where} is invalid: "
            "expected a number >= 0, e.g. 0.04"
        )
    quantile = table.get("quantile", 0.95)
    if isinstance(quantile, bool) or not isinstance(quantile, int | float) or not 0 < quantile < 1:
        raise ConfigError(
            f"quantile = {quantile!r} in {where} is invalid: expected a number in (0, 1), e.g. 0.95"
        )
    drain: float | None = None
    if "drain_within" in table:
        try:
            drain = parse_duration(table["drain_within"])
        except ValueError as exc:
            raise ConfigError(
                f"drain_within = {table['drain_within']!r} in {where} is invalid: expected {exc}"
            ) from None
    return CapacitySettings(None if price is None else float(price), drain, float(quantile))


@dataclass(frozen=True, slots=True)
class QueueDetail:
    summary: QueueSummary
    points: list[Point]
    depth_points: list[GaugePoint]
    trends: dict[str, Trend]
    depth_forecast: Forecast | None
    arrival_forecast: Forecast | None
    arrival_per_s: float
    #: None: jobs arrive at least as fast as they are served (or nothing is known)
    time_to_drain_s: float | None
    #: seconds until the depth forecast reaches ``depth_threshold`` (None: not in the horizon)
    time_to_threshold_s: float | None
    capacity: CapacityAdvice
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class JobDetail:
    summary: JobSummary | None
    points: list[Point]
    trends: dict[str, Trend]
    baselines: dict[str, Baseline]
    #: the baseline's expected range at each step, per metric (None: no baseline yet)
    bands: dict[str, list[ExpectedRange | None]]
    anomalies: list[Anomaly]


class Insights:
    """Trends, baselines, anomalies, forecasts and capacity for one queue or job."""

    def __init__(self, analytics: Analytics, capacity: CapacitySettings | None = None) -> None:
        self.analytics = analytics
        self.capacity = capacity or CapacitySettings()

    def queue_detail(
        self,
        window: Window,
        app: str,
        queue: str,
        *,
        step_s: int | None = None,
        horizon_s: float = 3600.0,
        depth_threshold: float | None = None,
    ) -> QueueDetail:
        analytics = self.analytics
        step = parse_step(step_s, window)
        summaries = analytics.queue_summaries(window, app, queue)
        summary = summaries[0] if summaries else _empty_summary(app, queue, analytics, window)
        points = analytics.jobs.timeseries(window, step, app=app, queue=queue)
        step = points[0].step_s if points else step
        depth_points = analytics.state.gauge_series("queue", app, queue, window, step)
        series = {name: _values(points, read) for name, read in METRICS.items()}
        series["depth"] = [(p.at, v) for p in depth_points if (v := p.last("pending")) is not None]
        trends = {
            name: fit_trend(values, horizon_s=horizon_s)
            for name, values in series.items()
            if values
        }
        notes: list[str] = []
        depth_fc = _forecast(series["depth"], horizon_s, step, notes, "depth")
        arrivals = _arrivals(points, depth_points)
        arrival_fc = _forecast(arrivals, horizon_s, step, notes, "arrival rate")
        arrival_per_s = _window_arrivals(summary.stats, series["depth"], window)
        pending = summary.depth.pending if summary.depth and summary.depth.pending else 0.0
        slots = sum(w.concurrency for w in analytics.workers(app, queue=queue) if w.alive)
        service_s = (summary.stats.duration_ms.avg or 0.0) / 1000.0 or None
        drain = None
        if service_s and slots:
            drain = time_to_drain(pending, arrival_per_s, slots / service_s)
        elif pending == 0:
            drain = 0.0
        to_threshold = None
        if depth_fc is not None and depth_threshold is not None:
            to_threshold = time_to_threshold(depth_fc, depth_threshold)
        thresholds = analytics.thresholds.for_queue(queue)
        wait = summary.stats.wait_ms
        capacity = advise(
            arrival_per_s=arrival_per_s,
            service_time_s=service_s,
            current_workers=slots,
            target_wait_s=thresholds.wait_p95_target_s,
            quantile=self.capacity.quantile,
            backlog=round(pending),
            drain_within_s=self.capacity.drain_within_s,
            observed_wait_p95_s=None if wait.p95 is None else wait.p95 / 1000.0,
            observed_wait_avg_s=None if wait.avg is None else wait.avg / 1000.0,
            observed_depth=summary.depth.pending if summary.depth else None,
            cpu_s_per_job=None
            if summary.stats.cpu_ms.avg is None
            else summary.stats.cpu_ms.avg / 1000.0,
            price_per_cpu_hour=self.capacity.price_per_cpu_hour,
            window_s=window.duration_s,
        )
        return QueueDetail(
            summary,
            points,
            depth_points,
            trends,
            depth_fc,
            arrival_fc,
            arrival_per_s,
            drain,
            to_threshold,
            capacity,
            notes,
        )

    def job_detail(
        self,
        window: Window,
        app: str,
        queue: str,
        job: str,
        *,
        step_s: int | None = None,
    ) -> JobDetail:
        """Figures per step, trends, the baseline of each metric from the lookback before the
        window, and anomalies (robust z and IQR against it, plus change points)."""
        jobs = self.analytics.jobs
        summaries = jobs.job_summaries(window, app, queue, job)
        points = jobs.timeseries(window, parse_step(step_s, window), app=app, queue=queue, job=job)
        step = points[0].step_s if points else 60
        resolution = resolution_for_step(step)
        # The history must lie where buckets of this step still exist, or the step would be
        # raised to a coarser resolution than the window's.
        kept_since = jobs.clock() - jobs.retention.for_resolution(resolution) + step
        history_start = bucket_start(max(kept_since, window.start - BASELINE_LOOKBACK_S), step)
        history: list[Point] = []
        if history_start + step <= window.start:
            history_window = Window(float(history_start), window.start, "baseline")
            history = jobs.timeseries(history_window, step, app=app, queue=queue, job=job)
            # steps before the job first ran are not zero throughput: it did not exist yet
            first = next((i for i, p in enumerate(history) if p.stats.processed), len(history))
            history = history[first:]
        scope = {"app": app, "queue": queue, "job": job}
        trends: dict[str, Trend] = {}
        baselines: dict[str, Baseline] = {}
        bands: dict[str, list[ExpectedRange | None]] = {}
        anomalies: list[Anomaly] = []
        for name, read in METRICS.items():
            recent = _values(points, read)
            past = _values(history, read)
            if recent:
                trends[name] = fit_trend(recent)
            if past:
                baseline = fit_baseline(past, step_s=step)
                baselines[name] = baseline
                bands[name] = [baseline.expected(p.at) for p in points]
            anomalies += detect_anomalies(past, recent, metric=name, scope=scope, step_s=step)
            if name in CHANGE_POINT_METRICS:  # steps in latency: a deploy made a job slower
                anomalies += change_point_anomalies(
                    past + recent, metric=name, scope=scope, log_scale=True
                )
        anomalies = [
            a for a in anomalies if a.start >= window.start or (a.end or a.start) >= window.start
        ]
        anomalies.sort(key=lambda a: (a.start, a.metric))
        return JobDetail(
            summaries[0] if summaries else None, points, trends, baselines, bands, anomalies
        )


def _values(
    points: Sequence[Point], read: Callable[[Stats], float | None]
) -> list[tuple[float, float]]:
    out = []
    for point in points:
        value = read(point.stats)
        if value is not None and math.isfinite(value):
            out.append((float(point.at), value))
    return out


def _arrivals(points: Sequence[Point], depth: Sequence[GaugePoint]) -> list[tuple[float, float]]:
    """Arrivals per second in each step: processed plus the growth of the backlog."""
    pending = {p.at: v for p in depth if (v := p.last("pending")) is not None}
    out = []
    previous: float | None = None
    for point in points:
        now = pending.get(point.at)
        grew = (now - previous) if now is not None and previous is not None else 0.0
        out.append((float(point.at), max(0.0, (point.stats.processed + grew) / point.step_s)))
        previous = now if now is not None else previous
    return out


def _window_arrivals(stats: Stats, depth: Sequence[tuple[float, float]], window: Window) -> float:
    grew = depth[-1][1] - depth[0][1] if len(depth) >= 2 else 0.0
    return max(0.0, (stats.processed + grew) / window.duration_s)


def _forecast(
    values: list[tuple[float, float]], horizon_s: float, step: int, notes: list[str], what: str
) -> Forecast | None:
    if len(values) < 2:
        notes.append(f"no {what} forecast: fewer than 2 points in the window")
        return None
    result = forecast(values, horizon_s=horizon_s, step_s=step, method="holt")
    return result


def _empty_summary(app: str, queue: str, analytics: Analytics, window: Window) -> QueueSummary:
    from queuelens.analytics.health import Health, HealthStatus

    return QueueSummary(app, queue, "", None, Stats(), 0, 0, Health(0, HealthStatus.unknown))
