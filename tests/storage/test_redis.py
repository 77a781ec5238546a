"""Redis driver specifics, on the real local Redis and a real 3-master Redis Cluster.

The cross-driver behaviour lives in ``test_conformance.py``; this file covers what only the
Redis driver has: URLs and prefixes, writer-sequence idempotency, TTLs on every key, hash slots,
round trips, scripts, forks and failures. Tests may SCAN to inspect keys; the driver never.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit

import pytest
import redis
from redis.cluster import RedisCluster
from redis.connection import AbstractConnection
from redis.crc import key_slot

from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.sketch import Sketch
from queuelens.storage import StorageError, StorageUnavailable, open_storage
from queuelens.storage._redis_scripts import Script
from queuelens.storage.base import Retention
from queuelens.storage.redis import RedisStorage

NOW = time.time()
MINUTE = bucket_start(NOW, Resolution.minute) - 600  # inside every retention
ODD = ["emails.high", "app.tasks.send_mail", "a:b/c", "größe", "{braces}", "}{", "with space",
       "Emails", "emails", "x}y{z", ""]  # fmt: skip


@pytest.fixture(params=["redis", "redis_cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh prefix on the single local Redis, then on the session's test cluster."""
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def storage(url: str) -> Iterator[RedisStorage]:
    opened = RedisStorage(url)
    try:
        yield opened
    finally:
        opened.close()


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis | RedisCluster]:
    """A plain redis-py client on the same server, to inspect what the driver wrote."""
    client = raw_client(url)
    try:
        yield client
    finally:
        client.close()


def raw_client(url: str) -> redis.Redis | RedisCluster:
    parts = urlsplit(url)
    host, port = parts.hostname or "127.0.0.1", parts.port or 6379
    client: redis.Redis | RedisCluster
    if parts.scheme.endswith("+cluster"):
        client = RedisCluster(host=host, port=port, decode_responses=True)
    else:
        client = redis.Redis(host=host, port=port, db=0, decode_responses=True)
    return client


def untyped(client: object) -> Any:
    """``client`` for calls that some redis-py versions type and others do not."""
    return client


def prefix_of(url: str) -> str:
    return url.split("prefix=")[1]


def all_keys(raw: redis.Redis | RedisCluster, url: str) -> list[str]:
    # the test may scan; the driver must not. RedisCluster.scan_iter visits every primary.
    return sorted(str(key) for key in raw.scan_iter(match=f"{prefix_of(url)}:*", count=1000))


def outcome(status: JobStatus, at: float, duration_s: float, **extra: Any) -> JobOutcome:
    return JobOutcome(queue="-", job="-", status=status, duration_s=duration_s,
                      finished_at=at, **extra)  # fmt: skip


def batch_of(items: list[tuple[SeriesKey, JobOutcome]], writer_id: str | None = None,
             sequence: int = 1, dropped: dict[str, int] | None = None) -> FlushBatch:  # fmt: skip
    """Aggregate ``items`` per series and minute in time order, as the recorder does."""
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    for series, item in sorted(items, key=lambda pair: pair[1].finished_at or 0.0):
        assert item.finished_at is not None
        key = (series, bucket_start(item.finished_at, Resolution.minute))
        aggregates.setdefault(key, Aggregate(0.01)).add(item, item.finished_at)
    return FlushBatch(
        writer_id=writer_id or uuid.uuid4().hex,
        sequence=sequence,
        created_at=NOW,
        aggregates=aggregates,
        frameworks={(s.app, s.queue): "celery" for s, _ in aggregates},
        dropped=dropped or {},
    )


def merged(buckets: dict[int, Aggregate]) -> Aggregate:
    total = Aggregate(0.01)
    for aggregate in buckets.values():
        total.merge(aggregate)
    return total


def beat(worker_id: str = "w1", app: str = "shop", processed: int = 1,
         sent_at: float = NOW) -> WorkerHeartbeat:  # fmt: skip
    return WorkerHeartbeat(
        worker_id=worker_id,
        app=app,
        framework="celery",
        hostname="host-1",
        pid=42,
        name="celery@host-1",
        queues=["emails", "größe"],
        concurrency=4,
        busy_slots=1,
        state=WorkerState.busy,
        started_at=NOW - 60,
        sent_at=sent_at,
        heartbeat_interval_s=5.0,
        current_jobs=["app.tasks.x"],
        processed=processed,
        failed=0,
        rss_mb=None,
        cpu_percent=3.5,
    )


# -- exact numbers ---------------------------------------------------------------------------


