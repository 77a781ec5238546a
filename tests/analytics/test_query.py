"""Figures over windows equal the figures of the known workload that was stored."""

from __future__ import annotations

import itertools
import math
import random
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.analytics.query import JobReader
from queuelens.analytics.window import Window, parse_window
from queuelens.model import (
    Aggregate,
    FlushBatch,
    JobOutcome,
    JobStatus,
    SeriesKey,
    bucket_start,
)
from queuelens.storage import Storage, open_storage

# Real time: Redis expires keys on its own clock, so the data must be as recent as it says.
NOW = (time.time() // 60) * 60 - 55.0


@pytest.fixture(params=["sqlite", "postgresql", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        url = request.getfixturevalue(
            "postgres_url" if request.param == "postgresql" else "redis_url"
        )
    opened = open_storage(url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()


def write(storage: Storage, outcomes: list[tuple[str, str, JobOutcome]], sequence: int = 1) -> None:
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    for app, _, outcome in outcomes:
        assert outcome.finished_at is not None
        key = (SeriesKey(app, outcome.queue, outcome.job), bucket_start(outcome.finished_at, 60))
        aggregates.setdefault(key, Aggregate()).add(outcome, outcome.finished_at)
    storage.write(
        FlushBatch("writer", sequence, NOW, aggregates, {(a, o.queue): fw for a, fw, o in outcomes})
    )


def workload(seed: int = 7) -> list[tuple[str, str, JobOutcome]]:
    """~3,000 attempts over the 28 hours before NOW, on 2 apps, 3 queues, 4 jobs."""
    rng = random.Random(seed)
    jobs = [
        ("billing", "emails.high", "app.tasks.send_mail"),
        ("billing", "emails.high", "app.tasks.send_digest"),
        ("billing", "a:b/c", "größe"),
        ("search", "index", "reindex"),
    ]
    out: list[tuple[str, str, JobOutcome]] = []
    for _ in range(3000):
        app, queue, job = rng.choice(jobs)
        status = rng.choices(
            [JobStatus.succeeded, JobStatus.failed, JobStatus.retried, JobStatus.timed_out],
            [80, 10, 7, 3],
        )[0]
        failed = status is not JobStatus.succeeded
        out.append(
            (
                app,
                "celery",
                JobOutcome(
                    queue,
                    job,
                    status,
                    duration_s=rng.lognormvariate(-3, 1.2),
                    wait_s=rng.expovariate(2.0),
                    cpu_s=rng.uniform(0, 0.05),
                    memory_peak_mb=rng.uniform(50, 90),
                    exception_type=("ValueError" if rng.random() < 0.7 else "IOError")
                    if failed
                    else None,
                    exception_message="bad" if failed else None,
                    finished_at=NOW - rng.uniform(0, 28 * 3600),
                ),
            )
        )
    return out


def exact(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[math.floor(q * (len(ordered) - 1))]


def in_window(
    outcomes: list[tuple[str, str, JobOutcome]], window: Window
) -> list[tuple[str, str, JobOutcome]]:
    return [t for t in outcomes if window.start <= (t[2].finished_at or 0) < window.end]


@pytest.mark.parametrize("name", ["15m", "6h", "24h"])
def test_totals_and_percentiles_match_the_workload(storage: Storage, name: str) -> None:
    outcomes = workload()
    write(storage, outcomes)
    reader = JobReader(storage, clock=lambda: NOW)
    window = parse_window(name, now=NOW)
    expected = in_window(outcomes, window)
    totals = reader.totals(window)
    assert totals.processed == len(expected)
    failed = [o for _, _, o in expected if o.status in (JobStatus.failed, JobStatus.timed_out)]
    assert totals.failed == len(failed)
    assert totals.retried == sum(o.status is JobStatus.retried for _, _, o in expected)
    assert totals.failure_rate == pytest.approx(len(failed) / len(expected))
    assert totals.throughput_per_min == pytest.approx(len(expected) / window.minutes)
    durations = [o.duration_s or 0.0 for _, _, o in expected]
    for q, got in (
        (0.5, totals.duration_ms.p50),
        (0.95, totals.duration_ms.p95),
        (0.99, totals.duration_ms.p99),
    ):
        assert got is not None
        assert got == pytest.approx(exact(durations, q) * 1000, rel=0.0101)
    assert totals.duration_ms.max == pytest.approx(max(durations) * 1000)
    assert totals.wait_ms.avg == pytest.approx(
        sum(o.wait_s or 0 for _, _, o in expected) / len(expected) * 1000
    )
    assert totals.memory_mb.max == pytest.approx(max(o.memory_peak_mb or 0 for _, _, o in expected))


def test_per_job_queue_and_app_figures(storage: Storage) -> None:
    outcomes = workload(seed=11)
    write(storage, outcomes)
    reader = JobReader(storage, clock=lambda: NOW)
    window = parse_window("24h", now=NOW)
    expected = in_window(outcomes, window)

    jobs = reader.job_summaries(window)
    assert [j.stats.processed for j in jobs] == sorted(
        (j.stats.processed for j in jobs), reverse=True
    )
    for summary in jobs:
        mine = [
            o
            for app, _, o in expected
            if (app, o.queue, o.job) == (summary.app, summary.queue, summary.job)
        ]
        assert summary.stats.processed == len(mine)
        names = {e.type: e.count for e in summary.stats.exceptions}
        assert names == {
            t: sum(o.exception_type == t for o in mine)
            for t in {o.exception_type for o in mine}
            if t
        }
    assert {(j.app, j.queue, j.job) for j in jobs} >= {("billing", "a:b/c", "größe")}

    queues = reader.queue_stats(window, app="billing")
    assert set(queues) == {("billing", "emails.high"), ("billing", "a:b/c")}
    assert queues[("billing", "emails.high")].processed == sum(
        app == "billing" and o.queue == "emails.high" for app, _, o in expected
    )
    apps = reader.app_stats(window)
    assert apps["search"].processed == sum(app == "search" for app, _, _ in expected)
    one = reader.job_summaries(window, app="billing", queue="a:b/c", job="größe")
    assert len(one) == 1
    assert reader.queues("billing")[0].framework == "celery"


def test_timeseries_steps_sum_to_the_window(storage: Storage) -> None:
    outcomes = workload(seed=3)
    write(storage, outcomes)
    reader = JobReader(storage, clock=lambda: NOW)
    window = parse_window("6h", now=NOW)
    points = reader.timeseries(window, 600, app="billing")
    assert points[0].at <= window.start < points[0].at + 600
    assert all(b.at - a.at == 600 for a, b in itertools.pairwise(points))
    expected = [
        o
        for app, _, o in outcomes
        if app == "billing" and points[0].at <= (o.finished_at or 0) < window.end
    ]
    assert sum(p.stats.processed for p in points) == len(expected)
    busiest = max(points, key=lambda p: p.stats.processed)
    in_step = [o for o in expected if busiest.at <= (o.finished_at or 0) < busiest.at + 600]
    assert busiest.stats.processed == len(in_step)
    assert busiest.stats.throughput_per_min == pytest.approx(len(in_step) / 10)

    hourly = reader.timeseries(parse_window("24h", now=NOW), 3600)
    assert all(p.step_s == 3600 for p in hourly)


def test_old_window_steps_are_raised_to_what_is_kept(storage: Storage) -> None:
    reader = JobReader(storage, clock=lambda: NOW)
    window = parse_window("7d", now=NOW)
    points = reader.timeseries(window, 60)
    assert points[0].step_s == 3600  # minute buckets older than 2 days no longer exist
    assert all(p.stats.processed == 0 for p in points)


def test_empty_storage_gives_zeros_not_errors(storage: Storage) -> None:
    reader = JobReader(storage, clock=lambda: NOW)
    window = parse_window("1h", now=NOW)
    assert reader.job_summaries(window) == []
    totals = reader.totals(window)
    assert totals.processed == 0
    assert totals.failure_rate == 0.0
    assert totals.duration_ms.p95 is None
