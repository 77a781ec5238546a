"""Dramatiq: real `dramatiq` worker processes on Redis and RabbitMQ, against known work.

Workers run ``tests/integrations/dramatiq_app.py`` and write to a SQLite file of the test's
own; each test has its own queue (and Redis namespace).
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from typing import cast

import pika
import pytest
import redis
from dramatiq import Message
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from queuelens.model import JobStatus, WorkerState
from queuelens.probes import (
    FAILED,
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    SCHEDULED,
    ProbeConfig,
    QueueProbe,
    build_probe,
)
from queuelens.storage import Storage, open_storage
from tests.conftest import require_service, unique_name
from tests.integrations.dramatiq_app import RABBITMQ_URL, REDIS_URL, redis_broker
from tests.integrations.dramatiq_huey_support import (
    assert_durations,
    counts,
    require_rabbitmq,
    stop_gracefully,
    totals,
    wait_for,
    within,
    worker_env,
    worker_process,
    workers,
)

APP = "tests.integrations.dramatiq_app"
Broker = RedisBroker | RabbitmqBroker
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
def namespace() -> Iterator[str]:
    """A Redis namespace of this test's own, for one queue named like it; the broker's keys
    and the flaky counters are removed afterwards (by name: Redis holds other tests' keys)."""
    require_service("redis")
    ns = unique_name("qldq")
    yield ns
    client = redis.Redis.from_url(REDIS_URL)
    brokers = [b.decode() for b in cast(list[bytes], client.zrange(f"{ns}:__heartbeats__", 0, -1))]
    queues = [ns, f"{ns}.DQ", f"{ns}.XQ"]
    client.delete(
        f"{ns}:__heartbeats__",
        *(f"{ns}:{q}{suffix}" for q in queues for suffix in ("", ".msgs")),
        *(f"{ns}:__acks__.{b}.{q}" for b in brokers for q in queues),
        *(f"{ns}:flaky:{i}" for i in range(3)),
        *(f"{ns}:took:{job}" for job in ("short_nap", "long_nap")),
    )
    client.close()


def dramatiq_env(db: Path, broker: str, queue: str, namespace: str = "") -> dict[str, str]:
    # Consumers poll an idle queue every 100 ms instead of every second, so that waits
    # measured from an eta are not mostly Dramatiq's polling.
    return worker_env(
        db,
        QL_DRAMATIQ_BROKER=broker,
        QL_DRAMATIQ_QUEUE=queue,
        QL_DRAMATIQ_NAMESPACE=namespace,
        dramatiq_worker_timeout="100",
    )


def send(broker: Broker, queue: str, actor: str, *args: object, delay: int | None = None) -> None:
    broker.enqueue(Message(queue, actor, args, {}, {}), delay=delay)


def send_workload(broker: Broker, queue: str, ns: str, *, scale: int) -> dict[str, dict[str, int]]:
    """``scale`` 2: 20 x 100 ms, 10 x 300 ms, 5 ValueErrors, 3 jobs that fail twice, and one
    job delayed by 4 s; ``scale`` 1 halves the naps. Returns the outcomes to expect."""
    fails, flaky = (5, 3) if scale == 2 else (3, 2)
    for _ in range(10 * scale):
        send(broker, queue, "short_nap")
    for _ in range(5 * scale):
        send(broker, queue, "long_nap")
    for _ in range(fails):
        send(broker, queue, "boom")
    for i in range(flaky):
        send(broker, queue, "flaky", f"{ns}:flaky:{i}")
    send(broker, queue, "delayed_nap", delay=4000)
    return {
        "short_nap": {"succeeded": 10 * scale},
        "long_nap": {"succeeded": 5 * scale},
        "boom": {"failed": fails},
        "flaky": {"retried": 2 * flaky, "succeeded": flaky},
        "delayed_nap": {"succeeded": 1},
    }


def assert_durations_and_waits(storage: Storage, queue: str, waited_s: float) -> None:
    agg = totals(storage)
    for job, seconds in (("short_nap", 0.1), ("long_nap", 0.3)):
        assert_durations(agg[job], seconds, f"{queue}:took:{job}")
        # Each waited for the worker to start, and none of that is in its duration.
        assert agg[job].wait.min >= waited_s, job
    assert agg["boom"].wait.min >= waited_s
    # First attempts waited for the worker; retries wait from their eta, not from enqueue.
    assert agg["flaky"].wait.max >= waited_s
    assert agg["flaky"].wait.min < 1.0
    # The delayed job waits from its eta, 4 s after it was sent, not from when it was sent.
    assert agg["delayed_nap"].wait.max < 1.0
    boom, flaky = agg["boom"], agg["flaky"]
    assert {n: e.count for n, e in boom.exceptions.items()} == {
        "ValueError": boom.count(JobStatus.failed)
    }
    assert {n: e.count for n, e in flaky.exceptions.items()} == {
        "ConnectionError": flaky.count(JobStatus.retried)
    }
    assert boom.exceptions["ValueError"].last_message == "boom"


def test_redis_workload(storage: Storage, db: Path, namespace: str, tmp_path: Path) -> None:
    """Exact counts, duration percentiles, waits from enqueue or eta, CPU, memory, dead
    letters and depth, busy heartbeats during a long job, and a graceful stop."""
    queue = namespace
    producer = redis_broker(namespace, middleware=[])
    probe = build_probe(
        ProbeConfig("dramatiq", REDIS_URL, "test", [queue], {"namespace": namespace})
    )
    expected = send_workload(producer, queue, namespace, scale=2)
    sent_at = time.time()
    before = probe.sample()[0].values
    assert {k: v for k, v in before.items() if k != OLDEST_PENDING_AGE_S} == {
        PENDING: 38.0,
        RESERVED: 0.0,
        SCHEDULED: 1.0,
        FAILED: 0.0,
    }
    time.sleep(1.0)
    later = probe.sample()[0].values
    assert later[OLDEST_PENDING_AGE_S] >= before[OLDEST_PENDING_AGE_S] + 0.9
    time.sleep(max(sent_at + 2.0 - time.time(), 0.0))

    env = dramatiq_env(db, "redis", queue, namespace)
    args = ["dramatiq", APP, "--processes", "2", "--threads", "4"]
    with worker_process(args, env, tmp_path / "dramatiq.log") as proc:
        wait_for(lambda: counts(storage) == expected, "the workload's outcomes", 40)
        assert_durations_and_waits(storage, queue, waited_s=2.0)
        assert [q.queue for q in storage.list_queues("test")] == [queue]  # no .DQ/.XQ
        wait_for(lambda: probe.sample()[0].values[SCHEDULED] == 0, "delay queue drained")
        after = probe.sample()[0].values
        assert after == {PENDING: 0.0, RESERVED: 0.0, SCHEDULED: 0.0, FAILED: 5.0}

        beats = workers(storage)
        assert len(beats) == 2
        assert {(b.heartbeat.framework, b.heartbeat.concurrency) for b in beats} == {
            ("dramatiq", 4)
        }
        assert all(b.heartbeat.queues == [queue] for b in beats)
        wait_for(
            lambda: all(b.state_at(time.time()) is WorkerState.idle for b in workers(storage)),
            "both workers idle",
        )

        # CPU and memory of known jobs, each run while its process is otherwise idle.
        send(producer, queue, "burn_cpu", 0.5)
        wait_for(lambda: "burn_cpu" in counts(storage), "burn_cpu")
        send(producer, queue, "allocate", 50 * MIB)
        wait_for(lambda: "allocate" in counts(storage), "allocate")
        agg = totals(storage)
        assert within(agg["burn_cpu"].cpu.max, 0.5, 0.15)
        # 50 MB; Linux batches RSS accounting per thread (64 pages), hence the 1% allowance
        assert agg["allocate"].memory_delta.max >= 50 * 0.99
        assert agg["allocate"].memory_peak.max >= agg["allocate"].memory_delta.max

        # A long job: its worker is busy, and keeps beating while the job runs.
        send(producer, queue, "long_job", 3.0)

        def busy() -> bool:
            return any(b.heartbeat.current_jobs == ["long_job"] for b in workers(storage))

        wait_for(busy, "a worker busy with long_job")
        first = next(b for b in workers(storage) if b.heartbeat.current_jobs == ["long_job"])
        wait_for(
            lambda: any(
                b.heartbeat.worker_id == first.heartbeat.worker_id
                and b.last_heartbeat_at >= first.last_heartbeat_at + 1.0
                and b.heartbeat.current_jobs == ["long_job"]
                for b in workers(storage)
            ),
            "a fresh heartbeat during the long job",
        )
        record = next(
            b for b in workers(storage) if b.heartbeat.worker_id == first.heartbeat.worker_id
        )
        assert record.state_at(time.time()) is WorkerState.busy
        assert record.heartbeat.busy_slots == 1
        wait_for(lambda: "long_job" in counts(storage), "long_job's outcome", 10)
        assert within(totals(storage)["long_job"].duration.max, 3.0, 0.05)

        stop_gracefully(proc, signal.SIGTERM)
        assert proc.returncode == 0
    beats = workers(storage)
    assert [b.state_at(time.time() + 3600) for b in beats] == [WorkerState.stopped] * 2
    # 45 attempts of the workload, then burn_cpu, allocate and long_job
    assert sum(b.heartbeat.processed for b in beats) == 48
    assert sum(b.heartbeat.failed for b in beats) == 5 + 6
    producer.close()
    probe.close()


def test_killed_worker_goes_stale(
    storage: Storage, db: Path, namespace: str, tmp_path: Path
) -> None:
    """SIGKILL one worker process: it stops beating and shows stale, keeping its counters;
    Dramatiq then stops the other process, which shows stopped."""
    queue = namespace
    producer = redis_broker(namespace, middleware=[])
    env = dramatiq_env(db, "redis", queue, namespace)
    args = ["dramatiq", APP, "--processes", "2", "--threads", "2"]
    with worker_process(args, env, tmp_path / "dramatiq.log") as proc:
        wait_for(lambda: len(workers(storage)) == 2, "two worker processes beating")
        for _ in range(8):
            send(producer, queue, "short_nap")
        wait_for(lambda: counts(storage) == {"short_nap": {"succeeded": 8}}, "8 naps")
        wait_for(lambda: sum(b.heartbeat.processed for b in workers(storage)) == 8, "counters")
        victim = max(workers(storage), key=lambda b: b.heartbeat.processed)
        os.kill(victim.heartbeat.pid, signal.SIGKILL)
        proc.wait(30)  # Dramatiq stops the other process when one dies
    killed = next(
        b for b in workers(storage) if b.heartbeat.worker_id == victim.heartbeat.worker_id
    )
    other = next(b for b in workers(storage) if b.heartbeat.worker_id != victim.heartbeat.worker_id)
    assert other.state_at(time.time()) is WorkerState.stopped
    wait_for(lambda: time.time() - killed.last_heartbeat_at > 1.6, "three missed heartbeats")
    assert killed.state_at(time.time()) is WorkerState.stale
    assert killed.heartbeat.processed == victim.heartbeat.processed  # nothing was reset
    producer.close()


@pytest.fixture
def rabbit_queue() -> Iterator[str]:
    require_rabbitmq()
    require_service("redis")  # the flaky actor counts its attempts there
    queue = unique_name("q")
    yield queue
    connection = pika.BlockingConnection(pika.URLParameters(RABBITMQ_URL))
    channel = connection.channel()
    for name in (queue, f"{queue}.DQ", f"{queue}.XQ"):
        channel.queue_delete(name)
    connection.close()


def test_rabbitmq_workload(storage: Storage, db: Path, rabbit_queue: str, tmp_path: Path) -> None:
    """The same guarantees on RabbitMQ, with depth from passive declares."""
    queue, ns = rabbit_queue, unique_name("qlrq")
    producer = RabbitmqBroker(url=RABBITMQ_URL, middleware=[])
    probe: QueueProbe = build_probe(ProbeConfig("dramatiq", RABBITMQ_URL, "test", [queue]))
    try:
        expected = send_workload(producer, queue, ns, scale=1)
        sent_at = time.time()
        wait_for(
            lambda: probe.sample()[0].values == {PENDING: 20.0, SCHEDULED: 1.0, FAILED: 0.0},
            "the messages to be counted",
            5,
        )
        time.sleep(max(sent_at + 2.0 - time.time(), 0.0))
        env = dramatiq_env(db, "rabbitmq", queue)
        args = ["dramatiq", APP, "--processes", "1", "--threads", "4"]
        with worker_process(args, env, tmp_path / "dramatiq.log") as proc:
            wait_for(lambda: counts(storage) == expected, "the workload's outcomes", 40)
            assert_durations_and_waits(storage, queue, waited_s=2.0)
            wait_for(lambda: probe.sample()[0].values[FAILED] == 3.0, "3 dead letters", 5)
            assert probe.sample()[0].values[PENDING] == 0.0
            (beat,) = workers(storage)
            assert beat.heartbeat.concurrency == 4
            wait_for(lambda: workers(storage)[0].heartbeat.state is WorkerState.idle, "idle")
            stop_gracefully(proc, signal.SIGTERM)
        (beat,) = workers(storage)
        assert beat.state_at(time.time()) is WorkerState.stopped
        assert beat.heartbeat.processed == 10 + 5 + 3 + 6 + 1
    finally:
        producer.close()
        probe.close()
        redis.Redis.from_url(REDIS_URL).delete(
            *(f"{ns}:flaky:{i}" for i in range(2)),
            *(f"{queue}:took:{job}" for job in ("short_nap", "long_nap")),
        )
