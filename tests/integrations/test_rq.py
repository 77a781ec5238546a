"""RQ integration end to end: real ``rq worker`` processes, real Redis, a SQLite store.

Every test runs its own queue (keys deleted afterwards) and its own SQLite file, with
``QUEUELENS_FLUSH_INTERVAL=0.2s`` and ``QUEUELENS_HEARTBEAT_INTERVAL=0.5s``.
"""

from __future__ import annotations

import math
import os
import signal
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from redis import Redis
from rq import Retry
from rq.command import send_stop_job_command
from rq.job import Job

from queuelens.config import load_settings
from queuelens.integrations.rq import SimpleWorker, Worker, _Attempt, _read_report
from queuelens.model import Aggregate, JobStatus, WorkerState
from queuelens.probes import (
    FAILED,
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    SCHEDULED,
    ProbeConfig,
    build_probe,
)
from queuelens.sketch import Sketch
from tests.integrations import rq_jobs
from tests.integrations.rq_helpers import (
    JOBS,
    REDIS_URL,
    WorkerProcess,
    isolated_queue,
    job_id,
    read_series,
    read_worker,
    wait_until,
)


@pytest.fixture
def storage_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'metrics.db'}"


def counts(aggregate: Aggregate) -> dict[str, int]:
    return {status.value: n for status, n in aggregate.counts.items() if n}


def exceptions(aggregate: Aggregate) -> dict[str, int]:
    return {name: stat.count for name, stat in aggregate.exceptions.items()}


def own_durations(redis: Redis, job_ids: list[str]) -> Sketch:
    """The durations jobs returned (each measured its own sleep), as a sketch."""
    sketch = Sketch()
    for job in Job.fetch_many(job_ids, connection=redis):
        assert job is not None
        seconds = job.return_value()
        assert isinstance(seconds, float)
        sketch.add(seconds)
    return sketch


def near(value: float | None, target: float, relative: float = 0.10) -> bool:
    return value is not None and abs(value - target) <= relative * target


