"""Celery end to end: real workers on Redis and RabbitMQ, asserted from what storage holds.

One module-wide run (``celery_run.run_scenarios``) drives every worker kind with a known
workload, each on a queue, app name and SQLite file of its own; the tests check what each
recorded: prefork on both brokers, threads, solo, and the event-stream path.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from typing import Any

import pytest

from queuelens.model import WorkerState
from queuelens.probes import OLDEST_PENDING_AGE_S, PENDING
from tests.integrations.celery_harness import BEAT_S, aggregates, require_broker
from tests.integrations.celery_run import (
    BROKERS,
    EVENTS_APP,
    EXPECTED,
    EXPECTED_EVENT_STREAM,
    MAIN_EXECUTED,
    MAIN_FAILED,
    PRE_START_WAIT_S,
    Observed,
    by_job,
    run_scenarios,
    where,
)
from tests.integrations.celery_tasks import LONG_JOB_S

Run = dict[str, Observed]
MAINS = pytest.mark.parametrize("name", ["redis", "rabbitmq"])


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Run]:
    with run_scenarios(tmp_path_factory.mktemp("celery")) as seen:
        yield seen


def observed(run: Run, name: str) -> Observed:
    """The scenario ``name``; fails (CI) or skips (elsewhere) when its broker is missing."""
    require_broker(BROKERS[name])
    assert name in run, f"the {name} scenario did not run"
    return run[name]


def series(seen: Observed, *, events: bool = False) -> dict[str, Any]:
    """Job name -> the Aggregate of that job over the whole run."""
    found = aggregates(*where(seen.scenario, events))
    return {key.job: aggregate for key, aggregate in found.items()}


@MAINS
def test_exact_counts_per_status(run: Run, name: str) -> None:
    assert by_job(observed(run, name).scenario) == EXPECTED[name]


@MAINS
def test_duration_percentiles_exclude_the_wait(run: Run, name: str) -> None:
    jobs = series(observed(run, name))
    for job, seconds in (("ql.short", 0.1), ("ql.medium", 0.3)):
        for q in (0.5, 0.95):
            value = jobs[job].duration.quantile(q)
            assert value is not None, (job, q)
            assert abs(value - seconds) <= 0.1 * seconds, (job, q, value)


@MAINS
def test_wait_runs_from_enqueue_to_start(run: Run, name: str) -> None:
    jobs = series(observed(run, name))
    for job in ("ql.short", "ql.medium", "ql.fail", "ql.burn"):  # queued before any worker
        assert jobs[job].wait.quantile(0.0) >= PRE_START_WAIT_S, job
    retried = jobs["ql.flaky"].wait.quantile(0.0)  # a retry is re-published: its own wait
    assert retried is not None
    assert retried < 1.0


@MAINS
def test_cpu_and_memory_per_job(run: Run, name: str) -> None:
    jobs = series(observed(run, name))
    cpu = jobs["ql.burn"].cpu.quantile(1.0)
    assert cpu is not None
    assert 0.45 <= cpu <= 0.65
    assert (jobs["ql.short"].cpu.quantile(1.0) or 0.0) < 0.05  # sleeping burns no CPU
    allocate = jobs["ql.allocate"]
    # 50 MiB allocated and touched; Linux updates RSS counters in batches, so allow 1 MiB.
    assert allocate.memory_delta.max >= 49.0
    assert allocate.memory_peak.max >= allocate.memory_delta.max
    assert jobs["ql.short"].memory_delta.max < 10.0


@MAINS
def test_exceptions_by_type(run: Run, name: str) -> None:
    jobs = series(observed(run, name))
    failed = jobs["ql.fail"].exceptions
    assert set(failed) == {"ValueError"}
    assert (failed["ValueError"].count, failed["ValueError"].last_message) == (5, "boom")
    assert jobs["ql.flaky"].exceptions["ConnectionError"].count == 6
    assert set(jobs["ql.soft_limit"].exceptions) == {"billiard.exceptions.SoftTimeLimitExceeded"}
    hard = jobs["ql.hard_limit"]  # reported by the main process: its pool process was killed
    assert set(hard.exceptions) == {"billiard.exceptions.TimeLimitExceeded"}
    assert hard.cpu.count == 0
    assert hard.duration.quantile(0.5) == pytest.approx(0.5, abs=0.1)
    assert set(jobs["ql.nope"].exceptions) == {"celery.exceptions.NotRegistered"}
    assert set(jobs["ql.reject"].exceptions) == {"celery.exceptions.Reject"}


@MAINS
def test_one_worker_shows_busy_while_a_long_job_runs(run: Run, name: str) -> None:
    main = observed(run, name)
    assert main.busy is not None, "no heartbeat showed ql.long running"
    beat = main.busy.heartbeat
    assert beat.state is WorkerState.busy
    assert beat.busy_slots >= 1
    assert main.busy_seen_at - main.busy.last_heartbeat_at < 3 * BEAT_S  # fresh while it ran
    assert (beat.concurrency, beat.framework) == (2, "celery")
    assert main.worker is not None
    assert beat.pid == main.worker.pid
    if name == "redis":  # delivered and not yet acknowledged: the (acks_late) long job
        assert main.reserved is not None
        assert main.reserved >= 1


@MAINS
def test_graceful_stop_is_stopped_with_counters(run: Run, name: str) -> None:
    main = observed(run, name)
    assert main.exit_code == 0
    records = main.scenario.open().list_workers(main.scenario.app_name)
    assert len(records) == 1  # its pool processes never appear as workers
    beat = records[0].heartbeat
    assert records[0].state_at(time.time()) is WorkerState.stopped
    assert (beat.processed, beat.failed, beat.busy_slots) == (MAIN_EXECUTED, MAIN_FAILED, 0)
    assert beat.busy_s > LONG_JOB_S
    assert beat.queues == [main.scenario.queue]


@MAINS
def test_probe_depth_and_growing_age(run: Run, name: str) -> None:
    main = observed(run, name)
    (first_at, first), (second_at, second) = main.probes
    assert [sample.values[PENDING] for sample in first + second] == [main.enqueued] * 2
    storage = main.scenario.open()
    storage.write_gauges(second)
    stored = storage.latest_gauges("queue", main.scenario.app_name)
    assert [(g.key, g.values[PENDING]) for g in stored] == [(main.scenario.queue, main.enqueued)]
    if name == "redis":  # the age comes from the enqueue time in the oldest message
        age1, age2 = first[0].values[OLDEST_PENDING_AGE_S], second[0].values[OLDEST_PENDING_AGE_S]
        assert age1 >= 0
        assert age2 - age1 == pytest.approx(second_at - first_at, abs=0.1)
        assert age2 >= PRE_START_WAIT_S - 0.1
    else:
        assert OLDEST_PENDING_AGE_S not in first[0].values  # AMQP cannot tell it


def test_threads_pool_then_sigkill_turns_stale(run: Run) -> None:
    threads = observed(run, "threads")
    assert by_job(threads.scenario) == EXPECTED["threads"]
    jobs = series(threads)
    cpu = jobs["ql.burn"].cpu.quantile(1.0)  # the thread's own CPU, with other threads busy
    assert cpu is not None
    assert 0.27 <= cpu <= 0.4
    assert threads.exit_code == -signal.SIGKILL
    (record,) = threads.scenario.open().list_workers(threads.scenario.app_name)
    assert record.heartbeat.state is not WorkerState.stopped
    assert record.last_heartbeat_at <= threads.stopped_at + 0.1  # silent since the kill
    assert record.state_at(threads.stopped_at + 3.5 * BEAT_S) is WorkerState.stale
    assert record.state_at(threads.stopped_at + 21 * BEAT_S) is WorkerState.dead


def test_embedded_solo_pool(run: Run) -> None:
    solo = observed(run, "solo")
    assert by_job(solo.scenario) == EXPECTED["solo"]
    (record,) = solo.scenario.open().list_workers(solo.scenario.app_name)
    assert record.state_at(time.time()) is WorkerState.stopped
    beat = record.heartbeat
    assert (beat.processed, beat.failed, beat.concurrency) == (7, 1, 1)


def test_event_stream_records_what_the_workers_did(run: Run) -> None:
    events = observed(run, "events")
    assert by_job(events.scenario, events=True) == EXPECTED_EVENT_STREAM
    assert by_job(events.scenario) == EXPECTED["events"]  # the in-worker path, same worker
    jobs = series(events, events=True)
    short = jobs["ql.short"]
    assert short.cpu.count == 0  # not in the events
    assert short.memory_peak.count == 0
    assert short.duration.quantile(0.5) == pytest.approx(0.1, rel=0.1)
    assert short.wait.count == 6
    assert set(jobs["ql.fail"].exceptions) == {"ValueError"}
    assert jobs["ql.fail"].exceptions["ValueError"].last_message == "boom"
    hard = jobs["ql.hard_limit"].exceptions  # type from the traceback, as in the worker
    assert set(hard) == {"billiard.exceptions.TimeLimitExceeded"}
    for path in (series(events), jobs):  # countdown=4: the wait starts at the eta
        later = path["ql.later"].wait.quantile(1.0)
        assert later is not None
        assert later < 0.5
    storage, _ = where(events.scenario, events=True)
    (record,) = storage.list_workers(EVENTS_APP)
    assert record.heartbeat.state is WorkerState.stopped
    assert record.heartbeat.processed == 14  # executions the worker reported
