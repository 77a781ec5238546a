"""Celery without touching the workers: record jobs and workers from the event stream.

    from queuelens.config import load_settings
    from queuelens.integrations.celery_events import run_celery_events

    run_celery_events("proj", settings=load_settings())            # like celery -A proj
    run_celery_events("redis://localhost:6379/0", settings=load_settings())

Workers must send task events (``celery worker -E``, or ``worker_send_task_events = True``).
Each attempt becomes the same :class:`~queuelens.model.JobOutcome` the in-worker integration
records, in the series ``(app, queue, task name)``: status from ``task-succeeded/failed/
retried/revoked/rejected``, execution time from the event's ``runtime`` (or started to
finished), wait time from ``task-sent`` (publishers with ``task_send_sent_event = True``) or
else ``task-received`` (which leaves out the time spent in the broker), or the eta if later,
to ``task-started``. CPU time and memory are not in the events and stay unknown; exception
types are class names only (the events carry a repr). Queues come from ``task-sent``, else
from the app's task routes (so ``-A proj`` beats a bare broker URL), else the default queue.

``worker-online/heartbeat/offline`` become worker heartbeats (``offline`` is ``stopped``). The
events carry no pool size: a worker's concurrency is the most jobs seen running at once.
Memory stays bounded: at most ``max_tasks`` in-flight tasks are tracked (least recently
updated dropped first). The consumer never broadcasts to workers.
"""

from __future__ import annotations

import ast
import logging
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from queuelens.config import Settings
from queuelens.integrations._runtime import Runtime
from queuelens.model import JobOutcome, JobStatus, WorkerHeartbeat, WorkerState

__all__ = ["EventStats", "run_celery_events"]

log = logging.getLogger("queuelens.integrations.celery_events")

_TIME_LIMITS = {"TimeLimitExceeded", "SoftTimeLimitExceeded"}
_TERMINAL = ("succeeded", "failed", "retried", "revoked", "rejected")
_REPR = re.compile(r"^([A-Za-z_][\w.]*)\((.*)\)$", re.DOTALL)
#: ``module.Type: message`` (or a bare ``Type``): the last line of a Python traceback
_LAST_LINE = re.compile(r"^([A-Za-z_][\w.]*)(?::\s?(.*))?$")
_MAX_WORKERS = 5000
_MAX_CURRENT = 1000


@dataclass
class EventStats:
    """What one :func:`run_celery_events` run did."""

    events: int = 0
    outcomes: int = 0
    heartbeats: int = 0
    errors: int = 0
    reconnects: int = 0


def run_celery_events(
    app_or_broker: Any,
    *,
    settings: Settings,
    stop_after_s: float | None = None,
    app_name: str | None = None,
    max_tasks: int = 10_000,
    stop: threading.Event | None = None,
    ready: threading.Event | None = None,
) -> EventStats:
    """Consume the event stream until ``stop`` is set or ``stop_after_s`` passes (else forever).

    ``app_or_broker`` is a Celery app, an app spec as for ``celery -A`` (``"proj"``,
    ``"proj.celery:app"``) or a broker URL (``"amqp://..."``, ``"redis://..."``).
    ``settings`` says where to store (and ``app_name`` overrides ``settings.app``). ``ready``
    is set once the consumer listens. Broker errors are logged and retried with backoff; the
    buffered metrics are flushed on return. Returns counters of what was done; raises when
    the broker cannot be used at all (an unknown transport, a missing client library).
    """
    celery_app = _celery_app(app_or_broker)
    runtime = Runtime.create("celery", app=app_name, settings=settings)
    consumer = _EventConsumer(runtime, celery_app, max_tasks)
    deadline = None if stop_after_s is None else time.monotonic() + stop_after_s
    stop = stop or threading.Event()

    def finished() -> bool:
        return stop.is_set() or (deadline is not None and time.monotonic() >= deadline)

    backoff = 1.0
    recoverable = _recoverable_errors(celery_app)
    try:
        while not finished():
            try:
                _consume(celery_app, consumer, finished, ready)
                backoff = 1.0
            except recoverable as exc:  # broker down or connection lost: retry
                consumer.stats.reconnects += 1
                log.warning(
                    "queuelens: celery event stream failed (%s); retrying in %.0fs", exc, backoff
                )
                stop.wait(
                    backoff
                    if deadline is None
                    else min(backoff, max(deadline - time.monotonic(), 0.0))
                )
                backoff = min(backoff * 2, 30.0)
    finally:
        runtime.close()
        if celery_app is not app_or_broker:
            celery_app.close()  # the app made here for a URL or spec: its broker connections
    return consumer.stats


