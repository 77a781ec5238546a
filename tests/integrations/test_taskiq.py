"""Taskiq: real ``taskiq worker`` processes record exact outcomes, waits and heartbeats."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from taskiq import Context, InMemoryBroker, SimpleRetryMiddleware, TaskiqDepends, TaskiqMiddleware
from taskiq.exceptions import NoResultError
from taskiq.kicker import AsyncKicker
from taskiq.message import TaskiqMessage
from taskiq_redis import ListQueueBroker, RedisStreamBroker

from queuelens.integrations.taskiq import ENQUEUED_AT_LABEL, QueueLensMiddleware
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

TASKIQ_WORKER = ["-m", "taskiq", "worker", "tests.integrations.taskiq_app:broker"]
TASKIQ_WORKER += ["--workers", "1", "--no-configure-logging"]
RETRY = {"retry_on_error": True, "max_retries": 5}
CONTEXT: Context = TaskiqDepends()

Task = tuple[str, tuple[Any, ...], dict[str, Any]]


@pytest.fixture
def queue() -> Iterator[str]:
    require_service("redis")
    name = unique_name("ql_taskiq")
    yield name
    client = redis.Redis.from_url(REDIS_URL)
    try:
        client.delete(name)
    finally:
        client.close()


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with worker_storage(tmp_path) as opened:
        yield opened


def stop_idle_worker(worker: WorkerProcess, queue: str, timeout_s: float = 30.0) -> int:
    """Stop a ``taskiq worker`` gracefully; its exit code.

    An idle worker of a ListQueueBroker sits in a BRPOP without timeout, and taskiq's signal
    handler does not wake its event loop: it notices the stop only when a message arrives.
    So, after SIGTERM, push messages that taskiq cannot parse (and skips) until it exits.
    """
    worker.process.send_signal(signal.SIGTERM)
    client = redis.Redis.from_url(REDIS_URL)
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            try:
                return worker.process.wait(0.5)
            except subprocess.TimeoutExpired:
                client.lpush(queue, b"not a taskiq message: wakes the idle worker")
    finally:
        client.close()
    raise AssertionError(f"taskiq worker did not stop\n{worker.output()[-3000:]}")


def send(queue: str, tasks: list[Task], *, stamped: bool = True, stream: bool = False) -> None:
    """Send tasks by name, as a client process would (with or without the middleware)."""

    async def run() -> None:
        broker: ListQueueBroker | RedisStreamBroker
        if stream:
            broker = RedisStreamBroker(REDIS_URL, queue_name=queue)
        else:
            broker = ListQueueBroker(REDIS_URL, queue_name=queue)
        if stamped:
            broker.add_middlewares(QueueLensMiddleware())
        await broker.startup()
        try:
            for name, args, labels in tasks:
                await AsyncKicker(task_name=name, broker=broker, labels=dict(labels)).kiq(*args)
        finally:
            await broker.shutdown()

    asyncio.run(run())


def test_workload_outcomes_waits_probe_and_graceful_stop(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    tasks: list[Task] = (
        [("short_job", (0.1,), {})] * 20
        + [("long_job", (0.3,), {})] * 10
        + [("failing_job", (f"bad input {i}",), {}) for i in range(5)]
        + [("flaky_job", (2,), RETRY)] * 3  # fails twice, is retried, then succeeds
        + [("hanging_job", (), {"timeout": 0.4})] * 2
    )
    send(queue, tasks)
    sent_at = time.time()
    send(queue, [("ping", (), {})] * 2, stamped=False)  # a sender without the middleware
    probe = build_probe(ProbeConfig("taskiq", REDIS_URL, queues=[queue]))
    try:
        before = probe.sample()[0]
        assert before.values["pending"] == 42
        time.sleep(max(sent_at + 2.0 - time.time(), 0.0))
        later = probe.sample()[0]
        grown = later.values["oldest_pending_age_s"] - before.values["oldest_pending_age_s"]
        assert abs(grown - (later.at - before.at)) < 0.05
        assert later.values["oldest_pending_age_s"] >= 2.0

        expected = {"short_job": 20, "long_job": 10, "failing_job": 5, "flaky_job": 9}
        expected |= {"hanging_job": 2, "ping": 2}
        args = [*TASKIQ_WORKER, "--max-async-tasks", "10"]
        with WorkerProcess(args, worker_env(sqlite_url(tmp_path), queue), tmp_path) as worker:
            wait_until(
                lambda: totals(storage, queue, list(expected)) == expected,
                60,
                "48 recorded attempts",
                worker,
            )
            assert stop_idle_worker(worker, queue) == 0, worker.output()[-3000:]
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
    flaky = series(storage, queue, "flaky_job")
    assert counts(flaky) == {"retried": 6, "succeeded": 3}
    assert exceptions(flaky) == {"RuntimeError": 6}
    assert flaky.wait.count == 9  # retries are stamped again when the retry is sent
    hanging = series(storage, queue, "hanging_job")
    assert counts(hanging) == {"timed_out": 2}
    assert exceptions(hanging) == {"TimeoutError": 2}
    assert within(hanging.duration.quantile(0.5), 0.4)
    ping = series(storage, queue, "ping")
    assert counts(ping) == {"succeeded": 2}
    assert ping.wait.count == 0  # no enqueue label: the wait is unknown, not zero

    record = only_worker(storage)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stopped
    beat = record.heartbeat
    assert (beat.framework, beat.queues, beat.concurrency) == ("taskiq", [queue], 10)
    assert (beat.processed, beat.failed) == (48, 7)  # 5 failed + 2 timed out
    assert after == {"pending": 0, "oldest_pending_age_s": 0.0}


def test_cpu_and_memory_of_tasks_run_alone(tmp_path: Path, queue: str, storage: Storage) -> None:
    send(queue, [("burn_cpu", (0.5,), {}), ("allocate", (50,), {})])
    expected = {"burn_cpu": 1, "allocate": 1}
    args = [*TASKIQ_WORKER, "--max-async-tasks", "1"]
    with WorkerProcess(args, worker_env(sqlite_url(tmp_path), queue), tmp_path) as worker:
        wait_until(
            lambda: totals(storage, queue, list(expected)) == expected, 30, "both tasks", worker
        )
        stop_idle_worker(worker, queue)
    burn = series(storage, queue, "burn_cpu")
    assert burn.cpu.count == 1
    assert 0.45 <= burn.cpu.max <= 0.6
    allocated = series(storage, queue, "allocate")  # a sync task, run in taskiq's thread pool
    # 50 MiB allocated; the allocator may reuse a few resident pages, so check 50 MB.
    assert allocated.memory_delta.max >= 50e6 / 2**20


def test_busy_worker_beats_during_a_long_task_and_is_stale_once_killed(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    args = [*TASKIQ_WORKER, "--max-async-tasks", "10"]
    with WorkerProcess(args, worker_env(sqlite_url(tmp_path), queue), tmp_path) as worker:
        send(queue, [("long_job", (30.0,), {})])
        wait_until(lambda: busy_with(storage, "long_job"), 30, "busy with long_job", worker)
        first = only_worker(storage)
        assert first is not None
        time.sleep(3 * HEARTBEAT_S)
        record = only_worker(storage)
        assert record is not None
        assert record.last_heartbeat_at > first.last_heartbeat_at  # beats while the task runs
        assert time.time() - record.last_heartbeat_at < 2 * HEARTBEAT_S
        assert record.state_at(time.time()) is WorkerState.busy
        assert (record.heartbeat.busy_slots, record.heartbeat.concurrency) == (1, 10)
        worker.kill()
    time.sleep(4 * HEARTBEAT_S)
    record = only_worker(storage)
    assert record is not None
    assert record.state_at(time.time()) is WorkerState.stale


def test_stream_probe_counts_undelivered_and_unacknowledged(queue: str) -> None:
    raw, missing = f"{queue}_raw", f"{queue}_missing"
    send(queue, [("ping", (), {})] * 5, stream=True)  # its startup() creates the group
    client = redis.Redis.from_url(REDIS_URL)
    client.xadd(raw, {b"data": b"x"})
    client.xadd(raw, {b"data": b"y"})
    options = {"broker": "stream"}
    probe = build_probe(
        ProbeConfig("taskiq", REDIS_URL, queues=[queue, raw, missing], options=options)
    )
    try:
        time.sleep(0.2)
        fresh, no_group, absent = (sample.values for sample in probe.sample())
        assert (fresh["pending"], fresh["reserved"]) == (5, 0)
        assert 0.2 <= fresh["oldest_pending_age_s"] < 5.0
        assert no_group["pending"] == 2  # no consumer group yet: every entry is pending
        assert absent == {"pending": 0, "oldest_pending_age_s": 0.0}

        delivered = client.xreadgroup("taskiq", "worker-1", {queue: ">"}, count=2)
        assert len(delivered[0][1]) == 2  # type: ignore[index]
        third_id = client.xrange(queue, "-", "+", count=3)[2][0]  # type: ignore[index]
        values = probe.sample()[0].values
        assert (values["pending"], values["reserved"]) == (3, 2)
        third_age = time.time() - int(third_id.split(b"-")[0]) / 1000
        assert abs(values["oldest_pending_age_s"] - third_age) < 0.1
    finally:
        probe.close()
        client.delete(raw)
        client.close()


def test_probe_errors_name_the_problem() -> None:
    with pytest.raises(ProbeError, match="broker="):
        build_probe(ProbeConfig("taskiq", REDIS_URL, options={"broker": "kafka"}))
    with pytest.raises(ProbeError, match="consumer_group"):
        build_probe(ProbeConfig("taskiq", REDIS_URL, options={"consumer_group": ""}))
    for kind in ("list", "stream"):
        probe = build_probe(
            ProbeConfig("taskiq", "redis://:secret@127.0.0.1:1/0", options={"broker": kind})
        )
        try:
            with pytest.raises(ProbeError, match="cannot read taskiq queues") as error:
                probe.sample()
            assert "secret" not in str(error.value)
        finally:
            probe.close()


def test_in_process_statuses_and_worker_lifecycle(
    tmp_path: Path, storage: Storage, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same middleware inside one process (InMemoryBroker): every status, the heartbeat
    from startup to shutdown, and the worker options read from a ``taskiq worker`` argv."""
    middleware = QueueLensMiddleware(storage_url=sqlite_url(tmp_path), app="inproc", queue="mem")
    broker = InMemoryBroker().with_middlewares(SimpleRetryMiddleware(), middleware)
    broker.is_worker_process = True
    argv = ["taskiq", "worker", "app:broker", "--max-async-tasks", "4", "--use-process-pool"]
    monkeypatch.setattr("sys.argv", argv)

    @broker.task(task_name="ok")
    async def ok() -> str:
        return "ok"

    @broker.task(task_name="fails")
    async def fails() -> None:
        raise KeyError("missing")

    @broker.task(task_name="flaky", retry_on_error=True, max_retries=5)
    async def flaky(context: Context = CONTEXT) -> None:
        if int(context.message.labels.get("_retries", 0)) < 2:
            raise RuntimeError("not yet")

    @broker.task(task_name="slow", timeout=0.2)
    async def slow() -> None:
        await asyncio.sleep(5)

    @broker.task(task_name="skips")
    async def skips() -> None:
        raise NoResultError

    @broker.task(task_name="sync_job")
    def sync_job() -> int:
        return 1

    async def run() -> None:
        # InMemoryBroker runs middleware startup/shutdown itself only since taskiq 0.13;
        # a second call is a no-op.
        await broker.startup()
        await middleware.startup()
        try:
            for task in (ok, fails, flaky, slow, skips, sync_job):
                await task.kiq()
            while broker._running_tasks:  # retries are new tasks
                await broker.wait_all()
        finally:
            await broker.shutdown()
            await middleware.shutdown()

    asyncio.run(run())

    def of(job: str) -> dict[str, int]:
        return counts(series(storage, "mem", job, app="inproc"))

    assert of("ok") == {"succeeded": 1}
    assert of("fails") == {"failed": 1}
    assert of("flaky") == {"retried": 2, "succeeded": 1}
    assert of("slow") == {"timed_out": 1}
    assert of("skips") == {"succeeded": 1}
    assert exceptions(series(storage, "mem", "skips", app="inproc")) == {}
    assert series(storage, "mem", "ok", app="inproc").cpu.count == 1
    # with --use-process-pool a sync task runs in another process: no CPU or memory here
    sync = series(storage, "mem", "sync_job", app="inproc")
    assert (sync.total, sync.cpu.count, sync.memory_peak.count) == (1, 0, 0)
    record = only_worker(storage)
    assert record is not None
    assert record.heartbeat.state is WorkerState.stopped
    assert (record.heartbeat.queues, record.heartbeat.concurrency) == (["mem"], 4)
    assert (record.heartbeat.processed, record.heartbeat.failed) == (8, 2)


