"""Taskiq integration: a middleware recording each task attempt, and a worker heartbeat.

    from taskiq import SimpleRetryMiddleware
    from taskiq_redis import ListQueueBroker
    from queuelens.integrations.taskiq import QueueLensMiddleware

    broker = ListQueueBroker("redis://localhost:6379/0").with_middlewares(
        SimpleRetryMiddleware(), QueueLensMiddleware(app="shop"))

Use the same broker object in the processes that send tasks and in ``taskiq worker``: the
sending side stamps the enqueue time into the label ``queuelens_enqueued_at`` (``pre_send``),
the worker side measures each execution from ``pre_execute`` to ``on_error``/``post_execute``
and records it with ``wait = start - enqueue label`` (None when a sender had no middleware).
Sending does nothing else: no settings are read and no storage is opened there.

The series is ``(app, queue, task_name)``. The queue is the broker's ``queue_name`` (the Redis
list or stream key of taskiq-redis brokers, which is what the taskiq probe samples, so the
depth of a queue and the throughput of its tasks line up), ``queue=`` to name it yourself,
or ``default`` for brokers without one.

Statuses: ``retried`` when the attempt's task id was sent again while it ran (taskiq's retry
middlewares do that) or a retry middleware replaced the error with ``NoResultError``;
``timed_out`` when the ``timeout`` label's limit was hit; ``revoked`` when the task was
cancelled; ``failed`` for any other exception. A task raising ``NoResultError`` succeeded.

Each worker process (``taskiq worker --workers N`` starts N) beats as a worker of its own
with ``--max-async-tasks`` slots (read from the worker's command line; ``concurrency=``
overrides it), from ``startup()`` to ``shutdown()`` of the broker in the worker.
"""

from __future__ import annotations

import asyncio
import contextvars
import inspect
import logging
import math
import os
import socket
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from taskiq.abc.middleware import TaskiqMiddleware
from taskiq.exceptions import NoResultError
from taskiq.labels import LabelType
from taskiq.message import TaskiqMessage
from taskiq.result import TaskiqResult

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, outcome_from
from queuelens.measure import JobMeasurement, Measured
from queuelens.model import JobStatus

__all__ = ["ENQUEUED_AT_LABEL", "QueueLensMiddleware"]

log = logging.getLogger("queuelens.integrations.taskiq")

#: label holding the unix time at which the task was sent
ENQUEUED_AT_LABEL = "queuelens_enqueued_at"
#: taskiq's default ``--max-async-tasks``
DEFAULT_CONCURRENCY = 100
#: how long a starting worker waits for storage before it takes tasks anyway
_WARM_UP_WAIT_S = 5.0


@dataclass(slots=True)
class _Attempt:
    task_id: str
    task_name: str
    queue: str
    wait_s: float | None
    timeout_s: float | None
    measurement: JobMeasurement
    resources: bool
    measured: Measured | None = None
    exception: BaseException | None = None
    resent: bool = False
    done: bool = False

    @property
    def slot(self) -> str:
        """This attempt's key among the worker's running tasks."""
        return f"{self.task_id}:{id(self):x}"

    token: contextvars.Token[_Attempt | None] | None = None

    def finish(self) -> Measured:
        if self.measured is None:
            measured = self.measurement.finish()
            if not self.resources:  # a process pool ran it: this process's CPU is not its own
                measured = Measured(measured.duration_s, None, None, None)
            self.measured = measured
        return self.measured


# The attempt run by the current asyncio task: taskiq calls pre_execute, on_error,
# post_execute and (for a retry) pre_send from the task that handles the message.
_current: contextvars.ContextVar[_Attempt | None] = contextvars.ContextVar(
    "queuelens_taskiq_attempt", default=None
)


