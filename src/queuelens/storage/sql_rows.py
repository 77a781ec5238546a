"""Rows of the SQL storage driver: name checks, key hashes, merging, dialect upserts.

    rows = [bucket_row(series_id, key, aggregate, existing.get(pk)) for ...]
    upsert(conn, buckets, rows, BUCKET_KEY)             # insert or overwrite, in bulk

Merging happens here in Python under the row locks the writer holds (a sketch blob cannot
be merged in SQL); :func:`upsert` then writes the final values with one bulk statement.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator, Mapping, Sequence
from hashlib import blake2b
from typing import TYPE_CHECKING, Any, Literal

from sqlalchemy import ColumnElement, Table, func, select
from sqlalchemy.dialects import mysql, sqlite
from sqlalchemy.engine import Connection, RowMapping

from queuelens.model import (
    STATUSES,
    Aggregate,
    ExceptionStat,
    Stat,
    WorkerHeartbeat,
    WorkerState,
)
from queuelens.sketch import Sketch
from queuelens.storage.base import GaugeStat, StorageError, WorkerRecord
from queuelens.storage.sql_schema import MAX_NAME_CHARS, STATUS_COLUMNS

if TYPE_CHECKING:
    from sqlalchemy.dialects import postgresql

__all__ = [
    "BUCKET_KEY",
    "CHUNK",
    "bucket_row",
    "check_name",
    "chunks",
    "clean_message",
    "exception_row",
    "gauge_row",
    "key_hash",
    "select_buckets_of",
    "upsert",
    "worker_record",
    "worker_row",
]

#: ids per IN list: small enough for every driver's parameter limit, big enough to batch
CHUNK = 500
BUCKET_KEY = ("series_id", "resolution", "bucket_start")

#: how an upsert combines an existing column value with the incoming one
Rule = Literal["replace", "add", "max", "min"]


def key_hash(*parts: str) -> bytes:
    """16-byte digest of name parts; length prefixes keep ``("a", "bc")`` != ``("ab", "c")``."""
    digest = blake2b(digest_size=16)
    for part in parts:
        data = part.encode("utf-8", "surrogatepass")
        digest.update(len(data).to_bytes(4, "big"))
        digest.update(data)
    return digest.digest()


def check_name(value: object, what: str) -> str:
    """``value`` if it can be stored as a name exactly, else StorageError saying why."""
    if not isinstance(value, str):
        raise StorageError(f"{what} must be a string, got {type(value).__name__}")
    if len(value) > MAX_NAME_CHARS:
        raise StorageError(
            f"{what} {value[:60]!r}... has {len(value)} characters; names are limited to "
            f"{MAX_NAME_CHARS}"
        )
    if "\x00" in value:
        raise StorageError(f"{what} {value!r} contains a NUL character, which SQL cannot store")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise StorageError(f"{what} {value!r} is not valid Unicode text") from None
    return value


def clean_message(text: str) -> str:
    """Free text made storable: NULs and lone surrogates become U+FFFD."""
    return text.encode("utf-8", "replace").decode("utf-8").replace("\x00", "\ufffd")


def chunks(items: Sequence[Any], size: int = CHUNK) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def finite(value: float) -> float:
    """Stored doubles must be finite (MySQL rejects NaN and infinities)."""
    return value if math.isfinite(value) else 0.0


# -- upserts -------------------------------------------------------------------------------


def upsert(
    conn: Connection,
    table: Table,
    rows: Sequence[Mapping[str, Any]],
    key: Sequence[str],
    rules: Mapping[str, Rule] | None = None,
) -> None:
    """Insert ``rows``; where ``key`` already exists, combine each column by its rule.

    Without ``rules`` every non-key column is replaced (the caller merged under lock);
    ``rules={}`` leaves existing rows untouched. Rows should come sorted by key, so that
    concurrent writers lock them in one order.
    """
    if not rows:
        return
    if rules is None:
        rules = {name: "replace" for name in rows[0] if name not in key}
    dialect = conn.dialect.name
    if dialect in ("mysql", "mariadb"):
        my_stmt = mysql.insert(table)
        new_my = {name: my_stmt.inserted[name] for name in rules}
        updates = {
            name: _combine(rule, table.c[name], new_my[name], dialect)
            for name, rule in rules.items()
        }
        # Setting a key column to itself is MySQL's "do nothing" on a duplicate.
        conn.execute(my_stmt.on_duplicate_key_update(updates or {key[0]: table.c[key[0]]}), rows)
        return
    stmt = _postgresql_insert(table) if dialect == "postgresql" else sqlite.insert(table)
    if not rules:
        conn.execute(stmt.on_conflict_do_nothing(index_elements=list(key)), rows)
        return
    excluded = stmt.excluded
    set_ = {
        name: _combine(rule, table.c[name], excluded[name], dialect) for name, rule in rules.items()
    }
    conn.execute(stmt.on_conflict_do_update(index_elements=list(key), set_=set_), rows)


def _postgresql_insert(table: Table) -> postgresql.Insert:
    # Imported on first use: the dialect would cost every SQLite or MySQL process 2.6 MB.
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


def _combine(rule: Rule, old: Any, new: Any, dialect: str) -> ColumnElement[Any]:
    if rule == "replace":
        return new  # type: ignore[no-any-return]
    if rule == "add":
        return old + new  # type: ignore[no-any-return]
    # SQLite's two-argument max()/min() are its GREATEST/LEAST.
    if dialect == "sqlite":
        return func.max(old, new) if rule == "max" else func.min(old, new)
    return func.greatest(old, new) if rule == "max" else func.least(old, new)


def select_buckets_of(
    conn: Connection,
    table: Table,
    owner: str,
    keys: Iterable[tuple[int, int, int]],
    *,
    lock: bool,
) -> dict[tuple[Any, ...], RowMapping]:
    """Existing rows of ``table`` for ``(owner_id, resolution, bucket_start)`` keys, by
    primary key.

    One primary-key range query per resolution and chunk of ids (a few round trips for a
    whole flush); ``lock`` takes row locks (FOR UPDATE) in ascending key order. May return
    extra rows of the same ids and starts; callers look up the keys they need.
    """
    wanted: dict[int, tuple[set[int], set[int]]] = {}
    for owner_id, resolution, start in keys:
        ids, starts = wanted.setdefault(resolution, (set(), set()))
        ids.add(owner_id)
        starts.add(start)
    found: dict[tuple[Any, ...], RowMapping] = {}
    pk = [column.name for column in table.primary_key.columns]
    for resolution, (ids, starts) in sorted(wanted.items()):
        for id_chunk in chunks(sorted(ids)):
            stmt = (
                select(table)
                .where(
                    table.c[owner].in_(id_chunk),
                    table.c.resolution == resolution,
                    table.c.bucket_start.in_(sorted(starts)),
                )
                .order_by(*table.primary_key.columns)
            )
            if lock:
                stmt = stmt.with_for_update()
            for row in conn.execute(stmt).mappings():
                found[tuple(_plain(row[name]) for name in pk)] = row
    return found


def _plain(value: Any) -> Any:
    return bytes(value) if isinstance(value, memoryview | bytearray) else value


# -- buckets -------------------------------------------------------------------------------


def bucket_row(
    series_id: int, resolution: int, start: int, add: Aggregate, old: RowMapping | None
) -> dict[str, Any]:
    """The stored bucket after merging ``add`` into ``old`` (None: a new bucket)."""
    row: dict[str, Any] = {"series_id": series_id, "resolution": resolution, "bucket_start": start}
    for status, column in zip(STATUSES, STATUS_COLUMNS, strict=True):
        row[column] = (old[column] if old is not None else 0) + add.counts.get(status, 0)
    for prefix, stat in (("mem_peak", add.memory_peak), ("mem_delta", add.memory_delta)):
        merged = _stat(old, prefix) if old is not None else Stat()
        merged.merge(stat)
        row[f"{prefix}_count"] = merged.count
        row[f"{prefix}_total"] = finite(merged.total)
        row[f"{prefix}_max"] = finite(merged.max)
    for column, sketch in (
        ("duration_sketch", add.duration),
        ("wait_sketch", add.wait),
        ("cpu_sketch", add.cpu),
    ):
        row[column] = _merge_blob(old[column] if old is not None else None, sketch)
    return row


def _stat(row: RowMapping, prefix: str) -> Stat:
    return Stat(row[f"{prefix}_count"], row[f"{prefix}_total"], row[f"{prefix}_max"])


def _merge_blob(blob: bytes | None, sketch: Sketch) -> bytes | None:
    # Decode only when both sides hold values: most merges touch one side only.
    if sketch.count == 0:
        return blob
    if blob is None:
        return sketch.to_bytes()
    stored = Sketch.from_bytes(bytes(blob))
    stored.merge(sketch)
    return stored.to_bytes()


def exception_row(
    key: tuple[int, int, int, bytes], name: str, add: ExceptionStat, old: RowMapping | None
) -> dict[str, Any]:
    merged = ExceptionStat()
    if old is not None:
        merged = ExceptionStat(old["count"], old["last_message"], old["last_seen"])
    merged.merge(add)
    series_id, resolution, start, type_hash = key
    return {
        "series_id": series_id,
        "resolution": resolution,
        "bucket_start": start,
        "type_hash": type_hash,
        "exception_type": name,
        "count": merged.count,
        "last_message": clean_message(merged.last_message),
        "last_seen": finite(merged.last_seen),
    }


# -- gauges --------------------------------------------------------------------------------


def gauge_row(
    key: tuple[int, int, int, bytes], field: str, add: GaugeStat, old: RowMapping | None
) -> dict[str, Any]:
    merged = add
    if old is not None:
        merged = GaugeStat(
            last=old["last_value"],
            last_at=old["last_at"],
            min=old["min_value"],
            max=old["max_value"],
            total=old["total"],
            count=old["sample_count"],
        )
        merged.merge(add)
    source_id, resolution, start, field_hash = key
    return {
        "source_id": source_id,
        "resolution": resolution,
        "bucket_start": start,
        "field_hash": field_hash,
        "field": field,
        "last_value": merged.last,
        "last_at": merged.last_at,
        "min_value": merged.min,
        "max_value": merged.max,
        "total": finite(merged.total),
        "sample_count": merged.count,
    }


# -- workers -------------------------------------------------------------------------------


def worker_row(beat: WorkerHeartbeat, old: RowMapping | None) -> dict[str, Any]:
    """The stored worker after ``beat``: the newer heartbeat's fields win, ``processed`` and
    ``failed`` never go backwards, ``first_seen_at`` is kept."""
    newer = old is None or beat.sent_at >= old["last_heartbeat_at"]
    row: dict[str, Any]
    if newer:
        row = {
            "worker_hash": key_hash(beat.worker_id),
            "worker_id": beat.worker_id,
            "app": beat.app,
            "framework": beat.framework,
            "hostname": beat.hostname,
            "pid": beat.pid,
            "name": beat.name,
            "queues_json": json.dumps(list(beat.queues), ensure_ascii=False),
            "concurrency": beat.concurrency,
            "busy_slots": beat.busy_slots,
            "state": beat.state.value,
            "started_at": beat.started_at,
            "sent_at": beat.sent_at,
            "heartbeat_interval_s": beat.heartbeat_interval_s,
            "current_jobs_json": json.dumps(list(beat.current_jobs), ensure_ascii=False),
            "processed": beat.processed,
            "failed": beat.failed,
            "busy_s": finite(beat.busy_s),
            "idle_s": finite(beat.idle_s),
            "rss_mb": _optional(beat.rss_mb),
            "cpu_percent": _optional(beat.cpu_percent),
            "first_seen_at": beat.sent_at,
            "last_heartbeat_at": beat.sent_at,
        }
    else:
        assert old is not None
        row = dict(old)
    if old is not None:
        row["processed"] = max(old["processed"], beat.processed)
        row["failed"] = max(old["failed"], beat.failed)
        row["first_seen_at"] = min(old["first_seen_at"], beat.sent_at)
        row["last_heartbeat_at"] = max(old["last_heartbeat_at"], beat.sent_at)
    return row


def _optional(value: float | None) -> float | None:
    return value if value is None or math.isfinite(value) else None


def worker_record(row: RowMapping) -> WorkerRecord:
    beat = WorkerHeartbeat(
        worker_id=row["worker_id"],
        app=row["app"],
        framework=row["framework"],
        hostname=row["hostname"],
        pid=int(row["pid"]),
        name=row["name"],
        queues=list(json.loads(row["queues_json"])),
        concurrency=int(row["concurrency"]),
        busy_slots=int(row["busy_slots"]),
        state=WorkerState(row["state"]),
        started_at=row["started_at"],
        sent_at=row["sent_at"],
        heartbeat_interval_s=row["heartbeat_interval_s"],
        current_jobs=list(json.loads(row["current_jobs_json"])),
        processed=int(row["processed"]),
        failed=int(row["failed"]),
        busy_s=row["busy_s"],
        idle_s=row["idle_s"],
        rss_mb=row["rss_mb"],
        cpu_percent=row["cpu_percent"],
    )
    return WorkerRecord(beat, row["first_seen_at"], row["last_heartbeat_at"])
