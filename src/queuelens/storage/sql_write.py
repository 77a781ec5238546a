"""The write transactions of the SQL driver: flush batches and gauge samples.

    plan = BatchPlan.of(batch, relative_accuracy=0.01, applied_at=time.time())
    applied = db.run(lambda conn: apply_batch(conn, plan), write=True, action="writing")

A plan validates and precomputes everything that needs no database (names, hashes, the
minute/hour/day rollup) before the transaction starts, so the transaction holds its locks
only for reads, merges and bulk writes. The locking order is described in
:mod:`queuelens.storage.sql`.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.engine import Connection

from queuelens.model import (
    Aggregate,
    ExceptionStat,
    FlushBatch,
    GaugeSample,
    Resolution,
    bucket_start,
)
from queuelens.storage.base import GaugeStat, StorageError
from queuelens.storage.sql_engine import RollbackWith
from queuelens.storage.sql_rows import (
    BUCKET_KEY,
    bucket_row,
    check_name,
    chunks,
    exception_row,
    gauge_row,
    key_hash,
    select_buckets_of,
    upsert,
)
from queuelens.storage.sql_schema import (
    buckets as buckets_table,
)
from queuelens.storage.sql_schema import (
    dropped,
    exceptions,
    gauge_buckets,
    gauge_latest,
    gauge_sources,
    queues,
    series,
    writers,
)

__all__ = [
    "MAX_SEQUENCE",
    "BatchPlan",
    "GaugePlan",
    "apply_batch",
    "apply_gauges",
    "check_sequence",
    "registry_ids",
]

#: sequences must stay below this: exact as a double (Redis's Lua) and as a BIGINT
MAX_SEQUENCE = 2**53


def check_sequence(batch: FlushBatch) -> int:
    """The batch's sequence as an int, refused unless ``0 <= sequence < 2**53``."""
    sequence = batch.sequence
    if (
        isinstance(sequence, bool)
        or not isinstance(sequence, int)
        or not (0 <= sequence < MAX_SEQUENCE)
    ):
        raise StorageError(
            f"batch {batch.batch_id!r} has sequence {sequence!r}; a writer numbers its "
            f"batches 1, 2, 3, ... (below 2**53)"
        )
    return sequence


#: the key of an exception or gauge-field row: (owner id, resolution, bucket start, hash)
_Key4 = tuple[int, int, int, bytes]


@dataclass(slots=True)
class BatchPlan:
    """A flush batch checked and rolled up, ready to apply."""

    #: the ql_writers row this batch leaves behind (writer, its sequence, applied_at)
    writer_row: dict[str, Any]
    #: series rows (key_hash, names, first/last seen), sorted by key hash
    series_rows: list[dict[str, Any]]
    #: (series key hash, resolution, bucket start, aggregate)
    buckets: list[tuple[bytes, int, int, Aggregate]]
    queue_rows: list[dict[str, Any]]
    dropped_rows: list[dict[str, Any]]

    @classmethod
    def of(cls, batch: FlushBatch, relative_accuracy: float, applied_at: float) -> BatchPlan:
        check_name(batch.writer_id, "writer id")
        sequence = check_sequence(batch)
        seen = float(batch.created_at)
        series_rows: dict[bytes, dict[str, Any]] = {}
        for key, minute in batch.aggregates:
            digest = key_hash(key.app, key.queue, key.job)
            if digest not in series_rows:
                series_rows[digest] = {
                    "key_hash": digest,
                    "app": check_name(key.app, "app"),
                    "queue": check_name(key.queue, "queue"),
                    "job": check_name(key.job, "job"),
                    "first_seen": seen,
                    "last_seen": seen,
                }
            if batch.aggregates[key, minute].relative_accuracy != relative_accuracy:
                raise StorageError(
                    f"batch {batch.batch_id!r} has histograms of relative accuracy "
                    f"{batch.aggregates[key, minute].relative_accuracy}, this storage keeps "
                    f"{relative_accuracy}; configure one accuracy for recorders and storage"
                )
        plan_buckets = []
        for bucket, aggregate in batch.rollup().items():
            s = bucket.series
            for name in aggregate.exceptions:
                check_name(name, "exception type")
            plan_buckets.append(
                (key_hash(s.app, s.queue, s.job), int(bucket.resolution), bucket.start, aggregate)
            )
        queue_rows = [
            {
                "key_hash": key_hash(app, queue),
                "app": check_name(app, "app"),
                "queue": check_name(queue, "queue"),
                "framework": check_name(framework, "framework"),
                "last_seen": seen,
            }
            for (app, queue), framework in batch.frameworks.items()
        ]
        minute = bucket_start(seen, Resolution.minute)
        dropped_rows = [
            {
                "minute": minute,
                "app_hash": key_hash(app),
                "app": check_name(app, "app"),
                "count": int(count),
            }
            for app, count in batch.dropped.items()
            if count
        ]
        return cls(
            writer_row={
                "writer_hash": key_hash(batch.writer_id),
                "writer_id": batch.writer_id,
                "last_sequence": sequence,
                "updated_at": float(applied_at),
            },
            series_rows=sorted(series_rows.values(), key=lambda r: r["key_hash"]),
            buckets=plan_buckets,
            queue_rows=sorted(queue_rows, key=lambda r: r["key_hash"]),
            dropped_rows=sorted(dropped_rows, key=lambda r: r["app_hash"]),
        )


