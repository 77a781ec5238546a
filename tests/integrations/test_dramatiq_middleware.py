"""The QueueLens middleware in this process, on Dramatiq's StubBroker: each fate of a
message maps to one status, whatever the middleware order; probe configuration errors."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import dramatiq
import pytest
from dramatiq import Message, Worker
from dramatiq.broker import Broker, MessageProxy
from dramatiq.brokers.stub import StubBroker
from dramatiq.middleware import AgeLimit, AsyncIO, Middleware, MiddlewareError, Retries, TimeLimit

from queuelens.integrations.dramatiq import QueueLens
from queuelens.model import JobStatus, WorkerState
from queuelens.probes import ProbeConfig, ProbeError, build_probe
from queuelens.storage import Storage, open_storage
from tests.integrations.dramatiq_huey_support import totals


class Refuse(Middleware):
    """Raises before QueueLens sees the message, for the actor named ``refused``."""

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        if message.actor_name == "refused":
            raise MiddlewareError("refused")


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'ql.db'}")
    yield opened
    opened.close()


@pytest.mark.parametrize("queuelens_first", [False, True], ids=["appended", "first"])
def test_every_fate_of_a_message(storage: Storage, queuelens_first: bool) -> None:
    middleware = QueueLens(app="test", storage_url=storage.url)
    stack: list[Middleware] = [
        AgeLimit(),
        TimeLimit(interval=10),
        Refuse(),
        AsyncIO(),
        Retries(min_backoff=5, max_backoff=10),
    ]
    broker = StubBroker(middleware=[middleware, *stack] if queuelens_first else stack)
    if not queuelens_first:
        broker.add_middleware(middleware)
    broker.emit_after("process_boot")
    attempts: dict[str, int] = {}

    def actor(**options: Any) -> Callable[[Callable[..., Any]], Any]:
        options.setdefault("max_retries", 0)
        return dramatiq.actor(queue_name="q", broker=broker, **options)

    @actor()
    def ok() -> None:
        time.sleep(0.02)

    @actor(max_retries=2)
    def flaky() -> None:
        attempts["flaky"] = attempts.get("flaky", 0) + 1
        if attempts["flaky"] < 3:
            raise dramatiq.Retry("again", delay=5)

    @actor(max_retries=5, throws=(KeyError,))
    def thrown() -> None:
        raise KeyError("expected")

    @actor(time_limit=50)
    def slow() -> None:
        for _ in range(200):
            time.sleep(0.005)

    @actor(max_age=100)
    def stale() -> None:
        pass

    @actor()
    def refused() -> None:
        pass

    @actor()
    async def coroutine() -> None:
        pass

    worker = Worker(broker, worker_threads=2, worker_timeout=50)
    worker.start()
    try:
        for sent in (ok, flaky, thrown, slow, refused, coroutine):
            sent.send()
        ok.send_with_options(delay=50)
        broker.enqueue(stale.message().copy(message_timestamp=int(time.time() * 1000) - 5000))
        broker.enqueue(Message("q", "unknown", (), {}, {}))
        broker.join("q", fail_fast=False)
        worker.join()
    finally:
        worker.stop()
    middleware.runtime.close()

    agg = totals(storage)
    assert {job: dict(a.counts) for job, a in agg.items()} == {
        "ok": {JobStatus.succeeded: 2},
        "flaky": {JobStatus.retried: 2, JobStatus.succeeded: 1},
        "thrown": {JobStatus.failed: 1},
        "slow": {JobStatus.timed_out: 1},
        "stale": {JobStatus.rejected: 1},  # skipped by AgeLimit: never ran
        "refused": {JobStatus.failed: 1},  # an earlier middleware raised: never ran
        "coroutine": {JobStatus.succeeded: 1},
        "unknown": {JobStatus.rejected: 1},  # dead-lettered by the consumer thread
    }
    assert agg["stale"].wait.min >= 5.0
    assert list(agg["unknown"].exceptions) == ["dramatiq.errors.ActorNotFound"]
    assert agg["ok"].wait.max < 1.0  # the delayed one waits from its eta
    assert agg["slow"].duration.max < 1.0
    assert list(agg["thrown"].exceptions) == ["KeyError"]
    (beat,) = storage.list_workers("test")
    assert beat.heartbeat.state is WorkerState.stopped
    assert beat.heartbeat.concurrency == 2
    if queuelens_first:  # it saw "stale" and "refused" start, before they were stopped
        assert (beat.heartbeat.processed, beat.heartbeat.failed) == (10, 5)
    else:
        assert agg["stale"].duration.count == agg["refused"].duration.count == 0
        assert (beat.heartbeat.processed, beat.heartbeat.failed) == (8, 4)


@pytest.mark.parametrize(
    ("config", "message"),
    [
        (ProbeConfig("dramatiq", "redis://127.0.0.1:6379/0"), "name the queues"),
        (ProbeConfig("dramatiq", "sqs://queue", queues=["q"]), "unsupported broker URL"),
    ],
)
def test_probe_configuration_errors(config: ProbeConfig, message: str) -> None:
    with pytest.raises(ProbeError, match=message):
        build_probe(config)
