"""Real Celery workers for the tests: start, signal, and read back what they recorded.

    worker = Worker.start(scenario, pool="prefork", concurrency=2, log_dir=tmp_path)
    send(scenario.client, scenario.queue, MAIN_WORKLOAD)
    wait_until(lambda: total(scenario) == 53, 60, worker)
    worker.signal(signal.SIGTERM)

Brokers: the local Redis (with a key prefix of the run's own) and RabbitMQ (queues of the
run's own), both on their standard ports; storage: a SQLite file per scenario.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from queuelens.integrations.celery import instrument
from queuelens.model import Aggregate, Resolution, SeriesKey
from queuelens.storage import Storage, open_storage
from tests.conftest import _reachable, require_service, unique_name
from tests.integrations.celery_tasks import make_app

ROOT = Path(__file__).resolve().parents[2]
REDIS_BROKER = "redis://127.0.0.1:6379/0"
RABBITMQ_BROKER = "amqp://guest:guest@127.0.0.1:5672//"
FLUSH_S = 0.2
BEAT_S = 0.5

#: (task, args, how many, apply_async options)
Job = tuple[str, list[Any], int, dict[str, Any]]


def _fail_or_skip(message: str) -> None:
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def broker_problem(broker: str) -> str | None:
    """Why Celery cannot use ``broker`` here, or None when it can."""
    if broker.startswith("amqp") and not _reachable(5672):
        return (
            "rabbitmq is not listening on 127.0.0.1:5672; start it with: rabbitmq-server "
            "-detached (or run `bash .ci/run`, which starts it)"
        )
    if broker.startswith("redis"):
        if not _reachable(6379):
            return None  # require_service("redis") says it in the usual words
        from kombu import connection as kombu_connection
        from kombu.exceptions import VersionMismatch

        factory: Any = kombu_connection.Connection
        try:
            with factory(broker) as connection:
                connection.default_channel  # noqa: B018 - creating it checks the client
        except VersionMismatch as exc:
            return f"Celery's Redis transport cannot run with the installed redis-py: {exc}"
    return None


def require_broker(broker: str) -> None:
    """Fail (in CI) or skip (elsewhere) unless Celery can use ``broker`` here."""
    if broker.startswith("redis"):
        require_service("redis")
    problem = broker_problem(broker)
    if problem:
        _fail_or_skip(problem)


@dataclass
class Scenario:
    """One app name, queue, broker and storage file: what one worker is tested with."""

    name: str
    broker: str
    directory: Path
    app_name: str = field(default_factory=lambda: unique_name("app"))
    queue: str = field(default_factory=lambda: unique_name("qlq"))
    keyprefix: str = field(default_factory=lambda: unique_name("qltest_celery") + "_")
    client: Any = None
    storage: Storage | None = None
    events_storage: Storage | None = None

    def __post_init__(self) -> None:
        prefix = self.keyprefix if self.broker.startswith("redis") else ""
        self.client = make_app(self.broker, queue=self.queue, keyprefix=prefix)
        instrument(self.client, storage_url=f"sqlite:///{self.directory / 'client.db'}")
        # Create the schemas here, one at a time: Alembic's migration context is global to
        # the process, so two threads must not migrate two new SQLite files at once.
        self.open()
        self.events_storage = open_storage(self.events_url)

    @property
    def events_url(self) -> str:
        """Where the event-stream consumer of this scenario stores."""
        return f"sqlite:///{self.directory / f'{self.name}-events.db'}"

    @property
    def storage_url(self) -> str:
        return f"sqlite:///{self.directory / f'{self.name}.db'}"

    def open(self) -> Storage:
        if self.storage is None:
            self.storage = open_storage(self.storage_url)
        return self.storage

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("QUEUELENS_", "COV"))}
        env.update(
            PYTHONPATH=str(ROOT),
            QUEUELENS_STORAGE_URL=self.storage_url,
            QUEUELENS_APP=self.app_name,
            QUEUELENS_FLUSH_INTERVAL=str(FLUSH_S),
            QUEUELENS_HEARTBEAT_INTERVAL=str(BEAT_S),
            QL_CELERY_BROKER=self.broker,
            QL_CELERY_QUEUE=self.queue,
            QL_CELERY_KEYPREFIX=self.keyprefix if self.broker.startswith("redis") else "",
        )
        return env

    def cleanup(self) -> None:
        for storage in (self.storage, self.events_storage):
            if storage is not None:
                storage.close()
        try:
            self._purge()
        finally:
            self.client.close()  # its pooled broker connections

    def _purge(self) -> None:
        if self.broker.startswith("redis"):
            import redis

            client = redis.Redis.from_url(self.broker)
            try:
                keys = list(client.scan_iter(match=f"{self.keyprefix}*", count=1000))
                if keys:
                    client.delete(*keys)
            finally:
                client.close()
        else:
            with self.client.connection_for_write() as connection:
                channel = connection.default_channel
                channel.queue_delete(self.queue)
                channel.exchange_delete(self.queue)


class Worker:
    """A ``celery worker`` process of a scenario, in a process group of its own."""

    def __init__(self, process: subprocess.Popen[bytes], log: Path) -> None:
        self.process = process
        self.log = log

    @classmethod
    def start(
        cls,
        scenario: Scenario,
        *,
        pool: str = "prefork",
        concurrency: int = 2,
        events: bool = False,
    ) -> Worker:
        log = scenario.directory / f"{scenario.name}-worker.log"
        command = [
            sys.executable, "-m", "celery", "-A", "tests.integrations.celery_app", "worker",
            "--pool", pool, "--concurrency", str(concurrency), "-Q", scenario.queue,
            "-n", f"{scenario.name}-{scenario.queue}@%h", "--without-gossip",
            "--without-mingle", "-l", "WARNING",
        ]  # fmt: skip
        command += ["-E"] if events else ["--without-heartbeat"]
        with log.open("wb") as out:
            process = subprocess.Popen(
                command, cwd=ROOT, env=scenario.env(), stdout=out, stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL, start_new_session=True,
            )  # fmt: skip
        return cls(process, log)

    @property
    def pid(self) -> int:
        return self.process.pid

    def signal(self, signum: int) -> None:
        if self.process.poll() is None:
            os.kill(self.process.pid, signum)

    def wait(self, timeout_s: float) -> int:
        return self.process.wait(timeout_s)

    def kill_group(self) -> None:
        """SIGKILL the worker and its pool processes (which a killed parent leaves behind)."""
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait(10)

    def tail(self) -> str:
        return self.log.read_text(errors="replace")[-3000:]


def send(client: Any, queue: str, jobs: list[Job]) -> int:
    """Publish ``jobs`` to ``queue``; returns how many messages were sent."""
    sent = 0
    for name, args, count, options in jobs:
        for _ in range(count):
            client.send_task(name, args=args, queue=queue, **options)
            sent += 1
    return sent


def aggregates(storage: Storage, app: str) -> dict[SeriesKey, Aggregate]:
    """Every series of ``app`` merged over the last hour of minute buckets."""
    series = storage.list_jobs(app)
    now = time.time()
    merged: dict[SeriesKey, Aggregate] = {}
    for key, buckets in storage.read_buckets(
        series, Resolution.minute, now - 3600, now + 120
    ).items():
        total = merged.setdefault(key, Aggregate())
        for aggregate in buckets.values():
            total.merge(aggregate)
    return merged


def counts(storage: Storage, app: str) -> dict[tuple[str, str, str], int]:
    """``(queue, job, status) -> attempts`` of ``app``."""
    out: dict[tuple[str, str, str], int] = {}
    for key, aggregate in aggregates(storage, app).items():
        for status, n in aggregate.counts.items():
            out[(key.queue, key.job, str(status))] = n
    return out


def wait_until(
    predicate: Callable[[], object], timeout_s: float, *workers: Worker, what: str = ""
) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return
        time.sleep(0.1)
    logs = "\n".join(f"--- {w.log.name}\n{w.tail()}" for w in workers)
    raise AssertionError(f"timed out waiting for {what or predicate}\n{logs}")
