"""Initial queuelens schema: series, buckets, exceptions, gauges, workers, bookkeeping.

Revision ID: 0001
Revises:
Create Date: 2025-01-01

Types are spelled out here rather than imported from ``sql_schema`` so that this revision
keeps creating exactly this schema when the live table definitions move on. See the
``sql_schema`` module docstring for what each table holds and why names are VARBINARY on
MySQL/MariaDB.
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None

_MYSQL = ("mysql", "mariadb")
_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}
_STATUSES = ("succeeded", "failed", "retried", "timed_out", "revoked", "rejected")


def _name() -> sa.types.TypeEngine[Any]:
    return sa.String(1024).with_variant(mysql.VARBINARY(4096), *_MYSQL)


def _hash() -> sa.types.TypeEngine[Any]:
    return sa.LargeBinary(16).with_variant(mysql.BINARY(16), *_MYSQL)


def _blob() -> sa.types.TypeEngine[Any]:
    return sa.LargeBinary().with_variant(mysql.MEDIUMBLOB(), *_MYSQL)


def _text() -> sa.types.TypeEngine[Any]:
    return sa.Text().with_variant(mysql.MEDIUMTEXT(), *_MYSQL)


def _id() -> sa.types.TypeEngine[Any]:
    return sa.BigInteger().with_variant(sa.Integer(), "sqlite")


def _double(name: str, nullable: bool = False) -> sa.Column[Any]:
    return sa.Column(name, sa.Double(), nullable=nullable)


def _bigint(name: str, primary_key: bool = False) -> sa.Column[Any]:
    return sa.Column(
        name, sa.BigInteger(), nullable=False, primary_key=primary_key, autoincrement=False
    )


def upgrade() -> None:
    op.create_table(
        "ql_series",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("key_hash", _hash(), nullable=False),
        sa.Column("app", _name(), nullable=False),
        sa.Column("queue", _name(), nullable=False),
        sa.Column("job", _name(), nullable=False),
        _double("first_seen"),
        _double("last_seen"),
        sa.UniqueConstraint("key_hash", name="uq_ql_series_key_hash"),
        **_TABLE_ARGS,
    )
    op.create_index(
        "ix_ql_series_app_queue",
        "ql_series",
        ["app", "queue"],
        mysql_length={"app": 255, "queue": 255},
    )
    op.create_index("ix_ql_series_last_seen", "ql_series", ["last_seen"])

    op.create_table(
        "ql_queues",
        sa.Column("key_hash", _hash(), primary_key=True),
        sa.Column("app", _name(), nullable=False),
        sa.Column("queue", _name(), nullable=False),
        sa.Column("framework", _name(), nullable=False),
        _double("last_seen"),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_queues_app", "ql_queues", ["app"], mysql_length={"app": 255})
    op.create_index("ix_ql_queues_last_seen", "ql_queues", ["last_seen"])

    op.create_table(
        "ql_buckets",
        _bigint("series_id", primary_key=True),
        sa.Column("resolution", sa.Integer(), primary_key=True, autoincrement=False),
        _bigint("bucket_start", primary_key=True),
        *(_bigint(f"n_{status}") for status in _STATUSES),
        _bigint("mem_peak_count"),
        _double("mem_peak_total"),
        _double("mem_peak_max"),
        _bigint("mem_delta_count"),
        _double("mem_delta_total"),
        _double("mem_delta_max"),
        sa.Column("duration_sketch", _blob(), nullable=True),
        sa.Column("wait_sketch", _blob(), nullable=True),
        sa.Column("cpu_sketch", _blob(), nullable=True),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_buckets_resolution_start", "ql_buckets", ["resolution", "bucket_start"])

    op.create_table(
        "ql_exceptions",
        _bigint("series_id", primary_key=True),
        sa.Column("resolution", sa.Integer(), primary_key=True, autoincrement=False),
        _bigint("bucket_start", primary_key=True),
        sa.Column("type_hash", _hash(), primary_key=True),
        sa.Column("exception_type", _name(), nullable=False),
        _bigint("count"),
        sa.Column("last_message", _text(), nullable=False),
        _double("last_seen"),
        **_TABLE_ARGS,
    )
    op.create_index(
        "ix_ql_exceptions_resolution_start", "ql_exceptions", ["resolution", "bucket_start"]
    )

    op.create_table(
        "ql_applied_batches",
        sa.Column("batch_hash", _hash(), primary_key=True),
        sa.Column("batch_id", _name(), nullable=False),
        _double("created_at"),
        _double("applied_at"),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_applied_batches_created_at", "ql_applied_batches", ["created_at"])

    op.create_table(
        "ql_dropped",
        _bigint("minute", primary_key=True),
        sa.Column("app_hash", _hash(), primary_key=True),
        sa.Column("app", _name(), nullable=False),
        _bigint("count"),
        **_TABLE_ARGS,
    )

    op.create_table(
        "ql_gauge_sources",
        sa.Column("id", _id(), primary_key=True, autoincrement=True),
        sa.Column("key_hash", _hash(), nullable=False),
        sa.Column("kind", _name(), nullable=False),
        sa.Column("app", _name(), nullable=False),
        sa.Column("key", _name(), nullable=False),
        _double("last_seen"),
        sa.UniqueConstraint("key_hash", name="uq_ql_gauge_sources_key_hash"),
        **_TABLE_ARGS,
    )
    op.create_index(
        "ix_ql_gauge_sources_kind_app",
        "ql_gauge_sources",
        ["kind", "app"],
        mysql_length={"kind": 64, "app": 255},
    )
    op.create_index("ix_ql_gauge_sources_last_seen", "ql_gauge_sources", ["last_seen"])

    op.create_table(
        "ql_gauge_buckets",
        _bigint("source_id", primary_key=True),
        sa.Column("resolution", sa.Integer(), primary_key=True, autoincrement=False),
        _bigint("bucket_start", primary_key=True),
        sa.Column("field_hash", _hash(), primary_key=True),
        sa.Column("field", _name(), nullable=False),
        _double("last_value"),
        _double("last_at"),
        _double("min_value"),
        _double("max_value"),
        _double("total"),
        _bigint("sample_count"),
        **_TABLE_ARGS,
    )
    op.create_index(
        "ix_ql_gauge_buckets_resolution_start",
        "ql_gauge_buckets",
        ["resolution", "bucket_start"],
    )

    op.create_table(
        "ql_gauge_latest",
        _bigint("source_id", primary_key=True),
        sa.Column("field_hash", _hash(), primary_key=True),
        sa.Column("field", _name(), nullable=False),
        _double("value"),
        _double("at"),
        **_TABLE_ARGS,
    )

    op.create_table(
        "ql_workers",
        sa.Column("worker_hash", _hash(), primary_key=True),
        sa.Column("worker_id", _name(), nullable=False),
        sa.Column("app", _name(), nullable=False),
        sa.Column("framework", _name(), nullable=False),
        sa.Column("hostname", _name(), nullable=False),
        _bigint("pid"),
        sa.Column("name", _name(), nullable=False),
        sa.Column("queues_json", _text(), nullable=False),
        _bigint("concurrency"),
        _bigint("busy_slots"),
        sa.Column("state", sa.String(16), nullable=False),
        _double("started_at"),
        _double("sent_at"),
        _double("heartbeat_interval_s"),
        sa.Column("current_jobs_json", _text(), nullable=False),
        _bigint("processed"),
        _bigint("failed"),
        _double("busy_s"),
        _double("idle_s"),
        _double("rss_mb", nullable=True),
        _double("cpu_percent", nullable=True),
        _double("first_seen_at"),
        _double("last_heartbeat_at"),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_workers_app", "ql_workers", ["app"], mysql_length={"app": 255})
    op.create_index("ix_ql_workers_last_heartbeat_at", "ql_workers", ["last_heartbeat_at"])


def downgrade() -> None:
    for table in (
        "ql_workers",
        "ql_gauge_latest",
        "ql_gauge_buckets",
        "ql_gauge_sources",
        "ql_dropped",
        "ql_applied_batches",
        "ql_exceptions",
        "ql_buckets",
        "ql_queues",
        "ql_series",
    ):
        op.drop_table(table)
