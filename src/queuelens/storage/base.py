"""The storage protocol every driver implements, and the records it reads back.

    storage = open_storage("sqlite:///queuelens.db")
    storage.write(batch)                                   # one transaction / round trip
    buckets = storage.read_buckets([series], Resolution.minute, start, end)

The protocol is domain-level: write a flush batch, upsert gauges and heartbeats, read
buckets for a known set of series, list what exists, prune by retention. No read path scans
a whole keyspace or table; every row or key has a retention.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol, TypeAlias, runtime_checkable

from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
)

__all__ = [
    "BucketSpan",
    "GaugeStat",
    "PruneReport",
    "QueueInfo",
    "Retention",
    "SchemaError",
    "Storage",
    "StorageError",
    "StorageUnavailable",
    "WindowReads",
    "WorkerRecord",
]


class StorageError(Exception):
    """A storage operation failed; the message says what and how to fix it."""


class StorageUnavailable(StorageError):
    """The storage server could not be reached or timed out; retrying may succeed."""


class SchemaError(StorageError):
    """The database schema is missing or older than this queuelens; run `queuelens migrate`."""


@dataclass(frozen=True, slots=True)
class Retention:
    """How long each kind of data is kept, in seconds."""

    minute_s: int = 2 * 86400
    hour_s: int = 35 * 86400
    day_s: int = 400 * 86400
    #: gauge samples (queue depth, server resources) at minute resolution
    gauge_minute_s: int = 2 * 86400
    #: workers whose last heartbeat is older than this are removed
    worker_s: int = 7 * 86400
    #: how long a writer's last applied sequence is remembered after its last write (to
    #: reject a retried duplicate); a writer silent for longer is forgotten
    batch_id_s: int = 86400

    def for_resolution(self, resolution: Resolution) -> int:
        if resolution is Resolution.minute:
            return self.minute_s
        if resolution is Resolution.hour:
            return self.hour_s
        return self.day_s


@dataclass(frozen=True, slots=True)
class QueueInfo:
    app: str
    queue: str
    framework: str
    last_seen: float


@dataclass(slots=True)
class GaugeStat:
    """One gauge field over one bucket: the last value and its spread."""

    last: float
    last_at: float
    min: float
    max: float
    total: float
    count: int

    @property
    def avg(self) -> float:
        return self.total / self.count if self.count else math.nan

    def add(self, value: float, at: float) -> None:
        if at >= self.last_at:
            self.last, self.last_at = value, at
        self.min = min(self.min, value)
        self.max = max(self.max, value)
        self.total += value
        self.count += 1

    def merge(self, other: GaugeStat) -> None:
        if other.last_at >= self.last_at:
            self.last, self.last_at = other.last, other.last_at
        self.min = min(self.min, other.min)
        self.max = max(self.max, other.max)
        self.total += other.total
        self.count += other.count

    @classmethod
    def of(cls, value: float, at: float) -> GaugeStat:
        return cls(last=value, last_at=at, min=value, max=value, total=value, count=1)


@dataclass(slots=True)
class WorkerRecord:
    """A stored worker: its latest heartbeat plus what storage knows about it."""

    heartbeat: WorkerHeartbeat
    first_seen_at: float
    last_heartbeat_at: float

    def state_at(self, now: float) -> WorkerState:
        """Live state: ``stale`` after three missed heartbeats, ``dead`` after twenty."""
        beat = self.heartbeat
        if beat.state is WorkerState.stopped:
            return WorkerState.stopped
        silent_s = now - self.last_heartbeat_at
        interval = max(beat.heartbeat_interval_s, 0.001)
        if silent_s > 20 * interval:
            return WorkerState.dead
        if silent_s > 3 * interval:
            return WorkerState.stale
        return beat.state


@dataclass(slots=True)
class PruneReport:
    """What one prune removed, per kind of data (rows or keys)."""

    removed: dict[str, int] = field(default_factory=dict)

    @property
    def total(self) -> int:
        return sum(self.removed.values())


@runtime_checkable
class Storage(Protocol):
    """Durable home of buckets, gauges and workers. Drivers: ``storage.sql``, ``storage.redis``.

    Every method raises :class:`StorageError` (or a subclass) on failure, never a driver's
    own exception type, so callers need to know no driver.
    """

    #: the URL the storage was opened with, password removed
    url: str

    def write(self, batch: FlushBatch) -> bool:
        """Apply a flush batch at minute, hour and day resolution, atomically per batch
        (SQL: one transaction; Redis: one round trip, atomic and idempotent per series).

        Idempotent by writer sequence: the batch is applied iff its ``sequence`` is greater
        than the last sequence applied for its ``writer_id``; otherwise ``write`` returns
        False and changes nothing. Writers are independent of each other. SQL keeps the last
        sequence per writer; Redis keeps it per writer and series (a series is Redis's unit
        of atomicity), and per writer for the ``dropped`` counts, so a retry of a batch that
        was applied in part applies exactly the series that were missing. Returns True if
        anything was applied. A writer's last sequence is remembered for
        :attr:`Retention.batch_id_s` after its last write; storage grows with the number of
        writers, never with the number of flushes.
        """
        ...

    def write_gauges(self, samples: Sequence[GaugeSample]) -> None:
        """Record point-in-time values (queue depth, oldest age, server resources)."""
        ...

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        """Upsert a worker's latest state; its first-seen time is kept."""
        ...

    def read_buckets(
        self,
        series: Sequence[SeriesKey],
        resolution: Resolution,
        start: float,
        end: float,
    ) -> dict[SeriesKey, dict[int, Aggregate]]:
        """Buckets whose start lies in ``[start, end)``, per series and bucket start.

        Series with no data are absent from the result.
        """
        ...

    def read_gauges(
        self,
        kind: str,
        app: str,
        key: str,
        resolution: Resolution,
        start: float,
        end: float,
    ) -> dict[int, dict[str, GaugeStat]]:
        """Gauge buckets of one queue or server whose start lies in ``[start, end)``."""
        ...

    def latest_gauges(self, kind: str, app: str | None = None) -> list[GaugeSample]:
        """The newest sample of every queue (or server) of ``kind``, optionally of one app."""
        ...

    def read_dropped(self, start: float, end: float) -> dict[str, int]:
        """Outcomes that recorders had to drop, per app, reported in ``[start, end)``."""
        ...

    def list_apps(self) -> list[str]: ...

    def list_queues(self, app: str | None = None) -> list[QueueInfo]: ...

    def list_jobs(self, app: str, queue: str | None = None) -> list[SeriesKey]:
        """The job series of one app (and queue), sorted."""
        ...

    def list_workers(self, app: str | None = None) -> list[WorkerRecord]: ...

    def prune(self, now: float | None = None) -> PruneReport:
        """Delete what is older than its retention."""
        ...

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        """Take, or renew, the lease ``name`` for ``owner`` for ``ttl_s`` seconds.

        True if ``owner`` now holds it: nobody held it, it had expired, or ``owner`` held
        it already. Used so that one process per host samples server resources and one
        server replica evaluates alerts.
        """
        ...

    def release_lease(self, name: str, owner: str) -> None:
        """Give the lease up early if ``owner`` holds it (a graceful shutdown)."""
        ...

    def ping(self) -> None:
        """Raise StorageUnavailable unless the storage answers."""
        ...

    def close(self) -> None: ...


