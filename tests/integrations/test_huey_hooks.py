"""The huey instrumentation in this process: each fate of a task maps to one status; the
enqueue stamp is invisible to consumers that are not instrumented; probes of SQLite and
priority queues."""

from __future__ import annotations

import pickle
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from huey import MemoryHuey, PriorityRedisHuey, RedisHuey, SqliteHuey
from huey.exceptions import CancelExecution, RetryTask, TaskTimeout
from huey.serializer import SignedSerializer

from queuelens.integrations.huey import instrument
from queuelens.model import JobStatus, WorkerState
from queuelens.probes import (
    OLDEST_PENDING_AGE_S,
    PENDING,
    SCHEDULED,
    ProbeConfig,
    ProbeError,
    build_probe,
)
from queuelens.probes.huey import TRAILER_MAGIC, read_enqueued_at
from queuelens.storage import Storage, open_storage
from tests.conftest import require_service, unique_name
from tests.integrations.dramatiq_huey_support import totals
from tests.integrations.huey_app import task

REDIS_URL = "redis://127.0.0.1:6379/0"


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'ql.db'}")
    yield opened
    opened.close()


def drain(huey: Any) -> None:
    """What a consumer's worker does: dequeue and execute until the queue is empty."""
    while (next_task := huey.dequeue()) is not None:
        huey.execute(next_task)


def test_every_fate_of_a_task(storage: Storage) -> None:
    huey = MemoryHuey(unique_name("hooks"))
    instrumentation = instrument(huey, app_name="test", storage_url=storage.url)
    assert instrument(huey) is instrumentation  # idempotent
    attempts: dict[str, int] = {}

    def again(name: str) -> bool:
        attempts[name] = attempts.get(name, 0) + 1
        return attempts[name] == 1

    @task(huey)
    def ok() -> int:
        time.sleep(0.02)
        return 1  # stored as a result: not part of the duration

    @task(huey)
    def retry_once() -> None:
        if again("retry_once"):
            raise RetryTask("again")

    @task(huey)
    def cancel_and_retry() -> None:
        if again("cancel_and_retry"):
            raise CancelExecution(retry=True)

    @task(huey)
    def cancel() -> None:
        raise CancelExecution()

    @task(huey)
    def too_long() -> None:
        raise TaskTimeout("took too long")

    @task(huey)
    def locked() -> None:
        with huey.lock_task("held"):
            pass

    @task(huey)
    def interrupted() -> None:
        raise KeyboardInterrupt

    @task(huey)
    def gated() -> None:
        pass

    def gate(task: Any) -> None:
        if task.name == "gated":
            raise CancelExecution()

    huey.pre_execute()(gate)

    consumer = huey.create_consumer(workers=2)
    worker = consumer.worker_threads[0][0]
    worker.initialize()  # the startup hooks: the tracker starts beating
    for wrapper in (ok, retry_once, cancel_and_retry, cancel, too_long, locked, interrupted, gated):
        wrapper()
    huey.lock_task("held").acquire()
    huey.revoke_by_id(ok().id)  # revoked before it ran
    ok(expires=0.01)
    ok.schedule(delay=0.3)
    time.sleep(0.05)  # the one that expires has expired
    drain(huey)  # the scheduled one goes to the schedule: it is not due
    time.sleep(0.3)
    for due in huey.read_schedule():  # what the scheduler does once it is due
        huey.enqueue(due)
    drain(huey)
    worker.shutdown()  # the shutdown hooks: a last flush, and the tracker stops

    agg = totals(storage)
    prefix = "tests.integrations.test_huey_hooks."
    assert {job.removeprefix(prefix): dict(a.counts) for job, a in agg.items()} == {
        "ok": {JobStatus.succeeded: 2, JobStatus.revoked: 1, JobStatus.rejected: 1},
        "retry_once": {JobStatus.retried: 1, JobStatus.succeeded: 1},
        "cancel_and_retry": {JobStatus.retried: 1, JobStatus.succeeded: 1},
        "cancel": {JobStatus.revoked: 1},
        "too_long": {JobStatus.timed_out: 1},
        "locked": {JobStatus.rejected: 1},
        "interrupted": {JobStatus.revoked: 1},
        "gated": {JobStatus.revoked: 1},  # cancelled by a pre-execute hook: never ran
    }
    okay = agg[prefix + "ok"]
    assert 0.02 <= okay.duration.max < 0.5
    assert okay.wait.max < 0.2  # the scheduled one waited from its eta, not from enqueue
    assert agg[prefix + "gated"].duration.count == 0
    assert list(agg[prefix + "too_long"].exceptions) == ["huey.exceptions.TaskTimeout"]
    (beat,) = storage.list_workers("test")
    assert (beat.heartbeat.concurrency, beat.heartbeat.state) == (2, WorkerState.stopped)
    # attempts huey started executing: ok x2, retry_once x2, cancel_and_retry x2, cancel,
    # too_long, locked, interrupted, gated (stopped by a pre-execute hook)
    assert (beat.heartbeat.processed, beat.heartbeat.failed) == (11, 3)

    huey.immediate = True  # runs in the caller: not a consumer's work, not recorded
    assert ok()() == 1
    instrumentation.runtime.recorder.flush()
    assert totals(storage)[prefix + "ok"].count(JobStatus.succeeded) == 2
    instrumentation.uninstrument()
    assert not {"serialize_task", "_queuelens"} & set(huey.__dict__)
    assert "_serialize" not in huey.serializer.__dict__
    instrumentation.runtime.close()


