"""Real ``rq worker`` subprocesses, isolated RQ queues and storage reads for the RQ tests.

with isolated_queue() as (redis, queue):         # unique name; its keys deleted afterwards
    queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, 1))
    worker = WorkerProcess.start(queue.name, storage_url, burst=True)
    worker.wait()
    series = read_series(storage_url)               # job function name -> merged Aggregate
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from itertools import count
from pathlib import Path
from typing import cast

import psutil
from redis import Redis
from rq import Queue

from queuelens.model import Aggregate, Resolution
from queuelens.storage import WorkerRecord, open_storage
from tests.conftest import require_service, unique_name

#: a database of its own, so that cleaning up after a test scans only RQ test keys; tests
#: running in parallel are kept apart by their queue names
REDIS_URL = "redis://127.0.0.1:6379/7"
ROOT = Path(__file__).resolve().parents[2]
JOBS = "tests.integrations.rq_jobs"
_numbers = count(1)


@contextmanager
def isolated_queue() -> Iterator[tuple[Redis, Queue]]:
    """An RQ queue with a name of its own; every key naming it is deleted afterwards.

    Job ids and worker names are made from the queue name (:func:`job_id`,
    :meth:`WorkerProcess.start`), so job, result, execution and worker keys go too.
    """
    require_service("redis")
    redis = Redis.from_url(REDIS_URL)
    queue = Queue(unique_name("qlrq"), connection=redis)
    try:
        yield redis, queue
    finally:
        keys = list(redis.scan_iter(match=f"*{queue.name}*", count=1000))
        if keys:
            redis.delete(*keys)
        redis.srem("rq:queues", queue.key)
        members = cast("set[bytes]", redis.smembers("rq:workers"))
        workers = [w for w in members if queue.name.encode() in w]
        if workers:
            redis.srem("rq:workers", *workers)
        redis.close()


def job_id(queue: Queue, label: object) -> str:
    """A job id that names its queue, so that the queue's clean-up finds the job's keys."""
    return f"{queue.name}-{label}"


@dataclass
class WorkerProcess:
    """One ``rq worker`` subprocess using a queuelens worker class."""

    process: subprocess.Popen[bytes]
    name: str
    log_path: Path

    @classmethod
    def start(
        cls,
        queue: str,
        storage_url: str,
        log_dir: Path,
        *,
        worker_class: str = "queuelens.integrations.rq.Worker",
        burst: bool = False,
        scheduler: bool = False,
    ) -> WorkerProcess:
        name = f"{queue}-w{next(_numbers)}"
        command = [sys.executable, "-m", "rq.cli", "worker", "-w", worker_class]
        command += ["--url", REDIS_URL, "--name", name, "--path", str(ROOT)]
        command += ["--burst"] if burst else []
        command += ["--with-scheduler"] if scheduler else []
        env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUELENS_")}
        env.update(
            QUEUELENS_STORAGE_URL=storage_url,
            QUEUELENS_FLUSH_INTERVAL="0.2s",
            QUEUELENS_HEARTBEAT_INTERVAL="0.5s",
            PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]),
        )
        log_path = log_dir / f"{name}.log"
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [*command, queue], stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT
            )
        return cls(process, name, log_path)

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait(self, timeout_s: float = 60.0) -> int:
        try:
            return self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.kill()
            raise AssertionError(f"worker {self.name} did not exit; its log:\n{self.log}") from None

    def signal(self, signum: signal.Signals) -> None:
        self.process.send_signal(signum)

    def kill(self) -> None:
        """SIGKILL the worker, then its scheduler process and any work horse, which would
        outlive it (the horse even has a process group of its own)."""
        children = []
        with contextlib.suppress(psutil.Error):
            children = psutil.Process(self.process.pid).children(recursive=True)
        if self.process.poll() is None:
            self.process.kill()
        self.process.wait(10)
        for child in children:
            with contextlib.suppress(psutil.Error):
                child.kill()


def read_series(storage_url: str, app: str = "default") -> dict[str, Aggregate]:
    """Every job series of ``app``, merged over all minutes, by function name."""
    storage = open_storage(storage_url)
    try:
        series = storage.list_jobs(app)
        now = time.time()
        buckets = storage.read_buckets(series, Resolution.minute, now - 3600, now + 120)
        merged: dict[str, Aggregate] = {}
        for key, by_minute in buckets.items():
            total = merged.setdefault(key.job.rsplit(".", 1)[-1], Aggregate())
            for aggregate in by_minute.values():
                total.merge(aggregate)
        return merged
    finally:
        storage.close()


def read_worker(storage_url: str, name: str) -> WorkerRecord | None:
    storage = open_storage(storage_url)
    try:
        return next((w for w in storage.list_workers() if w.heartbeat.name == name), None)
    finally:
        storage.close()


def wait_until(
    condition: Callable[[], object],
    what: str,
    timeout_s: float = 20.0,
    worker: WorkerProcess | None = None,
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(0.05)
    log = f"; worker log:\n{worker.log}" if worker is not None else ""
    raise AssertionError(f"timed out waiting for {what}{log}")
