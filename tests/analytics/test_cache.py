"""The window cache answers exactly what a fresh read gives, whatever was written when.

Every test compares the cached figures with :meth:`JobReader.figures` read afresh at the
same instant, after writes of every kind: to the minute being written, late to an old
minute (a recorder retrying after an outage), of a series never seen, before the window in
its first day, and writes landing between the cache's own reads.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from queuelens.analytics.cache import WindowCache
from queuelens.analytics.overview import Analytics
from queuelens.analytics.query import JobReader, WindowFigures
from queuelens.analytics.summary import Stats
from queuelens.analytics.window import Window, parse_window
from queuelens.model import Aggregate, FlushBatch, JobOutcome, JobStatus, SeriesKey, bucket_start
from queuelens.storage import Storage, open_storage
from queuelens.storage.base import WindowReads

# In the middle of a UTC day, so that 1h and 6h windows lie in one day and 24h in two.
NOW = bucket_start(time.time(), 86400) - 86400 + 13 * 3600 + 25 * 60 + 17.0
MINUTE = 60


@pytest.fixture(params=["sqlite", "postgresql"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'q.db'}"
    else:
        url = request.getfixturevalue("postgres_url")
    opened = open_storage(url, migrate=True)
    try:
        yield opened
    finally:
        opened.close()


class Writer:
    """One recorder: numbered batches of outcomes at given times."""

    def __init__(self, storage: Storage, seed: int = 1) -> None:
        self.storage = storage
        self.rng = random.Random(seed)
        self.sequence = 0

    def write(self, at: float, app: str, queue: str, job: str, n: int = 3) -> None:
        aggregate = Aggregate()
        for _ in range(n):
            failed = self.rng.random() < 0.2
            aggregate.add(
                JobOutcome(
                    queue,
                    job,
                    JobStatus.failed if failed else JobStatus.succeeded,
                    duration_s=self.rng.lognormvariate(-2, 1),
                    wait_s=self.rng.expovariate(2.0),
                    cpu_s=self.rng.uniform(0, 0.1),
                    memory_peak_mb=self.rng.uniform(50, 150),
                    exception_type=self.rng.choice(["IOError", "KeyError"]) if failed else None,
                    exception_message=f"at {at}" if failed else None,
                ),
                at,
            )
        self.sequence += 1
        key = (SeriesKey(app, queue, job), bucket_start(at, MINUTE))
        batch = FlushBatch("w", self.sequence, at, {key: aggregate}, {(app, queue): "rq"})
        assert self.storage.write(batch)


def history(writer: Writer, hours: float = 26) -> None:
    """Outcomes every few minutes over the last ``hours`` on 2 apps, 3 queues, 5 jobs."""
    jobs = [
        ("billing", "emails", "send"),
        ("billing", "emails", "digest"),
        ("billing", "invoices", "render"),
        ("search", "index", "reindex"),
        ("search", "index", "purge"),
    ]
    at = NOW - hours * 3600
    while at < NOW:
        app, queue, job = writer.rng.choice(jobs)
        writer.write(at, app, queue, job, n=writer.rng.randint(1, 5))
        at += writer.rng.uniform(60, 600)
    writer.write(NOW - 1, "billing", "emails", "send")  # the minute being written


def flatten(value: Any, prefix: str = "") -> dict[str, Any]:
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            out.update(flatten(item, f"{prefix}.{key}"))
        return out
    if isinstance(value, list):
        out = {}
        for i, item in enumerate(value):
            out.update(flatten(item, f"{prefix}[{i}]"))
        return out
    return {prefix: value}


def assert_same_stats(got: Stats, want: Stats, where: str) -> None:
    left, right = flatten(got.as_dict()), flatten(want.as_dict())
    assert left.keys() == right.keys(), where
    for name, expected in right.items():
        actual = left[name]
        if isinstance(expected, float) and isinstance(actual, float):
            # sums are added in another order: equal up to rounding
            assert math.isclose(actual, expected, rel_tol=1e-9, abs_tol=1e-12), (where, name)
        else:
            assert actual == expected, (where, name)


def assert_same(got: WindowFigures, want: WindowFigures) -> None:
    assert got.window == want.window
    assert [(j.app, j.queue, j.job) for j in got.jobs] == [
        (j.app, j.queue, j.job) for j in want.jobs
    ]
    for mine, fresh in zip(got.jobs, want.jobs, strict=True):
        assert_same_stats(mine.stats, fresh.stats, f"job {fresh.key}")
    assert got.queues.keys() == want.queues.keys()
    for queue, stats in want.queues.items():
        assert_same_stats(got.queues[queue], stats, f"queue {queue}")
    assert got.apps.keys() == want.apps.keys()
    for app, stats in want.apps.items():
        assert_same_stats(got.apps[app], stats, f"app {app}")
    assert_same_stats(got.totals, want.totals, "totals")


class Clock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


class Spy:
    """Counts the calls of a storage's methods (and can run something after one)."""

    def __init__(self, storage: Storage) -> None:
        self.storage = storage
        self.calls: dict[str, int] = {}
        self.after: dict[str, Callable[[], None]] = {}

    def __getattr__(self, name: str) -> Any:
        method = getattr(self.storage, name)

        def spied(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            result = method(*args, **kwargs)
            after = self.after.pop(name, None)
            if after is not None:
                after()
            return result

        return spied


def cache_of(
    storage: object, clock: Callable[[], float] = lambda: NOW, **options: Any
) -> WindowCache:
    assert isinstance(storage, WindowReads)
    return WindowCache(storage, clock=clock, **options)


def fresh(storage: Storage, window: Window, app: str | None = None) -> WindowFigures:
    return JobReader(storage, clock=lambda: NOW).figures(window, app)


@pytest.mark.parametrize("name", ["15m", "1h", "24h"])
def test_every_kind_of_write_is_seen_on_the_next_query(storage: Storage, name: str) -> None:
    writer = Writer(storage)
    history(writer)
    cache = cache_of(storage)
    window = parse_window(name, now=NOW)
    assert_same(cache.figures(window), fresh(storage, window))

    writes: list[tuple[str, Callable[[], None]]] = [
        ("the minute being written", lambda: writer.write(NOW - 5, "billing", "emails", "send")),
        ("the minute before", lambda: writer.write(NOW - 70, "search", "index", "purge")),
        (
            "a late write in the window",
            lambda: writer.write(NOW - 600, "billing", "emails", "send"),
        ),
        ("a new series, late", lambda: writer.write(NOW - 420, "billing", "emails", "new-job")),
        ("a new app", lambda: writer.write(NOW - 30, "reports", "pdf", "render")),
        ("before the window", lambda: writer.write(window.start - 60, "search", "index", "purge")),
        ("a minute ahead (fast clock)", lambda: writer.write(NOW + 61, "search", "index", "purge")),
        ("an hour ahead", lambda: writer.write(NOW + 3600, "billing", "invoices", "render")),
    ]
    for what, write in writes:
        write()
        got = cache.figures(window)
        assert_same(got, fresh(storage, window))
        assert got.totals.processed == fresh(storage, window).totals.processed, what


def test_an_unchanged_window_costs_one_count(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer, hours=3)
    spy = Spy(storage)
    cache = cache_of(spy)
    window = parse_window("1h", now=NOW)
    first = cache.figures(window)
    spy.calls.clear()
    assert cache.figures(window) is first
    assert spy.calls == {"count_attempts": 1}

    writer.write(NOW - 10, "billing", "emails", "send")
    spy.calls.clear()
    cache.figures(window)
    # only the series written to is read again, and only its last two minutes
    assert spy.calls == {"count_attempts": 1, "read_counts": 1, "read_merged": 1}


def test_writes_between_the_cache_s_own_reads_are_not_lost(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer, hours=3)
    spy = Spy(storage)
    cache = cache_of(spy)
    window = parse_window("1h", now=NOW)
    cache.figures(window)
    landings = [
        # after the change marker, before the counts per series
        ("count_attempts", lambda: writer.write(NOW - 900, "search", "index", "purge")),
        # after the counts, before the contents
        ("read_counts", lambda: writer.write(NOW - 20, "billing", "emails", "send")),
        ("read_counts", lambda: writer.write(NOW - 1200, "billing", "emails", "send")),
        # between reading whole windows and reading edges
        ("read_merged", lambda: writer.write(NOW - 40, "billing", "invoices", "render")),
    ]
    for method, late in landings:
        writer.write(NOW - 15, "search", "index", "reindex")  # something to refresh
        spy.after[method] = late
        cache.figures(window)
        # the write that landed mid-query shows on the next one
        assert_same(cache.figures(window), fresh(storage, window))


def test_an_answer_is_reused_only_within_max_age(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer, hours=2)
    clock = Clock()
    cache = cache_of(storage, clock, max_age_s=1.0)
    window = parse_window("1h", now=NOW)
    before = cache.figures(window)
    writer.write(NOW - 5, "billing", "emails", "send", n=4)
    clock.now += 0.5
    assert cache.figures(window) is before  # checked half a second ago: served as it was
    clock.now += 0.6
    after = cache.figures(window)
    assert after.totals.processed == before.totals.processed + 4
    assert_same(after, fresh(storage, window))


def test_a_moved_window_is_read_whole_and_the_old_one_dropped(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer, hours=3)
    cache = cache_of(storage)
    for minutes in range(4):
        window = parse_window("1h", now=NOW + minutes * 60)
        writer.write(NOW + minutes * 60 - 3, "billing", "emails", "send")
        assert_same(cache.figures(window), fresh(storage, window))
    assert len(cache._windows) == 1


def test_app_filter_and_pruned_series(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer, hours=3)
    cache = cache_of(storage)
    window = parse_window("6h", now=NOW)
    assert_same(cache.figures(window, "search"), fresh(storage, window, "search"))
    writer.write(NOW - 30, "billing", "emails", "send")  # another app: nothing to read
    assert_same(cache.figures(window, "search"), fresh(storage, window, "search"))
    writer.write(NOW - 3000, "search", "index", "purge")
    assert_same(cache.figures(window, "search"), fresh(storage, window, "search"))
    # everything pruned: the series go away
    storage.prune(NOW + 800 * 86400)
    assert cache.figures(window, "search").jobs == ()
    assert cache.figures(window, "search").totals.processed == 0


def test_baseline_counts_follow_late_writes(storage: Storage) -> None:
    writer = Writer(storage)
    today = bucket_start(NOW, 86400)
    for day in range(1, 8):
        writer.write(today - day * 86400 + 3600, "billing", "emails", "send", n=10)
    cache = cache_of(storage)
    window = Window(float(today - 7 * 86400), float(today), "7d-baseline")
    first = cache.queue_counts(window)
    assert sum(first["billing", "emails"].values()) == 70
    assert cache.queue_counts(window) is first
    writer.write(today - 3 * 86400 + 7200, "billing", "emails", "send", n=5)  # a late write
    assert sum(cache.queue_counts(window)["billing", "emails"].values()) == 75


def test_analytics_answers_from_the_cache_as_from_a_fresh_read(storage: Storage) -> None:
    writer = Writer(storage)
    history(writer)
    cached = Analytics(storage, clock=lambda: NOW)
    uncached = Analytics(storage, clock=lambda: NOW, cache=False)
    assert cached.cache is not None
    assert uncached.cache is None
    for _ in range(2):
        for name in ("1h", "24h"):
            window = cached.window(name)
            mine, theirs = cached.overview(window), uncached.overview(window)
            assert_same_stats(mine.totals, theirs.totals, "totals")
            for a, b in zip(mine.queues, theirs.queues, strict=True):
                assert (a.app, a.queue, a.health, a.baseline_failure_rate) == (
                    b.app,
                    b.queue,
                    b.health,
                    b.baseline_failure_rate,
                )
                assert_same_stats(a.stats, b.stats, a.queue)
            jobs = cached.job_summaries(window, "billing", "emails")
            assert [j.key for j in jobs] == [
                j.key for j in uncached.job_summaries(window, "billing", "emails")
            ]
        writer.write(NOW - 8, "billing", "emails", "send")
        writer.write(NOW - 7200, "search", "index", "purge")


def test_storages_without_window_reads_are_read_whole(redis_url: str) -> None:
    storage = open_storage(redis_url)
    try:
        assert Analytics(storage).cache is None
    finally:
        storage.close()
