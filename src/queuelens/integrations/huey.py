"""Huey: job metrics and consumer heartbeats from huey's signals and hooks.

    from huey import RedisHuey
    from queuelens.integrations.huey import instrument

    huey = RedisHuey("shop", url="redis://localhost:6379/0")
    instrument(huey)        # where the huey is defined: producers and consumer both run it

Every execution attempt becomes one :class:`~queuelens.model.JobOutcome` in series
``(app, huey.name, "module.task_name")``: ``succeeded``; ``retried`` (raised and huey will
run it again, including ``RetryTask``); ``failed``; ``timed_out`` (``TaskTimeout``);
``revoked`` (revoked, cancelled by ``CancelExecution``, or interrupted by a shutdown); or
``rejected`` (expired, locked or rate-limited and not retried). The clock runs from just
after the pre-execute hooks to the return of the task function, before huey clears its
revoke flag or stores the result (two storage round trips).

Wait needs the time a task was enqueued, which huey's messages do not carry. Instrumented
producers add it after the pickled message (8 marker bytes and a float, inside any
compression); ``pickle.loads`` ignores bytes past the end of a pickle, so consumers that are
not instrumented read the same task as before. A scheduled task (and a retry with a delay)
waits from its eta. This needs huey's default pickle serializer (subclasses that keep its
``_serialize``/``_deserialize`` are fine); with another serializer wait stays unknown.

Each consumer process sends heartbeats for its ``-w`` workers (thread or greenlet); with
``-k process`` each worker process sends its own, for one slot. ``huey.immediate`` mode
executes in the caller and is not recorded.
"""

from __future__ import annotations

import dataclasses
import datetime
import logging
import os
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

from huey import signals as S
from huey.api import Huey, Task
from huey.exceptions import (
    CancelExecution,
    RateLimitExceeded,
    TaskLockedException,
    TaskTimeout,
)
from huey.serializer import Serializer

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, outcome_from
from queuelens.measure import JobMeasurement, Measured
from queuelens.model import JobStatus
from queuelens.probes.huey import stamp_pickles

__all__ = ["FRAMEWORK", "HueyInstrumentation", "instrument"]

FRAMEWORK = "huey"
_STAMP = "_queuelens_ready_at"
_SCHEDULED = "_queuelens_from_schedule"
_FAILED = frozenset({JobStatus.failed, JobStatus.retried, JobStatus.timed_out})
_CLOCK_STOPPERS: tuple[str, ...] = (S.SIGNAL_ERROR, S.SIGNAL_TIMEOUT, S.SIGNAL_LOCKED)
_CLOCK_STOPPERS += (S.SIGNAL_RATE_LIMITED, S.SIGNAL_CANCELED)
_WRAPPED: tuple[str, ...] = ("serialize_task", "deserialize_task", "read_schedule", "delete")
_WRAPPED += ("put_result", "create_consumer", "_run_pre_execute")

log = logging.getLogger("queuelens.integrations.huey")


@dataclass(slots=True, eq=False)
class _Attempt:
    task: Task  # held, so that id(task), the key of the attempt, stays unique
    task_id: str
    revoke_id: str
    queue: str
    job: str
    wait_s: float | None
    thread: int
    measurement: JobMeasurement | None = None
    measured: Measured | None = None

    def end(self) -> None:
        if self.measurement is None or self.measured is not None:
            return
        measured = self.measurement.finish()
        if threading.get_ident() != self.thread:  # thread CPU is only known on its thread
            measured = dataclasses.replace(measured, cpu_s=None)
        self.measured = measured


def instrument(
    huey: Huey,
    *,
    app_name: str | None = None,
    storage_url: str | None = None,
    settings: Settings | None = None,
) -> HueyInstrumentation:
    """Record every task ``huey`` executes; idempotent (returns the existing instrumentation).

    A bad setting raises :class:`~queuelens.config.ConfigError` here, at import time.
    """
    existing = huey.__dict__.get("_queuelens")
    if isinstance(existing, HueyInstrumentation):
        return existing
    runtime = Runtime.create(FRAMEWORK, app=app_name, storage_url=storage_url, settings=settings)
    instrumentation = HueyInstrumentation(huey, runtime)
    huey.__dict__["_queuelens"] = instrumentation
    return instrumentation