def test_known_workload_reads_back_exact_counts_and_percentiles(storage: RedisStorage) -> None:
    series = SeriesKey("shop", "emails", "send_mail")
    durations = [0.001 * (i + 1) for i in range(1000)]  # 1 ms .. 1 s, known quantiles
    items = []
    for i, duration in enumerate(durations):
        status = JobStatus.failed if i % 10 == 0 else JobStatus.succeeded
        extra: dict[str, Any] = {"wait_s": 2.0, "memory_peak_mb": float(i % 100)}
        if status is JobStatus.failed:
            extra.update(exception_type="ValueError", exception_message=f"bad {i}")
        items.append((series, outcome(status, MINUTE + (i % 180), duration, **extra)))
    assert storage.write(batch_of(items)) is True

    minutes = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 180)[series]
    assert sorted(minutes) == [MINUTE, MINUTE + 60, MINUTE + 120]
    total = merged(minutes)
    assert total.counts == {JobStatus.failed: 100, JobStatus.succeeded: 900}
    assert total.duration.count == 1000
    assert total.duration.sum == pytest.approx(math.fsum(durations), rel=1e-12)
    assert (total.duration.min, total.duration.max) == (0.001, 1.0)
    for q in (0.5, 0.9, 0.95, 0.99):
        exact = sorted(durations)[math.floor(q * 999)]
        estimate = total.duration.quantile(q)
        assert estimate is not None
        assert abs(estimate - exact) <= 0.01 * exact * (1 + 1e-9)
    assert total.wait.quantile(0.5) == pytest.approx(2.0, rel=0.01)
    assert (total.memory_peak.count, total.memory_peak.max) == (1000, 99.0)
    errors = total.exceptions["ValueError"]
    # the newest failures finish at offset 170 (i = 170, 350, ..., 890); the last one wins
    assert (errors.count, errors.last_message) == (100, "bad 890")
    hour_start = bucket_start(MINUTE, Resolution.hour)
    for resolution, start in (
        (Resolution.hour, hour_start),
        (Resolution.day, bucket_start(MINUTE, Resolution.day)),
    ):
        coarse = merged(storage.read_buckets([series], resolution, start, NOW + 1)[series])
        assert coarse.counts == total.counts
        assert coarse.duration == total.duration
        assert coarse.exceptions == total.exceptions


def test_duplicate_batch_returns_false_and_changes_nothing(
    storage: RedisStorage, raw: redis.Redis | RedisCluster, url: str
) -> None:
    series = [SeriesKey("a", "q", f"job{i}") for i in range(3)]
    items = [(s, outcome(JobStatus.succeeded, MINUTE + i, 0.1 * (i + 1))) for i, s in
             enumerate(series * 5)]  # fmt: skip
    batch = batch_of(items, dropped={"a": 2})
    assert storage.write(batch) is True

    def snapshot() -> dict[str, Any]:
        # DUMP: every key's exact bytes, whatever its type (bucket stats are binary)
        return {key: raw.dump(key) for key in all_keys(raw, url)}

    before = snapshot()
    assert storage.write(batch) is False
    assert snapshot() == before
    assert storage.read_dropped(NOW - 1, NOW + 1) == {"a": 2}


def test_buckets_equal_the_batch_rollup_across_minutes_and_an_hour(storage: RedisStorage) -> None:
    """Several minutes of one series (straddling an hour), written as one script: every
    bucket equals ``batch.rollup()`` exactly; an empty aggregate writes no bucket."""
    series, idle = SeriesKey("a", "q", "busy"), SeriesKey("a", "q", "idle")
    hour = bucket_start(MINUTE, Resolution.hour)
    items = []
    for i, minute in enumerate((hour - 120, hour - 60, hour, hour + 60)):
        for j in range(5):
            error = {"exception_type": "E", "exception_message": f"m{i}{j}"} if j % 2 else {}
            items.append((series, outcome(JobStatus.failed if j % 2 else JobStatus.succeeded,
                                          minute + 10, 0.001 * (i + 1) * (j + 1) / 3,
                                          wait_s=j / 7, cpu_s=0.0, memory_peak_mb=10.0 / (j + 1),
                                          memory_delta_mb=float(j), **error)))  # fmt: skip
    batch = batch_of(items)
    batch.aggregates[(idle, hour)] = Aggregate(0.01)
    assert storage.write(batch) is True
    for bucket, expected in batch.rollup().items():
        if bucket.series == idle:
            continue
        width = int(bucket.resolution)
        read = storage.read_buckets([series], bucket.resolution, bucket.start, bucket.start + width)
        got = read[series][bucket.start]
        assert got == expected
        for sketch, want in ((got.duration, expected.duration), (got.wait, expected.wait)):
            assert (sketch.sum, sketch.min, sketch.max) == (want.sum, want.min, want.max)
        assert got.cpu.zero_count == expected.cpu.zero_count == expected.cpu.count
    assert storage.read_buckets([idle], Resolution.day, MINUTE - 86400, NOW + 1) == {}


