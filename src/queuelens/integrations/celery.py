"""Celery: per-job metrics from inside the workers, and one heartbeat per worker.

    # proj/celery.py, where the Celery app is defined (workers and publishers import it)
    from celery import Celery
    from queuelens.integrations.celery import instrument

    app = Celery("proj", broker="redis://localhost:6379/0")
    instrument(app)            # settings from QUEUELENS_* / queuelens.toml; or pass them

Workers run as usual (``celery -A proj worker``) with any pool: prefork, threads or solo.
Each execution attempt is one :class:`~queuelens.model.JobOutcome` of the series ``(app,
queue, task name)``: status, execution time (never the wait), wait (enqueue, or eta if later,
to start: publishers stamp the enqueue time into the headers), CPU (the thread's with the
threads pool) and memory, exception. What a pool process cannot report (hard time limits,
lost processes, revoked, unknown or invalid messages) the main process records, and it
alone heart-beats: one worker with ``concurrency`` slots. A SIGKILLed worker stops beating
and turns stale. Nothing raises into a task: failures are logged and counted
(:func:`handler_errors`).
"""

from __future__ import annotations

import functools
import logging
import mmap
import os
import threading
import time
import weakref
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Literal

from celery import Celery, signals
from celery.exceptions import Reject, SoftTimeLimitExceeded, TimeLimitExceeded

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, outcome_from
from queuelens.measure import JobMeasurement, Measured
from queuelens.model import JobStatus, WorkerHeartbeat, WorkerState

__all__ = ["ENQUEUED_HEADER", "ETA_HEADER", "handler_errors", "instrument"]

log = logging.getLogger("queuelens.integrations.celery")

#: message header with the unix time the message was published
ENQUEUED_HEADER = "queuelens_enqueued_at"
#: message header with the eta / countdown as unix time, when the message has one
ETA_HEADER = "queuelens_eta"

#: Celery state at task_postrun -> status (IGNORED: Task.replace(), the attempt ended fine)
_BY_STATE = {
    "SUCCESS": JobStatus.succeeded,
    "IGNORED": JobStatus.succeeded,
    "FAILURE": JobStatus.failed,
    "RETRY": JobStatus.retried,
    "REJECTED": JobStatus.rejected,
}
_errors: Counter[str] = Counter()
_apps: dict[int, _Instrumented] = {}
_RECEIVERS: list[tuple[Any, Callable[..., None]]] = []  # (signal, handler), by @_receiver
_connect_lock = threading.Lock()


def instrument(
    app: Celery,
    *,
    app_name: str | None = None,
    storage_url: str | None = None,
    settings: Settings | None = None,
) -> Runtime:
    """Record the jobs and workers of ``app``; call it where the app is defined.

    ``app_name`` and ``storage_url`` override ``settings`` (default: the ``QUEUELENS_*``
    environment and ``queuelens.toml``); a bad setting raises ConfigError here. Calling it
    again for the same app changes nothing and returns the same runtime. Publishers only
    stamp message headers; storage is opened and threads are started in workers only.
    """
    with _connect_lock:
        existing = _apps.get(id(app))
        if existing is not None:
            return existing.runtime
        runtime = Runtime.create("celery", app=app_name, storage_url=storage_url, settings=settings)
        _apps[id(app)] = _Instrumented(app, runtime)
        for signal, receiver in _RECEIVERS:
            signal.connect(receiver, weak=False, dispatch_uid=f"queuelens.{receiver.__name__}")
        return runtime


def handler_errors() -> dict[str, int]:
    """How often each signal handler failed in this process (each failure is logged)."""
    return dict(_errors)


@dataclass(slots=True)
class _Attempt:
    measurement: JobMeasurement
    queue: str
    job: str
    wait_s: float | None
    status: JobStatus | None = None
    exception: BaseException | None = None