def apply_batch(conn: Connection, plan: BatchPlan) -> bool:
    """Apply ``plan`` in the caller's transaction; RollbackWith(False) if its writer has
    applied this sequence (or a later one) already."""
    row = plan.writer_row
    digest = row["writer_hash"]
    # Make sure the writer row exists (-1: nothing applied yet), then lock it: a concurrent
    # duplicate waits here until this transaction ends, then sees the sequence it wrote.
    upsert(conn, writers, [{**row, "last_sequence": -1}], ("writer_hash",), {})
    last = conn.execute(
        select(writers.c.last_sequence).where(writers.c.writer_hash == digest).with_for_update()
    ).scalar()
    if last is not None and row["last_sequence"] <= int(last):
        raise RollbackWith(False)
    # An upsert, not an UPDATE: a prune may have removed a long-silent writer's row meanwhile.
    upsert(conn, writers, [row], ("writer_hash",))
    # Row-locks each series (PostgreSQL/MySQL): the per-series mutex of the writers.
    upsert(conn, series, plan.series_rows, ("key_hash",), {"first_seen": "min", "last_seen": "max"})
    ids = registry_ids(conn, series, [row["key_hash"] for row in plan.series_rows])
    upsert(
        conn, queues, plan.queue_rows, ("key_hash",), {"framework": "replace", "last_seen": "max"}
    )

    # Sorted by primary key: rows are locked and written in one order by every writer.
    keyed = sorted(
        (
            ((ids[digest], resolution, start), aggregate)
            for digest, resolution, start, aggregate in plan.buckets
        ),
        key=lambda item: item[0],
    )
    existing = select_buckets_of(conn, buckets_table, "series_id", (k for k, _ in keyed), lock=True)
    rows = [bucket_row(*key, aggregate, existing.get(key)) for key, aggregate in keyed]
    upsert(conn, buckets_table, rows, BUCKET_KEY)

    errors: list[tuple[_Key4, str, ExceptionStat]] = [
        ((*key, key_hash(name)), name, stat)
        for key, aggregate in keyed
        for name, stat in aggregate.exceptions.items()
    ]
    if errors:
        errors.sort(key=lambda item: item[0])
        old = select_buckets_of(
            conn, exceptions, "series_id", (k[:3] for k, _, _ in errors), lock=True
        )
        upsert(
            conn,
            exceptions,
            [exception_row(k, name, stat, old.get(k)) for k, name, stat in errors],
            (*BUCKET_KEY, "type_hash"),
        )
    upsert(conn, dropped, plan.dropped_rows, ("minute", "app_hash"), {"count": "add"})
    return True


def registry_ids(conn: Connection, table: Table, hashes: Iterable[bytes]) -> dict[bytes, int]:
    """Ids of registry rows (series, gauge sources) by key hash, one query per chunk."""
    out: dict[bytes, int] = {}
    for chunk in chunks(sorted(hashes)):
        stmt = select(table.c.key_hash, table.c.id).where(table.c.key_hash.in_(chunk))
        for digest, row_id in conn.execute(stmt):
            out[bytes(digest)] = int(row_id)
    return out


