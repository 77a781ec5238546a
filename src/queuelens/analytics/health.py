"""Health of queues, worker fleets and servers: a score, a status and the reasons for both.

    thresholds = HealthThresholds()                         # or health_thresholds(toml["health"])
    health = queue_health(QueueInputs(depth=depth, stats=stats, live_workers=3), thresholds)
    health.status, health.score                             # 'warning', 62
    [r.message for r in health.reasons]                     # ['oldest pending job is 9m12s old …']

Every reason carries the measured value and the threshold it crossed, so a user can see why
and a test can check that a reason appears exactly when its input crosses its threshold.
Status is the worst severity among the reasons; the score starts at 100 and loses a penalty
per reason (more the further past the threshold), capped at 79 for a warning and 49 for a
critical status so that score and status never disagree.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import IntEnum, StrEnum
from typing import Any

from queuelens.analytics.state import QueueDepth, ServerView, WorkerView
from queuelens.analytics.summary import Stats
from queuelens.analytics.thresholds import HealthThresholds, health_thresholds
from queuelens.model import WorkerState

__all__ = [
    "Health",
    "HealthStatus",
    "HealthThresholds",
    "QueueInputs",
    "Reason",
    "fleet_health",
    "health_thresholds",
    "queue_health",
    "server_health",
]


class HealthStatus(StrEnum):
    #: nothing crossed a threshold
    healthy = "healthy"
    #: something needs a look
    warning = "warning"
    #: something needs action now
    critical = "critical"
    #: no input to judge by (no jobs, no samples, no workers)
    unknown = "unknown"


class _Severity(IntEnum):
    warning = 1
    critical = 2


@dataclass(frozen=True, slots=True)
class Reason:
    """One threshold crossed: what, by how much, and how bad."""

    #: stable identifier, e.g. ``oldest_pending_age``
    code: str
    severity: HealthStatus
    message: str
    value: float
    threshold: float
    unit: str = ""


@dataclass(frozen=True, slots=True)
class Health:
    score: int
    status: HealthStatus
    reasons: tuple[Reason, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        return {
            "score": self.score,
            "status": str(self.status),
            "reasons": [
                {
                    "code": r.code,
                    "severity": str(r.severity),
                    "message": r.message,
                    "value": r.value,
                    "threshold": r.threshold,
                    "unit": r.unit,
                }
                for r in self.reasons
            ],
        }


def _penalty(severity: _Severity, value: float, threshold: float) -> float:
    over = value / threshold - 1.0 if threshold > 0 else 1.0
    base = 15.0 if severity is _Severity.warning else 40.0
    return base + min(10.0, 10.0 * max(over, 0.0))


class _Judge:
    def __init__(self) -> None:
        self.reasons: list[Reason] = []
        self.worst: _Severity | None = None
        self.penalty = 0.0

    def check(
        self,
        code: str,
        value: float | None,
        warning: float,
        critical: float,
        message: str,
        unit: str = "",
    ) -> None:
        """Add a reason if ``value`` reaches ``warning`` (or ``critical``); 0 disables."""
        if value is None:
            return
        if critical > 0 and value >= critical:
            self.add(code, _Severity.critical, message, value, critical, unit)
        elif warning > 0 and value >= warning:
            self.add(code, _Severity.warning, message, value, warning, unit)

    def add(
        self,
        code: str,
        severity: _Severity,
        message: str,
        value: float,
        threshold: float,
        unit: str = "",
    ) -> None:
        status = HealthStatus.warning if severity is _Severity.warning else HealthStatus.critical
        text = message.format(value=_fmt(value, unit), threshold=_fmt(threshold, unit))
        self.reasons.append(Reason(code, status, text, value, threshold, unit))
        self.penalty += _penalty(severity, value, threshold)
        self.worst = severity if self.worst is None else max(self.worst, severity)

    def result(self, known: bool = True) -> Health:
        if self.worst is None:
            return Health(100, HealthStatus.healthy) if known else Health(0, HealthStatus.unknown)
        cap = 79 if self.worst is _Severity.warning else 49
        status = HealthStatus.warning if self.worst is _Severity.warning else HealthStatus.critical
        return Health(max(0, min(cap, round(100 - self.penalty))), status, tuple(self.reasons))


def _fmt(value: float, unit: str) -> str:
    if unit == "s":
        if value >= 3600:
            return f"{value / 3600:.1f}h"
        if value >= 60:
            return f"{int(value // 60)}m{int(value % 60):02d}s"
        return f"{value:.1f}s"
    if unit == "ratio":
        return f"{value * 100:.1f}%"
    if unit == "%":
        return f"{value:.0f}%"
    return f"{value:,.2f}".rstrip("0").rstrip(".")


@dataclass(frozen=True, slots=True)
class QueueInputs:
    """What a queue is judged by; None means not known (and is not held against it)."""

    queue: str = ""
    depth: QueueDepth | None = None
    stats: Stats | None = None
    #: failure rate of the same queue over a longer reference window (e.g. 7 days)
    baseline_failure_rate: float | None = None
    #: workers alive and serving this queue; None when no worker reports heartbeats
    live_workers: int | None = None


def queue_health(inputs: QueueInputs, thresholds: HealthThresholds) -> Health:
    """Oldest pending age, wait p95, failure rate (absolute and against its baseline),
    pending depth, jobs waiting with no live worker, and a silent probe."""
    t = thresholds.for_queue(inputs.queue)
    judge = _Judge()
    depth, stats = inputs.depth, inputs.stats
    if depth is not None:
        judge.check(
            "oldest_pending_age",
            depth.oldest_pending_age_s,
            t.oldest_pending_age_warning_s,
            t.oldest_pending_age_critical_s,
            "oldest pending job is {value} old (threshold {threshold})",
            "s",
        )
        judge.check(
            "pending",
            depth.pending,
            t.pending_warning,
            t.pending_critical,
            "{value} jobs pending (threshold {threshold})",
        )
        if depth.sample_age_s >= t.sample_stale_s > 0:
            judge.add(
                "depth_sample_stale",
                _Severity.warning,
                "no queue depth sample for {value} (threshold {threshold}); is the probe running?",
                depth.sample_age_s,
                t.sample_stale_s,
                "s",
            )
        if inputs.live_workers == 0 and depth.waiting > 0:
            judge.add(
                "no_live_worker",
                _Severity.critical,
                "{value} jobs waiting and no live worker serves this queue",
                depth.waiting,
                0.0,
            )
    if stats is not None and stats.wait_ms.p95 is not None:
        target = t.wait_p95_target_s
        judge.check(
            "wait_p95",
            stats.wait_ms.p95 / 1000.0,
            target,
            target * t.wait_p95_critical_factor,
            "p95 wait is {value} (target {threshold})",
            "s",
        )
    if stats is not None and stats.processed >= t.min_jobs:
        _failure_rate(judge, stats.failure_rate, inputs.baseline_failure_rate, t)
    known = depth is not None or (stats is not None and stats.processed > 0)
    return judge.result(known)


def _failure_rate(judge: _Judge, rate: float, baseline: float | None, t: HealthThresholds) -> None:
    before = len(judge.reasons)
    judge.check(
        "failure_rate",
        rate,
        t.failure_rate_warning,
        t.failure_rate_critical,
        "failure rate is {value} (threshold {threshold})",
        "ratio",
    )
    if baseline is None or len(judge.reasons) > before:
        return  # the absolute threshold already said it
    warning = max(
        baseline * t.failure_rate_baseline_factor, baseline + t.failure_rate_baseline_margin
    )
    critical = max(
        warning * t.failure_rate_baseline_factor, warning + t.failure_rate_baseline_margin
    )
    judge.check(
        "failure_rate_vs_baseline",
        rate,
        warning,
        critical,
        f"failure rate is {{value}}, above its usual {_fmt(baseline, 'ratio')} "
        "(threshold {threshold})",
        "ratio",
    )


def fleet_health(workers: Sequence[WorkerView], thresholds: HealthThresholds, now: float) -> Health:
    """Stale workers, workers that died recently, no live worker at all, and saturation."""
    judge = _Judge()
    live = [w for w in workers if w.alive]
    stale = [w for w in workers if w.state is WorkerState.stale]
    dead = [
        w
        for w in workers
        if w.state is WorkerState.dead
        and now - w.last_heartbeat_at <= thresholds.dead_worker_recent_s
    ]
    if stale:
        judge.add(
            "stale_workers",
            _Severity.warning,
            "{value} workers missed their heartbeats: " + _names(stale),
            len(stale),
            1,
        )
    if dead:
        judge.add(
            "dead_workers",
            _Severity.warning,
            "{value} workers stopped heartbeating without shutting down: " + _names(dead),
            len(dead),
            1,
        )
    if workers and not live and (stale or dead):
        judge.add("no_live_worker", _Severity.critical, "no worker is alive", 0.0, 1.0)
    # Utilisation since the workers started (busy slot-seconds over all slot-seconds), not
    # the busy slots of this instant, which flap with every job.
    measured = [w for w in live if w.busy_ratio is not None]
    slots = sum(w.concurrency for w in measured)
    if slots:
        busy = sum((w.busy_ratio or 0.0) * w.concurrency for w in measured) / slots
        judge.check(
            "busy_ratio",
            busy,
            thresholds.busy_ratio_warning,
            0.0,
            "{value} of worker slots are busy (threshold {threshold}); add workers?",
            "ratio",
        )
    return judge.result(known=bool(workers))


def _names(workers: Sequence[WorkerView], limit: int = 3) -> str:
    names = ", ".join(f"{w.hostname}:{w.pid}" for w in workers[:limit])
    return names + (f" and {len(workers) - limit} more" if len(workers) > limit else "")


def server_health(server: ServerView, thresholds: HealthThresholds) -> Health:
    """CPU, memory, every disk, load per CPU, and a silent sampler."""
    t = thresholds
    judge = _Judge()
    judge.check(
        "cpu",
        server.cpu_percent,
        t.cpu_percent_warning,
        t.cpu_percent_critical,
        "CPU at {value} (threshold {threshold})",
        "%",
    )
    judge.check(
        "memory",
        server.memory_percent,
        t.memory_percent_warning,
        t.memory_percent_critical,
        "memory at {value} (threshold {threshold})",
        "%",
    )
    for disk in server.disks:
        judge.check(
            "disk",
            disk.percent,
            t.disk_percent_warning,
            t.disk_percent_critical,
            f"disk {disk.mount} at {{value}} (threshold {{threshold}})",
            "%",
        )
    load_1 = server.load[0]
    if load_1 is not None and server.cpu_count:
        judge.check(
            "load",
            load_1 / server.cpu_count,
            t.load_per_cpu_warning,
            t.load_per_cpu_critical,
            "load is {value} per CPU (threshold {threshold})",
        )
    if server.sample_age_s >= t.sample_stale_s > 0:
        judge.add(
            "sample_stale",
            _Severity.warning,
            "no sample from this host for {value} (threshold {threshold})",
            server.sample_age_s,
            t.sample_stale_s,
            "s",
        )
    return judge.result()