class QueueLensMiddleware(TaskiqMiddleware):
    """Records task outcomes and worker heartbeats of a taskiq broker; see the module doc."""

    def __init__(
        self,
        *,
        app: str | None = None,
        storage_url: str | None = None,
        settings: Settings | None = None,
        queue: str | None = None,
        concurrency: int | None = None,
    ) -> None:
        super().__init__()
        self._app = app
        self._storage_url = storage_url
        self._settings = settings
        self._queue = queue
        self._concurrency = concurrency
        self._runtime: Runtime | None = None
        self._runtime_failed = False
        self._tracker: WorkerTracker | None = None
        self._process_pool = False

    # -- sending side ----------------------------------------------------------------------

    def pre_send(self, message: TaskiqMessage) -> TaskiqMessage:
        attempt = _current.get()
        if attempt is not None and attempt.task_id == message.task_id:
            attempt.resent = True  # a retry of the attempt running in this task
        message.labels[ENQUEUED_AT_LABEL] = f"{time.time():.6f}"
        if message.labels_types is not None:
            message.labels_types[ENQUEUED_AT_LABEL] = LabelType.FLOAT.value
        return message

    # -- worker lifecycle ------------------------------------------------------------------

    async def startup(self) -> None:
        if not self.broker.is_worker_process or self._tracker is not None:
            return
        runtime = self._runtime = self._runtime or Runtime.create(
            "taskiq", app=self._app, storage_url=self._storage_url, settings=self._settings
        )  # a bad setting raises here, so the worker does not start with it
        max_async_tasks, self._process_pool = _worker_options(sys.argv)
        tracker = runtime.tracker(
            name=f"taskiq@{socket.gethostname()}:{os.getpid()}",
            queues=[self._queue_name()],
            concurrency=self._concurrency or max_async_tasks,
        )
        await _warm_up(runtime, tracker)
        tracker.start()
        self._tracker = tracker

    async def shutdown(self) -> None:
        tracker, self._tracker = self._tracker, None
        if self._runtime is not None:
            await asyncio.to_thread(self._close, tracker, self._runtime)

    @staticmethod
    def _close(tracker: WorkerTracker | None, runtime: Runtime) -> None:
        try:
            # Flush first, so the last outcomes are stored before the worker reads "stopped".
            runtime.recorder.flush()
            if tracker is not None:
                tracker.stop()
        except Exception:
            log.exception("queuelens: stopping the taskiq worker's metrics failed")

    def _queue_name(self) -> str:
        name = self._queue or getattr(self.broker, "queue_name", None)
        return name if isinstance(name, str) and name else "default"

    def _ensure_runtime(self) -> Runtime | None:
        """The runtime, made on first use when the broker's startup() was not run."""
        if self._runtime is None and not self._runtime_failed:
            try:
                self._runtime = Runtime.create(
                    "taskiq", app=self._app, storage_url=self._storage_url, settings=self._settings
                )
            except Exception:
                self._runtime_failed = True
                log.exception("queuelens: taskiq metrics are off: the settings are invalid")
        return self._runtime

    # -- executing side --------------------------------------------------------------------

    def pre_execute(self, message: TaskiqMessage) -> TaskiqMessage:
        try:
            if self._ensure_runtime() is not None:
                self._begin(message)
        except Exception:
            log.exception("queuelens: cannot follow a taskiq task; the task is unaffected")
        return message

    def _begin(self, message: TaskiqMessage) -> None:
        labels = message.labels
        wait_s = None
        enqueued_at = _seconds(labels.get(ENQUEUED_AT_LABEL))
        if enqueued_at is not None:
            wait_s = time.time() - enqueued_at
        resources = True
        if self._process_pool:  # sync tasks then run in another process
            task = self.broker.find_task(message.task_name)
            resources = task is None or inspect.iscoroutinefunction(task.original_func)
        attempt = _Attempt(
            task_id=message.task_id,
            task_name=message.task_name,
            queue=self._queue_name(),
            wait_s=wait_s,
            timeout_s=_seconds(labels.get("timeout")),
            measurement=JobMeasurement.start(),
            resources=resources,
        )
        attempt.token = _current.set(attempt)
        if self._tracker is not None:
            # keyed per attempt: a retry may start before this attempt's post_execute
            self._tracker.job_started(attempt.slot, message.task_name)
            handler = asyncio.current_task()
            if handler is not None:  # frees the slot if taskiq never reaches post_execute
                handler.add_done_callback(lambda _: self._abandoned(attempt))

    def on_error(
        self, message: TaskiqMessage, result: TaskiqResult[Any], exception: BaseException
    ) -> None:
        attempt = _current.get()
        if attempt is not None and attempt.task_id == message.task_id:
            attempt.finish()
            if attempt.exception is None:
                attempt.exception = exception

    def post_execute(self, message: TaskiqMessage, result: TaskiqResult[Any]) -> None:
        attempt = _current.get()
        if attempt is None or attempt.task_id != message.task_id:
            return
        _leave(attempt)
        attempt.done = True
        try:
            self._record(attempt, result)
        except Exception:
            log.exception("queuelens: recording a taskiq task failed; the task is unaffected")

    def _abandoned(self, attempt: _Attempt) -> None:
        """The message's task ended without post_execute (a later middleware raised, or
        the task was cancelled): no outcome is known, but the slot is free again."""
        if not attempt.done and self._tracker is not None:
            attempt.done = True
            self._tracker.job_finished(attempt.slot, failed=True)

    def _record(self, attempt: _Attempt, result: TaskiqResult[Any]) -> None:
        measured = attempt.finish()
        status, exception = _status(attempt, measured, result)
        runtime = self._runtime
        assert runtime is not None
        runtime.recorder.record(
            outcome_from(
                measured,
                queue=attempt.queue,
                job=attempt.task_name,
                status=status,
                wait_s=attempt.wait_s,
                exception=exception,
            )
        )
        if self._tracker is not None:
            failed = status in (JobStatus.failed, JobStatus.timed_out)
            self._tracker.job_finished(attempt.slot, failed=failed)


