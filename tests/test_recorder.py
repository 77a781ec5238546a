"""The recorder: exact counts, never raising, bounded buffering, idempotent retries, forks."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.model import (
    OVERFLOW_JOB,
    Aggregate,
    FlushBatch,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
)
from queuelens.recorder import Recorder
from queuelens.storage import Storage, StorageError, open_storage
from tests.conftest import require_service

NOW = time.time()
WINDOW = (NOW - 3 * 86400, NOW + 86400)


def stored_total(storage: Storage, app: str = "default") -> dict[SeriesKey, Aggregate]:
    keys = storage.list_jobs(app)
    read = storage.read_buckets(keys, Resolution.day, *WINDOW)
    out: dict[SeriesKey, Aggregate] = {}
    for key, buckets in read.items():
        total = out.setdefault(key, Aggregate())
        for aggregate in buckets.values():
            total.merge(aggregate)
    return out


def job(
    name: str = "send_mail", status: JobStatus = JobStatus.succeeded, **kw: object
) -> JobOutcome:
    fields: dict[str, object] = {"duration_s": 0.25, "wait_s": 1.0}
    fields.update(kw)
    return JobOutcome(queue="emails", job=name, status=status, **fields)  # type: ignore[arg-type]


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ql.db'}"


@pytest.fixture
def storage(sqlite_url: str) -> Iterator[Storage]:
    opened = open_storage(sqlite_url)
    yield opened
    opened.close()


class FailingAfterCommit:
    """A real storage whose first ``fail_times`` writes commit and then report an error,
    as when the connection drops between COMMIT and its acknowledgement."""

    def __init__(self, inner: Storage, fail_times: int) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail_times = fail_times
        self.results: list[bool] = []

    def write(self, batch: FlushBatch) -> bool:
        applied = self.inner.write(batch)
        self.results.append(applied)
        if self.fail_times:
            self.fail_times -= 1
            raise StorageError("connection lost after commit")
        return applied

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_records_are_counted_exactly(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=60)
    for i in range(100):
        recorder.record(
            job(
                status=JobStatus.failed if i % 10 == 0 else JobStatus.succeeded,
                exception_type="ValueError" if i % 10 == 0 else None,
                exception_message=f"boom {i}" if i % 10 == 0 else None,
                finished_at=NOW + i * 0.001,
            )
        )
    recorder.record(job("other", JobStatus.retried, duration_s=None, wait_s=None))
    recorder.close()
    totals = stored_total(storage)
    send = totals[SeriesKey("default", "emails", "send_mail")]
    assert send.count(JobStatus.succeeded) == 90
    assert send.count(JobStatus.failed) == 10
    assert send.duration.count == 100
    assert send.duration.sum == pytest.approx(25.0)
    assert send.exceptions["ValueError"].count == 10
    assert send.exceptions["ValueError"].last_message == "boom 90"
    other = totals[SeriesKey("default", "emails", "other")]
    assert other.count(JobStatus.retried) == 1
    assert other.duration.count == 0  # unknown durations are not counted as zero
    stats = recorder.stats()
    assert (stats.recorded, stats.dropped, stats.pending_buckets) == (101, 0, 0)
    assert stats.flushes >= 1


def test_concurrent_threads_lose_nothing(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=0.05)
    per_thread = 2000

    def work(t: int) -> None:
        for i in range(per_thread):
            recorder.record(job(f"job{t % 3}", duration_s=0.001 * (i % 50)))

    threads = [threading.Thread(target=work, args=(t,)) for t in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    recorder.close()
    totals = stored_total(storage)
    assert sum(a.total for a in totals.values()) == 8 * per_thread
    assert totals[SeriesKey("default", "emails", "job0")].total == 3 * per_thread


def test_background_thread_flushes_on_its_own(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=0.05)
    recorder.record(job())
    deadline = time.monotonic() + 10
    while recorder.stats().flushes == 0 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert stored_total(storage)[SeriesKey("default", "emails", "send_mail")].total == 1
    recorder.close()


def test_record_never_raises(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=60)
    bad = job(duration_s="slow")  # a buggy integration passing a string
    recorder.record(bad)
    recorder.record(job(wait_s=-5.0))  # clock skew counts as zero wait, not an error
    assert recorder.stats().internal_errors == 1
    recorder.close()
    got = stored_total(storage)[SeriesKey("default", "emails", "send_mail")]
    assert got.wait.count == 1
    assert got.wait.max == 0.0


def test_a_retried_batch_that_had_committed_is_not_counted_twice(storage: Storage) -> None:
    flaky = FailingAfterCommit(storage, fail_times=1)
    recorder = Recorder(flaky, flush_interval_s=60)  # type: ignore[arg-type]
    for _ in range(42):
        recorder.record(job())
    assert recorder.flush() is False  # committed, but the recorder was told it failed
    assert recorder.flush() is True  # same sequence again: storage says "already applied"
    assert flaky.results == [True, False]
    assert stored_total(storage)[SeriesKey("default", "emails", "send_mail")].total == 42
    recorder.close()


class Capturing:
    """A real storage that keeps every batch it is asked to write, failing on demand."""

    def __init__(self, inner: Storage) -> None:
        self.inner = inner
        self.url = inner.url
        self.fail = False
        self.batches: list[tuple[str, int, int]] = []  # writer, sequence, outcomes

    def write(self, batch: FlushBatch) -> bool:
        self.batches.append((batch.writer_id, batch.sequence, batch.outcome_count))
        if self.fail:
            raise StorageError("down")
        return self.inner.write(batch)

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_batches_are_numbered_per_writer_and_retried_under_their_number(
    storage: Storage,
) -> None:
    capturing = Capturing(storage)
    recorder = Recorder(capturing, flush_interval_s=60)  # type: ignore[arg-type]
    other = Recorder(capturing, flush_interval_s=60)  # type: ignore[arg-type]
    recorder.record(job())
    assert recorder.flush() is True
    capturing.fail = True
    recorder.record(job())
    assert recorder.flush() is False
    assert recorder.flush() is False  # the same batch again: nothing new was cut
    capturing.fail = False
    recorder.record(job())  # new data waits for the in-flight batch
    assert recorder.flush() is True
    other.record(job())
    assert other.flush() is True
    writer = capturing.batches[0][0]
    assert [(w == writer, seq, n) for w, seq, n in capturing.batches] == [
        (True, 1, 1),
        (True, 2, 1),
        (True, 2, 1),
        (True, 2, 1),
        (True, 3, 1),
        (False, 1, 1),
    ]
    assert capturing.batches[-1][0] != writer
    assert stored_total(storage)[SeriesKey("default", "emails", "send_mail")].total == 4
    recorder.close()
    other.close()


def test_cardinality_cap_sends_overflow_to_a_named_series(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=60, max_jobs_per_queue=3, max_queues_per_app=2)
    for i in range(5):
        recorder.record(job(f"job{i}"))
        recorder.record(job(f"job{i}"))
    recorder.record(JobOutcome(queue="q2", job="x", status=JobStatus.succeeded))
    recorder.record(JobOutcome(queue="q3", job="x", status=JobStatus.succeeded))
    recorder.close()
    totals = stored_total(storage)
    assert {k.job for k in totals if k.queue == "emails"} == {"job0", "job1", "job2", OVERFLOW_JOB}
    assert totals[SeriesKey("default", "emails", OVERFLOW_JOB)].total == 4
    assert totals[SeriesKey("default", OVERFLOW_JOB, "x")].total == 1
    assert sum(a.total for a in totals.values()) == 12


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


@pytest.fixture
def redis_later(tmp_path: Path) -> Iterator[tuple[str, list[subprocess.Popen[bytes]]]]:
    """A Redis URL on a port where nothing listens yet; the test starts the server."""
    require_service("redis")
    if shutil.which("redis-server") is None:  # pragma: no cover
        pytest.skip("redis-server is not installed")
    port = _free_port()
    started: list[subprocess.Popen[bytes]] = []
    yield f"redis://127.0.0.1:{port}/0?prefix=qlrec", started
    for process in started:
        process.terminate()
        process.wait(10)


def _start_redis(url: str, started: list[subprocess.Popen[bytes]], tmp: Path) -> None:
    port = url.split(":")[2].split("/")[0]
    started.append(
        subprocess.Popen(
            [
                "redis-server",
                "--port",
                port,
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(tmp),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", int(port)), timeout=0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise AssertionError("redis-server did not start")


def test_storage_down_buffers_then_writes_when_back(
    redis_later: tuple[str, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    url, started = redis_later
    recorder = Recorder(lambda: open_storage(url), flush_interval_s=60)
    for _ in range(30):
        recorder.record(job())
    assert recorder.flush() is False
    assert recorder.flush() is False
    stats = recorder.stats()
    assert stats.flush_failures == 2
    assert stats.last_error is not None
    assert "127.0.0.1" in stats.last_error
    recorder.record(job())  # jobs go on while storage is down
    _start_redis(url, started, tmp_path)
    assert recorder.flush() is True
    storage = open_storage(url)
    try:
        assert stored_total(storage)[SeriesKey("default", "emails", "send_mail")].total == 31
    finally:
        storage.close()
        recorder.close()


def test_past_the_bound_oldest_data_is_dropped_and_the_drop_is_stored(
    redis_later: tuple[str, list[subprocess.Popen[bytes]]], tmp_path: Path
) -> None:
    url, started = redis_later
    recorder = Recorder(lambda: open_storage(url), flush_interval_s=60, buffer_max_buckets=10)
    minute0 = (int(NOW // 60) - 100) * 60
    for m in range(40):  # 40 distinct minutes, 2 jobs each, oldest first
        for _ in range(2):
            recorder.record(job(finished_at=minute0 + m * 60 + 1))
    # The hot path holds at most twice the bound (20 buckets) and refuses the rest.
    assert recorder.stats().dropped == 40
    assert recorder.flush() is False  # 20 buckets in flight, 10 over the bound: oldest go
    assert recorder.stats().dropped == 60
    for m in range(40, 55):
        recorder.record(job(finished_at=minute0 + m * 60 + 1))
    assert recorder.flush() is False  # 10 in flight + 15 new: the 15 oldest are dropped
    assert recorder.stats().dropped == 85
    assert recorder.stats().pending_buckets == 10
    _start_redis(url, started, tmp_path)
    assert recorder.flush() is True
    storage = open_storage(url)
    try:
        got = stored_total(storage)[SeriesKey("default", "emails", "send_mail")]
        assert got.total == 10  # the newest ten minutes survived
        assert storage.read_dropped(*WINDOW) == {"default": 85}
        assert got.total + 85 == recorder.stats().recorded
    finally:
        storage.close()
        recorder.close()


def test_hot_path_hard_stop_counts_what_it_refuses(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=60, buffer_max_buckets=2)
    for m in range(6):
        recorder.record(job(finished_at=NOW - m * 60))
    assert recorder.stats().dropped == 2  # 4 buckets (twice the bound) kept, 2 refused
    recorder.close()
    assert sum(a.total for a in stored_total(storage).values()) == 4
    assert storage.read_dropped(*WINDOW) == {"default": 2}


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_forked_child_never_flushes_the_parents_data(storage: Storage, sqlite_url: str) -> None:
    recorder = Recorder(storage, flush_interval_s=60)
    for _ in range(5):
        recorder.record(job("parent"))
    pid = os.fork()
    if pid == 0:  # pragma: no cover - runs in the child; its exit code is checked below
        code = 1
        try:
            recorder.record(job("child"))
            recorder.record(job("child"))
            recorder.close()
            code = 0 if recorder.stats().recorded == 2 else 3
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    recorder.close()
    totals = stored_total(storage)
    assert totals[SeriesKey("default", "emails", "parent")].total == 5
    assert totals[SeriesKey("default", "emails", "child")].total == 2


def test_pending_data_is_flushed_at_interpreter_exit(sqlite_url: str) -> None:
    script = textwrap.dedent(f"""
        from queuelens import JobOutcome, JobStatus, Recorder, open_storage
        recorder = Recorder(lambda: open_storage({sqlite_url!r}), flush_interval_s=3600)
        for _ in range(17):
            recorder.record(JobOutcome(queue="q", job="j", status=JobStatus.succeeded))
        # no close(): the atexit hook must flush
    """)
    subprocess.run([sys.executable, "-c", script], check=True, timeout=60)
    storage = open_storage(sqlite_url)
    try:
        assert stored_total(storage)[SeriesKey("default", "q", "j")].total == 17
    finally:
        storage.close()


def test_outcome_app_overrides_recorder_app(storage: Storage) -> None:
    recorder = Recorder(storage, app="billing", framework="rq", flush_interval_s=60)
    recorder.record(job())
    recorder.record(JobOutcome(queue="q", job="j", status=JobStatus.succeeded, app="tenant-2"))
    recorder.close()
    assert storage.list_apps() == ["billing", "tenant-2"]
    assert [q.framework for q in storage.list_queues("billing")] == ["rq"]


def test_names_no_storage_can_keep_are_cleaned_not_fatal(storage: Storage) -> None:
    recorder = Recorder(storage, flush_interval_s=60)
    long_name = "j" * 5000
    for _ in range(3):
        recorder.record(job("bad\x00name", exception_type="Err\x00or", exception_message="m"))
        recorder.record(job(long_name))
        recorder.record(JobOutcome(queue="q\udc80", job="x", status=JobStatus.failed))
    recorder.close()
    assert recorder.stats().flush_failures == 0
    totals = stored_total(storage)
    bad = totals[SeriesKey("default", "emails", "bad\ufffdname")]
    assert bad.total == 3
    assert bad.exceptions["Err\ufffdor"].count == 3
    assert totals[SeriesKey("default", "emails", "j" * 1024)].total == 3
    assert totals[SeriesKey("default", "q?", "x")].total == 3