def test_sums_keep_every_bit_across_writes(storage: RedisStorage) -> None:
    series = SeriesKey("a", "q", "precise")
    values = [1 / 3, 0.1, 2 / 7, 1e-7 / 3, 123.456789012345678]
    expected_sum = 0.0
    for value in values:
        batch = batch_of([(series, outcome(JobStatus.succeeded, MINUTE, value,
                                           memory_peak_mb=value * 10))])  # fmt: skip
        expected_sum += batch.aggregates[(series, MINUTE)].duration.sum
        storage.write(batch)
    for resolution in Resolution:
        start = bucket_start(MINUTE, resolution)
        got = storage.read_buckets([series], resolution, start, start + 1)[series][start]
        assert got.duration.sum == expected_sum  # bit for bit, not approximately
        assert (got.duration.min, got.duration.max) == (min(values), max(values))
        assert got.memory_peak.max == max(values) * 10
        assert got.total == len(values)


def test_newest_exception_message_wins_across_writes(storage: RedisStorage) -> None:
    series = SeriesKey("a", "q", "raising")

    def failure(at: float, message: str) -> FlushBatch:
        error = {"exception_type": "E", "exception_message": message}
        return batch_of([(series, outcome(JobStatus.failed, at, 0.1, **error))])

    storage.write(failure(MINUTE + 30, "newer"))
    storage.write(failure(MINUTE + 10, "older, arrived late"))  # must not replace "newer"
    for resolution in Resolution:
        start = bucket_start(MINUTE, resolution)
        got = storage.read_buckets([series], resolution, start, start + 1)[series][start]
        assert (got.exceptions["E"].count, got.exceptions["E"].last_message) == (2, "newer")
    storage.write(failure(MINUTE + 30, "same time, written later"))  # a tie: the later write
    for resolution in Resolution:
        start = bucket_start(MINUTE, resolution)
        got = storage.read_buckets([series], resolution, start, start + 1)[series][start]
        stat = got.exceptions["E"]
        assert (stat.count, stat.last_message) == (3, "same time, written later")
        assert stat.last_seen == MINUTE + 30


def test_partly_applied_batch_is_completed_without_double_counting(storage: RedisStorage) -> None:
    first, second = SeriesKey("a", "q", "first"), SeriesKey("a", "q", "second")
    items = [(first, outcome(JobStatus.succeeded, MINUTE, 1.0)),
             (second, outcome(JobStatus.failed, MINUTE, 2.0))]  # fmt: skip
    # as if the connection died after the first series' script ran
    assert storage.write(batch_of(items[:1], writer_id="w-1", sequence=7)) is True
    assert storage.write(batch_of(items, writer_id="w-1", sequence=7)) is True
    read = storage.read_buckets([first, second], Resolution.minute, MINUTE, MINUTE + 60)
    assert read[first][MINUTE].total == 1
    assert read[second][MINUTE].counts == {JobStatus.failed: 1}
    assert storage.write(batch_of(items, writer_id="w-1", sequence=7)) is False
    assert storage.write(batch_of(items, writer_id="w-1", sequence=6)) is False


def test_idempotency_keys_do_not_grow_with_flushes(
    storage: RedisStorage, raw: redis.Redis | RedisCluster, url: str
) -> None:
    series = [SeriesKey("steady", "q", f"job{i}") for i in range(3)]
    for sequence in range(1, 51):
        items = [(s, outcome(JobStatus.succeeded, MINUTE + sequence % 60, 0.1)) for s in series]
        flush = batch_of(items, writer_id="w-steady", sequence=sequence, dropped={"steady": 1})
        assert storage.write(flush) is True
    keys = all_keys(raw, url)
    # one sequence hash per series and one for the dropped counts, one field each
    sequence_keys = [key for key in keys if key.endswith(":seq")]
    assert sorted(sequence_keys) == sorted(
        [storage.keys.series_sequences(s) for s in series] + [storage.keys.meta_sequences]
    )
    for key in sequence_keys:
        assert untyped(raw).hkeys(key) == ["w-steady"]
        assert str(untyped(raw).hget(key, "w-steady")).startswith("50:")
        assert 0 < int(untyped(raw).ttl(key)) <= storage.retention.batch_id_s
    assert not [key for key in keys if ":batch:" in key]
    assert storage.read_dropped(NOW - 1, NOW + 1) == {"steady": 50}
    day = bucket_start(MINUTE, Resolution.day)
    read = storage.read_buckets(series, Resolution.day, day, day + 1)
    assert all(read[s][day].total == 50 for s in series)