def test_task_due_while_still_queued_waits_from_its_eta(storage: Storage) -> None:
    huey = MemoryHuey(unique_name("due"))
    instrumentation = instrument(huey, app_name="test", storage_url=storage.url)

    @task(huey)
    def noop() -> None:
        pass

    noop.schedule(delay=0.2)  # on the queue; nobody dequeues it before it is due
    time.sleep(0.5)
    drain(huey)
    instrumentation.runtime.recorder.flush()
    (aggregate,) = totals(storage).values()
    assert 0.28 <= aggregate.wait.max < 0.45  # from its eta, not from its enqueue 0.5 s ago
    instrumentation.uninstrument()
    instrumentation.runtime.close()


@pytest.mark.parametrize("compression", [False, True], ids=["plain", "gzip"])
def test_stamp_is_invisible_to_consumers_not_instrumented(compression: bool) -> None:
    producer = MemoryHuey("stamped", compression=compression)
    instrument(producer, storage_url="sqlite:////tmp/unused-queuelens.db")
    plain = MemoryHuey("stamped", compression=compression)
    for huey in (producer, plain):

        @task(huey, name="greet")
        def greet(name: str) -> str:
            return f"hello {name}"

    before = time.time()
    data = producer.serialize_task(producer._registry.string_to_task(f"{__name__}.greet")(("ada",)))
    stamp = read_enqueued_at(data)
    assert stamp is not None
    assert before <= stamp <= time.time()
    received = plain.deserialize_task(data)
    assert (received.args, received.execute()) == (("ada",), "hello ada")
    assert producer.deserialize_task(data).args == ("ada",)
    assert read_enqueued_at(pickle.dumps(("not", "stamped"))) is None


def test_other_serializers_are_left_alone(storage: Storage) -> None:
    huey = MemoryHuey("signed", serializer=SignedSerializer(secret="s3cret"))
    instrumentation = instrument(huey, app_name="test", storage_url=storage.url)

    @task(huey)
    def noop() -> None:
        pass

    noop()
    assert huey.storage.enqueued_items()[0].find(TRAILER_MAGIC) == -1
    drain(huey)
    instrumentation.runtime.recorder.flush()
    (aggregate,) = totals(storage).values()
    assert (aggregate.count(JobStatus.succeeded), aggregate.wait.count) == (1, 0)
    instrumentation.uninstrument()
    instrumentation.runtime.close()


def test_sqlite_probe(tmp_path: Path) -> None:
    path = tmp_path / "huey.db"
    huey = SqliteHuey("jobs", filename=str(path))
    instrument(huey, storage_url=f"sqlite:///{tmp_path / 'ql.db'}")

    @task(huey)
    def noop() -> None:
        pass

    noop()
    noop()
    huey.add_schedule(noop.s(delay=60))
    probe = build_probe(ProbeConfig("huey", f"sqlite:///{path}", "test"))
    first = probe.sample()
    time.sleep(0.2)
    (second,) = probe.sample()
    assert [s.key for s in first] == ["jobs"]
    assert (second.values[PENDING], second.values[SCHEDULED]) == (2.0, 1.0)
    assert second.values[OLDEST_PENDING_AGE_S] >= first[0].values[OLDEST_PENDING_AGE_S] + 0.15
    probe.close()
    huey.storage.close()


def test_priority_redis_probe_reads_the_enqueue_time_huey_keeps() -> None:
    require_service("redis")
    name = unique_name("qlprio")
    huey = PriorityRedisHuey(name, url=REDIS_URL)  # not instrumented: no stamp of ours

    @task(huey)
    def noop() -> None:
        pass

    lists = RedisHuey(unique_name("qllist"), url=REDIS_URL, compression=True)
    instrument(lists, storage_url="sqlite:////tmp/unused-queuelens.db")
    lists.task(name="noop")(lambda: None)
    try:
        huey.enqueue(noop.s(priority=1))
        huey.enqueue(noop.s(priority=9))
        lists.enqueue(lists._registry.string_to_task(f"{__name__}.noop")())
        time.sleep(0.2)
        probe = build_probe(ProbeConfig("huey", REDIS_URL, "test", [name, lists.name]))
        prio, listed = probe.sample()
        assert prio.values[PENDING] == 2.0
        assert 0.2 <= prio.values[OLDEST_PENDING_AGE_S] < 5.0
        assert listed.values[PENDING] == 1.0
        assert 0.2 <= listed.values[OLDEST_PENDING_AGE_S] < 5.0  # stamp read through gzip
        probe.close()
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        client.delete(f"huey.redis.{name}", f"huey.redis.{lists.name}")
        client.close()


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ProbeConfig("huey", "memory://", queues=["q"]), "unsupported storage URL"),
        (ProbeConfig("huey", "redis://127.0.0.1:6379/0"), "name the huey instances"),
        (ProbeConfig("huey", "sqlite://host/huey.db"), "not a SQLite URL"),
    ],
)
def test_probe_configuration_errors(config: ProbeConfig, message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        build_probe(config)
