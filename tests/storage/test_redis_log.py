"""Series logs and folds in the Redis driver: whatever is folded into bucket hashes and
whatever is still in a series' log, reads give exactly what merging every batch on arrival
would give.

The record format is tested here too; ``test_redis.py`` covers the rest of the driver.
"""

from __future__ import annotations

import random
import uuid
from collections.abc import Iterator

import pytest
import redis
from redis.client import NEVER_DECODE
from redis.cluster import RedisCluster

from queuelens.model import (
    Aggregate,
    BucketKey,
    FlushBatch,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    bucket_start,
)
from queuelens.sketch import Sketch
from queuelens.storage import StorageError
from queuelens.storage._redis_log import encode_record, fold_records, read_log
from queuelens.storage.redis import COMPACT_EVERY, RedisStorage
from tests.storage.test_redis import MINUTE, NOW, all_keys, raw_client, untyped

HOUR = bucket_start(MINUTE, Resolution.hour)


@pytest.fixture(params=["redis", "redis_cluster"])
def url(request: pytest.FixtureRequest) -> str:
    """A fresh prefix on the single local Redis, then on the session's test cluster."""
    value: str = request.getfixturevalue(f"{request.param}_url")
    return value


@pytest.fixture
def raw(url: str) -> Iterator[redis.Redis | RedisCluster]:
    client = raw_client(url)
    try:
        yield client
    finally:
        client.close()


def random_batch(rng: random.Random, series: list[SeriesKey], minutes: list[int], writer: str,
                 sequence: int, least: int = 0) -> FlushBatch:  # fmt: skip
    """A few outcomes (``least`` or more) per series over one or more of ``minutes``, as the
    recorder cuts them."""
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    for one in series:
        for minute in rng.sample(minutes, min(len(minutes), rng.choice([1, 1, 1, 2]))):
            aggregate = aggregates.setdefault((one, minute), Aggregate(0.01))
            for _ in range(rng.randint(least, 4)):
                failed = rng.random() < 0.3
                status = rng.choice(list(JobStatus)) if failed else JobStatus.succeeded
                at = minute + rng.random() * 59
                outcome = JobOutcome(
                    "q", "j", status,
                    duration_s=rng.lognormvariate(-3, 2),
                    wait_s=rng.choice([None, 0.0, rng.expovariate(3.0)]),
                    cpu_s=rng.choice([None, rng.random() / 7]),
                    memory_peak_mb=rng.choice([None, rng.random() * 300]),
                    memory_delta_mb=rng.choice([None, rng.random()]),
                    exception_type=rng.choice(["E", "größe{x}"]) if failed else None,
                    exception_message=f"m{rng.randint(0, 9)}" if failed else None,
                    finished_at=rng.choice([at, minute + 30.0]),  # ties on last seen, too
                )  # fmt: skip
                aggregate.add(outcome, outcome.finished_at or at)
    return FlushBatch(writer, sequence, NOW, aggregates)


def assert_exact(got: Aggregate, want: Aggregate) -> None:
    assert got.counts == want.counts
    for mine, theirs in ((got.duration, want.duration), (got.wait, want.wait),
                         (got.cpu, want.cpu)):  # fmt: skip
        assert (mine.bins, mine.zero_count, mine.count) == (theirs.bins, theirs.zero_count,
                                                             theirs.count)  # fmt: skip
        assert mine.sum == theirs.sum  # bit for bit: added in write order
        if theirs.count:
            assert (mine.min, mine.max) == (theirs.min, theirs.max)
    for mine_stat, theirs_stat in ((got.memory_peak, want.memory_peak),
                                   (got.memory_delta, want.memory_delta)):  # fmt: skip
        assert (mine_stat.count, mine_stat.total) == (theirs_stat.count, theirs_stat.total)
        if theirs_stat.count:
            assert mine_stat.max == theirs_stat.max
    assert {name: (s.count, s.last_message, s.last_seen) for name, s in got.exceptions.items()} == {
        name: (s.count, s.last_message, s.last_seen) for name, s in want.exceptions.items()
    }


def fold_schedule(storage: RedisStorage, series: SeriesKey) -> int:
    """The first sequence number on which ``storage`` folds the log of ``series``."""
    phase = int(storage.keys.series_id(series)[:8], 16)
    return next(n for n in range(1, storage.compact_every + 1)
                if (n + phase) % storage.compact_every == 0)  # fmt: skip


