"""WindowReads of the SQL storages equal what read_buckets gives, merged or counted by hand."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from queuelens.model import Aggregate, Resolution, SeriesKey, bucket_start
from queuelens.storage import Storage, open_storage
from queuelens.storage.base import BucketSpan, WindowReads
from tests.storage.workload import ODD_NAMES, make_batch, random_items

NOW = time.time()
HOUR = bucket_start(NOW, Resolution.hour)
SERIES = [SeriesKey("billing", queue, "job") for queue in ODD_NAMES] + [
    SeriesKey("search", "index", job) for job in ODD_NAMES[:3]
]
SPANS: list[BucketSpan] = [
    (Resolution.hour, HOUR - 3 * 3600, HOUR - 3600),
    (Resolution.minute, HOUR - 3600, HOUR + 3600),
    (Resolution.day, HOUR - 86400, HOUR + 86400),
]


@pytest.fixture(params=["sqlite", "postgresql", "mysql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        url = request.getfixturevalue(
            "postgres_url" if request.param == "postgresql" else "mysql_url"
        )
    opened = open_storage(url, migrate=True)
    items = random_items(SERIES, 3000, HOUR - 3 * 3600, 4 * 3600, seed=5)
    assert opened.write(make_batch(items))
    try:
        yield opened
    finally:
        opened.close()


def by_hand(storage: Storage, spans: list[BucketSpan]) -> dict[SeriesKey, Aggregate]:
    out: dict[SeriesKey, Aggregate] = {}
    for resolution, start, end in spans:
        read = storage.read_buckets(SERIES, resolution, start, end)
        for key, buckets in read.items():
            for aggregate in buckets.values():
                out.setdefault(key, Aggregate()).merge(aggregate)
    return out


def test_read_merged_is_the_merge_of_the_buckets(storage: Storage) -> None:
    assert isinstance(storage, WindowReads)
    for spans in (SPANS[:2], SPANS[2:], [SPANS[1]]):
        got, want = storage.read_merged(SERIES, spans), by_hand(storage, spans)
        assert got.keys() == want.keys()
        for key, aggregate in want.items():
            mine = got[key]
            assert mine.counts == aggregate.counts
            for sketch in ("duration", "wait", "cpu"):
                assert getattr(mine, sketch) == getattr(aggregate, sketch), (key, sketch)
            assert mine.memory_peak.count == aggregate.memory_peak.count
            assert mine.memory_peak.max == aggregate.memory_peak.max
            assert mine.memory_peak.total == pytest.approx(aggregate.memory_peak.total)
            assert mine.exceptions == aggregate.exceptions
    assert storage.read_merged([SeriesKey("billing", "never", "written")], SPANS) == {}
    assert storage.read_merged(SERIES, []) == {}


def test_read_counts_per_span_series_and_bucket(storage: Storage) -> None:
    assert isinstance(storage, WindowReads)
    counted = storage.read_counts(SPANS)
    assert len(counted) == len(SPANS)
    for (resolution, start, end), per_series in zip(SPANS, counted, strict=True):
        read = storage.read_buckets(SERIES, resolution, start, end)
        assert per_series == {
            key: {begin: dict(aggregate.counts) for begin, aggregate in buckets.items()}
            for key, buckets in read.items()
        }
    (search,) = storage.read_counts([SPANS[2]], app="search")
    assert set(search) == {key for key in SERIES if key.app == "search"}


def test_count_attempts_moves_exactly_when_buckets_change(storage: Storage) -> None:
    assert isinstance(storage, WindowReads)
    before = storage.count_attempts(SPANS)
    for (resolution, start, end), (n, attempts) in zip(SPANS, before, strict=True):
        read = storage.read_buckets(SERIES, resolution, start, end)
        assert n == sum(len(buckets) for buckets in read.values())
        assert attempts == sum(a.total for b in read.values() for a in b.values())
    assert storage.count_attempts([(Resolution.minute, HOUR - 7 * 86400, HOUR - 6 * 86400)]) == [
        (0, 0)
    ]
    batch = make_batch(random_items(SERIES[-1:], 2, HOUR + 60, 1, seed=9))
    assert storage.write(batch)
    after = storage.count_attempts(SPANS)
    assert after[0] == before[0]  # three hours ago: untouched
    assert after[1][1] == before[1][1] + 2
    assert after[2][1] == before[2][1] + 2
    assert not storage.write(batch)  # a duplicate: nothing applied
    assert storage.count_attempts(SPANS) == after
    billing = storage.count_attempts(SPANS, app="billing")
    assert billing[2][1] == sum(
        sum(counts.values())
        for key, per_bucket in storage.read_counts([SPANS[2]])[0].items()
        if key.app == "billing"
        for counts in per_bucket.values()
    )