class _FailureCounts:
    """Failed attempts of one worker, counted by all its processes in shared memory.

    Slot 0 belongs to the main process, slot ``1 + i`` to the pool process with index ``i``:
    one writer per slot, and no cross-process lock that a killed process could leave held.
    """

    SLOTS = 256

    def __init__(self) -> None:
        self._memory = mmap.mmap(-1, 8 * self.SLOTS)  # anonymous, shared with forked children
        self._slots = memoryview(self._memory).cast("q")
        self._lock, self._pid = threading.Lock(), os.getpid()

    def add(self, main_pid: int | None) -> None:
        slot = 0
        if os.getpid() != main_pid:
            from billiard.process import current_process

            slot = 1 + int(getattr(current_process(), "index", 0) or 0) % (self.SLOTS - 1)
        if self._pid != os.getpid():
            self._lock, self._pid = threading.Lock(), os.getpid()
        with self._lock:
            self._slots[slot] += 1

    def total(self) -> int:
        return sum(self._slots)


class _Instrumented:
    """What :func:`instrument` keeps for one Celery app in this process."""

    def __init__(self, app: Any, runtime: Runtime) -> None:
        self.app = app
        self.runtime = runtime
        self.default_queue: str = app.conf.task_default_queue or "celery"
        self.queue_by_key: dict[str, str] = {}
        self.attempts: dict[str, _Attempt] = {}
        self.received: weakref.WeakValueDictionary[str, Any] = weakref.WeakValueDictionary()
        self.reported: weakref.WeakSet[Any] = weakref.WeakSet()
        self.main_pid: int | None = None  # set in a worker's main process
        self.cpu: Literal["process", "thread"] = "process"
        self.failures: _FailureCounts | None = None  # in a worker: made before forking
        self.tracker: WorkerTracker | None = None

    def record(
        self,
        measured: Measured | None,
        queue: str,
        job: str,
        status: JobStatus,
        wait_s: float | None = None,
        exception: Any = None,
    ) -> None:
        error = exception if isinstance(exception, BaseException) else None
        outcome = outcome_from(measured, queue=queue, job=job, status=status, wait_s=wait_s,
                               exception=error)  # fmt: skip
        self.runtime.recorder.record(outcome)
        if status in (JobStatus.failed, JobStatus.timed_out) and self.failures is not None:
            self.failures.add(self.main_pid)

    def queue_of(self, delivery_info: Any) -> str:
        key = delivery_info.get("routing_key") if isinstance(delivery_info, dict) else None
        return self.queue_by_key.get(str(key), str(key)) if key else self.default_queue


class _CeleryTracker(WorkerTracker):
    """The worker's main-process view: active requests and counters of ``celery.worker.state``."""

    instrumented: _Instrumented

    def snapshot(self, state: WorkerState | None = None) -> WorkerHeartbeat:
        try:
            from celery.worker import state as worker_state

            active: list[Any] = []
            for _ in range(5):  # the consumer thread may change the set while we copy it
                try:
                    active = list(worker_state.active_requests)
                    break
                except RuntimeError:
                    continue
            running = {request.id: request.name for request in active}
            finished = max(worker_state.all_total_count[0] - len(running), 0)
            failures = self.instrumented.failures
            self.set_busy(running, finished, failures.total() if failures is not None else 0)
        except Exception:
            _count_error("heartbeat")
        return super().snapshot(state)


def _lookup(app: Any) -> _Instrumented | None:
    found = _apps.get(id(app))
    if found is None and hasattr(app, "_get_current_object"):
        found = _apps.get(id(app._get_current_object()))
    return found


def _count_error(where: str) -> None:
    _errors[where] += 1
    if _errors[where] == 1 or _errors[where] % 100 == 0:
        log.exception("queuelens: celery %s handler failed (%d times); tasks are unaffected",
                      where, _errors[where])  # fmt: skip


def _receiver(*on: Any) -> Callable[[Callable[..., None]], Callable[..., None]]:
    """Guard a handler (a failure is counted and logged, never raised) and list it for ``on``."""

    def wrap(handler: Callable[..., None]) -> Callable[..., None]:
        @functools.wraps(handler)
        def receiver(sender: Any = None, **kwargs: Any) -> None:
            try:
                handler(sender, **kwargs)
            except Exception:
                _count_error(handler.__name__.lstrip("_"))

        _RECEIVERS.extend((signal, receiver) for signal in on)
        return receiver

    return wrap