def test_silent_writers_are_forgotten_when_new_ones_join(
    storage: RedisStorage, raw: redis.Redis | RedisCluster
) -> None:
    series = SeriesKey("churn", "q", "j")
    key = storage.keys.series_sequences(series)
    # 70 writers of long ago (a prefork pool recycling its processes), as if written then
    stale = {f"old-{n}": f"3:{NOW - 2 * storage.retention.batch_id_s}" for n in range(70)}
    raw.hset(key, mapping=stale)
    raw.hset(key, "recent", f"9:{NOW - 60}")
    item = [(series, outcome(JobStatus.succeeded, MINUTE, 0.1))]
    assert storage.write(batch_of(item, writer_id="newcomer")) is True
    assert sorted(untyped(raw).hkeys(key)) == ["newcomer", "recent"]
    storage.write(batch_of(item, writer_id="recent", sequence=9))  # a duplicate for the series
    storage.write(batch_of(item, writer_id="recent", sequence=10))
    read = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)
    assert read[series][MINUTE].total == 2  # the newcomer's and recent's 10th


# -- keys: TTLs, slots, names ----------------------------------------------------------------


@pytest.mark.parametrize("folded", [True, False])
def test_every_key_the_driver_writes_has_a_ttl(
    storage: RedisStorage, raw: redis.Redis | RedisCluster, url: str, folded: bool
) -> None:
    """Folded into bucket hashes or still pending, each key expires when its bucket does."""
    storage.compact_every = 1 if folded else 1_000_000
    series = SeriesKey("shop", "emails", "send")
    error = {"exception_type": "KeyError", "exception_message": "k"}
    storage.write(batch_of([(series, outcome(JobStatus.failed, MINUTE, 0.5, **error))],
                           dropped={"shop": 1}))  # fmt: skip
    storage.write_gauges([GaugeSample("queue", "shop", "emails", {"pending": 3.0}, NOW)])
    storage.heartbeat(beat())
    assert storage.acquire_lease("server:host-1", "pid-1", 60) is True
    keys = all_keys(raw, url)
    assert len(keys) >= (20 if folded else 14)
    assert 0 < int(untyped(raw).pttl(storage.keys.lease("server:host-1"))) <= 60_000
    ttls = {key: int(untyped(raw).ttl(key)) for key in keys}
    assert {key: ttl for key, ttl in ttls.items() if ttl <= 0} == {}
    # buckets expire exactly at start + width + retention of their resolution
    retention = Retention()
    for resolution in Resolution:
        start = bucket_start(MINUTE, resolution)
        expected = start + int(resolution) + retention.for_resolution(resolution)
        if folded:
            assert raw.expiretime(storage.keys.bucket(series, resolution, start)) == expected
            assert raw.expiretime(storage.keys.exceptions(series, resolution, start)) == expected
    if not folded:  # the log lasts as long as the newest day bucket it has records for
        day = bucket_start(MINUTE, Resolution.day)
        assert raw.expiretime(storage.keys.log(series)) == day + 86400 + retention.day_s


def test_keys_of_one_series_share_a_slot(
    storage: RedisStorage, raw: redis.Redis | RedisCluster, url: str
) -> None:
    storage.compact_every = 1  # fold at once: every bucket key is there to look at
    series = SeriesKey("{app}", "a:b", "{job}")
    items = [(series, outcome(JobStatus.succeeded, MINUTE + 60 * i, 1.0)) for i in range(3)]
    storage.write(batch_of(items))
    tag = storage.keys.series_tag(series)
    mine = [key for key in all_keys(raw, url) if key.startswith(tag + ":")]
    # three minutes, their hour(s) and day(s) (they may straddle a boundary), the sequence hash
    coarse = {(r, bucket_start(MINUTE + 60 * i, r)) for i in range(3)
              for r in (Resolution.hour, Resolution.day)}  # fmt: skip
    assert len(mine) == 3 + len(coarse) + 1
    assert len({key_slot(key.encode()) for key in mine}) == 1
    meta = [key for key in all_keys(raw, url) if ":meta}:" in key]
    assert len({key_slot(key.encode()) for key in meta}) == 1
    if isinstance(raw, RedisCluster):
        nodes = {untyped(raw).get_node_from_key(key).name for key in mine}
        assert len(nodes) == 1


