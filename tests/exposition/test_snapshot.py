"""What a scrape counts: today's jobs per status, histograms, and the cardinality cap,
each equal to the workload written to a real storage."""

from __future__ import annotations

import pytest

from queuelens.exposition import DEFAULT_BUCKETS, TEXT_CONTENT_TYPE, render_metrics
from queuelens.model import STATUSES, JobStatus, SeriesKey
from queuelens.storage import Storage
from tests.exposition.conftest import (
    BOUNCE,
    BUILD,
    ODD,
    SEND,
    TODAY,
    YESTERDAY_AT,
    Workload,
    analytics_of,
    job_labels,
    labels,
    named,
    pick,
    populate,
    samples,
)

# -- job counters and histograms -----------------------------------------------------------


def test_job_counters_equal_the_workload(storage: Storage) -> None:
    work = populate(storage)
    body, content_type = render_metrics(analytics_of(storage), None)
    assert content_type == TEXT_CONTENT_TYPE
    found = samples(body)
    counters = named(found, "queuelens_jobs_total")
    assert len(counters) == 4 * len(STATUSES)  # every status of every series, zeros too
    for key in (SEND, BOUNCE, BUILD, ODD):
        for status in STATUSES:
            want = work.counts[key].get(status, 0)
            got = pick(found, "queuelens_jobs_total", **job_labels(key), status=str(status))
            assert got == want, (key, status)
    # yesterday's 100 builds are not in today's counter
    assert pick(found, "queuelens_jobs_total", **job_labels(BUILD), status="succeeded") == 7
    assert pick(found, "queuelens_dropped_outcomes_total", app="billing") == 4
    assert pick(found, "queuelens_dropped_outcomes_total", app="ops") == 0
    assert pick(found, "queuelens_counters_since_timestamp_seconds") == TODAY


def test_histograms_equal_the_workload(storage: Storage) -> None:
    work = populate(storage)
    found = samples(render_metrics(analytics_of(storage), None)[0])
    for key in (SEND, BOUNCE, BUILD, ODD):
        for name, values in (
            ("queuelens_job_duration_seconds", work.durations[key]),
            ("queuelens_job_wait_seconds", work.waits[key]),
        ):
            series = job_labels(key)
            count = pick(found, f"{name}_count", **series)
            assert count == len(values)
            assert pick(found, f"{name}_sum", **series) == pytest.approx(sum(values), rel=1e-9)
            for bound in DEFAULT_BUCKETS:
                le = str(float(bound))
                want = sum(1 for v in values if v <= bound)
                assert pick(found, f"{name}_bucket", **series, le=le) == want, (key, name, le)
            assert pick(found, f"{name}_bucket", **series, le="+Inf") == count
    # revoked and rejected attempts never ran: counted, but not timed
    total = sum(work.counts[SEND].values())
    assert pick(found, "queuelens_job_duration_seconds_count", **job_labels(SEND)) == total - 2


def test_counters_only_grow_as_jobs_are_recorded(storage: Storage) -> None:
    work = populate(storage)
    analytics = analytics_of(storage)
    before = samples(render_metrics(analytics, None)[0])
    work.write(storage, SEND, {JobStatus.succeeded: 5, JobStatus.failed: 1}, seed=9)
    after = samples(render_metrics(analytics, None)[0])
    for key, value in before.items():
        name = key[0]
        if name.endswith(("_total", "_bucket", "_count", "_sum")):
            assert after[key] >= value, key
    succeeded = ("queuelens_jobs_total", labels(**job_labels(SEND), status="succeeded"))
    assert after[succeeded] == before[succeeded] + 5


# -- cardinality ---------------------------------------------------------------------------


def test_series_past_the_cap_fold_into_other_with_exact_totals(storage: Storage) -> None:
    work = Workload()
    keys = [SeriesKey("billing", queue, f"job{i}") for queue in ("a", "b") for i in range(4)]
    # Yesterday's activity ranks them: job3 of each queue busiest, then job2, ...
    for seed, key in enumerate(keys):
        work.write(
            storage,
            key,
            {JobStatus.succeeded: 10 + int(key.job[-1])},
            at=YESTERDAY_AT,
            seed=seed,
        )
    # Today the least busy of yesterday are the busiest: the choice must not follow them.
    for seed, key in enumerate(keys):
        today = {JobStatus.succeeded: 50 - 10 * int(key.job[-1]), JobStatus.failed: 1}
        work.write(storage, key, today, seed=100 + seed)

    body, _ = render_metrics(analytics_of(storage), None, max_series=3)
    found = samples(body)
    exposed = {
        (dict(k)["queue"], dict(k)["job"])
        for k in named(found, "queuelens_jobs_total")
        if dict(k)["status"] == "succeeded"
    }
    # the three busiest of yesterday: job3 of a and b (13 each), then job2 of a (by name)
    assert exposed == {
        ("a", "job3"),
        ("b", "job3"),
        ("a", "job2"),
        ("a", "__other__"),
        ("b", "__other__"),
    }
    assert pick(found, "queuelens_job_series_folded") == 5
    for queue in ("a", "b"):
        in_queue = [k for k in keys if k.queue == queue]
        for status in (JobStatus.succeeded, JobStatus.failed):
            exported = sum(
                v
                for k, v in named(found, "queuelens_jobs_total").items()
                if dict(k)["queue"] == queue and dict(k)["status"] == str(status)
            )
            assert exported == sum(work.counts[k].get(status, 0) for k in in_queue)
        folded = [k for k in in_queue if (queue, k.job) not in exposed]
        other = {"app": "billing", "queue": queue, "job": "__other__"}
        durations = [d for k in folded for d in work.durations[k]]
        count = pick(found, "queuelens_job_duration_seconds_count", **other)
        assert count == len(durations)
        for bound in DEFAULT_BUCKETS:
            want = sum(1 for d in durations if d <= bound)
            got = pick(found, "queuelens_job_duration_seconds_bucket", **other, le=str(bound))
            assert got == want


def test_no_cap_when_every_series_fits(storage: Storage) -> None:
    populate(storage)
    found = samples(render_metrics(analytics_of(storage), None, max_series=4)[0])
    assert pick(found, "queuelens_job_series_folded") == 0
    assert not any(dict(k)["job"] == "__other__" for k in named(found, "queuelens_jobs_total"))


def test_a_cap_of_zero_keeps_one_series_per_queue(storage: Storage) -> None:
    work = populate(storage)
    found = samples(render_metrics(analytics_of(storage), None, max_series=0)[0])
    jobs = {dict(k)["job"] for k in named(found, "queuelens_jobs_total")}
    assert jobs == {"__other__"}
    emails = {"app": "billing", "queue": "emails", "job": "__other__"}
    want = work.counts[SEND][JobStatus.succeeded] + work.counts[BOUNCE][JobStatus.succeeded]
    assert pick(found, "queuelens_jobs_total", **emails, status="succeeded") == want