def _unix(value: Any) -> float | None:
    """An eta header (ISO 8601 text or a datetime) as unix time."""
    if not value:
        return None
    moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def _wait(enqueued: Any, eta: Any, started: float | None) -> float | None:
    if not isinstance(enqueued, int | float) or started is None:
        return None
    base = max(float(enqueued), eta) if isinstance(eta, int | float) else float(enqueued)
    return max(started - base, 0.0)


# -- publishers and the process that runs the task ------------------------------------------


@_receiver(signals.before_task_publish)
def _on_publish(sender: Any, headers: Any = None, **_: Any) -> None:
    if isinstance(headers, dict):
        headers[ENQUEUED_HEADER] = time.time()
        eta = _unix(headers.get("eta"))
        if eta is None:
            headers.pop(ETA_HEADER, None)  # a re-published retry may carry an old one
        else:
            headers[ETA_HEADER] = eta


@_receiver(signals.task_prerun)
def _on_prerun(sender: Any, task_id: str = "", task: Any = None, **_: Any) -> None:
    found = _lookup(task.app)
    request = task.request
    if found is None or request.is_eager:
        return
    enqueued, eta = getattr(request, ENQUEUED_HEADER, None), getattr(request, ETA_HEADER, None)
    wait, queue = _wait(enqueued, eta, time.time()), found.queue_of(request.delivery_info)
    # Measure last: nothing may fail between start() and storing the attempt.
    found.attempts[task_id] = _Attempt(JobMeasurement.start(cpu=found.cpu), queue, task.name, wait)