def test_names_round_trip_exactly(storage: RedisStorage) -> None:
    keys = [SeriesKey(app, queue, job) for app in ("default", "größe", "{x}")
            for queue in ODD[:4] for job in ODD]  # fmt: skip
    odd_error = {"exception_type": "my.Error{with}:colons größe", "exception_message": "ü\n{}"}
    items = [(key, outcome(JobStatus.failed, MINUTE, 0.25, **odd_error)) for key in keys]
    storage.write(batch_of(items))
    assert storage.list_apps() == sorted(["default", "größe", "{x}"])
    assert sorted(q.queue for q in storage.list_queues("{x}")) == sorted(ODD[:4])
    assert [s.job for s in storage.list_jobs("größe", "a:b/c")] == sorted(ODD)
    read = storage.read_buckets(keys, Resolution.hour, MINUTE - 3600, NOW + 1)
    assert set(read) == set(keys)
    for buckets in read.values():
        (stat,) = merged(buckets).exceptions.items()
        assert stat[0] == "my.Error{with}:colons größe"
        assert stat[1].last_message == "ü\n{}"
    storage.write_gauges([GaugeSample("queue", "{x}", name, {"pénding{}": 1.0}, NOW)
                          for name in ODD])  # fmt: skip
    assert sorted(s.key for s in storage.latest_gauges("queue", "{x}")) == sorted(ODD)
    gauges = storage.read_gauges("queue", "{x}", "a:b/c", Resolution.minute, NOW - 60, NOW + 60)
    assert [set(fields) for fields in gauges.values()] == [{"pénding{}"}]
    storage.heartbeat(beat(worker_id="celery@{host}:1 größe", app="{x}"))
    assert [w.heartbeat.worker_id for w in storage.list_workers("{x}")] == ["celery@{host}:1 größe"]


# -- round trips and scripts -----------------------------------------------------------------


def flush_of(n_series: int, seed: int = 0) -> FlushBatch:
    items = []
    for i in range(n_series):
        series = SeriesKey("bench", f"q{i % 10}", f"app.tasks.job_{i}")
        for j in range(3):
            status = JobStatus.failed if (i + j) % 20 == 0 else JobStatus.succeeded
            extra: dict[str, Any] = {"wait_s": 0.01 * (j + 1), "cpu_s": 0.002 * (j + 1),
                                     "memory_peak_mb": 100.0 + j}  # fmt: skip
            if status is JobStatus.failed:
                extra.update(exception_type="TimeoutError", exception_message="slow")
            items.append((series, outcome(status, MINUTE + j, 0.05 * (j + 1 + seed), **extra)))
    return batch_of(items)