def test_forking_worker_records_a_known_workload(storage_url: str, tmp_path: Path) -> None:
    """Exact counts per status, honest duration/wait/CPU/memory, exceptions by type, the
    worker's final heartbeat; the probe sees the backlog grow old before the worker starts."""
    with isolated_queue() as (redis, queue):

        def enqueue(label: str, func: Callable[..., object], *args: object, **kw: Any) -> None:
            queue.enqueue(func, *args, job_id=job_id(queue, label), **kw)

        for i in range(20):
            enqueue(f"quick{i}", rq_jobs.sleep_100ms)
        for i in range(10):
            enqueue(f"slow{i}", rq_jobs.sleep_300ms)
        for i in range(5):
            enqueue(f"fail{i}", rq_jobs.fail, f"bad input {i}")
        for i in range(3):
            enqueue(f"flaky{i}", rq_jobs.flaky, retry=Retry(max=2))
        enqueue("retry_once", rq_jobs.retry_once)
        enqueue("cpu", rq_jobs.burn_cpu, 0.5)
        enqueue("memory", rq_jobs.allocate, 50)
        enqueue("timeout", rq_jobs.sleep_for, 5, job_timeout=1)
        enqueue("killed", rq_jobs.kill_own_process)

        probe = build_probe(ProbeConfig("rq", REDIS_URL, queues=[queue.name]))
        before = probe.sample()[0].values
        time.sleep(2.0)  # the backlog waits 2 s before any worker runs
        later = probe.sample()[0].values
        assert before[PENDING] == later[PENDING] == 43
        assert later[OLDEST_PENDING_AGE_S] >= before[OLDEST_PENDING_AGE_S] + 1.9

        worker = WorkerProcess.start(queue.name, storage_url, tmp_path, burst=True)
        assert worker.wait() == 0, worker.log
        after = probe.sample()[0].values
        probe.close()
        # how long each sleep really took, as the job measured it (a busy CI box oversleeps)
        slept = {
            name: own_durations(redis, [job_id(queue, f"{name}{i}") for i in range(n)])
            for name, n in (("quick", 20), ("slow", 10))
        }

    series = read_series(storage_url)
    assert set(series) == {
        "sleep_100ms",
        "sleep_300ms",
        "fail",
        "flaky",
        "retry_once",
        "burn_cpu",
        "allocate",
        "sleep_for",
        "kill_own_process",
    }, worker.log
    quick, slow = series["sleep_100ms"], series["sleep_300ms"]
    assert counts(quick) == {"succeeded": 20}
    assert counts(slow) == {"succeeded": 10}
    assert near(quick.duration.quantile(0.5), 0.1)
    assert near(slow.duration.quantile(0.5), 0.3)
    for q in (0.5, 0.95):
        assert near(quick.duration.quantile(q), slept["quick"].quantile(q) or 0)
        assert near(slow.duration.quantile(q), slept["slow"].quantile(q) or 0)
    # enqueued 2 s before the worker started: the wait shows it, the duration does not
    assert (quick.wait.quantile(0.0) or 0) >= 2.0 * 0.99
    assert (slow.wait.quantile(0.0) or 0) >= 2.0 * 0.99
    assert (quick.duration.quantile(1.0) or 1) < 0.15
    assert (quick.cpu.quantile(0.95) or 1) < 0.05  # sleeping is not CPU time

    assert counts(series["fail"]) == {"failed": 5}
    assert exceptions(series["fail"]) == {"ValueError": 5}
    assert series["fail"].exceptions["ValueError"].last_message.startswith("bad input")
    assert counts(series["flaky"]) == {"retried": 6, "succeeded": 3}
    assert exceptions(series["flaky"]) == {f"{JOBS}.FlakyError": 6}
    assert counts(series["retry_once"]) == {"retried": 1, "succeeded": 1}  # returned Retry
    assert 0.45 <= (series["burn_cpu"].cpu.quantile(0.5) or 0) <= 0.6
    memory = series["allocate"]
    assert memory.memory_delta.max >= 50
    assert memory.memory_peak.max >= memory.memory_delta.max
    timed_out = series["sleep_for"]
    assert counts(timed_out) == {"timed_out": 1}
    assert exceptions(timed_out) == {"rq.timeouts.JobTimeoutException": 1}
    assert 0.9 <= (timed_out.duration.quantile(0.5) or 0) < 2.0
    killed = series["kill_own_process"]
    assert counts(killed) == {"failed": 1}
    assert exceptions(killed) == {"WorkHorseTerminated": 1}
    assert "signal 9" in killed.exceptions["WorkHorseTerminated"].last_message

    record = read_worker(storage_url, worker.name)
    assert record is not None
    beat = record.heartbeat
    assert (beat.framework, beat.pid, beat.queues) == ("rq", worker.process.pid, [queue.name])
    assert record.state_at(time.time()) is WorkerState.stopped  # burst end is a clean stop
    assert (beat.processed, beat.failed, beat.current_jobs) == (50, 14, [])
    assert (after[PENDING], after[RESERVED], after[FAILED]) == (0, 0, 7)


def test_scheduled_wait_long_job_heartbeats_and_warm_shutdown(
    storage_url: str, tmp_path: Path
) -> None:
    """A scheduled job's wait leaves out its delay; a worker stays busy with fresh heartbeats
    through a 4 s job; SIGTERM lets that job finish, records it, then reports stopped."""
    with isolated_queue() as (redis, queue):
        worker = WorkerProcess.start(queue.name, storage_url, tmp_path, scheduler=True)
        try:
            wait_until(lambda: read_worker(storage_url, worker.name), "a heartbeat", worker=worker)
            # RQ schedules to the whole second: due 1-2 s from now
            due = math.ceil(time.time()) + 1
            scheduled = queue.enqueue_at(
                datetime.fromtimestamp(due, UTC), rq_jobs.sleep_100ms, job_id=job_id(queue, "due")
            )
            wait_until(lambda: "sleep_100ms" in read_series(storage_url), "the scheduled job")
            started_at = Job.fetch(scheduled.id, connection=redis).started_at
            assert started_at is not None
            assert started_at.timestamp() >= due  # it waited for its time, but not in the queue:
            assert (read_series(storage_url)["sleep_100ms"].wait.quantile(0.5) or 9) < 0.5

            queue.enqueue(rq_jobs.sleep_for, 4, job_id=job_id(queue, "long"))

            def busy() -> bool:
                record = read_worker(storage_url, worker.name)
                return record is not None and record.heartbeat.state is WorkerState.busy

            wait_until(busy, "the worker to turn busy", worker=worker)
            probe = build_probe(ProbeConfig("rq", REDIS_URL))  # discovers the queue
            depth = next(s.values for s in probe.sample() if s.key == queue.name)
            probe.close()
            assert (depth[PENDING], depth[RESERVED], depth[SCHEDULED]) == (0, 1, 0)
            beats = set()
            for _ in range(5):  # ~2.5 s into the 4 s job
                time.sleep(0.5)
                record = read_worker(storage_url, worker.name)
                assert record is not None
                now = time.time()
                assert record.state_at(now) is WorkerState.busy
                assert now - record.last_heartbeat_at < 1.0  # beats every 0.5 s
                assert record.heartbeat.current_jobs == [f"{JOBS}.sleep_for"]
                beats.add(record.last_heartbeat_at)
            assert len(beats) >= 4
            worker.signal(signal.SIGTERM)  # warm shutdown: the running job finishes first
            assert worker.wait() == 0, worker.log
        finally:
            worker.kill()

    series = read_series(storage_url)
    assert counts(series["sleep_for"]) == {"succeeded": 1}
    assert near(series["sleep_for"].duration.quantile(0.5), 4.0)
    record = read_worker(storage_url, worker.name)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stopped
    assert (record.heartbeat.processed, record.heartbeat.failed) == (2, 0)


