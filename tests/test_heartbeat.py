"""Worker trackers: beats while busy, stopped on a graceful stop, counters never go back."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.heartbeat import WorkerTracker
from queuelens.model import WorkerState
from queuelens.storage import Storage, open_storage


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    opened = open_storage(f"sqlite:///{tmp_path / 'hb.db'}")
    yield opened
    opened.close()


def tracker(storage: Storage, **kw: object) -> WorkerTracker:
    fields: dict[str, object] = {
        "app": "shop",
        "framework": "rq",
        "name": "rq:w1",
        "queues": ["emails"],
        "concurrency": 2,
        "heartbeat_interval_s": 0.05,
    }
    fields.update(kw)
    return WorkerTracker(storage, **fields)  # type: ignore[arg-type]


def wait_for(predicate: object, timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():  # type: ignore[operator]
            return
        time.sleep(0.02)
    raise AssertionError("condition not reached")


def test_beats_while_a_job_runs_then_stops(storage: Storage) -> None:
    worker = tracker(storage)
    worker.start()
    worker.job_started("j1", "send_mail")
    first = storage.list_workers()[0].last_heartbeat_at if storage.list_workers() else 0.0
    wait_for(
        lambda: (
            storage.list_workers()
            and storage.list_workers()[0].last_heartbeat_at > first
            and storage.list_workers()[0].heartbeat.state is WorkerState.busy
        )
    )
    record = storage.list_workers()[0]
    assert record.heartbeat.current_jobs == ["send_mail"]
    assert record.heartbeat.busy_slots == 1
    assert record.heartbeat.rss_mb is not None
    assert record.heartbeat.rss_mb > 5
    worker.job_finished("j1", failed=True)
    worker.job_started("j2", "send_mail")
    worker.job_finished("j2")
    worker.stop()
    record = storage.list_workers()[0]
    assert record.heartbeat.state is WorkerState.stopped
    assert record.state_at(time.time() + 3600) is WorkerState.stopped
    assert (record.heartbeat.processed, record.heartbeat.failed) == (2, 1)
    assert record.heartbeat.busy_s > 0
    assert record.heartbeat.idle_s > record.heartbeat.busy_s  # 2 slots, mostly idle
    worker.stop()  # idempotent


def test_slot_seconds(storage: Storage) -> None:
    worker = tracker(storage, concurrency=4)
    worker.job_started("a", "x")
    worker.job_started("b", "y")
    time.sleep(0.2)
    beat = worker.snapshot()
    assert beat.busy_slots == 2
    assert beat.busy_s == pytest.approx(beat.idle_s, rel=0.2)  # 2 of 4 slots busy
    worker.set_busy({"c": "z"}, processed=10, failed=1)
    beat = worker.snapshot()
    assert (beat.current_jobs, beat.processed, beat.failed) == (["z"], 10, 1)
    worker.set_busy({}, processed=3, failed=0)  # stale numbers never take counters back
    assert worker.snapshot().processed == 10


def test_storage_failure_is_counted_not_raised(tmp_path: Path) -> None:
    def broken() -> Storage:
        return open_storage("postgresql://nobody@127.0.0.1:1/none")

    worker = tracker(broken)  # type: ignore[arg-type]
    assert worker.beat() is False
    assert worker.send_failures == 1


def test_a_forked_child_does_not_beat_for_its_parent(storage: Storage) -> None:
    worker = tracker(storage)
    pid = os.fork()
    if pid == 0:  # pragma: no cover - child
        os._exit(0 if worker.beat() is False else 1)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    assert storage.list_workers() == []
    assert worker.beat() is True