def count_sends(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record the (host, port) of every socket write redis-py makes: one per round trip."""
    sends: list[tuple[str, int]] = []
    original: Callable[..., Any] = AbstractConnection.send_packed_command

    def counting(self: Any, command: Any, check_health: bool = True) -> Any:
        sends.append((self.host, self.port))
        return original(self, command, check_health)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counting)
    return sends


def test_a_flush_of_1000_series_is_one_round_trip_per_node(
    storage: RedisStorage, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage.write(flush_of(1000))  # warm up: connections open, scripts cached
    sends = count_sends(monkeypatch)
    assert storage.write(flush_of(1000, seed=1)) is True
    # single Redis: exactly one write; cluster: at most one per node
    assert len(sends) == len(set(sends)) >= 1
    assert len(sends) == 1 or isinstance(storage._redis.client(), RedisCluster)
    read = storage.read_buckets([SeriesKey("bench", "q7", "app.tasks.job_7")], Resolution.hour,
                                MINUTE - 3600, NOW + 1)  # fmt: skip
    assert merged(next(iter(read.values()))).total == 6


def test_cluster_flush_runs_only_the_write_scripts(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    storage = RedisStorage(redis_cluster_url)
    client = storage._redis.client()
    assert isinstance(client, RedisCluster)
    try:
        storage.write(flush_of(1000))
        client.config_resetstat(target_nodes=RedisCluster.PRIMARIES)
        storage.write(flush_of(1000, seed=1))
        stats = client.info("commandstats", target_nodes=RedisCluster.PRIMARIES)
        calls: dict[str, int] = {}
        for node_stats in stats.values():
            for name, stat in node_stats.items():
                calls[name] = calls.get(name, 0) + int(stat["calls"])
        # 1000 series scripts + the dropped-counts script; nothing is looked up first
        assert calls["cmdstat_evalsha"] == 1001
        assert not {"cmdstat_script|load", "cmdstat_script|exists", "cmdstat_command",
                    "cmdstat_keys", "cmdstat_scan"} & set(calls)  # fmt: skip
    finally:
        storage.close()


def test_flushed_script_cache_is_reloaded(redis_cluster_url: str) -> None:
    storage = RedisStorage(redis_cluster_url)
    client = storage._redis.client()
    assert isinstance(client, RedisCluster)
    series = SeriesKey("a", "q", "j")
    try:
        storage.write(batch_of([(series, outcome(JobStatus.succeeded, MINUTE, 1.0))]))
        for node in untyped(client).get_primaries():
            client.get_redis_connection(node).script_flush()
        assert storage.write(batch_of([(series, outcome(JobStatus.failed, MINUTE, 2.0))]))
        got = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)
        assert got[series][MINUTE].counts == {JobStatus.succeeded: 1, JobStatus.failed: 1}
    finally:
        storage.close()


def test_unknown_scripts_are_loaded_and_resent_alone(
    url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A NOSCRIPT reply (Redis restarted, its cache flushed) loads the script and resends
    only what did not run, on the plain write path and the pipelined one alike."""
    from queuelens.storage import _redis_client

    fresh = Script("fresh", f"return {{'{uuid.uuid4().hex}', ARGV[1]}}")  # never loaded
    monkeypatch.setitem(_redis_client._SCRIPT_BY_SHA, fresh.sha, fresh)
    storage = RedisStorage(url)
    key = f"{prefix_of(url)}:{{t}}:x"
    try:
        for plain in (True, False):
            commands = [("INCR", key), ("EVALSHA", fresh.sha, 1, key, "a"), ("INCR", key)]
            with storage._redis.translate("testing"):
                replies = storage._redis.run(commands, plain=plain)
            assert replies[0] + 1 == replies[2]  # each INCR ran once
            assert replies[1][1] == "a"
    finally:
        storage.close()


def test_a_cluster_write_sent_to_the_wrong_node_is_resent_where_it_belongs(
    redis_cluster_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A node answering MOVED (a slot migrating) sends those commands through redis-py's
    cluster pipeline, which follows the cluster's changes."""
    storage = RedisStorage(redis_cluster_url)
    client: Any = storage._redis.client()
    series = SeriesKey("a", "q", "moved")
    misrouted = storage.keys.series_sequences(series)
    wrong = next(n for n in client.get_primaries() if n != client.get_node_from_key(misrouted))
    real, calls = client.get_node_from_key, []

    def once_wrong(key: str, replica: bool = False) -> Any:
        calls.append(key)
        return wrong if key == misrouted and calls.count(key) == 1 else real(key, replica)

    monkeypatch.setattr(client, "get_node_from_key", once_wrong)
    try:
        assert storage.write(batch_of([(series, outcome(JobStatus.succeeded, MINUTE, 1.0))]))
        assert calls.count(misrouted) == 2  # sent wrong, then resent through the pipeline
        got = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)
        assert got[series][MINUTE].total == 1
    finally:
        storage.close()


def test_a_dropped_connection_is_retried_once_on_a_new_one(redis_url: str) -> None:
    """The plain write path (single Redis) rides over a pooled connection Redis has closed,
    as redis-py's pipeline does."""
    storage = RedisStorage(redis_url)
    raw = raw_client(redis_url)
    series = SeriesKey("a", "q", "dropped")
    try:
        assert storage.write(batch_of([(series, outcome(JobStatus.succeeded, MINUTE, 1.0))]))
        pooled = untyped(storage._redis.client()).client_id()  # the one idle connection
        assert untyped(raw).client_kill_filter(_id=pooled) == 1
        assert storage.write(batch_of([(series, outcome(JobStatus.failed, MINUTE, 2.0))],
                                      sequence=2))  # fmt: skip
        got = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)
        assert got[series][MINUTE].total == 2
    finally:
        storage.close()
        raw.close()


# -- processes -------------------------------------------------------------------------------

_WRITER = """
import sys, uuid
from queuelens.model import Aggregate, FlushBatch, JobOutcome, JobStatus, SeriesKey
from queuelens.storage import open_storage
url, minute, worker = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
storage = open_storage(url)
writer = f"{worker}-{uuid.uuid4().hex}"
for b in range(10):
    aggregates = {}
    for j in range(3):
        aggregate = Aggregate(0.01)
        for k in range(20):
            status = JobStatus.failed if k % 4 == 0 else JobStatus.succeeded
            aggregate.add(JobOutcome("q", "j", status, duration_s=0.01 * (k + 1)), minute)
        aggregates[(SeriesKey("mp", "q", f"job{j}"), minute)] = aggregate
    assert storage.write(FlushBatch(writer, b + 1, minute, aggregates))
storage.close()
"""