@_receiver(signals.task_failure)
def _on_failure(sender: Any, task_id: str = "", exception: Any = None, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is None:
        return
    limited = isinstance(exception, SoftTimeLimitExceeded | TimeLimitExceeded)
    status = JobStatus.timed_out if limited else JobStatus.failed
    attempt = found.attempts.get(task_id)
    if attempt is not None:
        attempt.status, attempt.exception = status, exception
    elif not isinstance(exception, Reject):  # a Reject was recorded when its attempt ended
        _record_in_main(found, sender, task_id, status, exception)


@_receiver(signals.task_retry)
def _on_retry(sender: Any, request: Any = None, reason: Any = None, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is None or request is None:
        return
    exception = getattr(reason, "exc", None) or reason
    attempt = found.attempts.get(request.id)
    if attempt is not None:
        attempt.status, attempt.exception = JobStatus.retried, exception
    else:  # the pool process was lost or cancelled, and the main process retried the task
        _record_in_main(found, sender, request.id, JobStatus.retried, exception, request)


@_receiver(signals.task_postrun)
def _on_postrun(sender: Any, task_id: str = "", task: Any = None, state: Any = None,
                retval: Any = None, **_: Any) -> None:  # fmt: skip
    found = _lookup(task.app)
    attempt = found.attempts.pop(task_id, None) if found is not None else None
    if found is None or attempt is None:
        return
    measured = attempt.measurement.finish()
    status = _BY_STATE.get(state)
    if status is None:  # the process is exiting (SystemExit); its main process reports it
        return
    exception = attempt.exception if status is not JobStatus.succeeded else None
    if status is JobStatus.failed:
        status = attempt.status or status
    elif status is JobStatus.rejected:
        exception = retval
    found.record(measured, attempt.queue, attempt.job, status, attempt.wait_s, exception)


@_receiver(signals.task_internal_error)
def _on_internal_error(sender: Any, task_id: str = "", exception: Any = None, **_: Any) -> None:
    found = _lookup(sender.app)
    attempt = found.attempts.pop(task_id, None) if found is not None else None
    if found is not None and attempt is None:
        _record_in_main(found, sender, task_id, JobStatus.failed, exception)
    elif found is not None and attempt is not None:
        found.record(attempt.measurement.finish(), attempt.queue, attempt.job,
                     JobStatus.failed, attempt.wait_s, exception)  # fmt: skip


# -- the worker's main process -------------------------------------------------------------


def _record_in_main(found: _Instrumented, task: Any, task_id: str, status: JobStatus,
                    exception: Any, context: Any = None) -> None:  # fmt: skip
    """An attempt its pool process could not report (time limit, lost process, revoke)."""
    context = context or task.request  # the task's request context, where Celery gives one
    if found.main_pid != os.getpid() or getattr(context, "is_eager", False):
        return
    request = found.received.get(task_id)
    started, queue, wait = None, found.queue_of(getattr(context, "delivery_info", None)), None
    if request is not None:
        if request in found.reported:  # Celery signals a hard time limit twice
            return
        found.reported.add(request)
        started, headers = request.time_start, request.request_dict
        queue = found.queue_of(request.delivery_info)
        wait = _wait(headers.get(ENQUEUED_HEADER), headers.get(ETA_HEADER), started)
    measured = Measured(time.time() - started, None, None, None) if started else None
    found.record(measured, queue, task.name, status, wait, exception)


@_receiver(signals.task_received)
def _on_received(sender: Any, request: Any = None, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is not None and request is not None:
        found.received[request.id] = request


@_receiver(signals.task_revoked)
def _on_revoked(sender: Any, request: Any = None, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is not None and request is not None:
        _record_in_main(found, sender, request.id, JobStatus.revoked, None, request)


@_receiver(signals.task_rejected, signals.task_unknown)
def _on_refused(sender: Any, message: Any = None, exc: Any = None, name: Any = None,
                **_: Any) -> None:  # fmt: skip
    """An unknown task (``name``) or a message the worker could not use: ``rejected``."""
    found = _lookup(sender.app)
    if found is not None and found.main_pid == os.getpid():
        from celery.exceptions import NotRegistered

        headers = getattr(message, "headers", None) or {}
        queue = found.queue_of(getattr(message, "delivery_info", None))
        job = str(name or headers.get("task") or "unknown")
        found.record(
            None, queue, job, JobStatus.rejected, None, NotRegistered(name) if name else exc
        )


@_receiver(signals.worker_init)
def _on_worker_init(sender: Any, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is None:
        return
    from celery.concurrency import get_implementation

    found.main_pid, found.failures = os.getpid(), _FailureCounts()  # before the pool forks
    pool = get_implementation(sender.pool_cls)
    threads = getattr(pool, "__module__", "") == "celery.concurrency.thread"
    found.cpu = "thread" if threads else "process"
    queues = list(sender.app.amqp.queues.consume_from.values())
    keys = Counter(queue.routing_key for queue in queues)
    found.queue_by_key = {q.routing_key: q.name for q in queues if keys[q.routing_key] == 1}
    # Open storage before the pool processes fork, so that they inherit it ready (drivers
    # drop inherited connections) instead of each importing and opening it while its first
    # jobs run, which would inflate their duration, CPU and memory. Down storage only waits.
    try:
        found.runtime.storage()
    except Exception as exc:
        log.warning("queuelens: storage not reachable at worker start (%s); buffering", exc)


@_receiver(signals.worker_ready)
def _on_worker_ready(sender: Any, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is None or found.tracker is not None:
        return
    runtime, pool = found.runtime, getattr(sender, "pool", None)
    slots = getattr(pool, "limit", None) or getattr(sender.controller, "concurrency", 1)
    tracker = _CeleryTracker(
        runtime.storage,
        app=runtime.settings.app,
        framework="celery",
        name=str(sender.hostname),
        queues=sorted(sender.app.amqp.queues.consume_from),
        concurrency=int(slots or 1),
        heartbeat_interval_s=runtime.settings.heartbeat_interval_s,
        owns_storage=False,  # the runtime's, closed by Runtime.close
    )
    tracker.instrumented, found.tracker = found, tracker
    tracker.start()
    runtime.start_server_sampler()


@_receiver(signals.worker_shutdown)
def _on_worker_shutdown(sender: Any, **_: Any) -> None:
    found = _lookup(sender.app)
    if found is not None and found.main_pid == os.getpid():
        if found.tracker is not None:
            found.tracker.stop()  # a last heartbeat: stopped
        found.runtime.close()  # the last flush of what the main process recorded


@_receiver(signals.worker_process_shutdown)
def _on_process_shutdown(sender: Any, **_: Any) -> None:
    # Pool processes leave with os._exit(): no atexit hook runs, so flush here.
    for found in list(_apps.values()):
        found.runtime.recorder.close(timeout_s=2.0)
