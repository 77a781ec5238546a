"""The overview joins jobs, depths, workers and servers, and its health reacts to each."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.analytics.overview import Analytics
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


@pytest.fixture(params=["sqlite", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    opened = open_storage(url)
    try:
        yield opened
    finally:
        opened.close()


def record(storage: Storage, queue: str, at: float, ok: int, failed: int, sequence: int) -> None:
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
            ),
            at,
        )
    key = (SeriesKey("billing", queue, "send"), bucket_start(at, 60))
    storage.write(FlushBatch("w", sequence, at, {key: aggregate}, {("billing", queue): "rq"}))


def beat(worker_id: str, queues: list[str], sent_at: float, busy: int = 0) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        app="billing",
        framework="rq",
        hostname="h1",
        pid=1,
        name=worker_id,
        queues=queues,
        concurrency=1,
        busy_slots=busy,
        state=WorkerState.busy if busy else WorkerState.idle,
        started_at=NOW - 3600,
        sent_at=sent_at,
        heartbeat_interval_s=5.0,
    )


def test_queue_summaries_join_depth_workers_and_health(storage: Storage) -> None:
    record(storage, "emails", NOW - 120, ok=90, failed=10, sequence=1)
    record(storage, "reports", NOW - 120, ok=50, failed=0, sequence=2)
    record(storage, "reports", NOW - 3 * 86400, ok=99, failed=1, sequence=3)  # baseline days
    storage.write_gauges(
        [
            GaugeSample(
                "queue",
                "billing",
                "emails",
                {"pending": 12.0, "oldest_pending_age_s": 30.0},
                NOW - 5,
            ),
            GaugeSample(
                "queue",
                "billing",
                "reports",
                {"pending": 4.0, "oldest_pending_age_s": 2000.0},
                NOW - 5,
            ),
            GaugeSample("queue", "billing", "probed-only", {"pending": 0.0}, NOW - 5),
            GaugeSample(
                "server", "billing", "h1", {"cpu_percent": 97.0, "cpu_count": 2.0}, NOW - 5
            ),
        ]
    )
    storage.heartbeat(beat("w1", ["emails"], NOW - 1, busy=1))
    storage.heartbeat(beat("w2", ["reports"], NOW - 600))  # dead: reports has no live worker

    analytics = Analytics(storage, clock=lambda: NOW)
    window = analytics.window("1h")
    queues = {q.queue: q for q in analytics.queue_summaries(window)}
    assert set(queues) == {"emails", "reports", "probed-only"}

    emails = queues["emails"]
    assert (emails.framework, emails.stats.processed, emails.stats.failed) == ("rq", 100, 10)
    assert emails.stats.failure_rate == pytest.approx(0.1)
    assert (emails.workers_total, emails.workers_busy) == (1, 1)
    assert emails.depth is not None
    assert emails.depth.pending == 12.0
    assert {r.code for r in emails.health.reasons} == {"failure_rate"}

    reports = queues["reports"]
    assert reports.baseline_failure_rate == pytest.approx(0.01)
    assert {r.code for r in reports.health.reasons} == {"oldest_pending_age", "no_live_worker"}
    assert str(reports.health.status) == "critical"
    as_dict = reports.as_dict()
    assert as_dict["depth"] == {"pending": 4.0, "scheduled": None, "reserved": None, "failed": None}
    assert as_dict["workers"] == {"total": 0, "busy": 0}
    assert as_dict["health"]["reasons"][0]["threshold"] == 1800.0

    assert queues["probed-only"].stats.processed == 0
    assert str(queues["probed-only"].health.status) == "healthy"
    assert [q.queue for q in analytics.queue_summaries(window, queue="emails")] == ["emails"]

    overview = analytics.overview(window)
    assert overview.totals.processed == 150
    assert overview.workers["total"] == 2
    assert overview.workers["busy"] == 1
    assert overview.workers["dead"] == 1
    assert {r.code for r in overview.fleet_health.reasons} == {"dead_workers"}
    (server,) = overview.servers
    assert server.workers == 1
    assert [r.code for r in server.health.reasons] == ["cpu"]
    assert [j.job for j in analytics.job_summaries(window, queue="emails")] == ["send"]
    assert [w.id for w in analytics.workers(state="dead")] == ["w2"]