class HueyInstrumentation:
    """What :func:`instrument` attached to one huey; :meth:`uninstrument` detaches it."""

    def __init__(self, huey: Huey, runtime: Runtime) -> None:
        self.huey = huey
        self.settings: Settings = runtime.settings
        self._runtime = runtime
        self._pid = os.getpid()
        self._lock = threading.Lock()
        self._local = threading.local()
        self._attempts: dict[int, _Attempt] = {}
        self._tracker: WorkerTracker | None = None
        self._running = 0
        self.workers: int | None = None
        self.worker_type: str | None = None
        self._stamping = _stock_pickle(huey.serializer)
        self._wrap()
        huey.signal(S.SIGNAL_EXECUTING)(self._on_executing)
        huey.signal(*_CLOCK_STOPPERS)(self._on_clock_stop)
        huey.signal(S.SIGNAL_INTERRUPTED, S.SIGNAL_REVOKED, S.SIGNAL_EXPIRED)(self._on_not_run)
        huey.pre_execute("queuelens")(_no_op)  # so that _run_pre_execute always runs
        huey.post_execute("queuelens")(self._on_post_execute)
        huey.on_startup("queuelens")(self._on_startup)
        huey.on_shutdown("queuelens")(self._on_shutdown)

    @property
    def runtime(self) -> Runtime:
        """The recorder of this process (a forked worker process gets its own)."""
        # huey forks only its single-threaded worker processes: no other thread races this
        if self._pid != os.getpid():
            self._runtime = Runtime.create(FRAMEWORK, settings=self.settings)
            self._lock = threading.Lock()
            self._attempts, self._tracker, self._running = {}, None, 0
            self._pid = os.getpid()
        return self._runtime

    @property
    def tracker(self) -> WorkerTracker | None:
        """The heartbeat tracker of this consumer process, while its workers run."""
        return self._tracker if self._pid == os.getpid() else None

    def uninstrument(self) -> None:
        """Remove every hook, signal and wrapper :func:`instrument` added."""
        huey = self.huey
        for name in _WRAPPED:
            huey.__dict__.pop(name, None)
        if self._stamping:
            huey.serializer.__dict__.pop("_serialize", None)
            huey.serializer.__dict__.pop("_deserialize", None)
        for receiver in (self._on_executing, self._on_clock_stop, self._on_not_run):
            huey.disconnect_signal(receiver)
        huey.unregister_pre_execute("queuelens")
        huey.unregister_post_execute("queuelens")
        huey.unregister_on_startup("queuelens")
        huey.unregister_on_shutdown("queuelens")
        huey.__dict__.pop("_queuelens", None)

    # -- wrappers: enqueue stamps, precise start and end, consumer shape --------------------

    def _wrap(self) -> None:
        huey, local = self.huey, self._local
        serializer = huey.serializer
        serialize_task, deserialize_task = huey.serialize_task, huey.deserialize_task
        read_schedule, delete, put_result = huey.read_schedule, huey.delete, huey.put_result
        create_consumer, run_pre_execute = huey.create_consumer, huey._run_pre_execute

        def serialize_task_(task: Task) -> bytes:
            ready_at = time.time()
            if task.__dict__.pop(_SCHEDULED, False) and task.eta is not None:
                ready_at = min(_timestamp(task.eta, huey.utc), ready_at)  # due since its eta
            local.ready_at = ready_at
            try:
                return serialize_task(task)  # type: ignore[no-any-return]
            finally:
                local.ready_at = None

        def deserialize_task_(data: bytes) -> Task:
            local.stamp = None
            task = deserialize_task(data)
            if local.stamp is not None:
                task.__dict__[_STAMP] = local.stamp
            return task

        def read_schedule_(timestamp: datetime.datetime | None = None) -> list[Task]:
            tasks: list[Task] = read_schedule(timestamp)
            for task in tasks:  # the scheduler enqueues these now because they are due
                task.__dict__[_SCHEDULED] = True
            return tasks

        # After the task returns, huey clears its revoke flag and stores its result: the
        # first of these calls for the running task stops its clock.
        def delete_(key: str) -> Any:
            attempt = getattr(local, "attempt", None)
            if attempt is not None and key == attempt.revoke_id:
                attempt.end()
            return delete(key)

        def put_result_(key: str, data: Any) -> Any:
            attempt = getattr(local, "attempt", None)
            if attempt is not None and key == attempt.task_id:
                attempt.end()
            return put_result(key, data)

        def create_consumer_(**options: Any) -> Any:
            consumer = create_consumer(**options)
            self.workers = int(getattr(consumer, "workers", 1))
            self.worker_type = str(getattr(consumer, "worker_type", "thread"))
            return consumer

        def run_pre_execute_(task: Task) -> None:
            attempt = self._attempts.get(id(task))
            try:
                run_pre_execute(task)
            except CancelExecution:
                if attempt is not None:
                    self._finish(task, JobStatus.revoked, None)
                raise
            if attempt is not None:
                attempt.measurement = JobMeasurement.start(cpu=self._cpu_mode())

        huey.__dict__.update(
            serialize_task=serialize_task_,
            deserialize_task=deserialize_task_,
            read_schedule=read_schedule_,
            delete=delete_,
            put_result=put_result_,
            create_consumer=create_consumer_,
            _run_pre_execute=run_pre_execute_,
        )
        if self._stamping:
            stamp_pickles(serializer, local)

    # -- signals and hooks ----------------------------------------------------------------

    def _on_executing(self, signal: str, task: Task, *args: Any) -> None:
        if self.huey.immediate:
            return
        runtime = self.runtime  # noqa: F841 - a forked worker builds its recorder here
        left: _Attempt | None = getattr(self._local, "attempt", None)
        if left is not None:
            self._local.attempt = None
            if self._attempts.get(id(left.task)) is left:
                # The previous task of this worker never reached post_execute: huey raised
                # (a storage error) after it ran. It did not complete cleanly.
                self._finish(left.task, JobStatus.failed, None)
        attempt = _Attempt(
            task=task,
            task_id=task.id,
            revoke_id=task.revoke_id,
            queue=self.huey.name,
            job=_job_name(task),
            wait_s=_wait_s(task, self.huey.utc),
            thread=threading.get_ident(),
        )
        self._attempts[id(task)] = attempt
        self._local.attempt = attempt
        tracker = self.tracker
        if tracker is not None:
            tracker.job_started(task.id, attempt.job)

    def _on_clock_stop(self, signal: str, task: Task, *args: Any) -> None:
        attempt = self._attempts.get(id(task))
        if attempt is not None:
            attempt.end()

    def _on_post_execute(self, task: Task, value: Any, exception: BaseException | None) -> None:
        self._finish(task, _status(task, exception), exception)

    def _on_not_run(self, signal: str, task: Task, *args: Any) -> None:
        if self.huey.immediate:
            return
        if signal == S.SIGNAL_INTERRUPTED:
            self._finish(task, JobStatus.revoked, None)
            return
        status = JobStatus.revoked if signal == S.SIGNAL_REVOKED else JobStatus.rejected
        self.runtime.recorder.record(
            outcome_from(None, queue=self.huey.name, job=_job_name(task), status=status,
                         wait_s=_wait_s(task, self.huey.utc))
        )  # fmt: skip

    def _finish(self, task: Task, status: JobStatus, exception: BaseException | None) -> None:
        attempt = self._attempts.pop(id(task), None)
        if attempt is not None:
            if getattr(self._local, "attempt", None) is attempt:
                self._local.attempt = None
            self._record_attempt(attempt, status, exception)

    def _record_attempt(
        self, attempt: _Attempt, status: JobStatus, exception: BaseException | None
    ) -> None:
        try:
            attempt.end()
            self.runtime.recorder.record(
                outcome_from(
                    attempt.measured,
                    queue=attempt.queue,
                    job=attempt.job,
                    status=status,
                    wait_s=attempt.wait_s,
                    exception=exception,
                )
            )
            tracker = self.tracker
            if tracker is not None:
                tracker.job_finished(attempt.task_id, failed=status in _FAILED)
        except Exception:  # pragma: no cover - a metrics bug must never break a consumer
            log.exception("queuelens: recording a huey task failed; the task is unaffected")

    def _on_startup(self) -> None:
        runtime = self.runtime
        with self._lock:
            self._running += 1
            if self._tracker is None:
                # First worker up: the others wait on the lock, so no task runs meanwhile.
                runtime.warm_up()
                process_workers = self.worker_type == "process"
                self._tracker = runtime.tracker(
                    name=f"huey:{socket.gethostname()}:{os.getpid()}",
                    queues=[self.huey.name],
                    concurrency=1 if process_workers else (self.workers or 1),
                )
                self._tracker.start()
            elif self.workers is None:  # consumer built without create_consumer
                self._tracker.concurrency = max(self._tracker.concurrency, self._running)

    def _on_shutdown(self) -> None:
        # Process workers end with os._exit: no atexit hook will flush for us.
        with self._lock:
            self._running -= 1
            if self._running > 0:
                return
            tracker, self._tracker = self.tracker, None
        # Flush first, so the last outcomes are stored before the worker reads "stopped".
        self.runtime.recorder.flush()
        if tracker is not None:
            tracker.stop()

    def _cpu_mode(self) -> Literal["process", "thread"]:
        # Threads: the worker thread's CPU. Processes run one task each. Greenlets share a
        # thread, so process CPU, which is reported as None while tasks overlap.
        return "thread" if self.worker_type in (None, "thread") else "process"


