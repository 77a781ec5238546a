"""arq: real workers record exact outcomes, true waits, CPU, memory and heartbeats."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from arq import create_pool
from arq.connections import RedisSettings

from queuelens.model import WorkerState
from queuelens.probes import ProbeConfig, ProbeError, build_probe
from queuelens.storage import Storage
from tests.conftest import require_service, unique_name
from tests.integrations.arq_taskiq_harness import (
    HEARTBEAT_S,
    REDIS_URL,
    WorkerProcess,
    busy_with,
    counts,
    drop_arq_queue,
    exceptions,
    only_worker,
    series,
    sqlite_url,
    totals,
    wait_until,
    within,
    worker_env,
    worker_storage,
)

ARQ_WORKER = ["-m", "arq", "tests.integrations.arq_app.WorkerSettings"]
REDIS = RedisSettings(host="127.0.0.1", port=6379)

Job = tuple[str, tuple[Any, ...], dict[str, Any]]


@pytest.fixture
def queue() -> Iterator[str]:
    """A queue of this test's own; its keys and those of jobs left in it are deleted after."""
    require_service("redis")
    name = unique_name("ql_arq")
    yield name
    drop_arq_queue(name)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with worker_storage(tmp_path) as opened:
        yield opened


def enqueue(queue: str, jobs: list[Job]) -> list[str]:
    async def send() -> list[str]:
        pool = await create_pool(REDIS, default_queue_name=queue)
        try:
            sent = [await pool.enqueue_job(name, *args, **options) for name, args, options in jobs]
            return [job.job_id for job in sent if job is not None]
        finally:
            await pool.aclose()

    return asyncio.run(send())


