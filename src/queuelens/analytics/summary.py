"""What users read about a set of jobs over a window: counts, rates, percentiles, exceptions.

    merged = Aggregate(); merged.merge(bucket_a); merged.merge(bucket_b)
    stats = Stats.of(merged, minutes=60)
    stats.failure_rate, stats.throughput_per_min, stats.duration_ms.p95

Every surface (API, CLI, dashboard, alerts, Prometheus) reads these, so they say the same.
Definitions, fixed here once:

- ``processed``: every attempt that ended, whatever its status (a job tried twice counts 2).
- ``failed``: attempts that ended in an error and will not be retried, plus time-outs.
- ``failure_rate``: ``failed / processed`` (0 when nothing was processed), a fraction 0..1.
- ``throughput_per_min``: ``processed`` over the window's minutes, from exact counters (never
  from a sample).
- durations and waits in milliseconds; percentiles from the merged histogram, within its
  relative accuracy; ``max`` is exact.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from queuelens.model import Aggregate, JobStatus, SeriesKey
from queuelens.sketch import Sketch

__all__ = [
    "Distribution",
    "ExceptionSummary",
    "JobSummary",
    "Memory",
    "Stats",
    "Usage",
]

_QS = (0.5, 0.9, 0.95, 0.99)


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1000.0


@dataclass(frozen=True, slots=True)
class Distribution:
    """Average, percentiles and maximum of a duration, in milliseconds (None: no data)."""

    avg: float | None = None
    p50: float | None = None
    p90: float | None = None
    p95: float | None = None
    p99: float | None = None
    max: float | None = None
    #: how many values the figures are computed from
    count: int = 0

    @classmethod
    def of(cls, sketch: Sketch) -> Distribution:
        if sketch.count == 0:
            return cls()
        p50, p90, p95, p99 = (_ms(v) for v in sketch.quantiles(_QS))
        return cls(_ms(sketch.avg), p50, p90, p95, p99, _ms(sketch.max), sketch.count)


@dataclass(frozen=True, slots=True)
class Usage:
    """CPU time per job in milliseconds."""

    avg: float | None = None
    p95: float | None = None
    count: int = 0

    @classmethod
    def of(cls, sketch: Sketch) -> Usage:
        if sketch.count == 0:
            return cls()
        return cls(_ms(sketch.avg), _ms(sketch.quantile(0.95)), sketch.count)


@dataclass(frozen=True, slots=True)
class Memory:
    """Peak memory of a job (or its increase over the job's start), in megabytes."""

    avg: float | None = None
    max: float | None = None
    count: int = 0


@dataclass(frozen=True, slots=True)
class ExceptionSummary:
    type: str
    count: int
    last_message: str
    #: unix seconds
    last_seen: float


@dataclass(frozen=True, slots=True)
class Stats:
    """Counts, rates and distributions of one set of jobs over one window."""

    processed: int = 0
    succeeded: int = 0
    failed: int = 0
    retried: int = 0
    timed_out: int = 0
    revoked: int = 0
    rejected: int = 0
    failure_rate: float = 0.0
    retry_rate: float = 0.0
    throughput_per_min: float = 0.0
    duration_ms: Distribution = field(default_factory=Distribution)
    wait_ms: Distribution = field(default_factory=Distribution)
    cpu_ms: Usage = field(default_factory=Usage)
    memory_mb: Memory = field(default_factory=Memory)
    memory_delta_mb: Memory = field(default_factory=Memory)
    #: by count, most frequent first
    exceptions: tuple[ExceptionSummary, ...] = ()

    @classmethod
    def of(cls, aggregate: Aggregate, minutes: float, top_exceptions: int = 10) -> Stats:
        """Figures of ``aggregate``, which covers ``minutes`` of wall-clock time."""
        processed = aggregate.total
        failed = aggregate.count(JobStatus.failed) + aggregate.count(JobStatus.timed_out)
        retried = aggregate.count(JobStatus.retried)
        exceptions = sorted(
            aggregate.exceptions.items(), key=lambda item: (-item[1].count, item[0])
        )[:top_exceptions]
        peak, delta = aggregate.memory_peak, aggregate.memory_delta
        return cls(
            processed=processed,
            succeeded=aggregate.count(JobStatus.succeeded),
            failed=failed,
            retried=retried,
            timed_out=aggregate.count(JobStatus.timed_out),
            revoked=aggregate.count(JobStatus.revoked),
            rejected=aggregate.count(JobStatus.rejected),
            failure_rate=failed / processed if processed else 0.0,
            retry_rate=retried / processed if processed else 0.0,
            throughput_per_min=processed / minutes if minutes > 0 else 0.0,
            duration_ms=Distribution.of(aggregate.duration),
            wait_ms=Distribution.of(aggregate.wait),
            cpu_ms=Usage.of(aggregate.cpu),
            memory_mb=Memory(peak.avg, peak.max if peak.count else None, peak.count),
            memory_delta_mb=Memory(delta.avg, delta.max if delta.count else None, delta.count),
            exceptions=tuple(
                ExceptionSummary(name, stat.count, stat.last_message, stat.last_seen)
                for name, stat in exceptions
            ),
        )

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["exceptions"] = [asdict(e) for e in self.exceptions]
        return out


@dataclass(frozen=True, slots=True)
class JobSummary:
    """One job series over a window."""

    app: str
    queue: str
    job: str
    stats: Stats

    @property
    def key(self) -> SeriesKey:
        return SeriesKey(self.app, self.queue, self.job)

    def as_dict(self) -> dict[str, Any]:
        return {"app": self.app, "queue": self.queue, "job": self.job, **self.stats.as_dict()}