@pytest.mark.parametrize("compact_every", [1, 2, 3, 7, COMPACT_EVERY])
def test_reads_equal_merging_every_batch_whatever_is_folded(url: str, compact_every: int) -> None:
    """Three writers, random batches over minutes of two hours, one fold schedule each:
    every bucket reads back bit for bit as every minute aggregate merged in write order."""
    rng = random.Random(compact_every)
    series = [SeriesKey("fold", "q", f"job{i}") for i in range(4)]
    minutes = [HOUR - 60, HOUR, HOUR + 60]
    storages = [RedisStorage(url, compact_every=compact_every) for _ in range(3)]
    writers = [uuid.uuid4().hex for _ in storages]
    expected: dict[BucketKey, Aggregate] = {}
    try:
        for sequence in range(1, 25):
            for storage, writer in zip(storages, writers, strict=True):
                batch = random_batch(rng, series, minutes, writer, sequence)
                assert storage.write(batch) is True
                for (one, minute), aggregate in batch.aggregates.items():
                    if encode_record(minute, aggregate, 0.01) is None:
                        continue
                    for resolution in Resolution:
                        bucket = BucketKey(one, resolution, bucket_start(minute, resolution))
                        expected.setdefault(bucket, Aggregate(0.01)).merge(aggregate)
        reader = storages[0]
        for resolution in Resolution:
            starts = {bucket_start(minute, resolution) for minute in minutes}
            got = reader.read_buckets(series, resolution, min(starts), max(starts) + 1)
            for one in series:
                for start in starts:
                    want = expected.get(BucketKey(one, resolution, start))
                    if want is None:
                        assert start not in got.get(one, {})
                    else:
                        assert_exact(got[one][start], want)
    finally:
        for storage in storages:
            storage.close()


def test_a_fold_moves_the_log_into_the_buckets_unchanged(
    url: str, raw: redis.Redis | RedisCluster
) -> None:
    series = SeriesKey("fold", "q", "once")
    storage = RedisStorage(url, compact_every=4)
    first_fold = fold_schedule(storage, series)
    rng = random.Random(5)
    log = storage.keys.log(series)
    try:
        for sequence in range(1, first_fold + 4):
            batch = random_batch(rng, [series], [MINUTE], "w-once", sequence, least=1)
            before = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 1)
            storage.write(batch)
            after = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 1)
            expected = before[series][MINUTE].copy() if before else Aggregate(0.01)
            expected.merge(batch.aggregates[(series, MINUTE)])
            assert_exact(after[series][MINUTE], expected)
            for resolution in Resolution:
                bucket = storage.keys.bucket(series, resolution, bucket_start(MINUTE, resolution))
                assert untyped(raw).exists(bucket) == (sequence >= first_fold)
            assert untyped(raw).exists(log) == (sequence != first_fold)
    finally:
        storage.close()


def test_a_fold_takes_the_minute_before_and_asks_for_older_ones(
    url: str, raw: redis.Redis | RedisCluster
) -> None:
    """A fold declares the minute before its own. A record of an older minute waits in the
    log, and so does every later one (each bucket takes its records in write order), until
    the writer's next flush, which declares that minute too."""
    series = SeriesKey("fold", "q", "older")
    storage = RedisStorage(url, compact_every=1_000_000)
    log = storage.keys.log(series)
    try:
        old = random_batch(random.Random(1), [series], [MINUTE - 120], "w-old", 1, least=1)
        recent = random_batch(random.Random(2), [series], [MINUTE - 60], "w-old", 2, least=1)
        storage.write(old)
        storage.write(recent)
        storage.compact_every = 1
        now = random_batch(random.Random(3), [series], [MINUTE], "w-old", 3, least=1)
        storage.write(now)
        waiting = [record.minute for record in read_log(raw_log(raw, log))]
        assert waiting == [MINUTE - 120, MINUTE - 60, MINUTE]
        storage.compact_every = 1_000_000  # the writer folds anyway: it was asked to
        storage.write(random_batch(random.Random(4), [series], [MINUTE], "w-old", 4, least=1))
        assert untyped(raw).exists(log) == 0
        got = storage.read_buckets([series], Resolution.minute, MINUTE - 120, MINUTE + 60)[series]
        for batch, minute in ((old, MINUTE - 120), (recent, MINUTE - 60)):
            assert_exact(got[minute], batch.aggregates[(series, minute)])
        assert untyped(raw).exists(storage.keys.bucket(series, Resolution.minute, MINUTE - 120))
    finally:
        storage.close()


def raw_log(raw: redis.Redis | RedisCluster, key: str) -> bytes:
    """A log's bytes (the test client decodes replies; these are binary)."""
    value = untyped(raw).execute_command("GET", key, **{NEVER_DECODE: True})
    assert isinstance(value, bytes)
    return value