def _no_op(task: Task) -> None:
    return None


def _stock_pickle(serializer: Serializer) -> bool:
    kind = type(serializer)
    return bool(
        isinstance(serializer, Serializer)
        and kind._serialize is Serializer._serialize
        and kind._deserialize is Serializer._deserialize
    )


def _job_name(task: Task) -> str:
    return f"{type(task).__module__}.{task.name}"


def _timestamp(moment: datetime.datetime, utc: bool) -> float:
    if moment.tzinfo is None and utc:
        moment = moment.replace(tzinfo=datetime.UTC)
    return moment.timestamp()


def _wait_s(task: Task, utc: bool) -> float | None:
    """From the enqueue stamp, or the eta if later (due while it sat in the queue)."""
    ready_at: float | None = task.__dict__.get(_STAMP)
    if ready_at is None:
        return None  # an eta alone may be stale: retries keep the eta of the first run
    if task.eta is not None:
        ready_at = max(ready_at, _timestamp(task.eta, utc))
    return time.time() - ready_at


def _status(task: Task, exception: BaseException | None) -> JobStatus:
    if exception is None:
        return JobStatus.succeeded
    if isinstance(exception, TaskTimeout):
        return JobStatus.timed_out
    if task.retries:  # huey requeues the task after post_execute
        return JobStatus.retried
    if isinstance(exception, CancelExecution):
        return JobStatus.revoked
    if isinstance(exception, TaskLockedException | RateLimitExceeded):
        return JobStatus.rejected
    return JobStatus.failed
