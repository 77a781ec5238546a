"""The Celery pieces that need no worker: headers, event handling, probes, shared counters.

Probes run against the local Redis and RabbitMQ with messages laid out the way kombu stores
them; the event consumer is fed the events a ``-E`` worker sends.
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from celery import Celery, signals

from queuelens.config import load_settings
from queuelens.integrations import celery as integration
from queuelens.integrations._runtime import Runtime
from queuelens.integrations.celery_events import (
    EventStats,
    _EventConsumer,
    _parse_exception,
    run_celery_events,
)
from queuelens.model import WorkerState
from queuelens.probes import (
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    ProbeConfig,
    ProbeError,
    build_probe,
)
from tests.conftest import require_service, unique_name
from tests.integrations.celery_harness import RABBITMQ_BROKER, counts, require_broker


@pytest.fixture
def runtime(tmp_path: Path) -> Iterator[Runtime]:
    settings = load_settings(None, {}, storage_url=f"sqlite:///{tmp_path / 'ql.db'}", app="ev")
    created = Runtime.create("celery", settings=settings)
    yield created
    created.close()


def test_publishing_stamps_enqueue_time_and_eta(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never-opened.db'}"  # publishers open no storage
    integration.instrument(Celery("stamps", set_as_current=False), storage_url=url)
    eta = datetime.now(UTC) + timedelta(seconds=30)
    headers: dict[str, Any] = {"eta": eta.isoformat(), integration.ETA_HEADER: 1.0}
    before = time.time()
    signals.before_task_publish.send(sender="t", headers=headers, body=None)
    assert before <= headers[integration.ENQUEUED_HEADER] <= time.time()
    assert headers[integration.ETA_HEADER] == pytest.approx(eta.timestamp())
    plain: dict[str, Any] = {"eta": None, integration.ETA_HEADER: 1.0}  # a re-published retry
    signals.before_task_publish.send(sender="t", headers=plain, body=None)
    assert integration.ETA_HEADER not in plain


def test_instrument_twice_changes_nothing(tmp_path: Path) -> None:
    app = Celery("twice", set_as_current=False)
    first = integration.instrument(app, storage_url=f"sqlite:///{tmp_path / 'a.db'}")
    assert integration.instrument(app, storage_url=f"sqlite:///{tmp_path / 'b.db'}") is first
    receivers = [r for r in signals.task_prerun.receivers if "queuelens" in str(r[0])]
    assert len(receivers) == 1


def test_a_broken_handler_is_counted_and_never_raises(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'never-opened.db'}"
    integration.instrument(Celery("broken", set_as_current=False), storage_url=url)
    before = integration.handler_errors().get("on_prerun", 0)
    signals.task_prerun.send(sender=None, task_id="x", task=object(), args=(), kwargs={})
    assert integration.handler_errors()["on_prerun"] == before + 1


# Python 3.12+ warns about fork() in a process with threads (other tests leave daemon
# flusher threads); the child here only writes to shared memory and leaves with _exit().
@pytest.mark.filterwarnings("ignore:This process .* is multi-threaded:DeprecationWarning")
def test_failure_counts_are_shared_with_forked_processes() -> None:
    shared = integration._FailureCounts()
    shared.add(os.getpid())
    pid = os.fork()
    if pid == 0:  # a pool process: counts in a slot of its own
        shared.add(-1)
        shared.add(-1)
        os._exit(0)
    os.waitpid(pid, 0)
    assert shared.total() == 3


@pytest.mark.parametrize(
    ("text", "traceback", "expected"),
    [
        (
            "ValueError('boom')",
            "Traceback ...\n  File 'x'\nValueError: boom\n",
            ("ValueError", "boom"),
        ),
        (
            "ExceptionWithTraceback()",
            "Traceback ...\nbilliard.exceptions.TimeLimitExceeded: TimeLimitExceeded(0.5,)\n",
            ("billiard.exceptions.TimeLimitExceeded", "TimeLimitExceeded(0.5,)"),
        ),
        ("NotRegistered('ql.nope')", "", ("NotRegistered", "ql.nope")),
        ("KeyError(3)", None, ("KeyError", "3")),
        ("no repr at all", None, ("UnknownException", "no repr at all")),
        (None, None, (None, None)),
    ],
)
def test_exceptions_from_events(text: Any, traceback: Any, expected: tuple[Any, Any]) -> None:
    assert _parse_exception(text, traceback) == expected


def _event(kind: str, uuid: str = "", at: float = 0.0, **fields: Any) -> dict[str, Any]:
    return {"type": kind, "uuid": uuid, "timestamp": at, "hostname": "w1@host", **fields}


def test_events_become_outcomes_and_heartbeats(runtime: Runtime) -> None:
    app = Celery("events-unit", set_as_current=False)
    app.conf.task_default_queue = "default-q"
    consumer = _EventConsumer(runtime, app, max_tasks=100)
    now = time.time()
    eta = datetime.fromtimestamp(now + 5, UTC).isoformat()
    traceback = "Traceback...\nValueError: boom\n"
    for event in [
        _event("worker-online", at=now, pid=42, freq=2.0),
        _event("task-sent", "a", now, name="t.add", queue="emails"),
        _event("task-received", "a", now + 1, name="t.add"),
        _event("task-started", "a", now + 3),
        _event("worker-heartbeat", at=now + 3.5, pid=42, freq=2.0, active=1, processed=0),
        _event("task-succeeded", "a", now + 3.5, runtime=0.25),
        _event("task-received", "b", now, name="t.add", eta=eta),  # no task-sent: received
        _event("task-started", "b", now + 6),
        _event("task-failed", "b", now + 7, exception="ValueError('boom')", traceback=traceback),
        _event("task-received", "c", now, name="t.flaky"),
        _event("task-started", "c", now + 1),
        _event("task-retried", "c", now + 1.5, exception="ConnectionError('x')"),
        _event("task-received", "c", now + 2, name="t.flaky"),
        _event("task-started", "c", now + 2.5),
        _event("task-succeeded", "c", now + 2.75, runtime=0.25),
        _event("task-revoked", "d", now + 1, expired=True),  # never received: no name
        _event("task-failed", "e", now + 1, exception="NotRegistered('t.gone')"),
        _event("task-received", "f", now, name="t.slow"),
        _event("task-started", "f", now + 1),
        _event("task-failed", "f", now + 2, exception="X()", traceback="T\nTimeLimitExceeded: 1\n"),
        _event("task-failed", "f", now + 2.1, exception="ExceptionWithTraceback()"),  # again
        _event(
            "task-failed",
            "g",
            now,
            exception="reject requeue=False: no",
            traceback="T\ncelery.exceptions.Reject: ('no', False)\n",
        ),
        _event("worker-offline", at=now + 9, pid=42, freq=2.0, active=0, processed=5),
        {"type": "task-succeeded"},  # malformed: counted as an error, nothing recorded
    ]:
        consumer.on_event(event)
    runtime.recorder.flush()
    storage = runtime.storage()
    found = counts(storage, "ev")
    assert found == {
        ("emails", "t.add", "succeeded"): 1,
        ("default-q", "t.add", "failed"): 1,
        ("default-q", "t.flaky", "retried"): 1,
        ("default-q", "t.flaky", "succeeded"): 1,
        ("default-q", "unknown", "revoked"): 1,
        ("default-q", "t.gone", "rejected"): 1,
        ("default-q", "t.slow", "timed_out"): 1,
        ("default-q", "unknown", "rejected"): 1,
    }
    assert consumer.stats.outcomes == 8
    (worker,) = storage.list_workers("ev")
    beat = worker.heartbeat
    assert (beat.name, beat.hostname, beat.pid, beat.state) == ("w1@host", "host", 42, "stopped")
    assert (beat.processed, beat.failed, beat.concurrency) == (5, 2, 1)
    assert worker.state_at(time.time()) is WorkerState.stopped


def test_event_waits_and_durations(runtime: Runtime) -> None:
    consumer = _EventConsumer(runtime, Celery("w", set_as_current=False), max_tasks=100)
    now = time.time()
    eta = datetime.fromtimestamp(now + 5, UTC).isoformat()
    for event in [
        _event("task-sent", "a", now, name="t.a", queue="q"),
        _event("task-received", "a", now + 1, name="t.a"),
        _event("task-started", "a", now + 3),
        _event("task-succeeded", "a", now + 4, runtime=0.5),  # wait from sent: 3 s
        _event("task-received", "b", now, name="t.b", eta=eta),
        _event("task-started", "b", now + 6),
        _event("task-failed", "b", now + 7, exception="ValueError('x')"),  # from the eta: 1 s
    ]:
        consumer.on_event(event)
    runtime.recorder.flush()
    storage = runtime.storage()
    jobs = {key.job: agg for key, agg in _aggregates(storage).items()}
    assert jobs["t.a"].wait.quantile(0.5) == pytest.approx(3.0, rel=0.02)
    assert jobs["t.a"].duration.quantile(0.5) == pytest.approx(0.5, rel=0.02)
    assert jobs["t.b"].wait.quantile(0.5) == pytest.approx(1.0, rel=0.02)
    assert jobs["t.b"].duration.quantile(0.5) == pytest.approx(1.0, rel=0.02)


def _aggregates(storage: Any) -> dict[Any, Any]:
    from tests.integrations.celery_harness import aggregates

    return aggregates(storage, "ev")


def test_in_flight_tasks_are_bounded(runtime: Runtime) -> None:
    consumer = _EventConsumer(runtime, Celery("lru", set_as_current=False), max_tasks=3)
    for n in range(10):
        consumer.on_event(_event("task-received", f"t{n}", time.time(), name="t.x"))
    assert list(consumer.tasks) == ["t7", "t8", "t9"]


def test_event_stream_retries_an_unreachable_broker(tmp_path: Path) -> None:
    settings = load_settings(None, {}, storage_url=f"sqlite:///{tmp_path / 'e.db'}")
    started = time.monotonic()
    stats = run_celery_events("amqp://guest:guest@127.0.0.1:1//", settings=settings,
                              stop_after_s=1.0)  # fmt: skip
    assert isinstance(stats, EventStats)
    assert stats.reconnects >= 1
    assert stats.events == 0
    assert time.monotonic() - started < 10


# -- probes ------------------------------------------------------------------------------


def _message(enqueued_at: float | None) -> bytes:
    headers = {"task": "t"} if enqueued_at is None else {integration.ENQUEUED_HEADER: enqueued_at}
    return json.dumps({"body": "", "headers": headers, "properties": {}}).encode()


@pytest.fixture
def redis_prefix() -> Iterator[str]:
    require_service("redis")
    import redis

    prefix = unique_name("qltest_probe") + ":"
    yield prefix
    client = redis.Redis()
    names = ("emails", "emails\x06\x169", "other", "unacked")
    client.delete(*(f"{prefix}{name}" for name in names))
    client.close()


def test_redis_probe_counts_priorities_prefix_age_and_unacked(redis_prefix: str) -> None:
    import redis

    client = redis.Redis()
    now = time.time()
    client.lpush(f"{redis_prefix}emails", _message(now - 30), _message(now - 5), _message(None))
    client.lpush(f"{redis_prefix}emails\x06\x169", _message(now - 60))  # lowest priority
    client.lpush(f"{redis_prefix}other", _message(None))  # no stamp: no age
    unacked = [json.dumps([{"m": 1}, "", key]) for key in ("emails", "emails", "other")]
    client.hset(f"{redis_prefix}unacked", mapping=dict(enumerate(unacked)))
    options = {"global_keyprefix": redis_prefix}
    config = ProbeConfig("celery", "redis://127.0.0.1:6379/0", "app", ["emails", "other", "none"],
                         options)  # fmt: skip
    probe = build_probe(config)
    try:
        samples = {sample.key: sample.values for sample in probe.sample()}
    finally:
        probe.close()
    assert samples["emails"][PENDING] == 4
    assert samples["emails"][OLDEST_PENDING_AGE_S] == pytest.approx(60, abs=2)
    assert samples["emails"][RESERVED] == 2
    assert samples["other"] == {PENDING: 1, RESERVED: 1}
    assert samples["none"] == {PENDING: 0, RESERVED: 0}
    capped = build_probe(ProbeConfig("celery", "redis://127.0.0.1:6379/0", "app", ["emails"],
                                     {**options, "max_unacked_scan": 2}))  # fmt: skip
    try:
        assert RESERVED not in capped.sample()[0].values  # too many to count per queue
    finally:
        capped.close()
    client.close()


def test_probe_errors_name_the_problem() -> None:
    with pytest.raises(ProbeError, match="sqs"):
        build_probe(ProbeConfig("celery", "sqs://queue"))
    probe = build_probe(ProbeConfig("celery", "redis://127.0.0.1:1/0"))
    with pytest.raises(ProbeError, match="Redis broker"):
        probe.sample()
    probe.close()
    amqp = build_probe(ProbeConfig("celery", "amqp://guest:guest@127.0.0.1:1//"))
    with pytest.raises(ProbeError, match="AMQP broker"):
        amqp.sample()
    amqp.close()


def test_amqp_probe_reads_ready_messages() -> None:
    require_broker(RABBITMQ_BROKER)
    from kombu import connection as kombu_connection

    queue = unique_name("qltest_probe")
    factory: Any = kombu_connection.Connection
    with factory(RABBITMQ_BROKER) as connection:
        channel = connection.channel()
        channel.queue_declare(queue=queue, auto_delete=False)
        for _ in range(3):
            channel.basic_publish(channel.prepare_message(b"x"), exchange="", routing_key=queue)
        probe = build_probe(ProbeConfig("celery", RABBITMQ_BROKER, "app", [queue, f"{queue}-none"]))
        try:
            deadline = time.monotonic() + 5
            while (values := [s.values for s in probe.sample()])[0][PENDING] < 3:
                assert time.monotonic() < deadline
                time.sleep(0.05)
            assert values == [{PENDING: 3}, {PENDING: 0}]
        finally:
            probe.close()
            channel.queue_delete(queue)
            channel.close()