def test_only_the_log_is_written_between_folds(url: str, raw: redis.Redis | RedisCluster) -> None:
    storage = RedisStorage(url, compact_every=1_000_000)
    series = SeriesKey("fold", "q", "appended")
    try:
        for sequence in (1, 2):
            storage.write(random_batch(random.Random(sequence), [series], [MINUTE], "w",
                                       sequence, least=1))  # fmt: skip
        tag = storage.keys.series_tag(series)
        mine = sorted(key for key in all_keys(raw, url) if key.startswith(tag))
        assert mine == [storage.keys.log(series), storage.keys.series_sequences(series)]
        day = bucket_start(MINUTE, Resolution.day)
        assert raw.expiretime(storage.keys.log(series)) == day + 86400 + storage.retention.day_s
        assert len(read_log(raw_log(raw, storage.keys.log(series)))) == 2
    finally:
        storage.close()


def test_a_long_log_is_folded_on_the_next_flush(url: str, raw: redis.Redis | RedisCluster) -> None:
    storage = RedisStorage(url, compact_every=1_000_000)
    series = SeriesKey("fold", "q", "big")
    aggregate = Aggregate(0.01)
    aggregate.counts[JobStatus.succeeded] = 1
    aggregate.duration = Sketch.from_bins(0.01, dict.fromkeys(range(2000), 1), 0, 1.0, 0.5, 9.0)
    log = storage.keys.log(series)
    try:
        for sequence in range(1, 5):  # 24 kB each: past 64 kB on the third
            batch = FlushBatch("w-big", sequence, NOW, {(series, MINUTE): aggregate.copy()})
            storage.write(batch)
            assert untyped(raw).exists(log) == (sequence != 4)
        got = storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 1)
        assert got[series][MINUTE].duration.bins == dict.fromkeys(range(2000), 4)
    finally:
        storage.close()


def test_compact_every_must_be_a_positive_whole_number(url: str) -> None:
    for bad in (0, -1, 1.5, True, "8"):
        with pytest.raises(StorageError, match="compact_every"):
            RedisStorage(url, compact_every=bad)  # type: ignore[arg-type]


# -- the record format -----------------------------------------------------------------------


def test_records_round_trip_exactly() -> None:
    rng = random.Random(3)
    series = SeriesKey("a", "q", "j")
    for sequence in range(30):
        batch = random_batch(rng, [series], [MINUTE], "w", sequence + 1)
        aggregate = batch.aggregates[(series, MINUTE)]
        record = encode_record(MINUTE, aggregate, 0.01)
        if record is None:
            assert aggregate.total == 0
            continue
        (read,) = read_log(record)
        assert (read.minute, read.accuracy) == (MINUTE, 0.01)
        decoded = Aggregate(0.01)
        fold_records([read], decoded)
        assert_exact(decoded, aggregate)
    assert encode_record(MINUTE, Aggregate(0.01), 0.01) is None


def test_damaged_or_newer_records_are_refused_with_a_clear_error() -> None:
    aggregate = Aggregate(0.01)
    aggregate.add(JobOutcome("q", "j", JobStatus.failed, duration_s=1.0, exception_type="E",
                             exception_message="boom"), 1.0)  # fmt: skip
    record = encode_record(MINUTE, aggregate, 0.01)
    assert record is not None
    with pytest.raises(StorageError, match="damaged"):
        read_log(record[:-3])
    with pytest.raises(StorageError, match="upgrade"):
        read_log(bytes([2]) + record[1:])


def test_bin_indexes_past_32_bits_are_refused() -> None:
    aggregate = Aggregate(0.01)
    aggregate.duration = Sketch.from_bins(0.01, {2**40: 1}, 0, 1.0, 1.0, 1.0)
    with pytest.raises(StorageError, match="32 bits"):
        encode_record(MINUTE, aggregate, 0.01)


def test_a_log_holding_a_newer_record_is_never_folded(
    url: str, raw: redis.Redis | RedisCluster
) -> None:
    """A writer of a newer format shares the series: this version leaves its log alone."""
    storage = RedisStorage(url, compact_every=1)
    series = SeriesKey("fold", "q", "newer")
    log = storage.keys.log(series)
    try:
        batch = random_batch(random.Random(9), [series], [MINUTE], "w", 1, least=1)
        record = encode_record(MINUTE, batch.aggregates[(series, MINUTE)], 0.01)
        assert record is not None
        newer = bytes([2]) + record[1:]
        untyped(raw).set(log, newer)
        assert storage.write(batch) is True
        assert raw_log(raw, log) == newer + record
        with pytest.raises(StorageError, match="upgrade"):
            storage.read_buckets([series], Resolution.minute, MINUTE, MINUTE + 1)
    finally:
        storage.close()
