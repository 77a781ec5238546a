"""The module-wide Celery run: known workloads on every worker kind, watched to the end.

    with run_scenarios(tmp_path) as seen:       # {"redis": Observed, "rabbitmq": ..., ...}
        seen["redis"].scenario.open()           # the storage that worker wrote to

Phase 1 runs the short scenarios (a threads worker then SIGKILLed, a ``-E`` worker with the
event-stream consumer, an embedded solo worker) while the main workloads wait in their
queues; phase 2 runs the main workloads on prefork workers (Redis and RabbitMQ) at once,
with little else competing for the CPU, so that durations can be checked to 10%.
"""

from __future__ import annotations

import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import celery
from celery import signals

from queuelens.config import load_settings
from queuelens.integrations.celery import instrument
from queuelens.integrations.celery_events import run_celery_events
from queuelens.model import GaugeSample, WorkerState
from queuelens.probes import RESERVED, ProbeConfig, QueueProbe, build_probe
from queuelens.storage import Storage, WorkerRecord
from tests.conftest import _reachable
from tests.integrations.celery_harness import (
    BEAT_S,
    FLUSH_S,
    RABBITMQ_BROKER,
    REDIS_BROKER,
    Job,
    Scenario,
    Worker,
    broker_problem,
    counts,
    send,
    wait_until,
)
from tests.integrations.celery_tasks import LONG_JOB_S, make_app

#: the main workloads wait at least this long in their queues before a worker starts
PRE_START_WAIT_S = 2.0
#: the app name the event-stream consumer records under
EVENTS_APP = "events"

MAIN: list[Job] = [
    ("ql.short", [0.1], 19, {}),
    ("ql.short", [0.1], 1, {"priority": 9}),  # a Redis priority sub-queue
    ("ql.medium", [0.3], 10, {}),
    ("ql.fail", ["boom"], 5, {}),
    ("ql.flaky", [2], 3, {}),
    ("ql.burn", [0.5], 1, {}),
    ("ql.allocate", [50], 1, {}),
    ("ql.soft_limit", [], 1, {}),
    ("ql.hard_limit", [], 1, {}),
    ("ql.reject", [], 1, {}),
    ("ql.nope", [], 1, {}),  # registered nowhere
    ("ql.long", [LONG_JOB_S], 1, {}),
]
#: expired before a worker runs. Only on Redis: Celery turns ``expires`` into a message TTL
#: on RabbitMQ, and the broker drops the message unseen.
EXPIRING: Job = ("ql.sleep", [0.01], 1, {"expires": 1.0})
EXPECTED_MAIN = {
    ("ql.short", "succeeded"): 20,
    ("ql.medium", "succeeded"): 10,
    ("ql.fail", "failed"): 5,
    ("ql.flaky", "retried"): 6,
    ("ql.flaky", "succeeded"): 3,
    ("ql.burn", "succeeded"): 1,
    ("ql.allocate", "succeeded"): 1,
    ("ql.soft_limit", "timed_out"): 1,
    ("ql.hard_limit", "timed_out"): 1,
    ("ql.reject", "rejected"): 1,
    ("ql.nope", "rejected"): 1,
    ("ql.long", "succeeded"): 1,
}
#: attempts a pool process ran (all but the unknown and the expired task), and failed ones
MAIN_EXECUTED, MAIN_FAILED = 50, 7
THREADS: list[Job] = [
    ("ql.short", [0.1], 4, {}),
    ("ql.fail", ["boom"], 1, {}),
    ("ql.burn", [0.3], 1, {}),
]
EVENTS: list[Job] = [
    ("ql.short", [0.1], 6, {}),
    ("ql.fail", ["boom"], 2, {}),
    ("ql.flaky", [2], 1, {}),
    ("ql.reject", [], 1, {}),
    ("ql.nope", [], 1, {}),
    ("ql.hard_limit", [], 1, {}),  # Celery 5.7 sends task-failed twice for it
    ("ql.later", [0.01], 1, {"countdown": 4}),  # runs on an idle worker at its eta
]
SOLO: list[Job] = [
    ("ql.short", [0.1], 3, {}),
    ("ql.fail", ["boom"], 1, {}),
    ("ql.flaky", [1], 1, {}),
    ("ql.reject", [], 1, {}),
    ("ql.nope", [], 1, {}),
    ("ql.sleep", [0.01], 1, {"expires": 0.3}),
]
EXPECTED: dict[str, dict[tuple[str, str], int]] = {
    "redis": {**EXPECTED_MAIN, ("ql.sleep", "revoked"): 1},
    "rabbitmq": EXPECTED_MAIN,
    "threads": {
        ("ql.short", "succeeded"): 4,
        ("ql.fail", "failed"): 1,
        ("ql.burn", "succeeded"): 1,
    },
    "events": {
        ("ql.short", "succeeded"): 6,
        ("ql.fail", "failed"): 2,
        ("ql.flaky", "retried"): 2,
        ("ql.flaky", "succeeded"): 1,
        ("ql.reject", "rejected"): 1,
        ("ql.nope", "rejected"): 1,
        ("ql.hard_limit", "timed_out"): 1,
        ("ql.later", "succeeded"): 1,
    },
    "solo": {
        ("ql.short", "succeeded"): 3,
        ("ql.fail", "failed"): 1,
        ("ql.flaky", "retried"): 1,
        ("ql.flaky", "succeeded"): 1,
        ("ql.reject", "rejected"): 1,
        ("ql.nope", "rejected"): 1,
        ("ql.sleep", "revoked"): 1,
    },
}
#: what the event stream shows of the events workload. Before Celery 5.7 a task that raises
#: ``Reject`` (its message already acknowledged) sends no event at all.
EXPECTED_EVENT_STREAM = {
    key: n
    for key, n in EXPECTED["events"].items()
    if key[0] != "ql.reject" or tuple(map(int, celery.__version__.split(".")[:2])) >= (5, 7)
}
BROKERS = {
    "redis": REDIS_BROKER,
    "rabbitmq": RABBITMQ_BROKER,
    "threads": REDIS_BROKER,
    "events": REDIS_BROKER,
    "solo": REDIS_BROKER,
}