def _celery_app(app_or_broker: Any) -> Any:
    if not isinstance(app_or_broker, str):
        return app_or_broker
    from celery import Celery

    if "://" in app_or_broker:
        return Celery("queuelens-events", broker=app_or_broker, set_as_current=False)
    from celery.app.utils import find_app

    return find_app(app_or_broker)


def _recoverable_errors(celery_app: Any) -> tuple[type[BaseException], ...]:
    """Errors of a broker that is down or went away; others (bad config) are raised."""
    from kombu.exceptions import OperationalError

    connection = celery_app.connection_for_read()  # only describes it: nothing connects
    try:
        errors = (*connection.connection_errors, *connection.channel_errors)
    finally:
        connection.release()
    return (OSError, OperationalError, *errors)


def _consume(celery_app: Any, consumer: _EventConsumer, finished: Any, ready: Any) -> None:
    with celery_app.connection_for_read() as connection:
        connection.ensure_connection(max_retries=0)  # an error comes back here, to back off
        receiver = celery_app.events.Receiver(connection, handlers={"*": consumer.on_event})
        receiver.connect_max_retries = 0
        receiver.event_from_message = _unlocalized(receiver)
        iterations = 0

        def on_iteration() -> None:
            nonlocal iterations
            iterations += 1
            if iterations == 2 and ready is not None:  # subscribed by the first drain
                ready.set()
            if finished():
                receiver.should_stop = True

        receiver.on_iteration = on_iteration
        for _ in receiver.consume(limit=None, timeout=None, safety_interval=0.5, wakeup=False):
            pass


def _unlocalized(receiver: Any) -> Any:
    """Keep event timestamps as sent: they are unix times, which need no time zone fix."""
    original = type(receiver).event_from_message

    def event_from_message(body: Any, localize: bool = True, **kwargs: Any) -> Any:
        return original(receiver, body, localize=False, **kwargs)

    return event_from_message


@dataclass(slots=True)
class _Task:
    name: str | None = None
    queue: str | None = None
    sent_at: float | None = None
    received_at: float | None = None
    started_at: float | None = None
    eta: float | None = None
    hostname: str | None = None


@dataclass(slots=True)
class _Worker:
    hostname: str
    pid: int
    started_at: float
    freq: float = 2.0
    last_at: float = 0.0
    active: int = 0
    slots: int = 1
    processed: int = 0
    failed: int = 0
    busy_s: float = 0.0
    idle_s: float = 0.0
    current: dict[str, str] = field(default_factory=dict)