def test_workload_outcomes_waits_probe_hooks_and_graceful_stop(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    hook_log = tmp_path / "hooks.log"
    jobs: list[Job] = (
        [("short_job", (0.1,), {})] * 20
        + [("long_job", (0.3,), {})] * 10
        + [("failing_job", (f"bad input {i}",), {}) for i in range(5)]
        + [("flaky_job", (2,), {})] * 3  # Retry on tries 1 and 2, success on try 3
        + [("hanging_job", (), {})] * 2  # cancelled by its 0.4 s timeout
        + [("ping", (), {"_defer_by": 4.0})] * 2  # deferred: waits from the deferred time
    )
    assert len(enqueue(queue, jobs)) == 42
    enqueued_at = time.time()
    probe = build_probe(ProbeConfig("arq", REDIS_URL, queues=[queue]))
    try:
        before = probe.sample()[0]
        assert before.values["pending"] == 40
        assert before.values["scheduled"] == 2
        time.sleep(max(enqueued_at + 2.0 - time.time(), 0.0))
        later = probe.sample()[0]
        grown = later.values["oldest_pending_age_s"] - before.values["oldest_pending_age_s"]
        assert abs(grown - (later.at - before.at)) < 0.05
        assert later.values["oldest_pending_age_s"] >= 2.0

        env = worker_env(sqlite_url(tmp_path), queue, QL_TEST_HOOK_LOG=str(hook_log))
        expected = {"short_job": 20, "long_job": 10, "failing_job": 5, "flaky_job": 9}
        expected |= {"hanging_job": 2, "ping": 2}
        with WorkerProcess(ARQ_WORKER, env, tmp_path) as worker:
            wait_until(
                lambda: totals(storage, queue, list(expected)) == expected,
                60,
                "48 recorded attempts",
                worker,
            )
            assert worker.terminate() == 0, worker.output()[-3000:]
        after = probe.sample()[0].values
    finally:
        probe.close()

    short, long = series(storage, queue, "short_job"), series(storage, queue, "long_job")
    assert counts(short) == {"succeeded": 20}
    assert counts(long) == {"succeeded": 10}
    for aggregate, seconds in ((short, 0.1), (long, 0.3)):
        assert within(aggregate.duration.quantile(0.5), seconds)
        assert within(aggregate.duration.quantile(0.95), seconds)
        assert aggregate.duration.max < 1.5 * seconds  # the 2 s spent queued is not in it
        assert aggregate.wait.min >= 2.0
    failing = series(storage, queue, "failing_job")
    assert counts(failing) == {"failed": 5}
    assert exceptions(failing) == {"ValueError": 5}
    assert failing.exceptions["ValueError"].last_message.startswith("bad input ")
    flaky = series(storage, queue, "flaky_job")
    assert counts(flaky) == {"retried": 6, "succeeded": 3}
    assert exceptions(flaky) == {"arq.worker.Retry": 6}
    hanging = series(storage, queue, "hanging_job")
    assert counts(hanging) == {"timed_out": 2}
    assert exceptions(hanging) == {"TimeoutError": 2}
    assert within(hanging.duration.quantile(0.5), 0.4)
    ping = series(storage, queue, "ping")
    assert counts(ping) == {"succeeded": 2}
    assert ping.wait.max < 1.0  # counted from the deferred time, not from enqueue (4 s before)

    lines = hook_log.read_text().splitlines()
    assert lines.count("startup") == 1
    assert lines.count("shutdown") == 1
    assert sum(line.startswith("job_start ") for line in lines) == 48
    assert sum(line.startswith("job_end ") for line in lines) == 48

    record = only_worker(storage)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stopped
    beat = record.heartbeat
    assert (beat.framework, beat.queues, beat.concurrency) == ("arq", [queue], 10)
    assert (beat.processed, beat.failed) == (48, 7)  # 5 failed + 2 timed out
    assert after == {"pending": 0, "scheduled": 0, "oldest_pending_age_s": 0.0}


def test_cpu_and_memory_of_jobs_run_alone(tmp_path: Path, queue: str, storage: Storage) -> None:
    enqueue(queue, [("burn_cpu", (0.5,), {}), ("allocate", (50,), {})])
    env = worker_env(sqlite_url(tmp_path), queue, QL_TEST_MAX_JOBS="1")
    expected = {"burn_cpu": 1, "allocate": 1}
    with WorkerProcess(ARQ_WORKER, env, tmp_path) as worker:
        wait_until(
            lambda: totals(storage, queue, list(expected)) == expected, 30, "both jobs", worker
        )
        worker.terminate()
    burn = series(storage, queue, "burn_cpu")
    assert burn.cpu.count == 1
    assert 0.45 <= burn.cpu.max <= 0.6
    allocated = series(storage, queue, "allocate")
    # The job allocates 50 MiB; the allocator may reuse a few resident pages, so the
    # increment is checked against 50 MB (memory fields are in MiB).
    assert allocated.memory_delta.max >= 50e6 / 2**20
    assert allocated.memory_peak.max >= allocated.memory_delta.max


def test_busy_worker_beats_during_a_long_job_and_is_stale_once_killed(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    with WorkerProcess(ARQ_WORKER, worker_env(sqlite_url(tmp_path), queue), tmp_path) as worker:
        enqueue(queue, [("long_job", (30.0,), {})])
        wait_until(lambda: busy_with(storage, "long_job"), 20, "busy with long_job", worker)
        first = only_worker(storage)
        assert first is not None
        time.sleep(3 * HEARTBEAT_S)
        record = only_worker(storage)
        assert record is not None
        assert record.last_heartbeat_at > first.last_heartbeat_at  # beats while the job runs
        assert time.time() - record.last_heartbeat_at < 2 * HEARTBEAT_S
        assert record.state_at(time.time()) is WorkerState.busy
        assert (record.heartbeat.busy_slots, record.heartbeat.concurrency) == (1, 10)
        worker.kill()
    time.sleep(4 * HEARTBEAT_S)
    record = only_worker(storage)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stale


def test_graceful_stop_during_a_job_records_the_retry_and_stops(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    env = worker_env(sqlite_url(tmp_path), queue)
    with WorkerProcess(ARQ_WORKER, env, tmp_path) as worker:
        enqueue(queue, [("long_job", (1.5,), {})])
        wait_until(lambda: busy_with(storage, "long_job"), 20, "busy with long_job", worker)
        assert worker.terminate() == 0
    long = series(storage, queue, "long_job")
    assert counts(long) == {"retried": 1}  # arq runs it again when a worker comes back
    assert exceptions(long) == {"asyncio.exceptions.CancelledError": 1}
    record = only_worker(storage)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stopped
    assert record.heartbeat.current_jobs == []

    with WorkerProcess(ARQ_WORKER, env, tmp_path) as worker:  # the next worker runs it again
        wait_until(lambda: series(storage, queue, "long_job").total == 2, 20, "rerun", worker)
        worker.terminate()
    long = series(storage, queue, "long_job")
    assert counts(long) == {"retried": 1, "succeeded": 1}
    # arq keeps the job's first score, and this process did not see the first try end:
    # the second try's wait is unknown rather than inflated by the first try and the restart
    assert long.wait.count == 1


def test_probe_skips_running_jobs_for_the_oldest_age(queue: str) -> None:
    client = redis.Redis.from_url(REDIS_URL)
    now_ms = int(time.time() * 1000)
    client.zadd(
        queue, {"running": now_ms - 9000, "waiting": now_ms - 5000, "later": now_ms + 60_000}
    )
    client.set("arq:in-progress:running", b"1", px=60_000)
    probes = [
        build_probe(ProbeConfig("arq", REDIS_URL, app="shop", queues=[queue])),
        build_probe(ProbeConfig("arq", REDIS_URL, queues=[queue], options={"lookahead": 1})),
    ]
    try:
        sample = probes[0].sample()[0]
        assert (sample.kind, sample.app, sample.key) == ("queue", "shop", queue)
        assert (sample.values["pending"], sample.values["scheduled"]) == (2, 1)
        assert 5.0 <= sample.values["oldest_pending_age_s"] < 7.0
        # looking only at the oldest due job, which is running: the age is unknown
        assert "oldest_pending_age_s" not in probes[1].sample()[0].values
    finally:
        for probe in probes:
            probe.close()
        client.close()


def test_probe_errors_name_the_problem() -> None:
    with pytest.raises(ProbeError, match="lookahead"):
        build_probe(ProbeConfig("arq", REDIS_URL, options={"lookahead": 0}))
    with pytest.raises(ProbeError, match="invalid"):
        build_probe(ProbeConfig("arq", "http://127.0.0.1:6379"))
    probe = build_probe(ProbeConfig("arq", "redis://:secret@127.0.0.1:1/0"))
    try:
        with pytest.raises(ProbeError, match="cannot read arq queues") as error:
            probe.sample()
        assert "secret" not in str(error.value)
    finally:
        probe.close()
