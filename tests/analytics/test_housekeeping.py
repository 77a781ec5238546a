"""Scheduled pruning removes what is past retention, by one pruner at a time."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from queuelens.analytics.housekeeping import Pruner
from queuelens.model import (
    Aggregate,
    FlushBatch,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    bucket_start,
)
from queuelens.storage import open_storage
from queuelens.storage.base import Storage


def write_old_and_new(storage: Storage) -> tuple[SeriesKey, SeriesKey]:
    now = time.time()
    old, new = SeriesKey("a", "q", "old"), SeriesKey("a", "q", "new")
    aggregates = {}
    for key, at in ((old, now - 3 * 86400), (new, now - 60)):
        aggregate = Aggregate()
        aggregate.add(JobOutcome("q", key.job, JobStatus.succeeded, duration_s=0.1), at)
        aggregates[(key, bucket_start(at, 60))] = aggregate
    storage.write(FlushBatch("w", 1, now, aggregates))
    return old, new


def test_pruner_prunes_once_per_interval_under_one_lease(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    first, second = open_storage(url), open_storage(url)
    try:
        old, new = write_old_and_new(first)
        leader, follower = Pruner(first, interval_s=3600), Pruner(second, interval_s=3600)
        report = leader.run_once()
        assert report is not None
        assert report.total > 0
        assert follower.run_once() is None  # the leader holds the lease
        minute = first.read_buckets([old, new], Resolution.minute, 0, time.time() + 60)
        assert set(minute) == {new}
        assert leader.runs == 1
        assert leader.last_report is report
        leader.stop()  # gives the lease up ...
        assert follower.run_once() is not None  # ... so the other replica takes over
    finally:
        first.close()
        second.close()


def test_scheduled_loop_runs_and_stops(tmp_path: Path) -> None:
    storage = open_storage(f"sqlite:///{tmp_path / 'q.db'}")
    try:
        write_old_and_new(storage)
        pruner = Pruner(storage, interval_s=0.05)
        pruner.start()
        deadline = time.monotonic() + 5
        while pruner.runs < 2 and time.monotonic() < deadline:
            time.sleep(0.01)
        pruner.stop()
        assert pruner.runs >= 2
        assert pruner.last_run_at is not None
    finally:
        storage.close()


def test_failures_are_counted_never_raised(caplog: pytest.LogCaptureFixture) -> None:
    pytest.importorskip("redis")
    down = open_storage("redis://127.0.0.1:1/0")  # a real driver; nothing listens there
    try:
        pruner = Pruner(down, interval_s=1)
        assert pruner.run_once() is None
        assert pruner.failures == 1
        pruner.stop()  # releasing the lease fails too, and is only logged
    finally:
        down.close()
    assert "pruning old data failed" in caplog.text
    assert "releasing the prune lease failed" in caplog.text
    with pytest.raises(ValueError, match="interval_s must be positive"):
        Pruner(down, interval_s=0)
