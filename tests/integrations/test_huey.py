"""Huey: real `huey_consumer` processes on Redis, thread and process workers, known work.

Consumers run ``tests/integrations/huey_app.py`` and write to a SQLite file of the test's
own; each test has its own huey name (hence its own Redis keys).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from queuelens.model import JobStatus, WorkerState
from queuelens.probes import OLDEST_PENDING_AGE_S, PENDING, SCHEDULED, ProbeConfig, build_probe
from queuelens.storage import Storage, open_storage
from tests.conftest import require_service, unique_name
from tests.integrations.dramatiq_huey_support import (
    assert_durations,
    counts,
    stop_gracefully,
    totals,
    wait_for,
    within,
    worker_env,
    worker_process,
    workers,
)
from tests.integrations.huey_app import REDIS_URL, App, make_app

HUEY = "tests.integrations.huey_app.huey"
TASK = "tests.integrations.huey_app."
MIB = 1024 * 1024  # queuelens's MB


@pytest.fixture
def db(tmp_path: Path) -> Path:
    return tmp_path / "queuelens.db"


@pytest.fixture
def storage(db: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{db}")
    yield opened
    opened.close()


@pytest.fixture
def app(db: Path) -> Iterator[App]:
    """A producer for a huey named for this test; its Redis keys are removed afterwards."""
    require_service("redis")
    name = unique_name("qlhuey")
    producer = make_app(name, storage_url=f"sqlite:///{db}")
    yield producer
    client = redis.Redis.from_url(REDIS_URL)
    kinds = ("redis", "schedule", "results", "counters")
    client.delete(
        *(f"huey.{kind}.{name}" for kind in kinds),
        *(f"{name}:flaky:{i}" for i in range(3)),
        *(f"{name}:took:{task}" for task in ("short_nap", "long_nap")),
    )
    client.close()


def job(name: str) -> str:
    return TASK + name


def test_thread_consumer_workload(app: App, storage: Storage, db: Path, tmp_path: Path) -> None:
    """Exact counts, duration percentiles, waits from enqueue or eta, CPU, memory, depth,
    busy heartbeats during a long job, and a graceful stop."""
    name = app.huey.name
    for _ in range(20):
        app.short_nap()
    for _ in range(10):
        app.long_nap()
    for _ in range(5):
        app.boom()
    for i in range(3):
        app.flaky(f"{name}:flaky:{i}")
    app.later_nap.schedule(delay=4)
    sent_at = time.time()
    probe = build_probe(ProbeConfig("huey", REDIS_URL, "test", [name]))
    before = probe.sample()[0].values
    # huey puts a scheduled task on the queue; the consumer moves it to the schedule
    assert (before[PENDING], before[SCHEDULED]) == (39.0, 0.0)
    time.sleep(1.0)
    assert probe.sample()[0].values[OLDEST_PENDING_AGE_S] >= before[OLDEST_PENDING_AGE_S] + 0.9
    time.sleep(max(sent_at + 2.0 - time.time(), 0.0))

    env = worker_env(db, QL_HUEY_NAME=name)
    args = ["huey_consumer", HUEY, "-w", "4", "-k", "thread", "-n"]
    with worker_process(args, env, tmp_path / "huey.log") as proc:
        expected = {
            job("short_nap"): {"succeeded": 20},
            job("long_nap"): {"succeeded": 10},
            job("boom"): {"failed": 5},
            job("flaky"): {"retried": 6, "succeeded": 3},
            job("later_nap"): {"succeeded": 1},
        }
        wait_for(lambda: counts(storage) == expected, "the workload's outcomes", 40)
        agg = totals(storage)
        for task, seconds in (("short_nap", 0.1), ("long_nap", 0.3)):
            assert_durations(agg[job(task)], seconds, f"{name}:took:{task}")
            assert agg[job(task)].wait.min >= 2.0, task  # and none of it in the duration
        assert agg[job("boom")].wait.min >= 2.0
        assert agg[job("flaky")].wait.max >= 2.0
        assert agg[job("flaky")].wait.min < 1.0  # retries wait from their requeue
        # from its eta (the scheduler looks every second), not from its enqueue 4 s earlier
        assert agg[job("later_nap")].wait.max < 2.0
        assert {n: e.count for n, e in agg[job("boom")].exceptions.items()} == {"ValueError": 5}
        assert {n: e.count for n, e in agg[job("flaky")].exceptions.items()} == {
            "ConnectionError": 6
        }
        assert [q.queue for q in storage.list_queues("test")] == [name]
        assert probe.sample()[0].values == {PENDING: 0.0, SCHEDULED: 0.0}

        (beat,) = workers(storage)
        assert (beat.heartbeat.framework, beat.heartbeat.concurrency) == ("huey", 4)
        assert beat.heartbeat.queues == [name]

        app.burn_cpu(0.5)
        wait_for(lambda: job("burn_cpu") in counts(storage), "burn_cpu")
        app.allocate(50 * MIB)
        wait_for(lambda: job("allocate") in counts(storage), "allocate")
        agg = totals(storage)
        assert within(agg[job("burn_cpu")].cpu.max, 0.5, 0.15)
        # 50 MB; Linux batches RSS accounting per thread (64 pages), hence the 1% allowance
        assert agg[job("allocate")].memory_delta.max >= 50 * 0.99

        app.long_job(3.0)
        wait_for(lambda: workers(storage)[0].heartbeat.current_jobs == [job("long_job")], "busy")
        first = workers(storage)[0]
        wait_for(
            lambda: (
                workers(storage)[0].last_heartbeat_at >= first.last_heartbeat_at + 1.0
                and workers(storage)[0].heartbeat.current_jobs == [job("long_job")]
            ),
            "a fresh heartbeat during the long job",
        )
        (beat,) = workers(storage)
        assert beat.state_at(time.time()) is WorkerState.busy
        assert beat.heartbeat.busy_slots == 1
        wait_for(lambda: job("long_job") in counts(storage), "long_job's outcome", 10)
        assert within(totals(storage)[job("long_job")].duration.max, 3.0, 0.05)
        stop_gracefully(proc, signal.SIGINT)
    (beat,) = workers(storage)
    assert beat.state_at(time.time() + 3600) is WorkerState.stopped
    assert (beat.heartbeat.processed, beat.heartbeat.failed) == (20 + 10 + 5 + 9 + 1 + 3, 11)
    probe.close()


def test_process_consumer(app: App, storage: Storage, db: Path, tmp_path: Path) -> None:
    """Process workers: one heartbeat per worker process, time limits, revoked and expired
    tasks; SIGKILL of a worker process leaves it stale, a graceful stop the others stopped."""
    name = app.huey.name
    revoked = app.short_nap()
    revoked.revoke()
    app.short_nap(expires=0.5)
    time.sleep(0.6)  # expires before a worker can take it
    env = worker_env(db, QL_HUEY_NAME=name)
    args = ["huey_consumer", HUEY, "-w", "2", "-k", "process", "-n"]
    with worker_process(args, env, tmp_path / "huey.log") as proc:
        wait_for(lambda: len(workers(storage)) == 2, "two worker processes beating")
        for _ in range(4):
            app.short_nap()
        app.slow()
        wait_for(
            lambda: (
                counts(storage).get(job("short_nap"), {}).get("succeeded") == 4
                and job("slow") in counts(storage)
            ),
            "the tasks' outcomes",
        )
        agg = totals(storage)
        assert dict(agg[job("short_nap")].counts) == {
            JobStatus.succeeded: 4,
            JobStatus.revoked: 1,
            JobStatus.rejected: 1,  # expired
        }
        assert dict(agg[job("slow")].counts) == {JobStatus.timed_out: 1}
        assert within(agg[job("slow")].duration.max, 0.2, 0.25)
        assert list(agg[job("slow")].exceptions) == ["huey.exceptions.TaskTimeout"]
        beats = workers(storage)
        assert {(b.heartbeat.concurrency, b.heartbeat.queues[0]) for b in beats} == {(1, name)}
        assert len({b.heartbeat.pid for b in beats}) == 2

        victim = beats[0]
        os.kill(victim.heartbeat.pid, signal.SIGKILL)
        wait_for(lambda: time.time() - victim.last_heartbeat_at > 1.6, "missed heartbeats")
        killed = next(b for b in workers(storage) if b.heartbeat.pid == victim.heartbeat.pid)
        assert killed.state_at(time.time()) is WorkerState.stale
        stop_gracefully(proc, signal.SIGINT)
    others = [b for b in workers(storage) if b.heartbeat.pid != victim.heartbeat.pid]
    assert others
    assert all(b.state_at(time.time()) is WorkerState.stopped for b in others)
