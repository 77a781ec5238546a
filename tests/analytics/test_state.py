"""Queue depths, workers and servers read back as stored, with state derived at read time."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.analytics.state import StateReader
from queuelens.analytics.window import parse_window
from queuelens.model import GaugeSample, WorkerHeartbeat, WorkerState
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


def beat(
    worker_id: str,
    sent_at: float,
    state: WorkerState = WorkerState.busy,
    queues: list[str] | None = None,
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        app="billing",
        framework="rq",
        hostname="ip-10-0-0-1.ec2.internal",
        pid=42,
        name=worker_id,
        queues=queues or ["emails"],
        concurrency=4,
        busy_slots=1,
        state=state,
        started_at=NOW - 600,
        sent_at=sent_at,
        heartbeat_interval_s=5.0,
        current_jobs=["send_mail"],
        processed=10,
        failed=1,
        busy_s=300.0,
        idle_s=900.0,
        rss_mb=80.0,
        cpu_percent=12.5,
    )


def test_workers_with_derived_state_and_busy_ratio(storage: Storage) -> None:
    storage.heartbeat(beat("fresh", NOW - 2))
    storage.heartbeat(beat("stale", NOW - 30))
    storage.heartbeat(beat("dead", NOW - 500))
    storage.heartbeat(beat("gone", NOW - 500, WorkerState.stopped, ["reports"]))
    reader = StateReader(storage, clock=lambda: NOW)
    views = {v.id: v for v in reader.workers()}
    assert {k: v.state for k, v in views.items()} == {
        "fresh": WorkerState.busy,
        "stale": WorkerState.stale,
        "dead": WorkerState.dead,
        "gone": WorkerState.stopped,
    }
    fresh = views["fresh"]
    assert fresh.busy_ratio == pytest.approx(0.25)
    assert fresh.heartbeat_age_s == pytest.approx(2.0, abs=0.01)
    assert fresh.alive
    assert not views["dead"].alive
    assert [v.id for v in reader.workers(state="stale")] == ["stale"]
    assert [v.id for v in reader.workers(queue="reports")] == ["gone"]
    assert reader.workers()[0].id == "fresh"  # newest heartbeat first


def test_queue_depths_servers_and_gauge_series(storage: Storage) -> None:
    storage.write_gauges(
        [
            GaugeSample(
                "queue",
                "billing",
                "emails.high",
                {"pending": 7.0, "oldest_pending_age_s": 42.0},
                NOW - 120,
            ),
            GaugeSample(
                "queue",
                "billing",
                "emails.high",
                {"pending": 3.0, "reserved": 2.0, "oldest_pending_age_s": 12.0},
                NOW - 10,
            ),
            GaugeSample(
                "server",
                "billing",
                "ip-10-0-0-1.ec2.internal",
                {
                    "cpu_percent": 50.0,
                    "cpu_count": 2.0,
                    "load_1": 1.0,
                    "memory_percent": 40.0,
                    "disk:/:percent": 70.0,
                    "disk:/:total_gb": 100.0,
                    "disk:/:used_gb": 70.0,
                },
                NOW - 5,
            ),
        ]
    )
    reader = StateReader(storage, clock=lambda: NOW)
    (depth,) = reader.queue_depths("billing")
    assert (depth.queue, depth.pending, depth.reserved, depth.oldest_pending_age_s) == (
        "emails.high",
        3.0,
        2.0,
        12.0,
    )
    assert depth.scheduled is None
    assert depth.sample_age_s == pytest.approx(10.0)
    (server,) = reader.servers()
    assert server.hostname == "ip-10-0-0-1.ec2.internal"
    assert [(d.mount, d.percent, d.total_gb) for d in server.disks] == [("/", 70.0, 100.0)]
    assert server.load[0] == 1.0
    assert server.cpu_count == 2.0
    points = reader.gauge_series(
        "queue", "billing", "emails.high", parse_window("15m", now=NOW), 60
    )
    assert len(points) == 16
    seen = [(p.at, p.last("pending")) for p in points if p.fields]
    assert [v for _, v in seen] == [7.0, 3.0]
    assert points[0].last("pending") is None