@dataclass
class Observed:
    """What the run saw of one scenario besides its storage."""

    scenario: Scenario
    worker: Worker | None = None
    embedded: Any = None  # the in-process WorkController of the solo scenario
    enqueued: int = 0
    probes: list[tuple[float, list[GaugeSample]]] = field(default_factory=list)
    reserved: float | None = None
    busy: WorkerRecord | None = None
    busy_seen_at: float = 0.0
    exit_code: int | None = None
    stopped_at: float = 0.0
    done_at: float | None = None


def where(scenario: Scenario, events: bool = False) -> tuple[Storage, str]:
    """The storage and app name of the in-worker path, or of the event-stream path."""
    if events:
        assert scenario.events_storage is not None
        return scenario.events_storage, EVENTS_APP
    return scenario.open(), scenario.app_name


def by_job(scenario: Scenario, *, events: bool = False) -> dict[tuple[str, str], int]:
    """``(job, status) -> attempts``, all of them on the scenario's own queue."""
    found = counts(*where(scenario, events))
    assert {queue for queue, _, _ in found} <= {scenario.queue}
    return {(job, status): n for (_, job, status), n in found.items()}


@contextmanager
def run_scenarios(base: Path) -> Iterator[dict[str, Observed]]:
    seen = {
        name: Observed(Scenario(name, broker, base))
        for name, broker in BROKERS.items()
        if broker_problem(broker) is None
        and _reachable(6379 if broker.startswith("redis") else 5672)
    }
    mains = [seen[name] for name in ("redis", "rabbitmq") if name in seen]
    short: dict[str, Observed] = {n: seen[n] for n in ("threads", "events", "solo") if n in seen}
    stop_consumer, consumer = threading.Event(), None
    probes: dict[str, QueueProbe] = {}
    try:
        for main in mains:
            jobs = [*MAIN, EXPIRING] if main.scenario.name == "redis" else MAIN
            main.enqueued = send(main.scenario.client, main.scenario.queue, jobs)
            probes[main.scenario.name] = _probe(main.scenario)
        enqueued_at = time.time()
        for main in mains:
            main.probes.append((time.time(), probes[main.scenario.name].sample()))
        if "events" in short:
            consumer = _start_consumer(short["events"].scenario, stop_consumer)
        for name, jobs in (("threads", THREADS), ("events", EVENTS), ("solo", SOLO)):
            if name in short:
                short[name].enqueued = send(
                    short[name].scenario.client, short[name].scenario.queue, jobs
                )
        for name, pool, send_events in (("threads", "threads", False), ("events", "prefork", True)):
            if name in short:
                scenario = short[name].scenario
                short[name].worker = Worker.start(scenario, pool=pool, events=send_events)
        if "solo" in short:
            time.sleep(0.4)  # let its expiring message expire
            short["solo"].embedded = _start_embedded_solo(short["solo"].scenario)
        _drive(short, probes)
        if "events" in short:
            events = short["events"].scenario
            wait_until(
                lambda: _state(events, events=True) is WorkerState.stopped,
                20,
                what="worker-offline on the event stream",
            )
        time.sleep(max(enqueued_at + PRE_START_WAIT_S - time.time(), 0.0))
        for main in mains:
            main.probes.append((time.time(), probes[main.scenario.name].sample()))
            main.worker = Worker.start(main.scenario)
        _drive({main.scenario.name: main for main in mains}, probes)
        yield seen
    finally:
        for probe in probes.values():
            probe.close()
        stop_consumer.set()
        if consumer is not None:
            consumer.join(20)
        for observed in seen.values():
            if observed.embedded is not None:
                observed.embedded.stop()
            if observed.worker is not None:
                observed.worker.kill_group()
            observed.scenario.cleanup()