def test_processes_writing_at_once_lose_nothing(storage: RedisStorage, url: str) -> None:
    writers = [
        subprocess.Popen([sys.executable, "-c", _WRITER, url, str(MINUTE), str(n)])
        for n in range(4)
    ]
    assert [writer.wait(timeout=60) for writer in writers] == [0, 0, 0, 0]
    series = [SeriesKey("mp", "q", f"job{j}") for j in range(3)]
    for resolution in Resolution:
        read = storage.read_buckets(series, resolution, MINUTE - 86400, NOW + 1)
        for key in series:
            got = merged(read[key])
            assert got.counts == {JobStatus.failed: 4 * 10 * 5, JobStatus.succeeded: 4 * 10 * 15}
            assert got.duration.count == 800


def test_forked_child_can_use_the_parents_storage(storage: RedisStorage) -> None:
    series = SeriesKey("fork", "q", "j")
    storage.write(batch_of([(series, outcome(JobStatus.succeeded, MINUTE, 1.0))]))
    pid = os.fork()
    if pid == 0:  # child: same object, inherited (now foreign) connection pool
        code = 1
        try:
            ok = storage.write(batch_of([(series, outcome(JobStatus.failed, MINUTE, 2.0))]))
            code = 0 if ok else 2
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0
    storage.write(batch_of([(series, outcome(JobStatus.retried, MINUTE, 3.0))]))
    got = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)[series][MINUTE]
    assert got.counts == {JobStatus.succeeded: 1, JobStatus.failed: 1, JobStatus.retried: 1}


# -- failures --------------------------------------------------------------------------------


@pytest.mark.parametrize("scheme", ["redis", "redis+cluster"])
def test_unreachable_redis_fails_fast_without_leaking_the_password(scheme: str) -> None:
    storage = open_storage(f"{scheme}://user:s3cret@127.0.0.1:1/0?prefix=x")
    assert "s3cret" not in storage.url
    started = time.monotonic()
    calls: list[Callable[[], object]] = [
        storage.ping,
        lambda: storage.write(flush_of(2)),
        lambda: storage.read_buckets([SeriesKey("a", "q", "j")], Resolution.minute, NOW - 120, NOW),
        storage.list_workers,
    ]
    try:
        for call in calls:
            with pytest.raises(StorageUnavailable) as caught:
                call()
            assert "user:***@127.0.0.1:1" in str(caught.value)
            assert "s3cret" not in str(caught.value)
    finally:
        storage.close()
    assert time.monotonic() - started < 5.0


def test_urls_prefixes_and_redaction() -> None:
    storage = RedisStorage("rediss://:pw@example.invalid:6380/2?prefix=prod&ssl_cert_reqs=none")
    assert storage.url == "rediss://:***@example.invalid:6380/2?prefix=prod&ssl_cert_reqs=none"
    assert storage.keys.prefix == "prod"
    assert storage._redis._client_url == "rediss://:pw@example.invalid:6380/2?ssl_cert_reqs=none"
    assert RedisStorage("redis://h/0?password=pw").url == "redis://h/0?password=***"
    assert RedisStorage("redis://secret@h/0").url == "redis://***@h/0"
    default = RedisStorage("redis+cluster://h:7000/")
    assert (default.keys.prefix, default._redis.cluster, default._redis._client_url) == (
        "queuelens",
        True,
        "redis://h:7000/",
    )
    for bad in ("redis://h/0?prefix=a{b}", "redis://h/0?prefix=", "http://h/"):
        with pytest.raises(StorageError):
            RedisStorage(bad)


def test_reads_from_another_accuracy_are_refused(url: str) -> None:
    series = SeriesKey("a", "q", "j")
    writer, reader = RedisStorage(url), RedisStorage(url, relative_accuracy=0.02)
    try:
        writer.write(batch_of([(series, outcome(JobStatus.succeeded, MINUTE, 1.0))]))
        with pytest.raises(StorageError, match="accuracy"):
            reader.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 60)
    finally:
        writer.close()
        reader.close()


# -- heartbeats, gauges, prune ---------------------------------------------------------------


