"""Leases: one holder at a time for per-host samplers and the alert evaluator.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-28
"""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import mysql

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

_MYSQL = ("mysql", "mariadb")


def _name() -> sa.types.TypeEngine[Any]:
    return sa.String(1024).with_variant(mysql.VARBINARY(4096), *_MYSQL)


def upgrade() -> None:
    op.create_table(
        "ql_leases",
        sa.Column(
            "name_hash",
            sa.LargeBinary(16).with_variant(mysql.BINARY(16), *_MYSQL),
            primary_key=True,
        ),
        sa.Column("name", _name(), nullable=False),
        sa.Column("owner", _name(), nullable=False),
        sa.Column("expires_at", sa.Double(), nullable=False),
        mysql_engine="InnoDB",
        mysql_charset="utf8mb4",
        mysql_collate="utf8mb4_bin",
    )


def downgrade() -> None:
    op.drop_table("ql_leases")
