"""Queue and job details read back the known shape of a stored history."""

from __future__ import annotations

import random
import time
from pathlib import Path

import pytest

from queuelens.analytics.insights import Insights, capacity_settings
from queuelens.analytics.overview import Analytics
from queuelens.analytics.trend import Direction
from queuelens.analytics.window import Window
from queuelens.config import ConfigError
from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
)
from queuelens.storage import Storage, open_storage

NOW = (time.time() // 60) * 60 - 1.0
KEY = SeriesKey("billing", "emails", "send")


def write_minutes(
    storage: Storage, minutes: list[int], duration_of: dict[int, float], per_minute: int
) -> None:
    rng = random.Random(1)
    aggregates = {}
    for minute in minutes:
        aggregate = Aggregate()
        for _ in range(per_minute):
            outcome = JobOutcome(
                "emails",
                "send",
                JobStatus.succeeded,
                duration_s=duration_of[minute] * rng.uniform(0.95, 1.05),
                wait_s=0.5,
                cpu_s=0.01,
            )
            aggregate.add(outcome, minute + 1.0)
        aggregates[(KEY, minute)] = aggregate
    storage.write(FlushBatch("w", 1, NOW, aggregates, {("billing", "emails"): "rq"}))


def test_job_detail_finds_the_deploy_that_doubled_duration(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        last = int(NOW // 60) * 60
        minutes = list(range(last - 300 * 60, last + 60, 60))
        deploy = last - 40 * 60
        durations = {m: (0.2 if m < deploy else 0.4) for m in minutes}
        write_minutes(storage, minutes, durations, per_minute=20)
        analytics = Analytics(storage, clock=lambda: NOW)
        detail = Insights(analytics).job_detail(
            analytics.window("1h"), "billing", "emails", "send", step_s=60
        )
        assert detail.summary is not None
        assert detail.summary.stats.processed == 20 * 61
        assert len(detail.points) == 61
        steps = [
            a for a in detail.anomalies if a.method == "change_point" and a.metric == "duration_p95"
        ]
        assert len(steps) == 1
        assert abs(steps[0].start - deploy) <= 60  # within one bucket
        assert steps[0].observed / steps[0].expected == pytest.approx(2.0, rel=0.1)
        assert "duration_p95" in detail.baselines
        assert detail.baselines["duration_p95"].center == pytest.approx(200, rel=0.06)
        assert len(detail.bands["duration_p95"]) == len(detail.points)
        assert detail.trends["throughput"].direction is Direction.flat
    finally:
        storage.close()


def test_job_detail_flags_a_slow_minute_against_minute_history(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        last = int(NOW // 60) * 60
        minutes = list(range(last - 600 * 60, last + 60, 60))  # 10 h: minute buckets exist
        spike = last - 20 * 60
        write_minutes(storage, minutes, {m: (2.0 if m == spike else 0.2) for m in minutes}, 20)
        analytics = Analytics(storage, clock=lambda: NOW)
        detail = Insights(analytics).job_detail(
            analytics.window("1h"), "billing", "emails", "send", step_s=60
        )
        assert detail.baselines["duration_p95"].n > 500  # minute history, not hourly points
        flagged = [
            a for a in detail.anomalies if a.metric == "duration_p95" and a.method != "change_point"
        ]
        assert [a.start for a in flagged] == [spike]
        assert not [a for a in detail.anomalies if a.metric == "throughput"]
    finally:
        storage.close()


def test_queue_detail_trends_forecast_drain_and_capacity(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        last = int(NOW // 60) * 60
        minutes = list(range(last - 59 * 60, last + 60, 60))
        write_minutes(storage, minutes, dict.fromkeys(minutes, 2.0), per_minute=60)
        # the backlog grows by 10 a minute: arrivals outpace service
        storage.write_gauges(
            [
                GaugeSample(
                    "queue",
                    "billing",
                    "emails",
                    {"pending": 10.0 * i, "oldest_pending_age_s": 5.0 * i},
                    m + 30,
                )
                for i, m in enumerate(minutes)
            ]
        )
        storage.heartbeat(
            WorkerHeartbeat(
                worker_id="w",
                app="billing",
                framework="rq",
                hostname="h",
                pid=1,
                name="w",
                queues=["emails"],
                concurrency=2,
                busy_slots=2,
                state=WorkerState.busy,
                started_at=NOW - 7200,
                sent_at=NOW,
                heartbeat_interval_s=5.0,
            )
        )
        analytics = Analytics(storage, clock=lambda: NOW)
        window = analytics.window("1h")
        detail = Insights(analytics, capacity_settings({"price_per_cpu_hour": 0.1})).queue_detail(
            window, "billing", "emails", step_s=60, depth_threshold=1000.0
        )
        assert detail.trends["depth"].direction is Direction.rising
        assert detail.trends["depth"].slope_per_s == pytest.approx(10 / 60, rel=1e-6)
        assert detail.trends["depth"].r_squared == pytest.approx(1.0)
        assert detail.depth_forecast is not None
        assert detail.depth_forecast.points[-1].value > 590
        # 590 pending now, +10/min: 1,000 in about 41 minutes
        assert detail.time_to_threshold_s == pytest.approx(41 * 60, rel=0.05)
        # 1 job/s processed + 10/min backlog growth
        assert detail.arrival_per_s == pytest.approx((3600 + 590) / window.duration_s, rel=0.01)
        assert detail.time_to_drain_s is None  # 2 slots x 1 job / 2 s = 1/s < arrivals
        advice = detail.capacity
        assert advice.current_workers == 2
        assert advice.recommended_workers is not None
        assert advice.recommended_workers > 2
        assert advice.cost_per_hour == pytest.approx(0.01 * advice.arrival_per_s * 0.1, rel=0.05)
        assert detail.arrival_forecast is not None
    finally:
        storage.close()


def test_queue_detail_of_an_unknown_queue_is_empty_not_an_error(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        analytics = Analytics(storage, clock=lambda: NOW)
        detail = Insights(analytics).queue_detail(analytics.window("15m"), "x", "nothing")
        assert detail.summary.stats.processed == 0
        assert detail.depth_forecast is None
        assert detail.time_to_drain_s == 0.0
        assert any("no depth forecast" in n for n in detail.notes)
        job = Insights(analytics).job_detail(Window(NOW - 600, NOW, "custom"), "x", "q", "j")
        assert job.summary is None
        assert job.anomalies == []
    finally:
        storage.close()


def test_capacity_settings_errors() -> None:
    settings = capacity_settings(
        {"price_per_cpu_hour": 0.04, "drain_within": "15m", "quantile": 0.99}
    )
    assert (settings.price_per_cpu_hour, settings.drain_within_s, settings.quantile) == (
        0.04,
        900.0,
        0.99,
    )
    with pytest.raises(ConfigError, match="unknown key 'price' in \\[capacity\\]"):
        capacity_settings({"price": 1})
    with pytest.raises(ConfigError, match="price_per_cpu_hour = -1"):
        capacity_settings({"price_per_cpu_hour": -1})
    with pytest.raises(ConfigError, match=r"quantile = 1\.5"):
        capacity_settings({"quantile": 1.5})
    with pytest.raises(ConfigError, match="drain_within = 'soon'"):
        capacity_settings({"drain_within": "soon"})
