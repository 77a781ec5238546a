"""Helpers for the Dramatiq and Huey tests: real worker processes and what they stored.

with worker_process(["dramatiq", "tests.integrations.dramatiq_app"], env, log) as proc:
    wait_for(lambda: len(live_workers(storage)) == 2, "two workers beating")
"""

from __future__ import annotations

import contextlib
import math
import os
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import cast

import redis

from queuelens.model import Aggregate, Resolution
from queuelens.storage import Storage
from queuelens.storage.base import WorkerRecord
from tests.conftest import require_service

ROOT = Path(__file__).resolve().parents[2]
BIN = Path(sys.executable).parent


class Timings:
    """A queue of ``(key, seconds)`` that a thread of each process pushes to Redis lists."""

    def __init__(self, url: str) -> None:
        self._url = url
        self._queue: queue.SimpleQueue[tuple[str, float]] = queue.SimpleQueue()
        self._pid = 0

    def put(self, item: tuple[str, float]) -> None:
        if self._pid != os.getpid():  # a forked worker has no thread yet
            self._pid = os.getpid()
            self._queue = queue.SimpleQueue()
            threading.Thread(target=self._push, args=(self._queue,), daemon=True).start()
        self._queue.put(item)

    def _push(self, items: queue.SimpleQueue[tuple[str, float]]) -> None:
        client = redis.Redis.from_url(self._url)
        while True:
            key, seconds = items.get()
            client.rpush(key, seconds)


def require_rabbitmq() -> None:
    """Fail (in CI) or skip (elsewhere) unless RabbitMQ listens on 127.0.0.1:5672."""
    require_service("rabbitmq")


def worker_env(db: Path, **extra: str) -> dict[str, str]:
    """Environment of a worker process: storage in ``db``, fast flushes and heartbeats."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("QUEUELENS_", "COV_", "QL_"))
    }
    env.update(
        QUEUELENS_STORAGE_URL=f"sqlite:///{db}",
        QUEUELENS_FLUSH_INTERVAL="0.2s",
        QUEUELENS_HEARTBEAT_INTERVAL="0.5s",
        QUEUELENS_APP="test",
        PYTHONPATH=str(ROOT),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


@contextlib.contextmanager
def worker_process(
    args: list[str], env: dict[str, str], log: Path
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``args`` (a console script of the venv) in a session of its own; whatever is
    left of that session is killed on exit, and its log is shown when a test fails."""
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / args[0]), *args[1:]],
            cwd=ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        yield proc
    except BaseException:
        sys.stderr.write(f"--- {args[0]} log ---\n{log.read_text(errors='replace')[-6000:]}\n")
        raise
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


def stop_gracefully(proc: subprocess.Popen[bytes], signum: int, timeout_s: float = 30.0) -> None:
    proc.send_signal(signum)
    proc.wait(timeout_s)


def wait_for(predicate: Callable[[], object], what: str, timeout_s: float = 30.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.2)  # gently: the workers' timing is under test on the same CPUs
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for: {what}")


def totals(storage: Storage, app: str = "test") -> dict[str, Aggregate]:
    """Every minute bucket of ``app`` merged per job name (queue names are asserted apart)."""
    now = time.time()
    series = storage.list_jobs(app)
    merged: dict[str, Aggregate] = {}
    for key, buckets in storage.read_buckets(
        series, Resolution.minute, now - 3600, now + 120
    ).items():
        for aggregate in buckets.values():
            merged.setdefault(key.job, Aggregate(aggregate.relative_accuracy)).merge(aggregate)
    return merged


def counts(storage: Storage, app: str = "test") -> dict[str, dict[str, int]]:
    return {
        job: {str(status): n for status, n in aggregate.counts.items()}
        for job, aggregate in totals(storage, app).items()
    }


def workers(storage: Storage) -> list[WorkerRecord]:
    return storage.list_workers("test")


def within(value: float | None, expected: float, relative: float) -> bool:
    return value is not None and abs(value - expected) <= expected * relative


def assert_durations(aggregate: Aggregate, seconds: float, took_key: str) -> None:
    """Duration p50 and p95 within 10% of the sleep, as the jobs timed it themselves (on a
    quiet machine that is ``seconds``; on a busy one, waking up late is part of the job), and
    none of the wait in it."""
    client = redis.Redis.from_url("redis://127.0.0.1:6379/0")
    wait_for(lambda: client.llen(took_key) == aggregate.duration.count, "the jobs' own timings")
    took = sorted(float(v) for v in cast(list[bytes], client.lrange(took_key, 0, -1)))
    client.close()
    assert took[0] >= seconds * 0.999
    for q in (0.5, 0.95):
        truth = took[math.floor(q * (len(took) - 1))]  # the rank the sketch uses
        assert within(aggregate.duration.quantile(q), truth, 0.10), (q, truth, took)
    assert aggregate.duration.max < took[-1] * 1.1
