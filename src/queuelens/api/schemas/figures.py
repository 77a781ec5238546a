"""Answers about job figures, queues, workers, servers, the overview and health.

    QueueSummaryOut.model_validate(summary.as_dict())     # from the analytics' own dicts
    WorkerOut.model_validate(worker_view)                 # or straight from its dataclasses

Field names and meanings are those of :mod:`queuelens.analytics` (docs/analytics.md):
``processed`` counts attempts, durations are in milliseconds, rates are fractions 0..1.
"""

from __future__ import annotations

from typing import Literal

from queuelens.analytics.health import HealthStatus
from queuelens.api.schemas.base import Model, Num
from queuelens.model import WorkerState

__all__ = [
    "AlertsOut",
    "DepthOut",
    "DiskOut",
    "DistributionOut",
    "ExceptionOut",
    "HealthOut",
    "HealthzOut",
    "JobSummaryOut",
    "LoadOut",
    "MemoryOut",
    "MemoryUseOut",
    "OverviewOut",
    "PruneOut",
    "QueueSummaryOut",
    "QueueWorkersOut",
    "ReadyzOut",
    "ReasonOut",
    "ServerOut",
    "StatsOut",
    "UsageOut",
    "WindowOut",
    "WorkerOut",
    "WorkerTotalsOut",
]


# -- job figures ------------------------------------------------------------------------------


class WindowOut(Model):
    """``[start, end)`` in unix seconds; ``label`` is the name asked for, or ``custom``."""

    label: str
    start: float
    end: float
    duration_s: float


class DistributionOut(Model):
    """Milliseconds; percentiles within the histogram accuracy, ``max`` exact."""

    avg: Num = None
    p50: Num = None
    p90: Num = None
    p95: Num = None
    p99: Num = None
    max: Num = None
    count: int = 0


class UsageOut(Model):
    avg: Num = None
    p95: Num = None
    count: int = 0


class MemoryOut(Model):
    avg: Num = None
    max: Num = None
    count: int = 0


class ExceptionOut(Model):
    type: str
    count: int
    last_message: str
    last_seen: float


class StatsOut(Model):
    """Counts, rates and distributions of a set of jobs over a window."""

    processed: int
    succeeded: int
    failed: int
    retried: int
    timed_out: int
    revoked: int
    rejected: int
    failure_rate: float
    retry_rate: float
    throughput_per_min: float
    duration_ms: DistributionOut
    wait_ms: DistributionOut
    cpu_ms: UsageOut
    memory_mb: MemoryOut
    memory_delta_mb: MemoryOut
    exceptions: list[ExceptionOut]


class ReasonOut(Model):
    code: str
    severity: HealthStatus
    message: str
    value: Num
    threshold: Num
    unit: str


class HealthOut(Model):
    score: int
    status: HealthStatus
    reasons: list[ReasonOut]


class DepthOut(Model):
    """The newest probe sample; null where the broker has no such count."""

    pending: Num = None
    scheduled: Num = None
    reserved: Num = None
    failed: Num = None


class QueueWorkersOut(Model):
    total: int
    busy: int


class QueueSummaryOut(StatsOut):
    app: str
    queue: str
    framework: str
    depth: DepthOut
    oldest_pending_age_s: Num
    depth_sampled_at: Num
    workers: QueueWorkersOut
    health: HealthOut
    baseline_failure_rate: Num


class JobSummaryOut(StatsOut):
    app: str
    queue: str
    job: str


# -- workers and servers ----------------------------------------------------------------------


class WorkerOut(Model):
    id: str
    app: str
    framework: str
    hostname: str
    pid: int
    name: str
    queues: list[str]
    concurrency: int
    busy_slots: int
    state: WorkerState
    current_jobs: list[str]
    started_at: float
    last_heartbeat_at: float
    heartbeat_age_s: float
    processed: int
    failed: int
    busy_ratio: Num
    rss_mb: Num
    cpu_percent: Num


class LoadOut(Model):
    avg_1m: Num
    avg_5m: Num
    avg_15m: Num


class MemoryUseOut(Model):
    total_mb: Num
    used_mb: Num
    percent: Num


class DiskOut(Model):
    mount: str
    total_gb: Num
    used_gb: Num
    percent: Num


class ServerOut(Model):
    hostname: str
    app: str
    sampled_at: float
    sample_age_s: float
    cpu_percent: Num
    cpu_count: Num
    load: LoadOut
    memory: MemoryUseOut
    disks: list[DiskOut]
    #: live workers on the host
    workers: int
    health: HealthOut
    #: every field of the newest sample
    values: dict[str, float]


# -- overview ---------------------------------------------------------------------------------


class WorkerTotalsOut(Model):
    total: int
    busy: int
    idle: int
    stale: int
    dead: int
    stopped: int


class AlertsOut(Model):
    """Alert rules are not evaluated by this version: ``enabled`` is false, ``firing`` 0."""

    firing: int
    enabled: bool


class OverviewOut(Model):
    window: WindowOut
    generated_at: float
    totals: StatsOut
    queues: list[QueueSummaryOut]
    workers: WorkerTotalsOut
    #: health of the worker fleet (stale, dead, no live worker, busy ratio)
    workers_health: HealthOut
    servers: list[ServerOut]
    alerts: AlertsOut
    #: job outcomes recorders had to drop in the window, per app
    dropped: dict[str, int]


# -- health and maintenance -------------------------------------------------------------------


class HealthzOut(Model):
    status: Literal["ok"]


class ReadyzOut(Model):
    """Ready when the storage answers. The ages tell how fresh the data is: the newest flush
    that carried job outcomes, and the newest worker heartbeat."""

    status: Literal["ready", "unavailable"]
    storage_reachable: bool
    #: why the storage is unreachable, in general terms (details go to the server log)
    detail: str | None = None
    newest_flush_at: Num = None
    newest_flush_age_s: Num = None
    newest_heartbeat_at: Num = None
    newest_heartbeat_age_s: Num = None


class PruneOut(Model):
    #: rows or keys removed, per kind of data
    removed: dict[str, int]
    total: int