def test_stopped_job_is_revoked_and_a_killed_worker_goes_stale(
    storage_url: str, tmp_path: Path
) -> None:
    """``send_stop_job_command`` records ``revoked``; after SIGKILL the worker is still
    listed, with its counters, and turns stale once three heartbeats are missed."""
    with isolated_queue() as (redis, queue):
        worker = WorkerProcess.start(queue.name, storage_url, tmp_path)
        try:
            job = queue.enqueue(rq_jobs.sleep_for, 30, job_id=job_id(queue, "stopped"))

            def state() -> WorkerState | None:
                record = read_worker(storage_url, worker.name)
                return record.state_at(time.time()) if record is not None else None

            wait_until(lambda: state() is WorkerState.busy, "busy", worker=worker)
            send_stop_job_command(redis, job.id)
            wait_until(lambda: "sleep_for" in read_series(storage_url), "the stopped job")
            stopped = read_series(storage_url)["sleep_for"]
            assert counts(stopped) == {"revoked": 1}
            assert exceptions(stopped) == {"WorkHorseTerminated": 1}
            wait_until(lambda: state() is WorkerState.idle, "idle", worker=worker)

            worker.kill()  # no goodbye: the last heartbeat says idle
            assert state() is WorkerState.idle
            wait_until(lambda: state() is WorkerState.stale, "stale", timeout_s=5)
        finally:
            worker.kill()
    record = read_worker(storage_url, worker.name)
    assert record is not None
    assert (record.heartbeat.processed, record.heartbeat.failed) == (1, 1)


def test_simple_worker_measures_in_process(storage_url: str, tmp_path: Path) -> None:
    """SimpleWorker: the same statuses and measurements from JobMeasurement, and the app
    set with ``configure`` (``rq worker -w tests.integrations.rq_jobs.BillingWorker``)."""
    with isolated_queue() as (_, queue):
        for i in range(5):
            queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, f"quick{i}"))
        for i in range(2):
            queue.enqueue(rq_jobs.fail, "nope", job_id=job_id(queue, f"fail{i}"))
        queue.enqueue(rq_jobs.flaky, retry=Retry(max=2), job_id=job_id(queue, "flaky"))
        queue.enqueue(rq_jobs.burn_cpu, 0.3, job_id=job_id(queue, "cpu"))
        queue.enqueue(rq_jobs.allocate, 50, job_id=job_id(queue, "memory"))
        queue.enqueue(rq_jobs.sleep_for, 5, job_timeout=1, job_id=job_id(queue, "timeout"))
        worker = WorkerProcess.start(
            queue.name, storage_url, tmp_path, worker_class=f"{JOBS}.BillingWorker", burst=True
        )
        assert worker.wait() == 0, worker.log

    assert read_series(storage_url) == {}  # everything went to app "billing"
    series = read_series(storage_url, app="billing")
    assert counts(series["sleep_100ms"]) == {"succeeded": 5}
    assert near(series["sleep_100ms"].duration.quantile(0.95), 0.1)
    assert counts(series["fail"]) == {"failed": 2}
    assert exceptions(series["fail"]) == {"ValueError": 2}
    assert counts(series["flaky"]) == {"retried": 2, "succeeded": 1}
    assert 0.27 <= (series["burn_cpu"].cpu.quantile(0.5) or 0) <= 0.4
    # in-process RSS counters are batched per CPU by the kernel: a few hundred KB of noise
    assert series["allocate"].memory_delta.max >= 50 * 0.99
    assert counts(series["sleep_for"]) == {"timed_out": 1}
    record = read_worker(storage_url, worker.name)
    assert record is not None
    assert record.heartbeat.app == "billing"
    assert record.state_at(time.time()) is WorkerState.stopped
    assert (record.heartbeat.processed, record.heartbeat.failed) == (13, 5)


