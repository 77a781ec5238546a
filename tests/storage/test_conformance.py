"""One conformance suite, run against every driver on a real server.

Each test writes a workload whose exact statistics it knows, reads it back through the
``Storage`` protocol and compares values, not merely the presence of keys.
"""

from __future__ import annotations

import math
import multiprocessing
import time

import pytest

from queuelens.model import (
    Aggregate,
    GaugeSample,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.storage import Storage
from tests.storage.workload import (
    ODD_NAMES,
    make_batch,
    outcome,
    random_items,
    write_from_process,
)

NOW = time.time()
HOUR_AGO = bucket_start(NOW, Resolution.hour) - 3600  # a whole hour, inside every retention
QUANTILES = (0.5, 0.9, 0.95, 0.99)


def merged(buckets: dict[int, Aggregate]) -> Aggregate:
    total = Aggregate()
    for aggregate in buckets.values():
        total.merge(aggregate)
    return total


def exact_quantile(data: list[float], q: float) -> float:
    ordered = sorted(data)
    return ordered[math.floor(q * (len(ordered) - 1))]


def test_counts_sums_and_percentiles_are_true(storage: Storage) -> None:
    series = [SeriesKey("shop", "emails", "send_mail"), SeriesKey("shop", "emails", "send_sms")]
    items = random_items(series, 3000, HOUR_AGO, 3600.0, seed=1)
    assert storage.write(make_batch(items)) is True

    read = storage.read_buckets(series, Resolution.minute, HOUR_AGO, HOUR_AGO + 3600)
    for key in series:
        mine = [o for s, o in items if s == key]
        got = merged(read[key])
        for status in JobStatus:
            assert got.count(status) == sum(1 for o in mine if o.status is status)
        durations = [o.duration_s for o in mine if o.duration_s is not None]
        waits = [o.wait_s for o in mine if o.wait_s is not None]
        assert got.duration.count == len(durations)
        assert got.duration.sum == pytest.approx(math.fsum(durations), rel=1e-9)
        assert got.duration.max == max(durations)
        assert got.duration.min == min(durations)
        assert got.wait.max == max(waits)
        for q in QUANTILES:
            for sketch, data in ((got.duration, durations), (got.wait, waits)):
                expected = exact_quantile(data, q)
                estimate = sketch.quantile(q)
                assert estimate is not None
                assert abs(estimate - expected) <= 0.01 * expected * (1 + 1e-9)
        peaks = [o.memory_peak_mb for o in mine if o.memory_peak_mb is not None]
        assert got.memory_peak.count == len(peaks)
        assert got.memory_peak.max == pytest.approx(max(peaks))
        assert got.memory_peak.total == pytest.approx(math.fsum(peaks))
        cpu = [o.cpu_s for o in mine if o.cpu_s is not None]
        assert got.cpu.sum == pytest.approx(math.fsum(cpu))
        errors = [o for o in mine if o.exception_type]
        assert got.exceptions["ValueError"].count == len(errors)
        newest = max(errors, key=lambda o: o.finished_at or 0.0)
        assert got.exceptions["ValueError"].last_message == newest.exception_message
        assert got.exceptions["ValueError"].last_seen == pytest.approx(newest.finished_at)


def test_every_resolution_is_written_by_one_flush(storage: Storage) -> None:
    key = SeriesKey("shop", "reports", "build")
    items = random_items([key], 500, HOUR_AGO, 3600.0, seed=2)
    storage.write(make_batch(items))
    minute = storage.read_buckets([key], Resolution.minute, HOUR_AGO, HOUR_AGO + 3600)[key]
    hour = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    day_start = bucket_start(HOUR_AGO, Resolution.day)
    day = storage.read_buckets([key], Resolution.day, day_start, day_start + 86400)[key]
    assert list(hour) == [HOUR_AGO]
    assert list(day) == [day_start]
    assert all(start % 60 == 0 and HOUR_AGO <= start < HOUR_AGO + 3600 for start in minute)
    from_minutes = merged(minute)
    for coarse in (hour[HOUR_AGO], day[day_start]):
        assert coarse.counts == from_minutes.counts
        assert coarse.duration.bins == from_minutes.duration.bins
        assert coarse.wait.bins == from_minutes.wait.bins
        assert coarse.total == 500


def test_merging_writes_adds_up_exactly(storage: Storage) -> None:
    key = SeriesKey("a", "q", "j")
    first = [(key, outcome(at=HOUR_AGO + 5, duration_s=1.0))] * 3
    second = [
        (
            key,
            outcome(
                JobStatus.failed, at=HOUR_AGO + 10, duration_s=4.0, exception=("KeyError", "later")
            ),
        )
    ]
    storage.write(make_batch(first))
    storage.write(make_batch(second))
    got = storage.read_buckets([key], Resolution.minute, HOUR_AGO, HOUR_AGO + 60)[key][HOUR_AGO]
    assert got.counts == {JobStatus.succeeded: 3, JobStatus.failed: 1}
    assert got.duration.count == 4
    assert got.duration.sum == pytest.approx(7.0)
    assert got.duration.max == 4.0
    assert got.exceptions["KeyError"].count == 1
    assert got.exceptions["KeyError"].last_message == "later"


def test_retried_batch_is_not_counted_twice(storage: Storage) -> None:
    key = SeriesKey("a", "q", "j")
    batch = make_batch([(key, outcome(at=HOUR_AGO + 1))] * 7, dropped={"a": 3})
    assert storage.write(batch) is True
    assert storage.write(batch) is False
    got = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    assert got[HOUR_AGO].total == 7
    assert storage.read_dropped(HOUR_AGO - 86400, NOW + 86400) == {"a": 3}


def test_a_batch_carrying_only_a_drop_count(storage: Storage) -> None:
    batch = make_batch([], dropped={"shop": 5, "größe": 1})
    assert storage.write(batch) is True
    assert storage.write(batch) is False
    assert storage.write(make_batch([])) is True  # an empty batch is harmless
    assert storage.read_dropped(NOW - 86400, NOW + 86400) == {"shop": 5, "größe": 1}


def test_same_writer_and_sequence_twice_applies_once(storage: Storage) -> None:
    key = SeriesKey("seq", "q", "same")
    first = make_batch([(key, outcome(at=HOUR_AGO + 1))] * 3, writer_id="w-1", sequence=1,
                       dropped={"seq": 2})  # fmt: skip
    # same writer and sequence, other contents (a retry is never bigger, but storage must
    # not look at contents at all)
    again = make_batch([(key, outcome(JobStatus.failed, at=HOUR_AGO + 2))] * 5,
                       writer_id="w-1", sequence=1, dropped={"seq": 9})  # fmt: skip
    assert storage.write(first) is True
    assert storage.write(first) is False
    assert storage.write(again) is False
    got = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    assert got[HOUR_AGO].counts == {JobStatus.succeeded: 3}
    assert storage.read_dropped(NOW - 86400, NOW + 86400) == {"seq": 2}


def test_a_lower_sequence_after_a_higher_one_is_refused(storage: Storage) -> None:
    key = SeriesKey("seq", "q", "order")
    for sequence, n in ((1, 1), (2, 2), (5, 4)):  # gaps are fine: trimmed batches vanish
        items = [(key, outcome(at=HOUR_AGO + 1))] * n
        assert storage.write(make_batch(items, writer_id="w-1", sequence=sequence,
                                        dropped={"seq": n})) is True  # fmt: skip
    for sequence in (5, 4, 3, 2, 1):
        late = make_batch([(key, outcome(at=HOUR_AGO + 1))], writer_id="w-1",
                          sequence=sequence, dropped={"seq": 100})  # fmt: skip
        assert storage.write(late) is False
    got = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    assert got[HOUR_AGO].total == 7
    assert storage.read_dropped(NOW - 86400, NOW + 86400) == {"seq": 7}
    later = make_batch([(key, outcome(at=HOUR_AGO + 1))], writer_id="w-1", sequence=6)
    assert storage.write(later) is True
    got = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    assert got[HOUR_AGO].total == 8


def test_writers_are_independent(storage: Storage) -> None:
    key = SeriesKey("seq", "q", "writers")
    for writer in ("w-1", "w-2", "W-1", "w-1 "):  # writer ids are exact
        for sequence in (1, 2):
            batch = make_batch([(key, outcome(at=HOUR_AGO + 1))], writer_id=writer,
                               sequence=sequence, dropped={"seq": 1})  # fmt: skip
            assert storage.write(batch) is True
    assert storage.write(make_batch([], writer_id="w-2", sequence=2, dropped={"seq": 1})) is False
    got = storage.read_buckets([key], Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)[key]
    assert got[HOUR_AGO].total == 8
    assert storage.read_dropped(NOW - 86400, NOW + 86400) == {"seq": 8}


def test_drop_counts_are_idempotent_by_sequence(storage: Storage) -> None:
    assert storage.write(make_batch([], writer_id="w-d", sequence=1, dropped={"d": 5})) is True
    assert storage.write(make_batch([], writer_id="w-d", sequence=1, dropped={"d": 5})) is False
    assert storage.write(make_batch([], writer_id="w-d", sequence=2, dropped={"d": 1})) is True
    assert storage.write(make_batch([], writer_id="w-d", sequence=1, dropped={"d": 9})) is False
    assert storage.read_dropped(NOW - 86400, NOW + 86400) == {"d": 6}


def test_unknown_series_and_empty_ranges_read_as_absent(storage: Storage) -> None:
    key = SeriesKey("a", "q", "j")
    storage.write(make_batch([(key, outcome(at=HOUR_AGO + 1))]))
    assert (
        storage.read_buckets(
            [SeriesKey("a", "q", "other")], Resolution.minute, HOUR_AGO, HOUR_AGO + 3600
        )
        == {}
    )
    assert storage.read_buckets([key], Resolution.minute, HOUR_AGO + 60, HOUR_AGO + 3600) == {}
    assert storage.read_buckets([], Resolution.minute, HOUR_AGO, HOUR_AGO + 3600) == {}


def test_odd_names_round_trip_unchanged(storage: Storage) -> None:
    keys = [
        SeriesKey(app, queue, job)
        for app in ("default", "größe")
        for queue in ODD_NAMES[:4]
        for job in ODD_NAMES
    ]
    items = [(key, outcome(at=HOUR_AGO + i % 60)) for i, key in enumerate(keys)]
    storage.write(make_batch(items, frameworks={(k.app, k.queue): "celery" for k in keys}))
    assert storage.list_apps() == ["default", "größe"]
    queues = storage.list_queues("größe")
    assert sorted(q.queue for q in queues) == sorted(ODD_NAMES[:4])
    assert {q.framework for q in queues} == {"celery"}
    jobs = storage.list_jobs("default", "a:b/c")
    assert [k.job for k in jobs] == sorted(ODD_NAMES)
    assert len(storage.list_jobs("größe")) == 4 * len(ODD_NAMES)
    read = storage.read_buckets(keys, Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)
    assert set(read) == set(keys)
    assert all(merged(buckets).total == 1 for buckets in read.values())


def _writer(args: tuple[str, list[SeriesKey], int, int, float, int]) -> int:
    return write_from_process(*args)


def test_several_processes_writing_at_once_lose_nothing(storage_url: str, storage: Storage) -> None:
    series = [SeriesKey("mp", "q", f"job{i}") for i in range(5)]
    jobs = [(storage_url, series, 6, 200, HOUR_AGO, seed) for seed in range(4)]
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        written = sum(pool.map(_writer, jobs))
    assert written == 4 * 6 * 200
    read = storage.read_buckets(series, Resolution.hour, HOUR_AGO, HOUR_AGO + 3600)
    assert sum(merged(b).total for b in read.values()) == written
    expected = [
        item
        for _, s, batches, per, start, seed in jobs
        for i in range(batches)
        for item in random_items(s, per, start, 600.0, seed * 1000 + i)
    ]
    for key in series:
        got = merged(read[key])
        assert got.count(JobStatus.failed) == sum(
            1 for s, o in expected if s == key and o.status is JobStatus.failed
        )
        assert got.duration.count == sum(1 for s, _ in expected if s == key)


def test_retention_pruning(storage: Storage) -> None:
    old_minute = bucket_start(NOW - 3 * 86400, Resolution.hour)  # past minute retention (2 d)
    ancient = NOW - 500 * 86400  # past every retention (400 d)
    recent_key = SeriesKey("r", "q", "recent")
    old_key = SeriesKey("r", "q", "old")
    gone_key = SeriesKey("r", "q", "ancient")
    storage.write(
        make_batch(
            [
                (recent_key, outcome(at=HOUR_AGO + 1)),
                (old_key, outcome(at=old_minute + 1)),
                (gone_key, outcome(at=ancient)),
            ]
        )
    )
    report = storage.prune()
    assert report.total >= 0
    keys = [recent_key, old_key, gone_key]
    minute = storage.read_buckets(keys, Resolution.minute, ancient - 86400, NOW)
    assert set(minute) == {recent_key}
    hour = storage.read_buckets(keys, Resolution.hour, ancient - 86400, NOW)
    assert set(hour) == {recent_key, old_key}
    day = storage.read_buckets(keys, Resolution.day, ancient - 86400, NOW)
    assert set(day) == {recent_key, old_key}
    assert storage.prune().total == 0  # nothing left to remove


def test_gauges_latest_and_buckets(storage: Storage) -> None:
    minute = bucket_start(NOW, Resolution.minute) - 120
    samples = [
        GaugeSample(
            "queue", "shop", "emails.high", {"pending": 10, "oldest_pending_age_s": 3.5}, minute + 1
        ),
        GaugeSample(
            "queue",
            "shop",
            "emails.high",
            {"pending": 30, "oldest_pending_age_s": 9.0},
            minute + 20,
        ),
        GaugeSample(
            "queue",
            "shop",
            "emails.high",
            {"pending": 20, "oldest_pending_age_s": 1.0},
            minute + 40,
        ),
        GaugeSample("queue", "shop", "reports", {"pending": 1}, minute + 2),
        GaugeSample(
            "server", "shop", "ip-10-0-0-1.ec2.internal", {"cpu_percent": 50.0}, minute + 5
        ),
    ]
    storage.write_gauges(samples[:2])
    storage.write_gauges(samples[2:])
    latest = {s.key: s for s in storage.latest_gauges("queue", "shop")}
    assert set(latest) == {"emails.high", "reports"}
    assert latest["emails.high"].values == {"pending": 20, "oldest_pending_age_s": 1.0}
    assert latest["emails.high"].at == pytest.approx(minute + 40)
    assert [s.key for s in storage.latest_gauges("server")] == ["ip-10-0-0-1.ec2.internal"]
    buckets = storage.read_gauges(
        "queue", "shop", "emails.high", Resolution.minute, minute, minute + 60
    )
    pending = buckets[minute]["pending"]
    assert (pending.last, pending.min, pending.max, pending.count) == (20, 10, 30, 3)
    assert pending.avg == pytest.approx(20.0)
    hour = storage.read_gauges(
        "queue",
        "shop",
        "emails.high",
        Resolution.hour,
        bucket_start(minute, Resolution.hour),
        NOW + 1,
    )
    assert next(iter(hour.values()))["oldest_pending_age_s"].max == 9.0


def _beat(processed: int, state: WorkerState, sent_at: float, **extra: object) -> WorkerHeartbeat:
    fields: dict[str, object] = {
        "worker_id": "celery@ip-10-0-0-1.ec2.internal:4242",
        "app": "shop",
        "framework": "celery",
        "hostname": "ip-10-0-0-1.ec2.internal",
        "pid": 4242,
        "name": "celery@ip-10-0-0-1",
        "queues": ["emails.high", "größe"],
        "concurrency": 4,
        "busy_slots": 1,
        "state": state,
        "started_at": NOW - 100,
        "sent_at": sent_at,
        "heartbeat_interval_s": 5.0,
        "current_jobs": ["app.tasks.send_mail"],
        "processed": processed,
        "failed": 1,
        "busy_s": 12.5,
        "idle_s": 80.0,
        "rss_mb": 123.4,
        "cpu_percent": 12.0,
    }
    fields.update(extra)
    return WorkerHeartbeat(**fields)  # type: ignore[arg-type]


def test_worker_heartbeats(storage: Storage) -> None:
    storage.heartbeat(_beat(10, WorkerState.busy, NOW - 10))
    storage.heartbeat(_beat(12, WorkerState.idle, NOW - 5, current_jobs=[]))
    storage.heartbeat(_beat(11, WorkerState.idle, NOW - 4))  # out of order: never go back
    other = _beat(0, WorkerState.idle, NOW, worker_id="rq:other", app="billing", queues=["x"])
    storage.heartbeat(other)
    workers = {w.heartbeat.worker_id: w for w in storage.list_workers()}
    assert set(workers) == {"celery@ip-10-0-0-1.ec2.internal:4242", "rq:other"}
    record = workers["celery@ip-10-0-0-1.ec2.internal:4242"]
    assert record.heartbeat.processed == 12
    assert record.heartbeat.queues == ["emails.high", "größe"]
    assert record.heartbeat.concurrency == 4
    assert record.heartbeat.rss_mb == pytest.approx(123.4)
    assert record.first_seen_at <= record.last_heartbeat_at
    assert record.state_at(record.last_heartbeat_at + 1) is WorkerState.idle
    assert record.state_at(record.last_heartbeat_at + 16) is WorkerState.stale
    assert record.state_at(record.last_heartbeat_at + 101) is WorkerState.dead
    assert [w.heartbeat.worker_id for w in storage.list_workers("billing")] == ["rq:other"]
    storage.heartbeat(_beat(13, WorkerState.stopped, NOW))
    stopped = next(iter(storage.list_workers("shop")))
    assert stopped.state_at(NOW + 10_000) is WorkerState.stopped
    assert stopped.heartbeat.processed == 13


def test_ping(storage: Storage, storage_url: str) -> None:
    storage.ping()
    assert storage.url.split("://")[0] == storage_url.split("://")[0]


def test_leases_have_one_holder_at_a_time(storage: Storage) -> None:
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "a", 0.5) is True
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "b", 0.5) is False
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "a", 0.5) is True  # renew
    assert storage.acquire_lease("größe", "b", 30) is True  # leases are independent
    time.sleep(0.6)
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "b", 30) is True  # expired
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "a", 30) is False
    storage.release_lease("server:ip-10-0-0-1.ec2.internal", "a")  # not the holder: no-op
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "a", 30) is False
    storage.release_lease("server:ip-10-0-0-1.ec2.internal", "b")
    assert storage.acquire_lease("server:ip-10-0-0-1.ec2.internal", "a", 30) is True
