"""A small known workload in real storage, and a client that calls the app in-process.

The workload (all in the minute two minutes before ``NOW``):

| app     | queue                        | job     | ok | failed |
|---------|------------------------------|---------|----|--------|
| billing | emails                       | send    | 90 | 10     |
| billing | ip-10-0-0-1.ec2.internal     | a:b/c   | 5  | 0      |
| billing | a:b/c                        | größe   | 7  | 0      |
| billing | with space                   | x y     | 3  | 0      |
| billing | per%2Fcent                   | j       | 2  | 0      |
| shop    | emails                       | send    | 4  | 0      |

plus a depth sample of billing/emails (12 pending, oldest 30 s), a server sample of host
``h1`` (CPU 97%), a busy worker ``w1`` serving billing/emails and a dead worker ``w2``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx
import pytest
from fastapi import FastAPI
from starlette.types import ASGIApp

from queuelens.api import create_app
from queuelens.config import Settings, load_settings
from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.storage import Storage, open_storage

NOW = (time.time() // 60) * 60 - 30.0
AT = NOW - 120
#: (app, queue, job) -> (succeeded, failed)
WORKLOAD: dict[tuple[str, str, str], tuple[int, int]] = {
    ("billing", "emails", "send"): (90, 10),
    ("billing", "ip-10-0-0-1.ec2.internal", "a:b/c"): (5, 0),
    ("billing", "a:b/c", "größe"): (7, 0),
    ("billing", "with space", "x y"): (3, 0),
    ("billing", "per%2Fcent", "j"): (2, 0),
    ("shop", "emails", "send"): (4, 0),
}
TOTAL = sum(ok + failed for ok, failed in WORKLOAD.values())


def seed(storage: Storage) -> None:
    """Write the workload of the module docstring."""
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    for (app, queue, job), (ok, failed) in WORKLOAD.items():
        aggregate = Aggregate()
        for n in range(ok + failed):
            status = JobStatus.succeeded if n < ok else JobStatus.failed
            outcome = JobOutcome(
                queue,
                job,
                status,
                duration_s=0.2,
                wait_s=1.0,
                exception_type="IOError" if status is JobStatus.failed else None,
                exception_message="disk full" if status is JobStatus.failed else None,
            )
            aggregate.add(outcome, AT)
        aggregates[(SeriesKey(app, queue, job), bucket_start(AT, 60))] = aggregate
    frameworks = {(app, queue): "rq" for app, queue, _ in WORKLOAD}
    storage.write(FlushBatch("seed", 1, AT, aggregates, frameworks))
    now = time.time()
    # The newest samples are taken now, not at import: a long test run must not make them
    # stale (health would then add a depth_sample_stale reason).
    storage.write_gauges(
        [
            GaugeSample(
                "queue", "billing", "emails", {"pending": 12.0, "oldest_pending_age_s": 30.0}, now
            ),
            GaugeSample(
                "server",
                "billing",
                "h1",
                {"cpu_percent": 97.0, "cpu_count": 2.0, "load_1": 0.5, "memory_percent": 40.0},
                now,
            ),
        ]
    )
    storage.heartbeat(heartbeat("w1", now, busy=1, interval_s=300.0))
    storage.heartbeat(heartbeat("w2", now - 600, busy=0, interval_s=5.0))


def heartbeat(worker_id: str, sent_at: float, *, busy: int, interval_s: float) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        app="billing",
        framework="rq",
        hostname="h1",
        pid=1,
        name=worker_id,
        queues=["emails"],
        concurrency=2,
        busy_slots=busy,
        state=WorkerState.busy if busy else WorkerState.idle,
        started_at=sent_at - 600,
        sent_at=sent_at,
        heartbeat_interval_s=interval_s,
        processed=42,
    )


def make_settings(tmp_path: Path, **overrides: Any) -> Settings:
    """Settings from ``overrides`` alone: no environment, an empty queuelens.toml."""
    return load_settings(settings_file(tmp_path), env={}, **overrides)


def settings_file(tmp_path: Path) -> Path:
    path = tmp_path / "queuelens.toml"
    if not path.exists():
        path.write_text("")
    return path


class Client:
    """Calls an ASGI app in-process over httpx, one event loop per request."""

    def __init__(self, app: ASGIApp, *, client_address: str = "127.0.0.1") -> None:
        self.app = app
        self.client_address = client_address

    def request(self, method: str, url: str, **kwargs: Any) -> httpx.Response:
        async def send() -> httpx.Response:
            transport = httpx.ASGITransport(app=self.app, client=(self.client_address, 50000))
            async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as c:
                return await c.request(method, url, **kwargs)

        return anyio.run(send)

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("GET", url, **kwargs)

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.request("POST", url, **kwargs)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    seed(opened)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def app(storage: Storage, tmp_path: Path) -> FastAPI:
    """The app over the seeded SQLite storage, anonymous, without rate limits."""
    settings = make_settings(tmp_path, rate_limit_ip_per_min=0, rate_limit_token_per_min=0)
    return create_app(settings, storage=storage, toml_path=settings_file(tmp_path))


@pytest.fixture
def client(app: FastAPI) -> Client:
    return Client(app)