def test_sending_stamps_the_enqueue_time_and_nothing_else(tmp_path: Path) -> None:
    middleware = QueueLensMiddleware(storage_url=sqlite_url(tmp_path))
    InMemoryBroker().with_middlewares(middleware)  # a sending process: not a worker
    message = TaskiqMessage(
        task_id="t1", task_name="t", labels={}, labels_types={}, args=[], kwargs={}
    )
    before = time.time()
    stamped = middleware.pre_send(message)
    assert before <= float(stamped.labels[ENQUEUED_AT_LABEL]) <= time.time()
    asyncio.run(middleware.startup())  # not a worker process: no runtime, no storage
    assert not (tmp_path / "queuelens.db").exists()


def test_a_task_that_never_reaches_post_execute_frees_its_slot(
    tmp_path: Path, storage: Storage
) -> None:
    class Refuses(TaskiqMiddleware):
        def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
            raise RuntimeError("refused by a later middleware")

    middleware = QueueLensMiddleware(storage_url=sqlite_url(tmp_path), queue="mem")
    broker = InMemoryBroker().with_middlewares(middleware, Refuses())
    broker.is_worker_process = True

    @broker.task(task_name="refused")
    async def refused() -> None:
        return None

    async def run() -> None:
        await middleware.startup()
        try:
            await refused.kiq()  # InMemoryBroker runs it in a task of its own
            with pytest.raises(RuntimeError, match="refused"):
                await broker.wait_all()
            await asyncio.sleep(0)  # the finished task's done callbacks run
        finally:
            await middleware.shutdown()

    asyncio.run(run())
    record = only_worker(storage)
    assert record is not None
    assert record.heartbeat.current_jobs == []
    assert (record.heartbeat.processed, record.heartbeat.failed) == (1, 1)
    assert series(storage, "mem", "refused").total == 0  # no outcome is made up
