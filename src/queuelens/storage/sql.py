"""SQL storage: SQLite (the embedded default), PostgreSQL and MySQL/MariaDB.

    storage = SQLStorage("sqlite:///queuelens.db")         # schema created on first open
    migrate("postgresql://ql:secret@db/queuelens")         # once per release: `queuelens migrate`
    storage = SQLStorage("postgresql://ql:secret@db/queuelens")
    storage.write(batch)            # one transaction; False if this writer sequence was applied

Tables are described in :mod:`queuelens.storage.sql_schema`; engines, retries and error
translation in :mod:`queuelens.storage.sql_engine`.

How ``write`` stays atomic and idempotent
-----------------------------------------
A flush batch is applied in ONE transaction, which first makes sure its writer has a row
in ``ql_writers`` (inserted if missing) and locks it (``SELECT ... FOR UPDATE``). If the
row's ``last_sequence`` is already at or past the batch's ``sequence``, the transaction
rolls back: ``write`` returns False and nothing changed. Otherwise ``last_sequence`` is set
to the batch's and the batch is applied. A concurrent duplicate waits on the writer row
until the first transaction ends, then sees the new sequence and fails the same way
(SQLite writers are serialised by ``BEGIN IMMEDIATE``). One row per writer, whatever the
number of flushes; :meth:`SQLStorage.prune` removes writers silent for
``retention.batch_id_s``.

Next the batch's series rows are upserted in key-hash order; on PostgreSQL and MySQL the
upsert row-locks every series the batch touches, so two writers sharing a series take
turns, always in the same order (no deadlock). Under those locks the existing bucket and
exception rows are read (``SELECT ... FOR UPDATE``, by primary-key ranges), merged with the
batch in Python (counts add, maxima max, sketches merge) and written back with one bulk
upsert per table. Deadlocks, serialization failures and lost connections retry the whole
transaction: a retry of a batch that did commit finds its sequence and returns False.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from sqlalchemy import Table, delete, select, union, update
from sqlalchemy.engine import Connection

from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
)
from queuelens.sketch import Sketch, SketchError
from queuelens.storage import sql_read
from queuelens.storage.base import (
    BucketSpan,
    GaugeStat,
    PruneReport,
    QueueInfo,
    Retention,
    StorageError,
    StorageUnavailable,
    WorkerRecord,
)
from queuelens.storage.sql_engine import Database, current_revision, engine_url
from queuelens.storage.sql_prune import prune_all
from queuelens.storage.sql_read import int_range
from queuelens.storage.sql_rows import (
    check_name,
    key_hash,
    upsert,
    worker_record,
    worker_row,
)
from queuelens.storage.sql_schema import (
    dropped,
    gauge_buckets,
    gauge_latest,
    gauge_sources,
    leases,
    queues,
    workers,
)
from queuelens.storage.sql_schema import series as series_table
from queuelens.storage.sql_write import (
    BatchPlan,
    GaugePlan,
    apply_batch,
    apply_gauges,
    registry_ids,
)

__all__ = ["SQLStorage", "migrate", "schema_revision"]

T = TypeVar("T")


def migrate(url: str) -> str:
    """Create or upgrade the queuelens schema at ``url``; return the revision now applied."""
    db = Database.open(url)
    try:
        return db.upgrade()
    finally:
        db.dispose()


def schema_revision(url: str) -> str | None:
    """The schema revision of the database at ``url``, None if it was never migrated."""
    target = engine_url(url)
    if target.get_backend_name() == "sqlite" and not os.path.exists(target.database or ""):
        return None  # asking must not create an empty database file
    db = Database.open(url)
    try:
        return db.run(current_revision, write=False, action="reading the schema revision")
    finally:
        db.dispose()


class SQLStorage:
    """The :class:`~queuelens.storage.base.Storage` protocol on a SQL database.

    ``migrate=None`` creates or upgrades a SQLite schema on open and only checks it on
    PostgreSQL/MySQL (raising SchemaError if missing or behind); ``True`` migrates on open
    everywhere, ``False`` never does. Safe to share between threads; after ``os.fork()``
    the child opens its own connections.
    """

    def __init__(
        self,
        url: str,
        *,
        relative_accuracy: float = 0.01,
        retention: Retention | None = None,
        migrate: bool | None = None,
    ) -> None:
        try:
            Sketch(relative_accuracy)
        except SketchError as exc:
            raise StorageError(str(exc)) from None
        self.relative_accuracy = relative_accuracy
        self.retention = retention or Retention()
        self._db = Database.open(url)
        #: the URL as given, password replaced by ``***``
        self.url: str = self._db.url
        self._closed = False
        try:
            self._db.ensure_schema(migrate)
        except BaseException:
            self._db.dispose()
            raise

    def __repr__(self) -> str:
        return f"SQLStorage({self.url!r})"

    def __enter__(self) -> SQLStorage:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _run(
        self,
        work: Callable[[Connection], T],
        *,
        write: bool,
        action: str,
        retry_disconnect: bool = True,
    ) -> T:
        if self._closed:
            raise StorageError(f"storage {self.url} is closed; open a new one")
        return self._db.run(work, write=write, action=action, retry_disconnect=retry_disconnect)

    # -- writing ---------------------------------------------------------------------------

    def write(self, batch: FlushBatch) -> bool:
        plan = BatchPlan.of(batch, self.relative_accuracy, applied_at=time.time())
        return self._run(
            lambda conn: apply_batch(conn, plan),
            write=True,
            action=f"writing flush batch {batch.batch_id!r}",
        )

    def write_gauges(self, samples: Sequence[GaugeSample]) -> None:
        plan = GaugePlan.of(samples)
        if plan.empty:
            return
        # Not retried after a lost connection: a commit that did happen would count twice.
        self._run(
            lambda conn: apply_gauges(conn, plan),
            write=True,
            action="writing gauge samples",
            retry_disconnect=False,
        )

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        for what in ("worker_id", "app", "framework", "hostname", "name"):
            check_name(getattr(beat, what), f"heartbeat {what}")
        worker_hash = key_hash(beat.worker_id)

        def work(conn: Connection) -> None:
            # Insert-if-missing then lock: concurrent first beats of one worker cannot race.
            upsert(conn, workers, [worker_row(beat, None)], ("worker_hash",), rules={})
            old = (
                conn.execute(
                    select(workers).where(workers.c.worker_hash == worker_hash).with_for_update()
                )
                .mappings()
                .one()
            )
            row = worker_row(beat, old)
            if row != dict(old):
                del row["worker_hash"]
                conn.execute(
                    update(workers).where(workers.c.worker_hash == worker_hash).values(row)
                )

        self._run(work, write=True, action=f"recording a heartbeat of {beat.worker_id!r}")

    # -- reading ---------------------------------------------------------------------------

    def read_buckets(
        self,
        series: Sequence[SeriesKey],
        resolution: Resolution,
        start: float,
        end: float,
    ) -> dict[SeriesKey, dict[int, Aggregate]]:
        low, high = int_range(start, end)
        if not series or low >= high:
            return {}
        accuracy = self.relative_accuracy
        return self._run(
            lambda conn: sql_read.read_buckets(
                conn, sql_read.series_ids(conn, series), resolution, low, high, accuracy
            ),
            write=False,
            action="reading buckets",
        )

    def read_merged(
        self, series: Sequence[SeriesKey], spans: Sequence[BucketSpan]
    ) -> dict[SeriesKey, Aggregate]:
        if not series or not spans:
            return {}
        accuracy = self.relative_accuracy
        return self._run(
            lambda conn: sql_read.read_merged(
                conn, sql_read.series_ids(conn, series), spans, accuracy
            ),
            write=False,
            action="reading merged buckets",
        )

    def read_counts(
        self, spans: Sequence[BucketSpan], app: str | None = None
    ) -> list[dict[SeriesKey, dict[int, dict[JobStatus, int]]]]:
        return self._run(
            lambda conn: sql_read.read_counts(conn, spans, app),
            write=False,
            action="reading bucket counts",
        )

    def count_attempts(
        self, spans: Sequence[BucketSpan], app: str | None = None
    ) -> list[tuple[int, int]]:
        return self._run(
            lambda conn: sql_read.count_attempts(conn, spans, app),
            write=False,
            action="counting attempts",
        )

    def read_gauges(
        self,
        kind: str,
        app: str,
        key: str,
        resolution: Resolution,
        start: float,
        end: float,
    ) -> dict[int, dict[str, GaugeStat]]:
        low, high = int_range(start, end)
        source_hash = key_hash(kind, app, key)

        def work(conn: Connection) -> dict[int, dict[str, GaugeStat]]:
            ids = registry_ids(conn, gauge_sources, [source_hash])
            out: dict[int, dict[str, GaugeStat]] = {}
            if not ids or low >= high:
                return out
            stmt = _range(gauge_buckets, [ids[source_hash]], int(resolution), low, high)
            for row in conn.execute(stmt).mappings():
                out.setdefault(row["bucket_start"], {})[row["field"]] = GaugeStat(
                    last=row["last_value"],
                    last_at=row["last_at"],
                    min=row["min_value"],
                    max=row["max_value"],
                    total=row["total"],
                    count=int(row["sample_count"]),
                )
            return out

        return self._run(work, write=False, action=f"reading gauges of {kind} {key!r}")

    def latest_gauges(self, kind: str, app: str | None = None) -> list[GaugeSample]:
        stmt = (
            select(
                gauge_sources.c.id,
                gauge_sources.c.app,
                gauge_sources.c.key,
                gauge_latest.c.field,
                gauge_latest.c.value,
                gauge_latest.c.at,
            )
            .join(gauge_latest, gauge_latest.c.source_id == gauge_sources.c.id)
            .where(gauge_sources.c.kind == kind)
        )
        if app is not None:
            stmt = stmt.where(gauge_sources.c.app == app)

        def work(conn: Connection) -> list[GaugeSample]:
            samples: dict[int, GaugeSample] = {}
            for row in conn.execute(stmt).mappings():
                sample = samples.get(row["id"])
                if sample is None:
                    sample = samples[row["id"]] = GaugeSample(
                        kind, row["app"], row["key"], {}, row["at"]
                    )
                sample.values[row["field"]] = row["value"]
                sample.at = max(sample.at, row["at"])
            return sorted(samples.values(), key=lambda s: (s.app, s.key))

        return self._run(work, write=False, action=f"reading the latest {kind} gauges")

    def read_dropped(self, start: float, end: float) -> dict[str, int]:
        low, high = int_range(start, end)
        stmt = select(dropped.c.app, dropped.c.count).where(
            dropped.c.minute >= low, dropped.c.minute < high
        )

        def work(conn: Connection) -> dict[str, int]:
            out: dict[str, int] = {}
            for app, count in conn.execute(stmt):
                out[app] = out.get(app, 0) + int(count)
            return out

        return self._run(work, write=False, action="reading dropped outcomes")

    def list_apps(self) -> list[str]:
        """Apps with job series, queues, workers or gauges."""
        stmt = union(
            *(select(t.c.app).distinct() for t in (series_table, queues, workers, gauge_sources))
        )
        apps = self._run(
            lambda c: list(c.execute(stmt).scalars()), write=False, action="listing apps"
        )
        return sorted(set(apps))

    def list_queues(self, app: str | None = None) -> list[QueueInfo]:
        stmt = select(queues.c.app, queues.c.queue, queues.c.framework, queues.c.last_seen)
        if app is not None:
            stmt = stmt.where(queues.c.app == app)
        rows = self._run(lambda c: list(c.execute(stmt)), write=False, action="listing queues")
        return sorted((QueueInfo(*row) for row in rows), key=lambda q: (q.app, q.queue))

    def list_jobs(self, app: str, queue: str | None = None) -> list[SeriesKey]:
        stmt = select(series_table.c.app, series_table.c.queue, series_table.c.job).where(
            series_table.c.app == app
        )
        if queue is not None:
            stmt = stmt.where(series_table.c.queue == queue)
        rows = self._run(lambda c: list(c.execute(stmt)), write=False, action="listing jobs")
        return [SeriesKey(*row) for row in sorted(tuple(row) for row in rows)]

    def list_workers(self, app: str | None = None) -> list[WorkerRecord]:
        stmt = select(workers)
        if app is not None:
            stmt = stmt.where(workers.c.app == app)
        rows = self._run(
            lambda c: list(c.execute(stmt).mappings()), write=False, action="listing workers"
        )
        records = [worker_record(row) for row in rows]
        return sorted(
            records,
            key=lambda r: (
                r.heartbeat.app,
                r.heartbeat.hostname,
                r.heartbeat.pid,
                r.heartbeat.worker_id,
            ),
        )

    # -- housekeeping ----------------------------------------------------------------------

    def prune(self, now: float | None = None) -> PruneReport:
        now = time.time() if now is None else now
        return PruneReport(prune_all(self._run, self.retention, now))

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        check_name(name, "lease name")
        check_name(owner, "lease owner")
        name_hash = key_hash(name)

        def work(conn: Connection) -> bool:
            now = time.time()
            row = {"name_hash": name_hash, "name": name, "owner": owner, "expires_at": now + ttl_s}
            upsert(conn, leases, [row], ("name_hash",), rules={})  # create if missing
            held = conn.execute(
                select(leases.c.owner, leases.c.expires_at)
                .where(leases.c.name_hash == name_hash)
                .with_for_update()
            ).one()
            if held.owner != owner and held.expires_at > now:
                return False
            conn.execute(
                update(leases)
                .where(leases.c.name_hash == name_hash)
                .values(owner=owner, expires_at=now + ttl_s)
            )
            return True

        return self._run(work, write=True, action=f"taking the lease {name!r}")

    def release_lease(self, name: str, owner: str) -> None:
        name_hash = key_hash(name)
        self._run(
            lambda conn: conn.execute(
                delete(leases).where(leases.c.name_hash == name_hash, leases.c.owner == owner)
            ),
            write=True,
            action=f"releasing the lease {name!r}",
        )

    def ping(self) -> None:
        try:
            self._run(lambda c: c.execute(select(1)).scalar(), write=False, action="pinging")
        except StorageUnavailable:
            raise
        except StorageError as exc:
            raise StorageUnavailable(str(exc)) from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._db.dispose()


def _range(table: Table, ids: Sequence[int], resolution: int, low: int, high: int) -> Any:
    return select(table).where(
        table.c.source_id.in_(ids),
        table.c.resolution == resolution,
        table.c.bucket_start >= low,
        table.c.bucket_start < high,
    )
