"""Tables of the SQL storage driver (SQLite, PostgreSQL, MySQL/MariaDB).

    from queuelens.storage.sql_schema import metadata, buckets
    conn.execute(select(buckets).where(buckets.c.series_id == 7))

The schema is created and changed only by the Alembic migrations in
``queuelens/storage/migrations/versions``; this module mirrors the latest migration for the
driver's queries (a test compares the two). Every table name starts with ``ql_`` so that
queuelens can share a database with an application, and Alembic's own bookkeeping lives in
``ql_alembic_version`` rather than the usual ``alembic_version``.

Layout
------
Registries give each named thing a small integer id, so the big tables repeat 8-byte ids
rather than names:

* ``ql_series``: one row per job series ``(app, queue, job)`` with first/last seen.
* ``ql_gauge_sources``: one row per gauge source ``(kind, app, key)`` (a queue or a host).

Data tables, each keyed so that every read is a primary-key range and every prune a range
of the ``(resolution, bucket_start)`` index:

* ``ql_buckets``: per ``(series_id, resolution, bucket_start)`` a count column per
  :class:`~queuelens.model.JobStatus`, count/total/max of memory peak and delta, and the
  duration, wait and CPU sketches as :meth:`Sketch.to_bytes` blobs (NULL when empty).
* ``ql_exceptions``: per bucket and exception type: count, last message, last seen.
* ``ql_gauge_buckets``: per ``(source_id, resolution, bucket_start, field)`` a
  :class:`~queuelens.storage.base.GaugeStat`; ``ql_gauge_latest`` the newest value per
  ``(source_id, field)``.
* ``ql_queues`` (app, queue, framework, last seen), ``ql_workers`` (the latest heartbeat,
  lists as JSON text, plus first seen / last heartbeat), ``ql_dropped`` (outcomes dropped
  by recorders per app and minute) and ``ql_writers`` (the last flush-batch sequence
  applied per recorder, which makes writes idempotent: one row per writer, not per flush).

Names
-----
Names (apps, queues, jobs, exception types, gauge keys and fields, worker and writer ids)
must round-trip byte-exact and compare exactly: ``Emails`` and ``emails`` and ``emails ``
are three queues. MySQL/MariaDB compare text case-insensitively by default and ignore
trailing spaces even in ``utf8mb4_bin``, so there names are stored as ``VARBINARY`` (UTF-8
bytes, compared bytewise); PostgreSQL and SQLite compare text exactly already. Uniqueness
never rests on comparing names: each registry row carries ``key_hash``, a 16-byte BLAKE2b
digest of its length-prefixed UTF-8 name parts, which is what unique keys and lookups use.
That also keeps index keys short whatever the name length (names are limited to
:data:`MAX_NAME_CHARS` characters).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    Double,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    TypeDecorator,
    UniqueConstraint,
)
from sqlalchemy.dialects import mysql
from sqlalchemy.engine import Dialect
from sqlalchemy.types import TypeEngine

from queuelens.model import MAX_NAME_CHARS, STATUSES

__all__ = [
    "MAX_NAME_CHARS",
    "STATUS_COLUMNS",
    "VERSION_TABLE",
    "buckets",
    "dropped",
    "exceptions",
    "gauge_buckets",
    "gauge_latest",
    "gauge_sources",
    "leases",
    "metadata",
    "queues",
    "series",
    "workers",
    "writers",
]

#: Alembic's version table; prefixed so an application's own Alembic history is untouched
VERSION_TABLE = "ql_alembic_version"
#: bucket column holding the count of each status, in :data:`STATUSES` order
STATUS_COLUMNS: tuple[str, ...] = tuple(f"n_{status.value}" for status in STATUSES)

_MYSQL = ("mysql", "mariadb")
_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


class Name(TypeDecorator[str]):
    """Exact-comparing text: ``VARBINARY`` holding UTF-8 on MySQL, ``VARCHAR`` elsewhere."""

    impl = String
    cache_ok = True

    def __init__(self) -> None:
        super().__init__(MAX_NAME_CHARS)

    def load_dialect_impl(self, dialect: Dialect) -> TypeEngine[Any]:
        if dialect.name in _MYSQL:
            return dialect.type_descriptor(mysql.VARBINARY(4 * MAX_NAME_CHARS))
        return dialect.type_descriptor(String(MAX_NAME_CHARS))

    def process_bind_param(self, value: str | None, dialect: Dialect) -> Any:
        if value is not None and dialect.name in _MYSQL:
            return value.encode("utf-8")
        return value

    def process_result_value(self, value: Any | None, dialect: Dialect) -> str | None:
        if isinstance(value, bytes | bytearray | memoryview):
            return bytes(value).decode("utf-8")
        return value


def _hash() -> TypeEngine[bytes]:
    """16-byte digest: BINARY(16) on MySQL (a BLOB cannot be a key there), bytes elsewhere."""
    return LargeBinary(16).with_variant(mysql.BINARY(16), *_MYSQL)


def _blob() -> TypeEngine[bytes]:
    # MEDIUMBLOB: a fine-accuracy sketch of widely spread values can exceed BLOB's 64 KiB.
    return LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


def _text() -> TypeEngine[str]:
    return Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)


def _id() -> TypeEngine[int]:
    # SQLite only auto-assigns ids to a column declared exactly INTEGER PRIMARY KEY.
    return BigInteger().with_variant(Integer(), "sqlite")


metadata = MetaData()

series = Table(
    "ql_series",
    metadata,
    Column("id", _id(), primary_key=True, autoincrement=True),
    Column("key_hash", _hash(), nullable=False),
    Column("app", Name(), nullable=False),
    Column("queue", Name(), nullable=False),
    Column("job", Name(), nullable=False),
    Column("first_seen", Double(), nullable=False),
    Column("last_seen", Double(), nullable=False),
    UniqueConstraint("key_hash", name="uq_ql_series_key_hash"),
    Index("ix_ql_series_app_queue", "app", "queue", mysql_length={"app": 255, "queue": 255}),
    Index("ix_ql_series_last_seen", "last_seen"),
    **_TABLE_ARGS,
)

queues = Table(
    "ql_queues",
    metadata,
    Column("key_hash", _hash(), primary_key=True),
    Column("app", Name(), nullable=False),
    Column("queue", Name(), nullable=False),
    Column("framework", Name(), nullable=False),
    Column("last_seen", Double(), nullable=False),
    Index("ix_ql_queues_app", "app", mysql_length={"app": 255}),
    Index("ix_ql_queues_last_seen", "last_seen"),
    **_TABLE_ARGS,
)

buckets = Table(
    "ql_buckets",
    metadata,
    Column("series_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("resolution", Integer(), primary_key=True, autoincrement=False),
    Column("bucket_start", BigInteger(), primary_key=True, autoincrement=False),
    *(Column(name, BigInteger(), nullable=False) for name in STATUS_COLUMNS),
    Column("mem_peak_count", BigInteger(), nullable=False),
    Column("mem_peak_total", Double(), nullable=False),
    Column("mem_peak_max", Double(), nullable=False),
    Column("mem_delta_count", BigInteger(), nullable=False),
    Column("mem_delta_total", Double(), nullable=False),
    Column("mem_delta_max", Double(), nullable=False),
    Column("duration_sketch", _blob(), nullable=True),
    Column("wait_sketch", _blob(), nullable=True),
    Column("cpu_sketch", _blob(), nullable=True),
    Index("ix_ql_buckets_resolution_start", "resolution", "bucket_start"),
    **_TABLE_ARGS,
)

exceptions = Table(
    "ql_exceptions",
    metadata,
    Column("series_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("resolution", Integer(), primary_key=True, autoincrement=False),
    Column("bucket_start", BigInteger(), primary_key=True, autoincrement=False),
    Column("type_hash", _hash(), primary_key=True),
    Column("exception_type", Name(), nullable=False),
    Column("count", BigInteger(), nullable=False),
    Column("last_message", _text(), nullable=False),
    Column("last_seen", Double(), nullable=False),
    Index("ix_ql_exceptions_resolution_start", "resolution", "bucket_start"),
    **_TABLE_ARGS,
)

writers = Table(
    "ql_writers",
    metadata,
    Column("writer_hash", _hash(), primary_key=True),
    Column("writer_id", Name(), nullable=False),
    #: the highest sequence applied for this writer; a batch at or below it is a duplicate
    Column("last_sequence", BigInteger(), nullable=False),
    #: wall-clock time of the writer's last applied batch; pruned after retention.batch_id_s
    Column("updated_at", Double(), nullable=False),
    Index("ix_ql_writers_updated_at", "updated_at"),
    **_TABLE_ARGS,
)


dropped = Table(
    "ql_dropped",
    metadata,
    Column("minute", BigInteger(), primary_key=True, autoincrement=False),
    Column("app_hash", _hash(), primary_key=True),
    Column("app", Name(), nullable=False),
    Column("count", BigInteger(), nullable=False),
    **_TABLE_ARGS,
)

gauge_sources = Table(
    "ql_gauge_sources",
    metadata,
    Column("id", _id(), primary_key=True, autoincrement=True),
    Column("key_hash", _hash(), nullable=False),
    Column("kind", Name(), nullable=False),
    Column("app", Name(), nullable=False),
    Column("key", Name(), nullable=False),
    Column("last_seen", Double(), nullable=False),
    UniqueConstraint("key_hash", name="uq_ql_gauge_sources_key_hash"),
    Index("ix_ql_gauge_sources_kind_app", "kind", "app", mysql_length={"kind": 64, "app": 255}),
    Index("ix_ql_gauge_sources_last_seen", "last_seen"),
    **_TABLE_ARGS,
)

gauge_buckets = Table(
    "ql_gauge_buckets",
    metadata,
    Column("source_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("resolution", Integer(), primary_key=True, autoincrement=False),
    Column("bucket_start", BigInteger(), primary_key=True, autoincrement=False),
    Column("field_hash", _hash(), primary_key=True),
    Column("field", Name(), nullable=False),
    Column("last_value", Double(), nullable=False),
    Column("last_at", Double(), nullable=False),
    Column("min_value", Double(), nullable=False),
    Column("max_value", Double(), nullable=False),
    Column("total", Double(), nullable=False),
    Column("sample_count", BigInteger(), nullable=False),
    Index("ix_ql_gauge_buckets_resolution_start", "resolution", "bucket_start"),
    **_TABLE_ARGS,
)

gauge_latest = Table(
    "ql_gauge_latest",
    metadata,
    Column("source_id", BigInteger(), primary_key=True, autoincrement=False),
    Column("field_hash", _hash(), primary_key=True),
    Column("field", Name(), nullable=False),
    Column("value", Double(), nullable=False),
    Column("at", Double(), nullable=False),
    **_TABLE_ARGS,
)

workers = Table(
    "ql_workers",
    metadata,
    Column("worker_hash", _hash(), primary_key=True),
    Column("worker_id", Name(), nullable=False),
    Column("app", Name(), nullable=False),
    Column("framework", Name(), nullable=False),
    Column("hostname", Name(), nullable=False),
    Column("pid", BigInteger(), nullable=False),
    Column("name", Name(), nullable=False),
    Column("queues_json", _text(), nullable=False),
    Column("concurrency", BigInteger(), nullable=False),
    Column("busy_slots", BigInteger(), nullable=False),
    Column("state", String(16), nullable=False),
    Column("started_at", Double(), nullable=False),
    Column("sent_at", Double(), nullable=False),
    Column("heartbeat_interval_s", Double(), nullable=False),
    Column("current_jobs_json", _text(), nullable=False),
    Column("processed", BigInteger(), nullable=False),
    Column("failed", BigInteger(), nullable=False),
    Column("busy_s", Double(), nullable=False),
    Column("idle_s", Double(), nullable=False),
    Column("rss_mb", Double(), nullable=True),
    Column("cpu_percent", Double(), nullable=True),
    Column("first_seen_at", Double(), nullable=False),
    Column("last_heartbeat_at", Double(), nullable=False),
    Index("ix_ql_workers_app", "app", mysql_length={"app": 255}),
    Index("ix_ql_workers_last_heartbeat_at", "last_heartbeat_at"),
    **_TABLE_ARGS,
)

leases = Table(
    "ql_leases",
    metadata,
    Column("name_hash", _hash(), primary_key=True),
    Column("name", Name(), nullable=False),
    #: who holds the lease until ``expires_at`` (wall clock of the holder)
    Column("owner", Name(), nullable=False),
    Column("expires_at", Double(), nullable=False),
    **_TABLE_ARGS,
)