def _status(
    attempt: _Attempt, measured: Measured, result: TaskiqResult[Any]
) -> tuple[JobStatus, BaseException | None]:
    exc = attempt.exception
    if exc is None and result.is_err and isinstance(result.error, BaseException):
        exc = result.error  # raised where our on_error did not see it
    if exc is None or isinstance(exc, NoResultError):
        return JobStatus.succeeded, None
    limit = attempt.timeout_s
    # The time limit starts after pre_execute, so a timed-out attempt lasted at least as long.
    if isinstance(exc, TimeoutError) and limit is not None and measured.duration_s >= limit - 1e-3:
        return JobStatus.timed_out, exc
    if attempt.resent or isinstance(result.error, NoResultError):
        return JobStatus.retried, exc
    if isinstance(exc, asyncio.CancelledError):
        return JobStatus.revoked, exc
    return JobStatus.failed, exc


async def _warm_up(runtime: Runtime, tracker: WorkerTracker | None) -> None:
    """Runtime.warm_up off the event loop, so other coroutines keep running meanwhile."""
    await asyncio.to_thread(runtime.warm_up, tracker, _WARM_UP_WAIT_S)


def _leave(attempt: _Attempt) -> None:
    """Make the attempt that was current before ``attempt`` current again (a broker that
    runs a retried task inline, as InMemoryBroker can, nests one attempt in another)."""
    try:
        if attempt.token is not None:
            _current.reset(attempt.token)
            return
    except ValueError:  # set in another context
        pass
    _current.set(None)


def _seconds(value: object) -> float | None:
    """A label as a number of seconds (labels arrive as numbers or strings), or None."""
    if isinstance(value, bool) or value is None:
        return None
    try:
        seconds = float(value)  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None
    return seconds if math.isfinite(seconds) else None


def _worker_options(argv: Sequence[str]) -> tuple[int, bool]:
    """``(--max-async-tasks, --use-process-pool)`` of a ``taskiq worker`` command line.

    The middleware cannot reach taskiq's Receiver, so it reads the options the worker was
    started with; other processes (or a parse failure) get taskiq's defaults.
    """
    # taskiq's CLI drops the program name: the worker sees ["worker", broker, ...]
    position = next((i for i, arg in enumerate(argv[:2]) if arg == "worker"), None)
    if position is None:
        return DEFAULT_CONCURRENCY, False
    try:
        from taskiq.cli.worker.args import WorkerArgs

        options = WorkerArgs.from_cli(list(argv[position + 1 :]))
    except (Exception, SystemExit):
        return DEFAULT_CONCURRENCY, False
    slots = options.max_async_tasks if options.max_async_tasks > 0 else DEFAULT_CONCURRENCY
    return slots, bool(options.use_process_pool)
