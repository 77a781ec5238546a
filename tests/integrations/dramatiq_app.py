"""Dramatiq actors with known costs, run by the tests with the real `dramatiq` CLI.

    QL_DRAMATIQ_BROKER=redis QL_DRAMATIQ_QUEUE=q1 dramatiq tests.integrations.dramatiq_app

``QL_DRAMATIQ_BROKER`` is ``redis`` (namespace ``QL_DRAMATIQ_NAMESPACE``) or ``rabbitmq``;
every actor listens on queue ``QL_DRAMATIQ_QUEUE``. Settings come from ``QUEUELENS_*``.
"""

from __future__ import annotations

import os
import time
from typing import Any, cast

import dramatiq
import redis
from dramatiq.brokers.rabbitmq import RabbitmqBroker
from dramatiq.brokers.redis import RedisBroker

from queuelens.integrations.dramatiq import QueueLens
from tests.integrations.dramatiq_huey_support import Timings

REDIS_URL = "redis://127.0.0.1:6379/0"
RABBITMQ_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"
QUEUE = os.environ.get("QL_DRAMATIQ_QUEUE", "ql_idle")


def redis_broker(namespace: str, **options: Any) -> RedisBroker:
    """A RedisBroker on the test Redis (its constructor has no annotations)."""
    return RedisBroker(url=REDIS_URL, namespace=namespace, **options)  # type: ignore[no-untyped-call]


broker: dramatiq.Broker
if os.environ.get("QL_DRAMATIQ_BROKER", "redis") == "rabbitmq":
    broker = RabbitmqBroker(url=RABBITMQ_URL)
else:
    broker = redis_broker(os.environ.get("QL_DRAMATIQ_NAMESPACE", "ql"))
broker.add_middleware(QueueLens())
dramatiq.set_broker(broker)
_counter = redis.Redis.from_url(REDIS_URL)
timings = Timings(REDIS_URL)


def nap(seconds: float, key: str) -> None:
    """Sleep, and have how long the sleep really took pushed to the Redis list ``key`` (by
    a thread, so that the job itself does no I/O): the truth the recorded durations are
    checked against on a machine busy with other work."""
    start = time.perf_counter()
    time.sleep(seconds)
    timings.put((key, time.perf_counter() - start))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def short_nap() -> None:
    nap(0.1, f"{QUEUE}:took:short_nap")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def long_nap() -> None:
    nap(0.3, f"{QUEUE}:took:long_nap")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def delayed_nap() -> None:
    time.sleep(0.05)


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def boom() -> None:
    raise ValueError("boom")


@dramatiq.actor(queue_name=QUEUE, max_retries=3, min_backoff=10, max_backoff=20)
def flaky(key: str) -> None:
    """Fails twice, then succeeds (its attempts are counted in Redis under ``key``)."""
    if cast(int, _counter.incr(key)) <= 2:
        raise ConnectionError("not yet")


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def burn_cpu(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        sum(range(1000))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def allocate(size: int) -> None:
    block = bytearray(size)  # zero-filled, so every page is touched
    time.sleep(0.05)
    del block


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def long_job(seconds: float) -> None:
    time.sleep(seconds)