class _EventConsumer:
    def __init__(self, runtime: Runtime, celery_app: Any, max_tasks: int) -> None:
        self.runtime = runtime
        self.celery_app = celery_app
        self.max_tasks = max(int(max_tasks), 1)
        self.tasks: OrderedDict[str, _Task] = OrderedDict()
        #: tasks whose attempt was recorded; Celery may repeat ``task-failed`` (time limits)
        self.done: OrderedDict[str, None] = OrderedDict()
        self.workers: OrderedDict[str, _Worker] = OrderedDict()
        self.queues: dict[str, str] = {}
        self.stats = EventStats()

    def on_event(self, event: dict[str, Any]) -> None:
        self.stats.events += 1
        try:
            kind = str(event.get("type", ""))
            if kind.startswith("task-"):
                self._task_event(kind[5:], event)
            elif kind.startswith("worker-"):
                self._worker_event(kind[7:], event)
        except Exception:
            self.stats.errors += 1
            if self.stats.errors == 1 or self.stats.errors % 100 == 0:
                log.exception(
                    "queuelens: could not handle a celery event (%d so far)", self.stats.errors
                )

    # -- tasks ------------------------------------------------------------------------------

    def _task(self, uuid: str) -> _Task:
        task = self.tasks.get(uuid)
        if task is None:
            task = self.tasks[uuid] = _Task()
            while len(self.tasks) > self.max_tasks:
                self.tasks.popitem(last=False)
        else:
            self.tasks.move_to_end(uuid)
        return task

    def _task_event(self, kind: str, event: dict[str, Any]) -> None:
        uuid = str(event.get("uuid") or "")
        if not uuid:
            raise ValueError(f"a {kind} event without a task id")
        at = float(event.get("timestamp") or time.time())
        if kind in _TERMINAL and uuid in self.done and uuid not in self.tasks:
            return
        self.done.pop(uuid, None)
        task = self._task(uuid)
        if event.get("name"):
            task.name = str(event["name"])
        if kind in ("sent", "received") and event.get("eta"):
            task.eta = _unix(event["eta"])
        if kind == "sent":
            task.sent_at = at
            task.queue = event.get("queue") or event.get("routing_key") or task.queue
        elif kind == "received":
            task.received_at, task.started_at = at, None
            task.hostname = event.get("hostname") or task.hostname
        elif kind == "started":
            task.started_at = at
            task.hostname = event.get("hostname") or task.hostname
            worker = self.workers.get(task.hostname or "")
            if worker is not None and len(worker.current) < _MAX_CURRENT:
                worker.current[uuid] = task.name or "unknown"
        elif kind in _TERMINAL:
            self._finished(uuid, task, kind, event, at)

    def _finished(
        self, uuid: str, task: _Task, kind: str, event: dict[str, Any], at: float
    ) -> None:
        status = JobStatus.succeeded if kind == "succeeded" else JobStatus(kind)
        exc_type, message = _parse_exception(event.get("exception"), event.get("traceback"))
        short_type = (exc_type or "").rsplit(".", 1)[-1]
        if short_type == "NotRegistered" and task.name is None:
            status = JobStatus.rejected  # the worker refused a task it does not know
            task.name, exc_type = message, "celery.exceptions.NotRegistered"
        elif short_type == "Reject":  # raised by the task: the worker rejected its message
            status = JobStatus.rejected
        elif kind == "failed" and short_type in _TIME_LIMITS:
            status = JobStatus.timed_out
        duration = None
        if kind == "succeeded" and isinstance(event.get("runtime"), int | float):
            duration = float(event["runtime"])
        elif task.started_at is not None:
            duration = max(at - task.started_at, 0.0)
        wait = None
        base = task.sent_at if task.sent_at is not None else task.received_at
        if task.started_at is not None and base is not None:
            wait = max(task.started_at - max(base, task.eta or base), 0.0)
        name = task.name or "unknown"
        self.runtime.recorder.record(
            JobOutcome(
                queue=task.queue or self._queue_for(name),
                job=name,
                status=status,
                duration_s=duration,
                wait_s=wait,
                exception_type=exc_type,
                exception_message=message,
                finished_at=at,
            )
        )
        self.stats.outcomes += 1
        worker = self.workers.get(task.hostname or str(event.get("hostname") or ""))
        if worker is not None:
            worker.current.pop(uuid, None)
            worker.failed += status in (JobStatus.failed, JobStatus.timed_out)
        if kind == "retried":  # the same uuid comes back as a new message
            if (
                task.sent_at is not None
                and task.started_at is not None
                and (task.sent_at <= task.started_at)
            ):
                task.sent_at = None  # that was the previous attempt's
            task.started_at = task.received_at = None
        else:
            self.tasks.pop(uuid, None)
            self.done[uuid] = None
            while len(self.done) > self.max_tasks:
                self.done.popitem(last=False)

    def _queue_for(self, name: str) -> str:
        queue = self.queues.get(name)
        if queue is None:
            try:
                registered = self.celery_app.tasks.get(name)
                queue = getattr(registered, "queue", None)
                if not isinstance(queue, str):
                    route = self.celery_app.amqp.router.route({}, name)
                    queue = getattr(route.get("queue"), "name", None)
            except Exception:
                queue = None
            queue = queue or self.celery_app.conf.task_default_queue or "celery"
            if len(self.queues) < 10_000:
                self.queues[name] = queue
        return queue

    # -- workers ----------------------------------------------------------------------------

    def _worker_event(self, kind: str, event: dict[str, Any]) -> None:
        node = str(event.get("hostname") or "unknown")
        at = float(event.get("timestamp") or time.time())
        worker = self.workers.get(node)
        if worker is None or kind == "online":
            worker = self.workers[node] = _Worker(node, int(event.get("pid") or 0), at, last_at=at)
            while len(self.workers) > _MAX_WORKERS:
                self.workers.popitem(last=False)
        self.workers.move_to_end(node)
        elapsed = max(at - worker.last_at, 0.0)
        worker.busy_s += elapsed * min(worker.active, worker.slots)
        worker.idle_s += elapsed * max(worker.slots - worker.active, 0)
        worker.last_at = at
        worker.freq = float(event.get("freq") or worker.freq)
        worker.active = int(event.get("active") or 0)
        worker.slots = max(worker.slots, worker.active)
        worker.processed = max(worker.processed, int(event.get("processed") or 0))
        if worker.active == 0:
            worker.current.clear()
        state = WorkerState.busy if worker.active else WorkerState.idle
        if kind == "offline":
            state = WorkerState.stopped
            self.workers.pop(node, None)
        self._beat(worker, state, at)

    def _beat(self, worker: _Worker, state: WorkerState, at: float) -> None:
        settings = self.runtime.settings
        host = worker.hostname.split("@", 1)[-1]
        beat = WorkerHeartbeat(
            worker_id=f"celery:{worker.hostname}:{worker.pid}",
            app=settings.app,
            framework="celery",
            hostname=host,
            pid=worker.pid,
            name=worker.hostname,
            queues=[],
            concurrency=worker.slots,
            busy_slots=min(worker.active, worker.slots),
            state=state,
            started_at=worker.started_at,
            sent_at=at,
            heartbeat_interval_s=worker.freq,
            current_jobs=list(worker.current.values()),
            processed=worker.processed,
            failed=worker.failed,
            busy_s=worker.busy_s,
            idle_s=worker.idle_s,
        )
        try:
            self.runtime.storage().heartbeat(beat)
            self.stats.heartbeats += 1
        except Exception as exc:
            self.stats.errors += 1
            log.warning("queuelens: storing the heartbeat of %s failed: %s", worker.hostname, exc)


def _unix(value: Any) -> float | None:
    """An eta field (ISO 8601 text) as unix time; None if it is not one."""
    try:
        moment = datetime.fromisoformat(str(value))
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _parse_exception(text: Any, traceback: Any = None) -> tuple[str | None, str | None]:
    """Exception type and message of a ``task-failed``/``task-retried`` event.

    The traceback's last line (``billiard.exceptions.TimeLimitExceeded: ...``) names the
    type as the in-worker integration does; without one, the repr (``"ValueError('boom')"``)
    gives the class name only.
    """
    if traceback:
        lines = str(traceback).rstrip().splitlines()
        for index in range(len(lines) - 1, -1, -1):
            match = _LAST_LINE.match(lines[index])
            if match is not None:
                rest = "\n".join([match.group(2) or "", *lines[index + 1 :]])
                return match.group(1), rest.strip()
    if not text:
        return None, None
    text = str(text)
    match = _REPR.match(text.strip())
    if match is None:
        return "UnknownException", text
    inner = match.group(2).strip().rstrip(",")
    try:
        value = ast.literal_eval(inner)
        message = value if isinstance(value, str) else inner
    except (ValueError, SyntaxError, MemoryError, RecursionError):
        message = inner
    return match.group(1), message
