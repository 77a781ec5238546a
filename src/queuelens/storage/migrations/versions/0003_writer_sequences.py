"""Writer sequences: one idempotency row per recorder instead of one per flush.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-05

``ql_writers`` keeps the last flush-batch sequence applied per writer (recorder); it
replaces ``ql_applied_batches``, which kept one row per flush for a day. Upgrading drops
the remembered batch ids: a batch of an older queuelens retried across the upgrade would be
applied again, so upgrade while recorders can reach the database (nothing in flight).
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0003"
down_revision: str | None = "0002"
branch_labels: str | None = None
depends_on: str | None = None

_MYSQL = ("mysql", "mariadb")
_TABLE_ARGS: dict[str, Any] = {
    "mysql_engine": "InnoDB",
    "mysql_charset": "utf8mb4",
    "mysql_collate": "utf8mb4_bin",
}


def _name() -> sa.types.TypeEngine[Any]:
    return sa.String(1024).with_variant(mysql.VARBINARY(4096), *_MYSQL)


def _hash() -> sa.types.TypeEngine[Any]:
    return sa.LargeBinary(16).with_variant(mysql.BINARY(16), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "ql_writers",
        sa.Column("writer_hash", _hash(), primary_key=True),
        sa.Column("writer_id", _name(), nullable=False),
        sa.Column("last_sequence", sa.BigInteger(), nullable=False),
        sa.Column("updated_at", sa.Double(), nullable=False),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_writers_updated_at", "ql_writers", ["updated_at"])
    op.drop_index("ix_ql_applied_batches_created_at", table_name="ql_applied_batches")
    op.drop_table("ql_applied_batches")


def downgrade() -> None:
    op.create_table(
        "ql_applied_batches",
        sa.Column("batch_hash", _hash(), primary_key=True),
        sa.Column("batch_id", _name(), nullable=False),
        sa.Column("created_at", sa.Double(), nullable=False),
        sa.Column("applied_at", sa.Double(), nullable=False),
        **_TABLE_ARGS,
    )
    op.create_index("ix_ql_applied_batches_created_at", "ql_applied_batches", ["created_at"])
    op.drop_index("ix_ql_writers_updated_at", table_name="ql_writers")
    op.drop_table("ql_writers")