#: ``(resolution, start, end)``: the buckets of one resolution whose start lies in
#: ``[start, end)``
BucketSpan: TypeAlias = tuple[Resolution, float, float]


@runtime_checkable
class WindowReads(Protocol):
    """Reads that spare the read side decoding every bucket on its own.

    Optional: the SQL driver has them; for a storage without them the analytics fall back to
    :meth:`Storage.read_buckets` and the listings, which give the same answers more slowly.
    """

    def read_merged(
        self, series: Sequence[SeriesKey], spans: Sequence[BucketSpan]
    ) -> dict[SeriesKey, Aggregate]:
        """Per series, all its buckets in ``spans`` merged into one aggregate (series with
        no such bucket are absent)."""
        ...

    def read_counts(
        self, spans: Sequence[BucketSpan], app: str | None = None
    ) -> list[dict[SeriesKey, dict[int, dict[JobStatus, int]]]]:
        """Per span: attempts per status of each of its buckets, per series (of every app, or
        of ``app``) and bucket start; no sketch is read. One round trip, and one statement,
        so the spans are read at one instant."""
        ...

    def count_attempts(
        self, spans: Sequence[BucketSpan], app: str | None = None
    ) -> list[tuple[int, int]]:
        """Per span, the number of buckets and the attempts they count, over every series (of
        ``app``), in one round trip.

        A change marker: each outcome is counted under exactly one status, so a write that
        changes a bucket adds at least one attempt to it, and nothing but pruning past
        retention takes one away. An unchanged pair means the span's buckets are unchanged.
        """
        ...
