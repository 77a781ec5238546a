"""Answers about where queues and jobs are heading: series, trends, forecasts, anomalies,
capacity. Each mirrors a dataclass of :mod:`queuelens.analytics` field for field."""

from __future__ import annotations

from typing import Literal

from queuelens.analytics.trend import Direction
from queuelens.api.schemas.base import Model, Num
from queuelens.api.schemas.figures import JobSummaryOut, QueueSummaryOut, StatsOut, WindowOut

__all__ = [
    "AnomaliesOut",
    "AnomalyOut",
    "BaselineOut",
    "CapacityListOut",
    "CapacityOut",
    "ExpectedRangeOut",
    "ForecastOut",
    "ForecastPointOut",
    "ForecastsOut",
    "GaugeFieldOut",
    "GaugePointOut",
    "JobDetailOut",
    "LittlesLawOut",
    "PointOut",
    "QueueCapacityOut",
    "QueueDetailOut",
    "QueueForecastOut",
    "SeriesPointOut",
    "TimeseriesOut",
    "TrendItemOut",
    "TrendOut",
    "TrendsOut",
    "WaitPredictionOut",
    "WorkerRequirementOut",
]


class ForecastPointOut(Model):
    at_s: float
    value: Num
    low: Num
    high: Num


class TrendOut(Model):
    """A least-squares line through the points and a test of its slope."""

    n: int
    t0_s: Num
    intercept: Num
    slope_per_s: Num
    slope_per_hour: Num
    r_squared: Num
    p_value: Num
    direction: Direction
    alpha: float
    residual_sd: Num
    forecast: ForecastPointOut | None


class ForecastOut(Model):
    method: Literal["holt", "ets"]
    step_s: float
    level: float
    last_at_s: float
    last_value: Num
    points: list[ForecastPointOut]
    note: str | None


class WaitPredictionOut(Model):
    workers: int
    utilisation: Num
    wait_probability: Num
    wait_mean_s: Num
    wait_quantile_s: Num
    quantile: float
    stable: bool


class WorkerRequirementOut(Model):
    workers: int | None
    wait_workers: int | None
    drain_workers: int
    drain_within_s: float
    max_workers: int
    achievable: bool


class LittlesLawOut(Model):
    wait_avg_s: Num
    expected_depth: Num
    observed_depth: Num
    ratio: Num
    consistent: bool


class CapacityOut(Model):
    """M/M/c advice; null where a figure needs a service time that is not known."""

    arrival_per_s: Num
    service_time_s: Num
    current_workers: int
    target_wait_s: Num
    quantile: float
    backlog: int
    offered_load_erlangs: Num
    utilisation: Num
    recommended_workers: int | None
    workers_delta: int | None
    requirement: WorkerRequirementOut | None
    current: WaitPredictionOut | None
    recommended: WaitPredictionOut | None
    jobs_per_worker_second: Num
    capacity_jobs_per_worker_second: Num
    busy_ratio: Num
    littles_law: LittlesLawOut | None
    cpu_seconds_per_hour: Num
    cost_per_hour: Num
    cost_per_30d: Num
    reasons: list[str]


class AnomalyOut(Model):
    metric: str
    scope: dict[str, str]
    expected_low: Num
    expected_high: Num
    expected: Num
    observed: Num
    score: Num
    method: str
    start: float
    end: Num


class ExpectedRangeOut(Model):
    center: Num
    low: Num
    high: Num
    spread: Num
    confidence: float
    seasonal: bool


class BaselineOut(Model):
    n: int
    step_s: float
    band_k: float
    center: Num
    spread: Num
    confidence: float
    ewma_level: Num
    ewma_half_life_s: Num
    seasonal: bool
    first_s: Num
    last_s: Num


class PointOut(StatsOut):
    """One step ``[at, at + step_s)`` of a time series."""

    at: int
    step_s: int


class GaugeFieldOut(Model):
    last: Num
    min: Num
    max: Num
    avg: Num
    count: int


class GaugePointOut(Model):
    at: int
    step_s: int
    fields: dict[str, GaugeFieldOut]


class QueueDetailOut(QueueSummaryOut):
    """The queue's summary plus its time series, trends, forecasts and capacity advice."""

    window: WindowOut
    points: list[PointOut]
    depth_points: list[GaugePointOut]
    trends: dict[str, TrendOut]
    depth_forecast: ForecastOut | None
    arrival_forecast: ForecastOut | None
    arrival_per_s: Num
    time_to_drain_s: Num
    time_to_threshold_s: Num
    capacity: CapacityOut
    notes: list[str]


class JobDetailOut(JobSummaryOut):
    """The job's summary plus its time series, trends, baselines and anomalies."""

    window: WindowOut
    points: list[PointOut]
    trends: dict[str, TrendOut]
    baselines: dict[str, BaselineOut]
    #: the baseline's expected range at each point, per metric
    bands: dict[str, list[ExpectedRangeOut | None]]
    anomalies: list[AnomalyOut]


class SeriesPointOut(Model):
    at: int
    value: Num


class TimeseriesOut(Model):
    metric: str
    unit: str
    window: WindowOut
    step_s: int
    app: str | None
    queue: str | None
    job: str | None
    points: list[SeriesPointOut]


class TrendItemOut(Model):
    app: str
    queue: str
    job: str | None
    metric: str
    trend: TrendOut


class TrendsOut(Model):
    window: WindowOut
    trends: list[TrendItemOut]


class AnomaliesOut(Model):
    window: WindowOut
    #: job series whose history was searched
    series_checked: int
    anomalies: list[AnomalyOut]


class QueueForecastOut(Model):
    app: str
    queue: str
    depth: ForecastOut | None
    arrival: ForecastOut | None
    arrival_per_s: Num
    #: null: jobs arrive at least as fast as they are served, or nothing is known
    time_to_drain_s: Num
    time_to_threshold_s: Num
    notes: list[str]


class ForecastsOut(Model):
    window: WindowOut
    horizon_s: float
    forecasts: list[QueueForecastOut]


class QueueCapacityOut(Model):
    app: str
    queue: str
    advice: CapacityOut


class CapacityListOut(Model):
    window: WindowOut
    queues: list[QueueCapacityOut]