def test_heartbeat_keeps_first_seen_and_ignores_older_beats(storage: RedisStorage) -> None:
    storage.heartbeat(beat(processed=5, sent_at=NOW - 30))
    storage.heartbeat(beat(processed=9, sent_at=NOW))
    storage.heartbeat(beat(processed=7, sent_at=NOW - 10))  # late delivery of an older beat
    (record,) = storage.list_workers()
    assert (record.first_seen_at, record.last_heartbeat_at) == (NOW - 30, NOW)
    assert record.heartbeat.processed == 9
    assert (record.heartbeat.rss_mb, record.heartbeat.cpu_percent) == (None, 3.5)


def test_gauges_skip_values_that_are_not_finite(storage: RedisStorage) -> None:
    values = {"pending": 4.0, "bad": math.inf, "worse": math.nan}
    storage.write_gauges([GaugeSample("queue", "a", "q", values, NOW)])
    (latest,) = storage.latest_gauges("queue")
    assert latest.values == {"pending": 4.0}
    hour = storage.read_gauges("queue", "a", "q", Resolution.hour, NOW - 3600, NOW + 1)
    assert [set(fields) for fields in hour.values()] == [{"pending"}]


def test_prune_trims_indexes_and_removes_silent_workers(storage: RedisStorage) -> None:
    retention = storage.retention
    item = (SeriesKey("old", "q", "j"), outcome(JobStatus.succeeded, MINUTE, 1.0))
    storage.write(batch_of([item], dropped={"old": 1}))
    storage.heartbeat(beat(worker_id="quiet", app="old", sent_at=NOW))
    storage.write_gauges([GaugeSample("queue", "old", "q", {"pending": 1.0}, NOW)])
    assert storage.prune(NOW).total == 0
    report = storage.prune(NOW + retention.worker_s + 1)
    assert report.removed["workers"] == 1
    assert storage.list_workers() == []
    assert storage.list_apps() == ["old"]
    report = storage.prune(NOW + retention.day_s + 2 * 86400)
    assert {k: v for k, v in report.removed.items() if v} == {
        "apps": 1,
        "queues": 1,
        "jobs": 1,
        "gauges": 1,
        "dropped": 1,
    }
    assert (storage.list_apps(), storage.list_queues(), storage.latest_gauges("queue")) == (
        [],
        [],
        [],
    )
    assert storage.list_jobs("old") == []


def test_histogram_bins_are_stored_in_exact_groups_of_16(
    storage: RedisStorage, raw: redis.Redis | RedisCluster
) -> None:
    storage.compact_every = 1  # fold every write into the bucket hash, to look at it
    series = SeriesKey("bins", "q", "grouped")
    big = 2**32 - 3  # twice this passes uint32: the group must turn to doubles, exactly
    bins = {-17: 3, -16: 1, -1: 2, 0: 1, 15: 5, 16: big, 31: 7}
    aggregate = Aggregate(0.01)
    aggregate.counts[JobStatus.succeeded] = 1
    aggregate.duration = Sketch.from_bins(0.01, bins, 0, 1.0, 0.5, 2.0)
    aggregate.wait = Sketch.from_bins(0.01, {-300: 4}, 1, 1.0, 0.0, 0.1)

    def flush(sequence: int) -> FlushBatch:
        return FlushBatch(writer_id="w-bins", sequence=sequence, created_at=NOW,
                          aggregates={(series, MINUTE): aggregate.copy()})  # fmt: skip

    assert storage.write(flush(1)) is True
    key = storage.keys.bucket(series, Resolution.minute, MINUTE)
    fields = sorted(str(name) for name in untyped(raw).hkeys(key))
    # bin i lives in group floor(i / 16); every group is 16 uint32
    assert [name for name in fields if name[0] in "dwu" and ":" in name] == [
        "d:g-1", "d:g-2", "d:g0", "d:g1", "w:g-19",
    ]  # fmt: skip
    assert {int(untyped(raw).hstrlen(key, name)) for name in ("d:g-2", "d:g1", "w:g-19")} == {64}
    assert storage.write(flush(2)) is True
    assert int(untyped(raw).hstrlen(key, "d:g1")) == 128  # doubles once a count passes 2**32
    assert int(untyped(raw).hstrlen(key, "d:g0")) == 64
    for resolution in Resolution:
        start = bucket_start(MINUTE, resolution)
        got = storage.read_buckets([series], resolution, start, start + 1)[series][start]
        assert got.duration.bins == {i: 2 * n for i, n in bins.items()}
        assert got.duration.count == 2 * sum(bins.values())
        assert got.wait.bins == {-300: 8}
        assert got.wait.zero_count == 2
    assert storage.write(flush(3)) is True  # a group already holding doubles stays exact
    days = storage.read_buckets([series], Resolution.day, 0, NOW + 86400)[series]
    assert merged(days).duration.bins == {i: 3 * n for i, n in bins.items()}
