"""Huey tasks with known costs, run by the tests with the real `huey_consumer`.

    QL_HUEY_NAME=q1 huey_consumer tests.integrations.huey_app.huey -w 4

Tests build the same tasks on a huey of their own with :func:`make_app` to enqueue them.
Settings come from ``QUEUELENS_*``.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, cast

import redis
from huey import RedisHuey

from queuelens.integrations.huey import instrument
from tests.integrations.dramatiq_huey_support import Timings

REDIS_URL = "redis://127.0.0.1:6379/0"
_counter = redis.Redis.from_url(REDIS_URL)
timings = Timings(REDIS_URL)


@dataclass
class App:
    huey: Any
    short_nap: Any
    long_nap: Any
    later_nap: Any
    boom: Any
    flaky: Any
    burn_cpu: Any
    allocate: Any
    long_job: Any
    slow: Any


def nap(seconds: float, key: str) -> None:
    """Sleep, and have how long the sleep really took pushed to the Redis list ``key`` (by
    a thread, so that the job itself does no I/O): the truth the recorded durations are
    checked against on a machine busy with other work."""
    start = time.perf_counter()
    time.sleep(seconds)
    timings.put((key, time.perf_counter() - start))


def task(huey: Any, **options: Any) -> Callable[[Callable[..., Any]], Any]:
    """``huey.task(**options)``, typed (huey has no annotations)."""
    decorator: Callable[[Callable[..., Any]], Any] = huey.task(**options)
    return decorator


def make_app(name: str, storage_url: str | None = None) -> App:
    huey = RedisHuey(name, url=REDIS_URL)
    instrument(huey, storage_url=storage_url)

    @task(huey)
    def short_nap() -> None:
        nap(0.1, f"{name}:took:short_nap")

    @task(huey)
    def long_nap() -> None:
        nap(0.3, f"{name}:took:long_nap")

    @task(huey)
    def later_nap() -> None:
        time.sleep(0.05)

    @task(huey)
    def boom() -> None:
        raise ValueError("boom")

    @task(huey, retries=2)
    def flaky(key: str) -> None:
        """Fails twice, then succeeds (its attempts are counted in Redis under ``key``)."""
        if cast(int, _counter.incr(key)) <= 2:
            raise ConnectionError("not yet")

    @task(huey)
    def burn_cpu(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            sum(range(1000))

    @task(huey)
    def allocate(size: int) -> None:
        block = bytearray(size)  # zero-filled, so every page is touched
        time.sleep(0.05)
        del block

    @task(huey)
    def long_job(seconds: float) -> None:
        time.sleep(seconds)

    @task(huey, timeout=0.2)
    def slow() -> None:
        time.sleep(2.0)

    return App(
        huey, short_nap, long_nap, later_nap, boom, flaky, burn_cpu, allocate, long_job, slow
    )


huey = make_app(os.environ.get("QL_HUEY_NAME", "ql_idle")).huey