def test_configure_makes_a_subclass_with_its_settings(tmp_path: Path) -> None:
    billing = Worker.configure(app="billing", storage_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert issubclass(billing, Worker)
    assert billing.__name__ == "Worker"
    assert (billing.queuelens_app, Worker.queuelens_app) == ("billing", None)
    again = billing.configure(storage_url=f"sqlite:///{tmp_path / 'b.db'}")
    assert again.queuelens_app == "billing"  # configure keeps what it is not given
    with isolated_queue() as (redis, queue):
        worker = again([queue.name], connection=redis)
        settings = worker.queuelens.settings  # made on first use; nothing is opened yet
        assert (settings.app, settings.storage_url) == ("billing", again.queuelens_storage_url)
        assert worker.queuelens.framework == "rq"
        worker.queuelens.close()


@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
@pytest.mark.parametrize("worker_class", [Worker, SimpleWorker])
def test_workers_inside_this_process(
    worker_class: type[Worker | SimpleWorker], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``work()`` called from Python (as tests of an app do): twice in one process, each run
    records and stops cleanly; the forking worker also copes with a horse that kills itself."""
    storage_url = f"sqlite:///{tmp_path / 'metrics.db'}"
    configured = worker_class.configure(app="inproc", storage_url=storage_url)
    with isolated_queue() as (redis, queue):
        names = []
        for run in range(2):
            queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, f"quick{run}"))
            queue.enqueue(rq_jobs.fail, "nope", job_id=job_id(queue, f"fail{run}"))
            queue.enqueue(rq_jobs.flaky, retry=Retry(max=1), job_id=job_id(queue, f"flaky{run}"))
            queue.enqueue(rq_jobs.retry_once, job_id=job_id(queue, f"retry{run}"))
            if worker_class is Worker:
                queue.enqueue(rq_jobs.kill_own_process, job_id=job_id(queue, f"kill{run}"))
            worker = configured([queue.name], connection=redis, name=f"{queue.name}-in{run}")
            for hook in ("subscribe", "unsubscribe", "_install_signal_handlers"):
                monkeypatch.setattr(worker, hook, lambda: None)  # no pubsub thread, no signals
            assert worker.work(burst=True)
            names.append(worker.name)

    series = read_series(storage_url, app="inproc")
    assert counts(series["sleep_100ms"]) == {"succeeded": 2}
    assert near(series["sleep_100ms"].duration.quantile(0.5), 0.1, relative=0.5)
    assert counts(series["fail"]) == {"failed": 2}
    assert counts(series["flaky"]) == {"retried": 2, "succeeded": 2}
    assert counts(series["retry_once"]) == {"retried": 2, "succeeded": 2}
    assert series["sleep_100ms"].wait.count == 2
    if worker_class is Worker:
        assert counts(series["kill_own_process"]) == {"failed": 2}
    for name in names:
        record = read_worker(storage_url, name)
        assert record is not None
        assert record.heartbeat.state is WorkerState.stopped


def test_the_horses_report_fits_one_atomic_pipe_write(tmp_path: Path) -> None:
    """A long exception message is cut until its report line fits one write (so a full
    pipe can never block the horse or leave half a line); stray bytes are ignored."""
    settings = load_settings(
        None, {}, storage_url=f"sqlite:///{tmp_path / 'm.db'}", exception_message_max=100_000
    )
    with isolated_queue() as (redis, queue):
        worker = Worker.configure(settings=settings)([queue.name], connection=redis)
        read_fd, write_fd = os.pipe()
        worker._ql_report_fd = write_fd
        os.write(write_fd, b"not a report\n")
        message = "é" * 50_000  # 2 bytes each in UTF-8
        attempt = _Attempt("job", "q", JobStatus.failed, "ValueError", message, duration_s=0.5)
        worker._ql_report_final(attempt)
        os.close(write_fd)
        report = _read_report(read_fd)
    assert (report["status"], report["duration_s"], report["exception_type"]) == (
        "failed",
        0.5,
        "ValueError",
    )
    assert 100 < len(report["exception_message"]) < 3800 // 2
    assert message.startswith(report["exception_message"])
