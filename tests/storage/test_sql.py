"""SQL driver specifics, on real SQLite files, PostgreSQL and MariaDB/MySQL servers.

The cross-driver behaviour is in ``test_conformance.py``; this module covers what only the
SQL driver has: migrations, URL handling, transactions under concurrency (threads and OS
processes), exact names on MySQL collations, error translation, fork safety and the
indexes behind every read.
"""

from __future__ import annotations

import multiprocessing
import re
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import create_engine, event, func, inspect, select, text
from sqlalchemy.engine import Connection

from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    Stat,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.storage.base import (
    GaugeStat,
    Retention,
    SchemaError,
    StorageError,
    StorageUnavailable,
)
from queuelens.storage.sql import SQLStorage, migrate, schema_revision
from queuelens.storage.sql_engine import engine_url, head_revision
from queuelens.storage.sql_schema import MAX_NAME_CHARS, metadata, writers

#: a UTC midnight, so minute, hour and day buckets of T0 + small offsets are known
T0 = 1_700_006_400
KEY = SeriesKey("shop", "emails.high", "app.tasks.send_mail")
BACKENDS = ["sqlite", "postgresql", "mysql"]


# -- helpers -------------------------------------------------------------------------------


def job(
    status: JobStatus = JobStatus.succeeded,
    duration_s: float | None = 0.1,
    *,
    key: SeriesKey = KEY,
    wait_s: float | None = None,
    memory_peak_mb: float | None = None,
    exception: tuple[str, str] | None = None,
) -> JobOutcome:
    return JobOutcome(
        queue=key.queue,
        job=key.job,
        status=status,
        duration_s=duration_s,
        wait_s=wait_s,
        memory_peak_mb=memory_peak_mb,
        app=key.app,
        exception_type=exception[0] if exception else None,
        exception_message=exception[1] if exception else None,
    )


def batch(
    outcomes: list[tuple[float, JobOutcome]],
    *,
    writer_id: str | None = None,
    sequence: int = 1,
    dropped: dict[str, int] | None = None,
    created_at: float | None = None,
) -> FlushBatch:
    """A flush batch as the recorder builds it: outcomes folded per series and minute."""
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    frameworks: dict[tuple[str, str], str] = {}
    for at, outcome in outcomes:
        series = SeriesKey(outcome.app or "default", outcome.queue, outcome.job)
        key = (series, bucket_start(at, Resolution.minute))
        aggregates.setdefault(key, Aggregate()).add(outcome, at)
        frameworks[series.app, series.queue] = "celery"
    return FlushBatch(
        writer_id=writer_id or uuid.uuid4().hex,
        sequence=sequence,
        created_at=created_at if created_at is not None else max(at for at, _ in outcomes),
        aggregates=aggregates,
        frameworks=frameworks,
        dropped=dropped or {},
    )


def expected_rollup(*batches: FlushBatch) -> dict[tuple[SeriesKey, Resolution, int], Aggregate]:
    """What storage must hold after ``batches``: their rollups merged in write order."""
    out: dict[tuple[SeriesKey, Resolution, int], Aggregate] = {}
    for flush in batches:
        for key, aggregate in flush.rollup().items():
            known = out.get((key.series, key.resolution, key.start))
            if known is None:
                out[key.series, key.resolution, key.start] = aggregate.copy()
            else:
                known.merge(aggregate)
    return out


def beat(sent_at: float, processed: int, **changes: Any) -> WorkerHeartbeat:
    fields: dict[str, Any] = {
        "worker_id": "celery@host-1:4242",
        "app": "shop",
        "framework": "celery",
        "hostname": "host-1",
        "pid": 4242,
        "name": "celery@host-1",
        "queues": ["emails.high", "größe"],
        "concurrency": 4,
        "busy_slots": 1,
        "state": WorkerState.busy,
        "started_at": T0 - 100.0,
        "sent_at": sent_at,
        "heartbeat_interval_s": 5.0,
        "current_jobs": ["app.tasks.send_mail"],
        "processed": processed,
        "failed": 1,
        "busy_s": 12.5,
        "idle_s": 80.0,
        "rss_mb": 123.5,
        "cpu_percent": 12.0,
    }
    fields.update(changes)
    return WorkerHeartbeat(**fields)


