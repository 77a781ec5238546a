"""Real worker processes and what they stored, for the arq and Taskiq integration tests.

with WorkerProcess(["-m", "arq", "tests.integrations.arq_app.WorkerSettings"],
                   worker_env(tmp_path, queue), tmp_path) as worker:
    wait_until(lambda: totals(storage, queue) == expected)
    worker.terminate()
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import TracebackType
from typing import cast

import redis

from queuelens.model import Aggregate, Resolution, SeriesKey
from queuelens.storage import Storage, WorkerRecord, open_storage

REPO = Path(__file__).resolve().parents[2]
REDIS_URL = "redis://127.0.0.1:6379/0"
#: heartbeat interval of test workers; stale after three missed beats
HEARTBEAT_S = 0.5


def worker_env(storage_url: str, queue: str, **extra: str) -> dict[str, str]:
    """Environment of a worker process: its storage, fast flushes and beats, its queue."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("QUEUELENS_")}
    env.update(
        QUEUELENS_STORAGE_URL=storage_url,
        QUEUELENS_FLUSH_INTERVAL="0.2s",
        QUEUELENS_HEARTBEAT_INTERVAL=f"{HEARTBEAT_S}s",
        QL_TEST_QUEUE=queue,
        PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])),
        PYTHONUNBUFFERED="1",
    )
    env.update(extra)
    return env


class WorkerProcess:
    """A worker started from the repository root in a session of its own; its output goes
    to a log file that failing assertions can show."""

    def __init__(self, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.log_path = log_dir / f"worker-{time.monotonic_ns()}.log"
        self._log = self.log_path.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, *args],
            cwd=REPO,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def terminate(self, timeout_s: float = 30.0) -> int:
        """Graceful stop (SIGTERM to the worker's main process); its exit code."""
        self.process.send_signal(signal.SIGTERM)
        return self.process.wait(timeout_s)

    def kill(self) -> None:
        """SIGKILL the worker and every process it started, as an OOM killer would."""
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10.0)

    def __enter__(self) -> WorkerProcess:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        try:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.process.pid, signal.SIGKILL)  # also any orphaned children
            self.process.wait(10.0)
        finally:
            self._log.close()


#: between two reads of storage while waiting: reading SQLite costs CPU that the workers
#: under test share (2 cores in CI), and a tighter loop measurably delays their event loops
POLL_S = 0.25


def wait_until(
    predicate: Callable[[], object], timeout_s: float, what: str, worker: WorkerProcess | None
) -> None:
    """Poll ``predicate`` until it is true; fail with ``what`` and the worker's output."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        if worker is not None and worker.process.poll() is not None:
            break
        time.sleep(POLL_S)
    log = worker.output()[-4000:] if worker is not None else ""
    raise AssertionError(f"{what} not reached within {timeout_s} s\n--- worker log ---\n{log}")


def series(storage: Storage, queue: str, job: str, app: str = "default") -> Aggregate:
    """Everything stored for one series in the last hour, merged."""
    key = SeriesKey(app, queue, job)
    now = time.time()
    merged = Aggregate()
    for aggregate in (
        storage.read_buckets([key], Resolution.minute, now - 3600, now + 120).get(key, {}).values()
    ):
        merged.merge(aggregate)
    return merged


def totals(storage: Storage, queue: str, jobs: list[str]) -> dict[str, int]:
    return {job: series(storage, queue, job).total for job in jobs}


def only_worker(storage: Storage) -> WorkerRecord | None:
    workers = storage.list_workers()
    assert len(workers) <= 1, workers
    return workers[0] if workers else None


def counts(aggregate: Aggregate) -> dict[str, int]:
    return {str(status): n for status, n in aggregate.counts.items() if n}


def exceptions(aggregate: Aggregate) -> dict[str, int]:
    return {name: stat.count for name, stat in aggregate.exceptions.items()}


def within(value: float | None, target: float, tolerance: float = 0.10) -> bool:
    return value is not None and abs(value - target) <= tolerance * target


def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'queuelens.db'}"


@contextlib.contextmanager
def worker_storage(tmp_path: Path) -> Iterator[Storage]:
    """The SQLite storage the workers of one test write to (``sqlite_url(tmp_path)``)."""
    opened = open_storage(sqlite_url(tmp_path))
    try:
        yield opened
    finally:
        opened.close()


def drop_arq_queue(name: str) -> None:
    """Delete an arq queue and the keys of the jobs still in it."""
    client = redis.Redis.from_url(REDIS_URL)
    try:
        left = [member.decode() for member in cast(list[bytes], client.zrange(name, 0, -1))]
        prefixes = ("arq:job:", "arq:retry:", "arq:in-progress:", "arq:result:")
        keys = [prefix + job_id for job_id in left for prefix in prefixes]
        client.delete(name, f"{name}:health-check", *keys)
    finally:
        client.close()


def busy_with(storage: Storage, job: str) -> bool:
    record = only_worker(storage)
    return record is not None and record.heartbeat.current_jobs == [job]


__all__ = [
    "HEARTBEAT_S",
    "REDIS_URL",
    "REPO",
    "WorkerProcess",
    "busy_with",
    "counts",
    "drop_arq_queue",
    "exceptions",
    "only_worker",
    "series",
    "sqlite_url",
    "totals",
    "wait_until",
    "within",
    "worker_env",
    "worker_storage",
]
