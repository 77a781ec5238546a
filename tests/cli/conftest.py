"""A SQLite storage holding a known workload, and running ``queuelens`` against it.

The workload, written the way recorders, probes and heartbeats write it:

- ``billing/emails``: 90 succeeded + 10 failed (IOError), 200 ms each, 1 s wait; 12 pending,
  the oldest 30 s old; worker ``w1`` busy on it.
- ``billing/reports``: 50 succeeded; 4 pending, the oldest 2,000 s old; its only worker
  ``w2`` is dead, so: critical, ``oldest_pending_age`` and ``no_live_worker``.
- ``shop/orders.v2:eu``: 20 succeeded (a name with a dot and a colon, another app).
- host ``h1`` at 97% CPU: critical, ``cpu``.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from queuelens.cli import main
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


@dataclass(frozen=True, slots=True)
class Result:
    code: int
    out: str
    err: str


@dataclass(frozen=True, slots=True)
class Workload:
    url: str
    #: when it was written (unix seconds)
    now: float


@pytest.fixture(autouse=True)
def _wide_and_isolated(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # tables and reason lines at a fixed width, whatever the terminal running the tests;
    # no queuelens.toml or QUEUELENS_* of the developer's leaks in
    monkeypatch.setenv("COLUMNS", "200")
    monkeypatch.chdir(tmp_path)
    for name in ("QUEUELENS_CONFIG", "QUEUELENS_STORAGE_URL", "QUEUELENS_APP"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cli(capsys: pytest.CaptureFixture[str]) -> CLI:
    return CLI(capsys)


class CLI:
    """``queuelens ARGS`` in this process: exit code, stdout and stderr."""

    def __init__(self, capsys: pytest.CaptureFixture[str]) -> None:
        self.capsys = capsys

    def __call__(self, *args: str) -> Result:
        self.capsys.readouterr()
        code = main(list(args))
        captured = self.capsys.readouterr()
        return Result(code, captured.out, captured.err)


def _record(storage: Storage, app: str, queue: str, at: float, ok: int, failed: int) -> None:
    aggregate = Aggregate()
    for n in range(ok + failed):
        status = JobStatus.succeeded if n < ok else JobStatus.failed
        aggregate.add(
            JobOutcome(
                queue,
                "send",
                status,
                duration_s=0.2,
                wait_s=1.0,
                exception_type="IOError" if status is JobStatus.failed else None,
                exception_message="smtp down" if status is JobStatus.failed else None,
            ),
            at,
        )
    key = (SeriesKey(app, queue, "send"), bucket_start(at, 60))
    storage.write(FlushBatch(f"w-{app}-{queue}", 1, at, {key: aggregate}, {(app, queue): "rq"}))


def _beat(worker_id: str, queue: str, sent_at: float, busy: int) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        app="billing",
        framework="rq",
        hostname="h1",
        pid=100 + busy,
        name=worker_id,
        queues=[queue],
        concurrency=1,
        busy_slots=busy,
        state=WorkerState.busy if busy else WorkerState.idle,
        started_at=sent_at - 3600,
        sent_at=sent_at,
        # a minute between heartbeats: w1 stays alive however slow the test machine is
        heartbeat_interval_s=60.0,
    )


def write_workload(url: str) -> Workload:
    now = time.time()
    storage = open_storage(url)
    try:
        _record(storage, "billing", "emails", now - 120, ok=90, failed=10)
        _record(storage, "billing", "reports", now - 120, ok=50, failed=0)
        _record(storage, "shop", "orders.v2:eu", now - 120, ok=20, failed=0)
        storage.write_gauges(
            [
                GaugeSample(
                    "queue",
                    "billing",
                    "emails",
                    {"pending": 12.0, "oldest_pending_age_s": 30.0},
                    now,
                ),
                GaugeSample(
                    "queue",
                    "billing",
                    "reports",
                    {"pending": 4.0, "oldest_pending_age_s": 2000.0},
                    now,
                ),
                GaugeSample(
                    "server",
                    "billing",
                    "h1",
                    {"cpu_percent": 97.0, "cpu_count": 2.0, "load_1": 0.5, "disk:/:percent": 40.0},
                    now,
                ),
            ]
        )
        storage.heartbeat(_beat("w1", "emails", now, busy=1))
        storage.heartbeat(_beat("w2", "reports", now - 7200, busy=0))  # dead
    finally:
        storage.close()
    return Workload(url, now)


@pytest.fixture
def workload(tmp_path: Path) -> Workload:
    return write_workload(f"sqlite:///{tmp_path / 'workload.db'}")
