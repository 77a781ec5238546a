"""Records shared by the recorder, the storage drivers and the read side.

    outcome = JobOutcome(queue="emails", job="app.tasks.send_mail",
                         status=JobStatus.succeeded, duration_s=0.120, wait_s=1.5)
    aggregate = Aggregate(0.01)
    aggregate.add(outcome)

Units are in the names: seconds (``_s``) for durations, wait and CPU time, megabytes
(``_mb``) for memory, unix seconds for timestamps. A *series* is ``(app, queue, job)``;
a *bucket* is one series over one aligned time interval at one :class:`Resolution`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import IntEnum, StrEnum

from queuelens.sketch import Sketch

__all__ = [
    "MAX_NAME_CHARS",
    "OVERFLOW_JOB",
    "Aggregate",
    "BucketKey",
    "ExceptionStat",
    "FlushBatch",
    "GaugeSample",
    "JobOutcome",
    "JobStatus",
    "Resolution",
    "SeriesKey",
    "Stat",
    "WorkerHeartbeat",
    "WorkerState",
    "bucket_start",
    "clean_name",
]

#: job name that stands for every job past the per-queue cardinality cap
OVERFLOW_JOB = "__overflow__"
#: longest app, queue, job or exception-type name every storage keeps exactly
MAX_NAME_CHARS = 1024


def clean_name(name: object) -> str:
    """``name`` as every storage can keep it: a string without NULs or lone surrogates,
    at most :data:`MAX_NAME_CHARS` long. Valid names come back unchanged."""
    text = name if isinstance(name, str) else str(name)
    if "\x00" in text:
        text = text.replace("\x00", "\ufffd")
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        text = text.encode("utf-8", "replace").decode("utf-8")
    return text[:MAX_NAME_CHARS]


class JobStatus(StrEnum):
    """How one execution attempt of a job ended."""

    #: ran to completion
    succeeded = "succeeded"
    #: raised, and will not be retried
    failed = "failed"
    #: raised, and the framework scheduled another attempt
    retried = "retried"
    #: hit its time limit
    timed_out = "timed_out"
    #: cancelled before or while running
    revoked = "revoked"
    #: refused by the worker (rejected, dead-lettered without running)
    rejected = "rejected"


#: statuses in storage column order
STATUSES: tuple[JobStatus, ...] = tuple(JobStatus)


class Resolution(IntEnum):
    """Bucket width in seconds."""

    #: one-minute buckets, kept for the shortest time
    minute = 60
    #: one-hour buckets
    hour = 3600
    #: one-day buckets (UTC days), kept longest
    day = 86400


def bucket_start(timestamp: float, resolution: Resolution | int) -> int:
    """Start (unix seconds) of the ``resolution`` bucket holding ``timestamp``."""
    width = int(resolution)
    return int(timestamp // width) * width


@dataclass(frozen=True, slots=True)
class SeriesKey:
    """One job series: what every bucket, count and percentile is kept per."""

    app: str
    queue: str
    job: str


@dataclass(frozen=True, slots=True)
class BucketKey:
    series: SeriesKey
    resolution: Resolution
    start: int


@dataclass(slots=True)
class JobOutcome:
    """One execution attempt of one job, as an integration reports it.

    ``duration_s`` is execution time only (start to end, monotonic clock); ``wait_s`` is the
    time from enqueue (or eta) to start. Unknown measurements stay ``None`` and are not
    counted in averages or percentiles.
    """

    queue: str
    job: str
    status: JobStatus
    duration_s: float | None = None
    wait_s: float | None = None
    cpu_s: float | None = None
    memory_peak_mb: float | None = None
    memory_delta_mb: float | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    #: wall-clock unix time the attempt ended; the recorder fills in "now" when None
    finished_at: float | None = None
    #: overrides the recorder's app name for this outcome
    app: str | None = None


@dataclass(slots=True)
class Stat:
    """Count, sum and maximum of a quantity with no percentile (memory)."""

    count: int = 0
    total: float = 0.0
    max: float = 0.0

    def add(self, value: float) -> None:
        self.count += 1
        self.total += value
        if value > self.max or self.count == 1:
            self.max = value

    def merge(self, other: Stat) -> None:
        if other.count == 0:
            return
        self.max = other.max if self.count == 0 else max(self.max, other.max)
        self.count += other.count
        self.total += other.total

    @property
    def avg(self) -> float | None:
        return self.total / self.count if self.count else None


@dataclass(slots=True)
class ExceptionStat:
    """How often one exception type was raised, and its latest message."""

    count: int = 0
    last_message: str = ""
    last_seen: float = 0.0

    def merge(self, other: ExceptionStat) -> None:
        self.count += other.count
        if other.last_seen >= self.last_seen:
            self.last_message = other.last_message
            self.last_seen = other.last_seen


@dataclass(slots=True)
class Aggregate:
    """Everything known about one series over one bucket; merges exactly with another."""

    relative_accuracy: float = 0.01
    counts: dict[JobStatus, int] = field(default_factory=dict)
    duration: Sketch = field(init=False)
    wait: Sketch = field(init=False)
    cpu: Sketch = field(init=False)
    memory_peak: Stat = field(default_factory=Stat)
    memory_delta: Stat = field(default_factory=Stat)
    exceptions: dict[str, ExceptionStat] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.duration = Sketch(self.relative_accuracy)
        self.wait = Sketch(self.relative_accuracy)
        self.cpu = Sketch(self.relative_accuracy)

    @property
    def total(self) -> int:
        """Every attempt counted in this bucket, whatever its status."""
        return sum(self.counts.values())

    def count(self, status: JobStatus) -> int:
        return self.counts.get(status, 0)

    def add(self, outcome: JobOutcome, finished_at: float, message_limit: int = 500) -> None:
        """Fold one outcome in. Negative measurements (clock skew) count as zero."""
        # The job hot path: plain branches and local names, no helper calls for the stats.
        counts = self.counts
        status = outcome.status
        counts[status] = counts.get(status, 0) + 1
        value = outcome.duration_s
        if value is not None:
            self.duration.add(value if value > 0.0 else 0.0)
        value = outcome.wait_s
        if value is not None:
            self.wait.add(value if value > 0.0 else 0.0)
        value = outcome.cpu_s
        if value is not None:
            self.cpu.add(value if value > 0.0 else 0.0)
        value = outcome.memory_peak_mb
        if value is not None:
            memory = self.memory_peak
            if value < 0.0:
                value = 0.0
            memory.count += 1
            memory.total += value
            if value > memory.max or memory.count == 1:
                memory.max = value
        value = outcome.memory_delta_mb
        if value is not None:
            memory = self.memory_delta
            if value < 0.0:
                value = 0.0
            memory.count += 1
            memory.total += value
            if value > memory.max or memory.count == 1:
                memory.max = value
        if outcome.exception_type is not None:
            stat = self.exceptions.get(outcome.exception_type)
            if stat is None:
                name = clean_name(outcome.exception_type)
                stat = self.exceptions.get(name)
                if stat is None:
                    stat = self.exceptions[name] = ExceptionStat()
            stat.count += 1
            if finished_at >= stat.last_seen:  # outcomes may arrive out of order
                stat.last_message = (outcome.exception_message or "")[:message_limit]
                stat.last_seen = finished_at

    def merge(self, other: Aggregate) -> None:
        for status, n in other.counts.items():
            self.counts[status] = self.counts.get(status, 0) + n
        self.duration.merge(other.duration)
        self.wait.merge(other.wait)
        self.cpu.merge(other.cpu)
        self.memory_peak.merge(other.memory_peak)
        self.memory_delta.merge(other.memory_delta)
        for name, stat in other.exceptions.items():
            mine = self.exceptions.get(name)
            if mine is None:
                self.exceptions[name] = ExceptionStat(stat.count, stat.last_message, stat.last_seen)
            else:
                mine.merge(stat)

    def copy(self) -> Aggregate:
        twin = Aggregate(self.relative_accuracy)
        twin.merge(self)
        return twin


class WorkerState(StrEnum):
    """Liveness of a worker as shown to users."""

    #: running at least one job
    busy = "busy"
    #: alive, waiting for work
    idle = "idle"
    #: shut down gracefully
    stopped = "stopped"
    #: missed three heartbeats (derived at read time)
    stale = "stale"
    #: silent for much longer (derived at read time)
    dead = "dead"


@dataclass(slots=True)
class WorkerHeartbeat:
    """What a worker reports about itself every ``heartbeat_interval``.

    ``worker_id`` is stable for the life of the process; ``processed`` and ``failed`` are
    totals since the worker started, so a stored value never goes backwards.
    """

    worker_id: str
    app: str
    framework: str
    hostname: str
    pid: int
    name: str
    queues: list[str]
    concurrency: int
    busy_slots: int
    state: WorkerState
    started_at: float
    sent_at: float
    heartbeat_interval_s: float
    current_jobs: list[str] = field(default_factory=list)
    processed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    idle_s: float = 0.0
    rss_mb: float | None = None
    cpu_percent: float | None = None


@dataclass(slots=True)
class GaugeSample:
    """Point-in-time values of one thing: a queue (``kind='queue'``) or a server.

    ``key`` is the queue name or the hostname; ``values`` maps field names (for example
    ``pending``, ``scheduled``, ``oldest_pending_age_s`` or ``cpu_percent``) to numbers.
    """

    kind: str
    app: str
    key: str
    values: dict[str, float]
    at: float


@dataclass(slots=True)
class FlushBatch:
    """What one recorder flush sends: minute aggregates plus bookkeeping.

    ``writer_id`` and ``sequence`` make the write idempotent. A writer (one recorder in one
    process) numbers its batches 1, 2, 3, ... and sends them strictly in order, retrying
    one batch (same sequence, possibly trimmed of its oldest buckets) until it is applied
    before cutting the next. A storage applies a batch only if its sequence is greater than
    the last one it applied for that writer, so a retried or late duplicate changes nothing.
    ``dropped`` counts outcomes per app that the recorder had to discard (storage
    unreachable past the memory bound); it is stored as a visible counter.
    """

    #: unique per recorder instance (a forked child gets its own)
    writer_id: str
    #: 1, 2, 3, ... per writer; unchanged when a batch is retried
    sequence: int
    created_at: float
    aggregates: dict[tuple[SeriesKey, int], Aggregate]
    frameworks: dict[tuple[str, str], str] = field(default_factory=dict)
    dropped: dict[str, int] = field(default_factory=dict)

    @property
    def batch_id(self) -> str:
        """``writer_id:sequence``, for logs and error messages."""
        return f"{self.writer_id}:{self.sequence}"

    def rollup(self) -> dict[BucketKey, Aggregate]:
        """The batch's aggregates at every resolution, merged per bucket.

        The recorder aggregates per minute; storage writes minute, hour and day buckets from
        this in the same round trip or transaction.
        """
        out: dict[BucketKey, Aggregate] = {}
        for (series, minute), aggregate in self.aggregates.items():
            for resolution in Resolution:
                key = BucketKey(series, resolution, bucket_start(minute, resolution))
                existing = out.get(key)
                if existing is None:
                    out[key] = aggregate.copy()
                else:
                    existing.merge(aggregate)
        return out

    @property
    def outcome_count(self) -> int:
        return sum(aggregate.total for aggregate in self.aggregates.values())
