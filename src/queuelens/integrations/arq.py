"""arq integration: one outcome per job attempt, and a heartbeat per worker.

    from queuelens.integrations.arq import instrument

    class WorkerSettings:
        functions = [send_mail, resize_image]
        on_startup = connect_db              # your hooks keep working
        redis_settings = RedisSettings()

    instrument(WorkerSettings)               # or instrument(WorkerSettings, app_name="shop")

``instrument`` changes the settings class (or dict) in place and returns it, so it also works
as a class decorator. It is idempotent.

How it sees what arq's hooks do not say: the hook ``ctx`` has no function name, result or
exception (arq #415), so ``instrument`` wraps each registered function (and cron job) in a
coroutine that knows its name and sees its exception. That costs no Redis round trip and
works whatever ``keep_result`` is; reading the job's stored definition (``arq:job:<id>``)
in ``on_job_start`` would cost a round trip and a deserialisation of its arguments per job,
and would still not tell how the job ended. The hooks supply the rest: ``on_job_start``
and ``on_job_end`` run in the task that awaits the job, whose cancellation state tells a
worker shutdown from a timeout, and ``on_startup``/``on_shutdown`` start and stop the
worker's heartbeat. Your hooks run as before: ``on_startup`` and ``on_job_start`` yours first,
``on_job_end`` ours first (it never raises), ``on_shutdown`` ours even if yours raises;
``after_job_end`` is left alone.

Statuses follow arq: ``retried`` for ``Retry`` (and a job cancelled by a worker shutdown)
while tries remain, ``failed`` on the last try (arq then fails the job without running it
again, so no hook would see that), ``timed_out`` when arq's ``job_timeout`` cancelled the
job, ``revoked`` for ``Job.abort()``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import logging
import os
import socket
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

from arq.cron import CronJob
from arq.utils import to_seconds
from arq.worker import Function, Retry, RetryJob, func

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, outcome_from
from queuelens.measure import JobMeasurement, Measured
from queuelens.model import JobStatus

__all__ = ["instrument"]

log = logging.getLogger("queuelens.integrations.arq")

_WorkerSettings = TypeVar("_WorkerSettings", bound=type[Any] | dict[str, Any])
_Hook = Callable[[dict[Any, Any]], Awaitable[Any]]
_JobCoroutine = Callable[..., Awaitable[Any]]

#: attribute of our on_startup hook that marks settings as instrumented
_MARK = "__queuelens_arq__"
#: retried jobs whose retry time this process remembers (for the next attempt's wait)
_RETRIES_REMEMBERED = 10_000
#: how long a starting worker waits for storage before it takes jobs anyway
_WARM_UP_WAIT_S = 5.0


def instrument(
    worker_settings: _WorkerSettings,
    /,
    *,
    app_name: str | None = None,
    storage_url: str | None = None,
    settings: Settings | None = None,
) -> _WorkerSettings:
    """Record every job attempt of workers built from ``worker_settings``; returns it.

    ``app_name``, ``storage_url`` and ``settings`` override the ``QUEUELENS_*`` settings. A
    bad setting raises :class:`~queuelens.config.ConfigError` here, at import time.
    """
    if getattr(_get(worker_settings, "on_startup"), _MARK, None) is not None:
        return worker_settings
    hooks = _ArqHooks(
        Runtime.create("arq", app=app_name, storage_url=storage_url, settings=settings),
        worker_settings,
    )
    functions = _get(worker_settings, "functions")
    if functions is not None:
        _set(worker_settings, "functions", [hooks.wrap(func(f)) for f in functions])
    cron_jobs = _get(worker_settings, "cron_jobs")
    if cron_jobs is not None:
        _set(worker_settings, "cron_jobs", [hooks.wrap(job) for job in cron_jobs])
    on_startup = _then(_get(worker_settings, "on_startup"), hooks.on_startup)
    setattr(on_startup, _MARK, hooks)
    _set(worker_settings, "on_startup", on_startup)
    _set(
        worker_settings,
        "on_job_start",
        _then(_get(worker_settings, "on_job_start"), hooks.on_job_start),
    )
    _set(
        worker_settings, "on_job_end", _then(hooks.on_job_end, _get(worker_settings, "on_job_end"))
    )
    _set(
        worker_settings,
        "on_shutdown",
        _always_then(_get(worker_settings, "on_shutdown"), hooks.on_shutdown),
    )
    return worker_settings


def _get(worker_settings: type[Any] | dict[str, Any], name: str) -> Any:
    # arq reads a settings class through its __dict__ (inherited attributes are ignored).
    if isinstance(worker_settings, dict):
        return worker_settings.get(name)
    return worker_settings.__dict__.get(name)


def _set(worker_settings: type[Any] | dict[str, Any], name: str, value: Any) -> None:
    if isinstance(worker_settings, dict):
        worker_settings[name] = value
    else:
        setattr(worker_settings, name, value)


def _then(first: _Hook | None, second: _Hook | None) -> _Hook:
    """A hook running ``first`` then ``second``; an exception in ``first`` skips ``second``."""

    async def chained(ctx: dict[Any, Any]) -> None:
        if first is not None:
            await first(ctx)
        if second is not None:
            await second(ctx)

    return chained


def _always_then(first: _Hook | None, second: _Hook) -> _Hook:
    """A hook running ``first`` then ``second``, ``second`` even when ``first`` raises."""

    async def chained(ctx: dict[Any, Any]) -> None:
        try:
            if first is not None:
                await first(ctx)
        finally:
            await second(ctx)

    return chained


@dataclass(frozen=True, slots=True)
class _FunctionInfo:
    name: str
    timeout_s: float | None
    max_tries: int | None


@dataclass(slots=True)
class _Worker:
    """What one arq worker (one ``Worker`` instance) is, read from its settings."""

    queue: str
    retry_jobs: bool
    allow_abort_jobs: bool
    max_tries: int
    job_timeout_s: float | None
    tracker: WorkerTracker | None = None


@dataclass(slots=True)
class _Attempt:
    """One execution attempt, from on_job_start to on_job_end."""

    ctx: dict[Any, Any]  # held so that id(ctx) stays unique while the attempt is open
    job_id: str
    job_try: int
    due_at: float | None
    armed_at: float
    function: _FunctionInfo | None = None
    started_at: float | None = None
    measured: Measured | None = None
    exception: BaseException | None = None
    cancelled_after_s: float | None = None


class _ArqHooks:
    """The hooks and function wrapper that ``instrument`` installs on one settings object."""

    def __init__(self, runtime: Runtime, worker_settings: type[Any] | dict[str, Any]) -> None:
        self.runtime = runtime
        self._settings = worker_settings
        self._workers: dict[int, _Worker] = {}
        self._attempts: dict[int, _Attempt] = {}
        self._retried_at: OrderedDict[str, float] = OrderedDict()
        self._warned_unwrapped = False

    # -- functions -------------------------------------------------------------------------

    def wrap(self, job: Function | CronJob) -> Any:
        """A copy of ``job`` whose coroutine reports its name, exception and measurement."""
        info = _FunctionInfo(job.name, job.timeout_s, job.max_tries)
        return dataclasses.replace(job, coroutine=self._measured(job.coroutine, info))

    def _measured(self, coroutine: _JobCoroutine, info: _FunctionInfo) -> Any:
        attempts = self._attempts

        @functools.wraps(coroutine)
        async def run_measured(ctx: dict[Any, Any], *args: Any, **kwargs: Any) -> Any:
            attempt = attempts.get(id(ctx))
            if attempt is None or attempt.function is not None:  # not run by our worker
                return await coroutine(ctx, *args, **kwargs)
            self._started(attempt, info)
            measurement = JobMeasurement.start()
            try:
                return await coroutine(ctx, *args, **kwargs)
            except BaseException as exc:
                attempt.exception = exc
                if isinstance(exc, asyncio.CancelledError):
                    attempt.cancelled_after_s = _loop_time() - attempt.armed_at
                raise
            finally:
                attempt.measured = measurement.finish()

        return run_measured

    def _started(self, attempt: _Attempt, info: _FunctionInfo) -> None:
        attempt.function = info
        attempt.started_at = time.time()
        worker = self._workers.get(id(attempt.ctx.get("redis")))
        if worker is not None and worker.tracker is not None:
            worker.tracker.job_started(attempt.job_id, info.name)

    # -- worker lifecycle ------------------------------------------------------------------

    def _setting(self, name: str, default: Any) -> Any:
        value = _get(self._settings, name)
        return default if value is None else value

    def _new_worker(self, ctx: dict[Any, Any]) -> _Worker:
        pool = ctx.get("redis")
        queue = self._setting("queue_name", None) or getattr(pool, "default_queue_name", None)
        return _Worker(
            queue=str(queue or "arq:queue"),
            retry_jobs=bool(self._setting("retry_jobs", True)),
            allow_abort_jobs=bool(self._setting("allow_abort_jobs", False)),
            max_tries=int(self._setting("max_tries", 5)),
            job_timeout_s=to_seconds(self._setting("job_timeout", 300)),
        )

    async def on_startup(self, ctx: dict[Any, Any]) -> None:
        worker = self._workers[id(ctx.get("redis"))] = self._new_worker(ctx)
        try:
            tracker = self.runtime.tracker(
                name=f"arq@{socket.gethostname()}:{os.getpid()}",
                queues=[worker.queue],
                concurrency=int(self._setting("max_jobs", 10)),
            )
        except Exception:  # metrics must not stop a worker from starting
            log.exception("queuelens: cannot make the heartbeat of this arq worker")
            tracker = None
        await _warm_up(self.runtime, tracker)
        if tracker is not None:
            tracker.start()
            worker.tracker = tracker

    async def on_shutdown(self, ctx: dict[Any, Any]) -> None:
        worker = self._workers.pop(id(ctx.get("redis")), None)
        await asyncio.to_thread(self._close, worker)

    def _close(self, worker: _Worker | None) -> None:
        try:
            # Flush first, so the last outcomes are stored before the worker reads "stopped".
            self.runtime.recorder.flush()
            if worker is not None and worker.tracker is not None:
                worker.tracker.stop()
        except Exception:
            log.exception("queuelens: stopping the arq worker's metrics failed")

    # -- jobs ------------------------------------------------------------------------------

    async def on_job_start(self, ctx: dict[Any, Any]) -> None:
        try:
            job_id = str(ctx.get("job_id"))
            job_try = int(ctx.get("job_try") or 1)
            self._attempts[id(ctx)] = _Attempt(
                ctx, job_id, job_try, self._due_at(ctx, job_id, job_try), _loop_time()
            )
        except Exception:
            log.exception("queuelens: cannot follow an arq job; the job is unaffected")

    def _due_at(self, ctx: dict[Any, Any], job_id: str, job_try: int) -> float | None:
        """When the attempt could have started: enqueue time, deferred time or retry time.

        arq keeps a job's score when ``Retry()`` has no delay, so for a later try the score
        is the first try's time; then only a retry this process saw says when it was queued.
        """
        enqueued = ctx.get("enqueue_time")
        enqueued_at = enqueued.timestamp() if isinstance(enqueued, datetime) else None
        score = ctx.get("score")
        scored_at = score / 1000 if isinstance(score, int | float) else None
        known = [t for t in (enqueued_at, scored_at) if t is not None]
        if not known:
            return None
        if job_try > 1:
            retried_at = self._retried_at.pop(job_id, None)
            if retried_at is not None:
                return max(*known, retried_at)
            if scored_at is None or enqueued_at is None or scored_at <= enqueued_at:
                return None  # the score was never moved: the retry time is unknown
        return max(known)

    async def on_job_end(self, ctx: dict[Any, Any]) -> None:
        attempt = self._attempts.pop(id(ctx), None)
        if attempt is None:
            return
        try:
            self._record(attempt)
        except Exception:
            log.exception("queuelens: recording an arq job failed; the job is unaffected")

    def _record(self, attempt: _Attempt) -> None:
        info = attempt.function
        if info is None:
            if not self._warned_unwrapped:
                self._warned_unwrapped = True
                log.warning(
                    "queuelens: arq ran a function that instrument() did not wrap; add "
                    "functions to WorkerSettings before calling instrument()"
                )
            return
        pool_id = id(attempt.ctx.get("redis"))
        worker = self._workers.get(pool_id) or self._workers.setdefault(
            pool_id, self._new_worker(attempt.ctx)
        )
        status, exception = self._status(attempt, info, worker)
        wait_s = None
        if attempt.due_at is not None and attempt.started_at is not None:
            wait_s = attempt.started_at - attempt.due_at
        self.runtime.recorder.record(
            outcome_from(
                attempt.measured,
                queue=worker.queue,
                job=info.name,
                status=status,
                wait_s=wait_s,
                exception=exception,
            )
        )
        if status is JobStatus.retried:
            self._retried_at[attempt.job_id] = time.time()
            if len(self._retried_at) > _RETRIES_REMEMBERED:
                self._retried_at.popitem(last=False)
        if worker.tracker is not None:
            failed = status in (JobStatus.failed, JobStatus.timed_out)
            worker.tracker.job_finished(attempt.job_id, failed=failed)

    @staticmethod
    def _status(
        attempt: _Attempt, info: _FunctionInfo, worker: _Worker
    ) -> tuple[JobStatus, BaseException | None]:
        """How arq treats what the job raised (see ``arq.worker.Worker.run_job``)."""
        exc = attempt.exception
        if exc is None:
            return JobStatus.succeeded, None
        max_tries = worker.max_tries if info.max_tries is None else info.max_tries
        # On the last try arq queues the job once more, then fails it without a hook.
        again = JobStatus.retried if attempt.job_try < max_tries else JobStatus.failed
        if isinstance(exc, asyncio.CancelledError):
            task = asyncio.current_task()
            if task is not None and task.cancelling():  # the worker is shutting down
                return (again if worker.retry_jobs else JobStatus.failed), exc
            timeout_s = worker.job_timeout_s if info.timeout_s is None else info.timeout_s
            elapsed = attempt.cancelled_after_s
            if timeout_s is not None and elapsed is not None and elapsed >= timeout_s:
                return JobStatus.timed_out, TimeoutError(f"arq's {timeout_s:g} s job timeout")
            if worker.allow_abort_jobs:
                return JobStatus.revoked, exc
            return (again if worker.retry_jobs else JobStatus.failed), exc
        if worker.retry_jobs and isinstance(exc, Retry | RetryJob):
            return again, exc
        return JobStatus.failed, exc


async def _warm_up(runtime: Runtime, tracker: WorkerTracker | None) -> None:
    """Runtime.warm_up off the event loop, so other coroutines keep running meanwhile."""
    await asyncio.to_thread(runtime.warm_up, tracker, _WARM_UP_WAIT_S)


def _loop_time() -> float:
    # The event loop's clock: arq's job timeout (asyncio.wait_for) is measured on it.
    return asyncio.get_running_loop().time()