def _writer_process(url: str, worker: int, batches: int, series: int) -> None:
    """A worker process: ``batches`` flushes, each one success per series (spawn target)."""
    storage = SQLStorage(url)
    try:
        for i in range(batches):
            at = T0 + 60 * (i % 3) + worker
            keys = [SeriesKey("mp", "q", f"job{n}") for n in range(series)]
            flush = batch(
                [(at, job(duration_s=0.01 * (worker + 1), key=k)) for k in keys],
                writer_id=f"w{worker}",
                sequence=i + 1,
                dropped={"mp": 1},
            )
            assert storage.write(flush) is True
    finally:
        storage.close()


def _backend_pid(storage: SQLStorage) -> int:
    """The PostgreSQL server process serving the storage's pooled connection."""
    query = text("SELECT pg_backend_pid()")
    return int(storage._run(lambda c: c.execute(query).scalar_one(), write=False, action="test"))


def _child_session(storage: SQLStorage, sessions: Any) -> None:
    """Fork target: use the storage object the parent opened, report the session used."""
    sessions.put(_backend_pid(storage))
    storage.write(batch([(T0 + 7, job(key=SeriesKey("fork", "q", "child")))]))
    storage.close()


# -- fixtures ------------------------------------------------------------------------------


@pytest.fixture(params=BACKENDS)
def sql_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """An empty, migrated database of each SQL backend."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'queuelens.db'}"
    url: str = request.getfixturevalue(
        "postgres_url" if request.param == "postgresql" else "mysql_url"
    )
    migrate(url)
    return url


@pytest.fixture
def storage(sql_url: str) -> Iterator[SQLStorage]:
    opened = SQLStorage(sql_url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture(params=["postgresql", "mysql"])
def server_url(request: pytest.FixtureRequest) -> str:
    """An empty, NOT migrated PostgreSQL or MySQL database."""
    url: str = request.getfixturevalue(
        "postgres_url" if request.param == "postgresql" else "mysql_url"
    )
    return url


# -- URLs and migrations -------------------------------------------------------------------


def test_urls_get_default_drivers_and_utf8mb4() -> None:
    assert engine_url("postgres://u:p@db/ql").drivername == "postgresql+psycopg"
    assert engine_url("postgresql://u@db/ql").drivername == "postgresql+psycopg"
    assert engine_url("postgresql+psycopg2://u@db/ql").drivername == "postgresql+psycopg2"
    for scheme in ("mysql", "mariadb"):
        url = engine_url(f"{scheme}://u:p@db:3307/ql")
        assert url.drivername == "mysql+pymysql"
        assert url.query["charset"] == "utf8mb4"
        assert (url.host, url.port, url.password) == ("db", 3307, "p")
    assert engine_url("sqlite:///data/ql.db").drivername == "sqlite+pysqlite"
    for memory in ("sqlite://", "sqlite:///:memory:"):
        with pytest.raises(StorageError, match="needs a database file"):
            engine_url(memory)
    with pytest.raises(StorageError, match="not a SQL URL"):
        engine_url("redis://localhost")


def test_sqlite_schema_is_created_on_first_open(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'sub' / 'dir' / 'ql.db'}"
    assert schema_revision(url) is None
    assert not (tmp_path / "sub").exists()  # asking created nothing
    with SQLStorage(url) as storage:
        assert storage.list_apps() == []
    assert schema_revision(url) == head_revision() == "0003"
    assert migrate(url) == "0003"  # already at head: nothing to do
    assert (tmp_path / "sub" / "dir" / "ql.db.lock").exists()  # serialises first opens


def test_sqlite_with_migrate_false_reports_missing_schema(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ql.db'}"
    with pytest.raises(SchemaError, match="Run `queuelens migrate`"):
        SQLStorage(url, migrate=False)


def test_migrate_creates_the_schema_on_servers(server_url: str) -> None:
    assert schema_revision(server_url) is None
    assert migrate(server_url) == head_revision()
    assert schema_revision(server_url) == head_revision()
    assert migrate(server_url) == head_revision()  # idempotent
    with SQLStorage(server_url) as storage:
        storage.ping()


def test_unmigrated_postgres_raises_schema_error(postgres_url: str) -> None:
    with pytest.raises(SchemaError) as raised:
        SQLStorage(postgres_url)
    message = str(raised.value)
    assert postgres_url in message
    assert "has no queuelens schema" in message
    assert "queuelens migrate" in message
    assert "migrate=True" in message


def test_migrate_true_migrates_on_open(server_url: str) -> None:
    with SQLStorage(server_url, migrate=True) as storage:
        assert storage.write(batch([(T0, job())])) is True
    assert schema_revision(server_url) == head_revision()


def test_migrations_match_the_table_definitions(sql_url: str) -> None:
    SQLStorage(sql_url).close()  # SQLite migrates on open; servers were migrated by the fixture
    engine = create_engine(engine_url(sql_url))
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn, opts={"compare_type": True, "version_table": "ql_alembic_version"}
            )
            diff = compare_metadata(context, metadata)
    finally:
        engine.dispose()
    assert diff == []


def test_url_keeps_no_password(postgres_url: str) -> None:
    migrate(postgres_url)
    with_password = postgres_url.replace("postgres@", "postgres:hunter2@")
    with SQLStorage(with_password) as storage:  # local trust auth ignores the password
        assert storage.url == postgres_url.replace("postgres@", "postgres:***@")
        assert "hunter2" not in repr(storage)


@pytest.mark.parametrize("scheme", ["postgresql", "mysql"])
def test_unreachable_server_fails_fast_without_the_password(scheme: str) -> None:
    url = f"{scheme}://queuelens:s3cret-pw@127.0.0.1:1/queuelens"
    started = time.monotonic()
    with pytest.raises(StorageUnavailable) as raised:
        SQLStorage(url)
    assert time.monotonic() - started < 6.0
    message = str(raised.value)
    assert "s3cret-pw" not in message
    assert f"{scheme}://queuelens:***@127.0.0.1:1/queuelens" in message
    assert "127.0.0.1:1" in message
    assert "running" in message


# -- writing and reading -------------------------------------------------------------------


def test_one_flush_writes_exact_minute_hour_and_day_buckets(storage: SQLStorage) -> None:
    other = SeriesKey("shop", "reports", "build")
    flush = batch(
        [
            (T0 + 5, job(duration_s=0.2, wait_s=1.0, memory_peak_mb=100.0)),
            (
                T0 + 6,
                job(
                    JobStatus.failed,
                    0.8,
                    memory_peak_mb=300.0,
                    exception=("ValueError", "bad input"),
                ),
            ),
            (T0 + 65, job(duration_s=0.4, exception=("ValueError", "worse input"))),
            (T0 + 70, job(JobStatus.retried, 1.5, key=other, exception=("KeyError", "'id'"))),
        ],
        dropped={"shop": 3},
    )
    assert storage.write(flush) is True

    minute = storage.read_buckets([KEY, other], Resolution.minute, T0, T0 + 3600)
    assert sorted(minute[KEY]) == [T0, T0 + 60]
    first = minute[KEY][T0]
    assert first.counts == {JobStatus.succeeded: 1, JobStatus.failed: 1}
    assert (first.duration.count, first.duration.max, first.duration.sum) == (2, 0.8, 1.0)
    assert (first.wait.count, first.wait.max) == (1, 1.0)
    assert first.memory_peak == Stat(count=2, total=400.0, max=300.0)
    assert first.exceptions["ValueError"].count == 1
    assert first.exceptions["ValueError"].last_message == "bad input"
    assert minute[other][T0 + 60].counts == {JobStatus.retried: 1}
    assert minute[other][T0 + 60].exceptions["KeyError"].last_message == "'id'"

    hour = storage.read_buckets([KEY], Resolution.hour, T0, T0 + 3600)[KEY][T0]
    day = storage.read_buckets([KEY], Resolution.day, T0, T0 + 86400)[KEY][T0]
    for coarse in (hour, day):
        assert coarse.counts == {JobStatus.succeeded: 2, JobStatus.failed: 1}
        assert (coarse.duration.count, coarse.duration.max) == (3, 0.8)
        assert coarse.exceptions["ValueError"].count == 2
        assert coarse.exceptions["ValueError"].last_message == "worse input"
        assert coarse.exceptions["ValueError"].last_seen == T0 + 65
    want = expected_rollup(flush)
    assert hour == want[KEY, Resolution.hour, T0]
    assert minute[KEY][T0 + 60] == want[KEY, Resolution.minute, T0 + 60]

    assert storage.read_dropped(T0, T0 + 3600) == {"shop": 3}
    assert storage.read_dropped(T0 + 3600, T0 + 7200) == {}
    assert storage.list_apps() == ["shop"]
    assert [(q.app, q.queue, q.framework, q.last_seen) for q in storage.list_queues()] == [
        ("shop", "emails.high", "celery", T0 + 70),
        ("shop", "reports", "celery", T0 + 70),
    ]
    assert storage.list_jobs("shop") == [KEY, other]
    assert storage.list_jobs("shop", "reports") == [other]
    assert storage.read_buckets([SeriesKey("shop", "x", "y")], Resolution.minute, T0, T0 + 60) == {}
    assert storage.read_buckets([KEY], Resolution.minute, T0 + 120, T0 + 3600) == {}


def test_batches_merge_into_existing_buckets(storage: SQLStorage) -> None:
    first = batch(
        [
            (T0 + 1, job(duration_s=1.0, memory_peak_mb=50.0)),
            (T0 + 2, job(JobStatus.failed, 2.0, exception=("OSError", "disk full"))),
        ]
    )
    second = batch(
        [
            (T0 + 30, job(duration_s=4.0, memory_peak_mb=70.0)),
            (T0 + 40, job(JobStatus.failed, 8.0, exception=("OSError", "no route"))),
        ],
        dropped={"shop": 2},
    )
    third = batch([(T0 + 3600 * 5, job(duration_s=16.0))], dropped={"shop": 5})
    for flush in (first, second, third):
        assert storage.write(flush) is True
    want = expected_rollup(first, second, third)
    for resolution in Resolution:
        read = storage.read_buckets([KEY], resolution, T0, T0 + 86400)[KEY]
        assert read == {
            start: aggregate for (_, res, start), aggregate in want.items() if res is resolution
        }
    day = storage.read_buckets([KEY], Resolution.day, T0, T0 + 1)[KEY][T0]
    assert day.counts == {JobStatus.succeeded: 3, JobStatus.failed: 2}
    assert (day.duration.sum, day.duration.min, day.duration.max) == (31.0, 1.0, 16.0)
    assert day.memory_peak == Stat(count=2, total=120.0, max=70.0)
    assert day.exceptions["OSError"].count == 2
    assert day.exceptions["OSError"].last_message == "no route"
    assert storage.read_dropped(T0, T0 + 86400) == {"shop": 7}


def test_duplicate_batch_returns_false_and_changes_nothing(storage: SQLStorage) -> None:
    flush = batch([(T0 + 1, job(exception=("E", "m")))], writer_id="b", dropped={"shop": 4})
    assert storage.write(flush) is True
    before = storage.read_buckets([KEY], Resolution.minute, T0, T0 + 60)
    again = batch([(T0 + 2, job(JobStatus.failed))], writer_id="b", dropped={"shop": 9})
    assert storage.write(flush) is False
    assert storage.write(again) is False  # same sequence, other content: still not applied
    assert storage.read_buckets([KEY], Resolution.minute, T0, T0 + 60) == before
    assert before[KEY][T0].counts == {JobStatus.succeeded: 1}
    assert storage.read_dropped(T0, T0 + 60) == {"shop": 4}
    assert storage.write(batch([(T0 + 3, job())], writer_id="B")) is True  # ids are exact


def count_writer_rows(storage: SQLStorage) -> int:
    return storage._run(
        lambda conn: int(conn.execute(select(func.count()).select_from(writers)).scalar_one()),
        write=False,
        action="counting writers",
    )


def test_one_writer_row_whatever_the_number_of_flushes(storage: SQLStorage) -> None:
    for sequence in range(1, 51):
        flush = batch([(T0 + sequence, job())], writer_id="steady", sequence=sequence,
                      dropped={"shop": 1})  # fmt: skip
        assert storage.write(flush) is True
    assert count_writer_rows(storage) == 1
    assert storage.write(batch([(T0, job())], writer_id="steady", sequence=50)) is False
    assert count_writer_rows(storage) == 1
    day = storage.read_buckets([KEY], Resolution.day, T0, T0 + 1)[KEY][T0]
    assert day.total == 50
    assert storage.read_dropped(T0, T0 + 86400) == {"shop": 50}


@pytest.mark.parametrize("sequence", [-1, 2**53, 1.5, True, "3"])
def test_a_bad_sequence_is_refused(storage: SQLStorage, sequence: Any) -> None:
    with pytest.raises(StorageError, match="sequence"):
        storage.write(batch([(T0, job())], sequence=sequence))
    assert count_writer_rows(storage) == 0


def test_concurrent_duplicates_apply_once(storage: SQLStorage) -> None:
    flush = batch(
        [(T0 + 1, job(key=SeriesKey("c", "q", f"j{n}"))) for n in range(50)],
        writer_id="racing",
        dropped={"c": 1},
    )
    gate = threading.Barrier(8)
    results: list[bool | BaseException] = []

    def write() -> None:
        gate.wait()
        try:
            results.append(storage.write(flush))
        except BaseException as exc:  # reported by the assertion below
            results.append(exc)

    threads = [threading.Thread(target=write) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results, key=str) == [False] * 7 + [True]
    read = storage.read_buckets([SeriesKey("c", "q", "j7")], Resolution.day, T0, T0 + 1)
    assert read[SeriesKey("c", "q", "j7")][T0].total == 1
    assert storage.read_dropped(T0, T0 + 60) == {"c": 1}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql", "mysql"])
def test_processes_writing_at_once_lose_nothing(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path / 'shared.db'}"
    else:
        url = request.getfixturevalue("postgres_url" if backend == "postgresql" else "mysql_url")
        migrate(url)
    workers, batches, series = 4, 8, 20
    context = multiprocessing.get_context("spawn")
    processes = [
        context.Process(target=_writer_process, args=(url, w, batches, series))
        for w in range(workers)
    ]
    for process in processes:
        process.start()
    for process in processes:
        process.join(90)
    assert [p.exitcode for p in processes] == [0] * workers
    keys = [SeriesKey("mp", "q", f"job{n}") for n in range(series)]
    with SQLStorage(url) as storage:
        day = storage.read_buckets(keys, Resolution.day, T0, T0 + 1)
        minute = storage.read_buckets(keys, Resolution.minute, T0, T0 + 3600)
        assert storage.read_dropped(T0, T0 + 3600) == {"mp": workers * batches}
        # A second delivery of any batch is refused.
        assert storage.write(batch([(T0, job())], writer_id="w0", sequence=1)) is False
        assert storage.write(batch([(T0, job())], writer_id="w0", sequence=batches)) is False
    for key in keys:
        assert day[key][T0].total == workers * batches
        assert day[key][T0].duration.count == workers * batches
        assert day[key][T0].duration.max == pytest.approx(0.01 * workers)
        per_minute = {start: a.total for start, a in minute[key].items()}
        assert per_minute == {T0: workers * 3, T0 + 60: workers * 3, T0 + 120: workers * 2}


def test_forked_child_uses_its_own_connections(postgres_url: str) -> None:
    migrate(postgres_url)
    with SQLStorage(postgres_url) as storage:
        parent_session = _backend_pid(storage)  # the pool now holds this connection
        context = multiprocessing.get_context("fork")
        sessions: Any = context.SimpleQueue()
        process = context.Process(target=_child_session, args=(storage, sessions))
        process.start()
        process.join(60)
        assert process.exitcode == 0
        child_session = sessions.get()
        sessions.close()
        assert child_session != parent_session
        # The child neither used nor closed the parent's connection.
        assert _backend_pid(storage) == parent_session
        assert storage.list_jobs("fork") == [SeriesKey("fork", "q", "child")]


def test_deadlocks_retry_the_whole_transaction(server_url: str) -> None:
    migrate(server_url)
    mysql = server_url.startswith("mysql")
    # A real server error carrying the deadlock code, as a lock cycle would raise it.
    deadlock = text(
        "SIGNAL SQLSTATE '40001' SET MYSQL_ERRNO = 1213, MESSAGE_TEXT = 'deadlock (test)'"
        if mysql
        else "DO $$ BEGIN RAISE EXCEPTION 'deadlock (test)' USING ERRCODE = '40P01'; END $$"
    )
    attempts: list[int] = []

    def work(conn: Connection) -> str:
        attempts.append(len(attempts) + 1)
        conn.execute(
            text("INSERT INTO ql_dropped (minute, app_hash, app, count) VALUES (:m, :h, :a, 1)"),
            {"m": T0, "h": b"0123456789abcdef", "a": b"x" if mysql else "x"},
        )
        if len(attempts) < 3:
            conn.execute(deadlock)
        return "applied"

    with SQLStorage(server_url) as storage:
        assert storage._db.run(work, write=True, action="testing") == "applied"
        assert attempts == [1, 2, 3]
        assert storage.read_dropped(T0, T0 + 60) == {"x": 1}  # earlier tries rolled back

        def always(conn: Connection) -> None:
            conn.execute(deadlock)

        with pytest.raises(StorageError, match="deadlock \\(test\\)") as raised:
            storage._db.run(always, write=True, action="testing")
        assert not isinstance(raised.value, StorageUnavailable)


# -- names ---------------------------------------------------------------------------------

NAMES = [
    "emails",
    "Emails",
    "EMAILS",
    "emails ",
    " emails",
    "emails.high",
    "a:b/c",
    "größe",
    "grösse",
    "grosse",
    "ß",
    "ss",
    "e",
    "é",
    "☃",
    "😀",
    "x" * 255,
    "y" * MAX_NAME_CHARS,
]


def test_names_round_trip_exactly(storage: SQLStorage) -> None:
    keys = [
        SeriesKey(app, queue, job_name)
        for app, queue, job_name in zip(
            NAMES, NAMES[1:] + NAMES[:1], NAMES[2:] + NAMES[:2], strict=True
        )
    ]
    keys += [SeriesKey("names", name, name) for name in NAMES]
    outcomes = [
        (T0 + 1.0, job(duration_s=float(n + 1), key=key, exception=(NAMES[n % len(NAMES)], "m")))
        for n, key in enumerate(keys)
    ]
    assert storage.write(batch(outcomes)) is True
    read = storage.read_buckets(keys, Resolution.minute, T0, T0 + 60)
    assert set(read) == set(keys)
    for n, key in enumerate(keys):
        assert read[key][T0].duration.max == float(n + 1)
        assert list(read[key][T0].exceptions) == [NAMES[n % len(NAMES)]]
    assert storage.list_jobs("names") == sorted(
        (k for k in keys if k.app == "names"), key=lambda k: (k.queue, k.job)
    )
    for name in NAMES:
        assert storage.list_jobs("names", name) == [SeriesKey("names", name, name)]
        assert [k.app for k in storage.list_jobs(name)] == [name]
    assert storage.list_apps() == sorted([*NAMES, "names"])

    storage.write_gauges(
        [GaugeSample("queue", "names", name, {name: 1.0}, T0 + 1.0) for name in NAMES]
    )
    latest = storage.latest_gauges("queue", "names")
    assert [(s.key, s.values) for s in latest] == [(n, {n: 1.0}) for n in sorted(NAMES)]
    for name in ("Emails", "emails "):
        stats = storage.read_gauges("queue", "names", name, Resolution.minute, T0, T0 + 60)
        assert stats == {T0: {name: GaugeStat(1.0, T0 + 1.0, 1.0, 1.0, 1.0, 1)}}
    for name in ("worker", "Worker", "worker "):
        storage.heartbeat(beat(T0, 1, worker_id=name, app=name))
    assert [w.heartbeat.worker_id for w in storage.list_workers("worker ")] == ["worker "]


def test_names_beyond_the_limit_are_refused(storage: SQLStorage) -> None:
    long_key = SeriesKey("shop", "q", "j" * (MAX_NAME_CHARS + 1))
    with pytest.raises(StorageError, match="limited to 1024"):
        storage.write(batch([(T0, job(key=long_key))]))
    with pytest.raises(StorageError, match="NUL"):
        storage.write(batch([(T0, job(key=SeriesKey("shop", "q\x00", "j")))]))
    assert storage.list_apps() == []


# -- gauges, workers, prune ----------------------------------------------------------------


def test_gauges_merge_per_bucket_and_keep_the_newest(storage: SQLStorage) -> None:
    storage.write_gauges(
        [
            GaugeSample("queue", "shop", "emails", {"pending": 10.0, "scheduled": 1.0}, T0 + 1),
            GaugeSample("queue", "shop", "emails", {"pending": 30.0}, T0 + 20),
        ]
    )
    storage.write_gauges(
        [
            GaugeSample("queue", "shop", "emails", {"pending": 20.0, "bad": float("nan")}, T0 + 61),
            GaugeSample("queue", "shop", "emails", {"pending": 99.0}, T0 + 10),  # late, older
            GaugeSample("queue", "other", "emails", {"pending": 5.0}, T0 + 5),
        ]
    )
    minute = storage.read_gauges("queue", "shop", "emails", Resolution.minute, T0, T0 + 120)
    assert minute == {
        T0: {
            "pending": GaugeStat(30.0, T0 + 20, 10.0, 99.0, 139.0, 3),
            "scheduled": GaugeStat(1.0, T0 + 1, 1.0, 1.0, 1.0, 1),
        },
        T0 + 60: {"pending": GaugeStat(20.0, T0 + 61, 20.0, 20.0, 20.0, 1)},
    }
    hour = storage.read_gauges("queue", "shop", "emails", Resolution.hour, T0, T0 + 3600)
    assert hour == {
        T0: {
            "pending": GaugeStat(20.0, T0 + 61, 10.0, 99.0, 159.0, 4),
            "scheduled": GaugeStat(1.0, T0 + 1, 1.0, 1.0, 1.0, 1),
        }
    }
    latest = storage.latest_gauges("queue", "shop")
    assert latest == [
        GaugeSample("queue", "shop", "emails", {"pending": 20.0, "scheduled": 1.0}, T0 + 61)
    ]
    assert [s.app for s in storage.latest_gauges("queue")] == ["other", "shop"]
    assert storage.latest_gauges("server") == []
    assert storage.read_gauges("queue", "shop", "nope", Resolution.minute, T0, T0 + 60) == {}


def test_heartbeats_keep_first_seen_and_never_go_backwards(storage: SQLStorage) -> None:
    storage.heartbeat(beat(T0, 10))
    storage.heartbeat(beat(T0 + 5, 12, state=WorkerState.idle, current_jobs=[]))
    storage.heartbeat(beat(T0 + 3, 11, queues=["late"]))  # delivered late: older fields
    storage.heartbeat(beat(T0 + 4, 50, worker_id="rq:1", app="billing", rss_mb=None))
    records = {r.heartbeat.worker_id: r for r in storage.list_workers()}
    record = records["celery@host-1:4242"]
    assert (record.first_seen_at, record.last_heartbeat_at) == (T0, T0 + 5)
    assert record.heartbeat == beat(T0 + 5, 12, state=WorkerState.idle, current_jobs=[])
    assert records["rq:1"].heartbeat.rss_mb is None
    assert [r.heartbeat.worker_id for r in storage.list_workers("billing")] == ["rq:1"]
    storage.heartbeat(beat(T0 + 10, 3))  # a lower total never replaces a higher one
    record = storage.list_workers("shop")[0]
    assert (record.heartbeat.processed, record.heartbeat.sent_at) == (12, T0 + 10)


def test_prune_removes_exactly_what_is_past_retention(sql_url: str) -> None:
    keep = Retention(
        minute_s=3600,
        hour_s=2 * 86400,
        day_s=10 * 86400,
        gauge_minute_s=600,
        worker_s=300,
        batch_id_s=1800,
    )
    storage = SQLStorage(sql_url, retention=keep)
    try:
        old, new = SeriesKey("p", "q", "old"), SeriesKey("p", "q", "new")
        storage.write(
            batch(
                [(T0 + 10, job(key=old, exception=("E", "m")))], writer_id="old", dropped={"p": 1}
            )
        )
        storage.write(batch([(T0 + 7200 + 10, job(key=new))], writer_id="new", dropped={"p": 2}))
        storage.write_gauges([GaugeSample("queue", "p", "q", {"pending": 1.0}, T0 + 10)])
        storage.heartbeat(beat(T0 + 7000, 1))

        # Now: the old minute ended 2 h before, 1 h past its retention; the new one is fresh.
        now = float(T0 + 7200 + 60)
        report = storage.prune(now)
        assert report.removed == {
            "buckets": 1,
            "exceptions": 1,
            "gauges": 1,
            "writers": 0,  # written moments ago, by the wall clock
            "dropped": 0,
            "workers": 0,
            "series": 0,
            "queues": 0,
            "gauge_sources": 0,
        }
        assert storage.read_buckets([old], Resolution.minute, T0, now) == {}
        assert set(storage.read_buckets([old, new], Resolution.hour, T0, now)) == {old, new}
        assert storage.write(batch([(T0 + 10, job(key=old))], writer_id="old", sequence=2))
        assert storage.prune(now).removed["buckets"] == 1  # that re-applied minute again

        # Eleven days on: past the day retention, every worker too.
        later = float(T0 + 11 * 86400 + 86400)
        report = storage.prune(later)
        assert report.removed["buckets"] == 5  # the new minute, two hour and two day buckets
        assert report.removed["exceptions"] == 2  # the old series' hour and day rows
        assert report.removed["gauges"] == 2
        assert report.removed["workers"] == 1
        assert report.removed["dropped"] == 2
        assert (report.removed["series"], report.removed["queues"]) == (2, 1)
        assert report.removed["gauge_sources"] == 1
        assert storage.list_apps() == []
        assert storage.latest_gauges("queue") == []
        assert storage.prune(later).total == 0

        # Writers are forgotten batch_id_s after their last write (by the wall clock).
        assert storage.prune(time.time()).removed["writers"] == 0
        assert count_writer_rows(storage) == 2
        assert storage.prune(time.time() + keep.batch_id_s + 1).removed["writers"] == 2
        assert count_writer_rows(storage) == 0
        assert storage.write(batch([(T0 + 10, job(key=old))], writer_id="old", sequence=1))
    finally:
        storage.close()


def test_prune_works_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import queuelens.storage.sql_prune as sql_prune

    monkeypatch.setattr(sql_prune, "PRUNE_CHUNK", 7)
    with SQLStorage(f"sqlite:///{tmp_path / 'ql.db'}") as storage:
        keys = [SeriesKey("c", "q", f"j{n}") for n in range(5)]
        storage.write(batch([(T0 + 60 * m, job(key=k)) for m in range(10) for k in keys]))
        report = storage.prune(T0 + 3 * 86400)
        assert report.removed["buckets"] == 50
        assert storage.read_buckets(keys, Resolution.hour, T0, T0 + 3600) != {}


# -- errors, lifecycle, indexes --------------------------------------------------------------


def test_driver_errors_become_storage_errors(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'ql.db'}"
    with SQLStorage(url) as storage:
        engine = create_engine(url)
        try:
            with engine.begin() as conn:
                conn.execute(text("DROP TABLE ql_buckets"))
        finally:
            engine.dispose()
        with pytest.raises(SchemaError, match="queuelens migrate"):
            storage.write(batch([(T0, job())]))
        coarser = FlushBatch("x", 1, T0, {(KEY, T0): Aggregate(0.05)})
        with pytest.raises(StorageError, match="relative accuracy"):
            storage.write(coarser)
    with pytest.raises(StorageError, match="is closed"):
        storage.list_apps()
    storage.close()  # closing twice is fine


def test_reads_and_prunes_use_indexes(tmp_path: Path) -> None:
    """On SQLite's planner: no statement of a read or prune scans a whole table."""
    with SQLStorage(f"sqlite:///{tmp_path / 'ql.db'}") as storage:
        storage.write(batch([(T0, job(exception=("E", "m")))], dropped={"shop": 1}))
        storage.write_gauges([GaugeSample("queue", "shop", "q", {"pending": 1.0}, T0)])
        storage.heartbeat(beat(T0, 1))
        statements: list[tuple[str, Any]] = []

        def capture(
            conn: Connection,
            cursor: Any,
            statement: str,
            parameters: Any,
            context: Any,
            executemany: bool,
        ) -> None:
            if statement.lstrip().upper().startswith(("SELECT", "DELETE")):
                statements.append((statement, parameters))

        event.listen(storage._db.engine, "before_cursor_execute", capture)
        reads: list[Callable[[], object]] = [
            lambda: storage.read_buckets([KEY], Resolution.minute, T0, T0 + 60),
            lambda: storage.read_gauges("queue", "shop", "q", Resolution.minute, T0, T0 + 60),
            lambda: storage.latest_gauges("queue", "shop"),
            lambda: storage.read_dropped(T0, T0 + 60),
            lambda: storage.list_jobs("shop", "emails.high"),
            lambda: storage.list_queues("shop"),
            lambda: storage.list_workers("shop"),
            lambda: storage.prune(T0 + 3 * 86400),
            lambda: storage.write(batch([(T0 + 5, job(exception=("E", "n")))])),
        ]
        for read in reads:
            read()
        event.remove(storage._db.engine, "before_cursor_execute", capture)
        assert len(statements) > 20
        with storage._db.engine.connect() as conn:
            for statement, parameters in statements:
                plan = conn.exec_driver_sql("EXPLAIN QUERY PLAN " + statement, parameters)
                details = [row[-1] for row in plan]
                scans = [d for d in details if re.match(r"SCAN (TABLE )?ql_\w+$", d)]
                assert not scans, (statement, details)


def test_schema_has_indexes_for_every_prune_and_filter(sql_url: str) -> None:
    SQLStorage(sql_url).close()
    engine = create_engine(engine_url(sql_url))
    try:
        indexed = {
            table: {tuple(index["column_names"]) for index in inspect(engine).get_indexes(table)}
            for table in ("ql_buckets", "ql_series", "ql_workers", "ql_gauge_sources")
        }
    finally:
        engine.dispose()
    assert ("resolution", "bucket_start") in indexed["ql_buckets"]
    assert ("app", "queue") in indexed["ql_series"]
    assert ("last_heartbeat_at",) in indexed["ql_workers"]
    assert ("kind", "app") in indexed["ql_gauge_sources"]


def test_head_revision_constant_matches_the_migrations() -> None:
    from queuelens.storage.sql_engine import _script_directory

    assert head_revision() == _script_directory().get_current_head()


def test_opening_a_current_database_does_not_import_alembic(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'lean.db'}"
    migrate(url)
    script = (
        "import sys\n"
        "from queuelens.storage import open_storage\n"
        f"open_storage({url!r}).close()\n"
        "print('alembic' in sys.modules)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == "False"
