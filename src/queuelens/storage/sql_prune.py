"""Retention pruning of the SQL driver.

    removed = prune_all(storage._run, Retention(), now=time.time())   # {"buckets": 120, ...}

Every delete walks an index oldest-first and commits about :data:`PRUNE_CHUNK` rows per
transaction, so a first prune after a long pause never holds writers up for long. Series,
queues and gauge sources go last, and only once no bucket refers to them any more.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol, TypeVar

from sqlalchemy import Table, delete, exists, select
from sqlalchemy.engine import Connection

from queuelens.model import Resolution
from queuelens.storage.base import Retention
from queuelens.storage.sql_rows import chunks
from queuelens.storage.sql_schema import (
    buckets,
    dropped,
    exceptions,
    gauge_buckets,
    gauge_latest,
    gauge_sources,
    queues,
    series,
    workers,
    writers,
)

__all__ = ["PRUNE_CHUNK", "prune_all"]

T = TypeVar("T")

#: rows deleted per prune transaction, so writers are never blocked for long
PRUNE_CHUNK = 10_000


class Runner(Protocol):
    """``SQLStorage._run``: one unit of work in one (retried) transaction."""

    def __call__(self, work: Callable[[Connection], T], *, write: bool, action: str) -> T: ...


def prune_all(run: Runner, keep: Retention, now: float) -> dict[str, int]:
    """Delete everything past its retention at ``now``; rows removed per kind of data.

    A bucket goes once all of it is past retention (``start + width <= now - keep``); other
    rows once their time stamp is ``keep`` seconds old or older.
    """
    removed = dict.fromkeys(("buckets", "exceptions", "gauges"), 0)
    gauge_keep = {
        Resolution.minute: keep.gauge_minute_s,
        Resolution.hour: keep.hour_s,
        Resolution.day: keep.day_s,
    }
    for resolution in Resolution:
        width = int(resolution)
        last = math.floor(now - keep.for_resolution(resolution)) - width
        for name, table in (("buckets", buckets), ("exceptions", exceptions)):
            removed[name] += _delete_through(
                run, table, "bucket_start", last, table.c.resolution == width
            )
        last = math.floor(now - gauge_keep[resolution]) - width
        removed["gauges"] += _delete_through(
            run, gauge_buckets, "bucket_start", last, gauge_buckets.c.resolution == width
        )
    # A writer silent for retention.batch_id_s is forgotten; were it to come back, its
    # next batch would simply be applied (it starts a new row).
    removed["writers"] = _delete_through(run, writers, "updated_at", now - keep.batch_id_s)
    removed["dropped"] = _delete_through(run, dropped, "minute", math.floor(now - keep.day_s) - 60)
    removed["workers"] = _delete_through(run, workers, "last_heartbeat_at", now - keep.worker_s)
    removed.update(
        run(
            lambda conn: _prune_registries(conn, now - keep.day_s),
            write=True,
            action="pruning series, queues and gauge sources",
        )
    )
    return removed


def _delete_through(run: Runner, table: Table, column: str, last: float, *where: Any) -> int:
    """Delete rows with ``column <= last``, oldest first, in transactions of about
    :data:`PRUNE_CHUNK` rows (each chunk's boundary found through ``column``'s index)."""
    col = table.c[column]
    total = 0
    while True:

        def work(conn: Connection) -> tuple[int, bool]:
            bound = conn.execute(
                select(col)
                .where(col <= last, *where)
                .order_by(col)
                .offset(PRUNE_CHUNK - 1)
                .limit(1)
            ).scalar()
            through = last if bound is None else bound
            result = conn.execute(delete(table).where(col <= through, *where))
            return int(result.rowcount), bound is None

        count, done = run(work, write=True, action=f"pruning {table.name}")
        total += count
        if done:
            return total


def _prune_registries(conn: Connection, last_seen: float) -> dict[str, int]:
    """Series, queues and gauge sources unseen since ``last_seen`` and holding no buckets."""
    removed = {}
    removed["series"] = int(
        conn.execute(
            delete(series).where(
                series.c.last_seen <= last_seen,
                ~exists().where(buckets.c.series_id == series.c.id),
                ~exists().where(exceptions.c.series_id == series.c.id),
            )
        ).rowcount
    )
    removed["queues"] = int(
        conn.execute(delete(queues).where(queues.c.last_seen <= last_seen)).rowcount
    )
    # Lock the stale sources first: a concurrent gauge write waits, and this re-checks it.
    stale = list(
        conn.execute(
            select(gauge_sources.c.id)
            .where(
                gauge_sources.c.last_seen <= last_seen,
                ~exists().where(gauge_buckets.c.source_id == gauge_sources.c.id),
            )
            .with_for_update()
        ).scalars()
    )
    removed["gauge_sources"] = 0
    for chunk in chunks(sorted(stale)):
        conn.execute(delete(gauge_latest).where(gauge_latest.c.source_id.in_(chunk)))
        removed["gauge_sources"] += int(
            conn.execute(delete(gauge_sources).where(gauge_sources.c.id.in_(chunk))).rowcount
        )
    return removed