@dataclass(slots=True)
class GaugePlan:
    """Gauge samples checked and folded per bucket and field, ready to apply."""

    #: source rows (key_hash, kind, app, key, last_seen), sorted by key hash
    source_rows: list[dict[str, Any]] = field(default_factory=list)
    #: (source hash, resolution, start, field hash) -> (field, stat)
    stats: dict[tuple[bytes, int, int, bytes], tuple[str, GaugeStat]] = field(default_factory=dict)
    #: (source hash, field hash) -> (field, value, at) of the newest sample
    latest: dict[tuple[bytes, bytes], tuple[str, float, float]] = field(default_factory=dict)

    @property
    def empty(self) -> bool:
        return not self.source_rows

    @classmethod
    def of(cls, samples: Sequence[GaugeSample]) -> GaugePlan:
        plan = cls()
        sources: dict[bytes, dict[str, Any]] = {}
        for sample in samples:
            kind = check_name(sample.kind, "gauge kind")
            app = check_name(sample.app, "app")
            key = check_name(sample.key, f"{kind} gauge key")
            at = float(sample.at)
            if not math.isfinite(at):
                raise StorageError(f"gauge sample of {kind} {key!r} has time {at}")
            digest = key_hash(kind, app, key)
            row = sources.get(digest)
            if row is None:
                row = sources[digest] = {
                    "key_hash": digest,
                    "kind": kind,
                    "app": app,
                    "key": key,
                    "last_seen": at,
                }
            row["last_seen"] = max(row["last_seen"], at)
            for name, raw in sample.values.items():
                value = float(raw)
                if not math.isfinite(value):
                    continue  # NaN/inf carries no level; MySQL could not store it anyway
                field_hash = key_hash(check_name(name, "gauge field"))
                for resolution in Resolution:
                    bucket = (digest, int(resolution), bucket_start(at, resolution), field_hash)
                    known = plan.stats.get(bucket)
                    if known is None:
                        plan.stats[bucket] = (name, GaugeStat.of(value, at))
                    else:
                        known[1].add(value, at)
                newest = plan.latest.get((digest, field_hash))
                if newest is None or at >= newest[2]:
                    plan.latest[digest, field_hash] = (name, value, at)
        plan.source_rows = sorted(sources.values(), key=lambda r: r["key_hash"])
        return plan


def apply_gauges(conn: Connection, plan: GaugePlan) -> None:
    """Merge ``plan`` into gauge buckets and the latest values, in the caller's transaction."""
    # Row-locks each source, serialising writers of the same queue or host.
    upsert(conn, gauge_sources, plan.source_rows, ("key_hash",), {"last_seen": "max"})
    ids = registry_ids(conn, gauge_sources, [row["key_hash"] for row in plan.source_rows])

    stats = sorted(
        (
            ((ids[src], res, start, fh), name, stat)
            for (src, res, start, fh), (name, stat) in plan.stats.items()
        ),
        key=lambda item: item[0],
    )
    old = select_buckets_of(
        conn, gauge_buckets, "source_id", (k[:3] for k, _, _ in stats), lock=True
    )
    upsert(
        conn,
        gauge_buckets,
        [gauge_row(k, name, stat, old.get(k)) for k, name, stat in stats],
        ("source_id", "resolution", "bucket_start", "field_hash"),
    )

    stored: dict[tuple[int, bytes], Any] = {}
    for chunk in chunks(sorted(set(ids.values()))):
        stmt = (
            select(gauge_latest)
            .where(gauge_latest.c.source_id.in_(chunk))
            .order_by(gauge_latest.c.source_id, gauge_latest.c.field_hash)
            .with_for_update()
        )
        for row in conn.execute(stmt).mappings():
            stored[row["source_id"], bytes(row["field_hash"])] = row
    latest = []
    for (src, fh), (name, value, at) in sorted(plan.latest.items()):
        known = stored.get((ids[src], fh))
        if known is not None and known["at"] > at:
            continue  # an older sample arriving late does not replace a newer value
        latest.append(
            {"source_id": ids[src], "field_hash": fh, "field": name, "value": value, "at": at}
        )
    upsert(
        conn,
        gauge_latest,
        sorted(latest, key=lambda r: (r["source_id"], r["field_hash"])),
        ("source_id", "field_hash"),
    )