def _probe(scenario: Scenario) -> QueueProbe:
    redis = scenario.broker.startswith("redis")
    options = {"global_keyprefix": scenario.keyprefix} if redis else {}
    config = ProbeConfig("celery", scenario.broker, scenario.app_name, [scenario.queue], options)
    return build_probe(config)


def _start_consumer(scenario: Scenario, stop: threading.Event) -> threading.Thread:
    settings = load_settings(
        None, {}, storage_url=scenario.events_url, app=EVENTS_APP, flush_interval=FLUSH_S
    )
    ready = threading.Event()
    thread = threading.Thread(
        target=run_celery_events,
        args=(scenario.client,),
        kwargs={"settings": settings, "stop": stop, "ready": ready},
        daemon=True,
    )
    thread.start()
    assert ready.wait(15), "the event consumer did not start listening"
    return thread


def _start_embedded_solo(scenario: Scenario) -> Any:
    """Celery's own WorkController with the solo pool, in this process (and its coverage)."""
    app = make_app(scenario.broker, queue=scenario.queue, keyprefix=scenario.keyprefix)
    settings = load_settings(
        None,
        {},
        storage_url=scenario.storage_url,
        app=scenario.app_name,
        flush_interval=FLUSH_S,
        heartbeat_interval=BEAT_S,
    )
    instrument(app, settings=settings)
    app.set_current()  # the solo pool's tracer finds tasks through the current app
    app.set_default()
    worker = app.WorkController(
        pool_cls="solo",
        concurrency=1,
        queues=[scenario.queue],
        hostname=f"solo-{scenario.queue}",
        without_heartbeat=True,
        without_mingle=True,
        without_gossip=True,
        loglevel="WARNING",
        ready_callback=lambda consumer: signals.worker_ready.send(sender=consumer),
    )
    threading.Thread(target=worker.start, daemon=True).start()
    return worker


def _state(scenario: Scenario, *, events: bool = False) -> WorkerState | None:
    storage, app = where(scenario, events)
    records = storage.list_workers(app)
    return records[0].state_at(time.time()) if records else None


def _done(name: str, observed: Observed) -> bool:
    want = sum(EXPECTED[name].values())
    have = sum(by_job(observed.scenario).values())
    if name == "events":
        streamed = sum(by_job(observed.scenario, events=True).values())
        return have >= want and streamed >= sum(EXPECTED_EVENT_STREAM.values())
    return have >= want


def _drive(pending: dict[str, Observed], probes: dict[str, QueueProbe]) -> None:
    """Watch scenarios until each has recorded its workload (and nothing more for a few
    flushes), then stop its worker the way its test wants: threads SIGKILL, others SIGTERM."""
    pending = dict(pending)
    deadline = time.monotonic() + 90
    while pending:
        if time.monotonic() > deadline:
            report = {name: (by_job(o.scenario), EXPECTED[name]) for name, o in pending.items()}
            logs = "\n".join(o.worker.tail() for o in pending.values() if o.worker is not None)
            raise AssertionError(f"scenarios not done: {report}\n{logs}")
        for name, observed in list(pending.items()):
            if name in probes and observed.busy is None:
                _look_for_busy(observed, probes[name])
            if not _done(name, observed):
                continue
            if observed.done_at is None:  # settle: a double count would show up now
                observed.done_at = time.monotonic()
            if time.monotonic() - observed.done_at < 3 * FLUSH_S:
                continue
            observed.stopped_at = time.time()
            if observed.embedded is not None:
                observed.embedded.stop()
                observed.embedded = None
            elif observed.worker is not None:
                observed.worker.signal(signal.SIGKILL if name == "threads" else signal.SIGTERM)
                observed.exit_code = observed.worker.wait(30)
            del pending[name]
        time.sleep(0.25)


def _look_for_busy(main: Observed, probe: QueueProbe) -> None:
    records = main.scenario.open().list_workers(main.scenario.app_name)
    if records and "ql.long" in records[0].heartbeat.current_jobs:
        main.busy, main.busy_seen_at = records[0], time.time()
        if main.scenario.broker.startswith("redis"):
            main.reserved = probe.sample()[0].values.get(RESERVED)
