"""RQ workers that record every job attempt and send heartbeats to queuelens.

    rq worker -w queuelens.integrations.rq.Worker emails default       # forking (RQ's default)
    rq worker -w queuelens.integrations.rq.SimpleWorker emails         # runs jobs in-process

Storage and app come from the settings (``QUEUELENS_STORAGE_URL``, ``QUEUELENS_APP``, …, or
``queuelens.toml``). To pin them in code, point ``-w`` at a configured class::

    BillingWorker = Worker.configure(app="billing", storage_url="postgresql://…/queuelens")

    class ReportsWorker(Worker):              # the same, as class attributes
        queuelens_app = "reports"

One :class:`~queuelens.model.JobOutcome` per execution attempt, series ``(app, queue,
job.func_name)``; status ``succeeded``, ``failed``, ``retried``, ``timed_out`` or ``revoked``
(stopped). The forking worker records in the worker process: the horse reports status,
duration, wait, CPU and exception through a pipe before ``os._exit``, and the worker adds the
horse's peak RSS from ``os.wait4``. A worker heartbeat comes from its own thread.

RQ forks a horse for every job, so what queuelens does there is paid per job: the horse only
measures and writes to the pipe, touching as little of its parent's memory as it can (each
page it writes is copied), and everything else happens in the worker process.
``docs/integrations/rq.md`` says exactly what is measured and how.
"""

from __future__ import annotations

import ast
import contextlib
import datetime
import logging
import os
import resource
import sys
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Self, cast

import rq.worker
from rq.job import Job, Retry
from rq.queue import Queue
from rq.timeouts import JobTimeoutException

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, exception_name
from queuelens.measure import JobMeasurement, current_rss_mb
from queuelens.model import JobOutcome, JobStatus

if TYPE_CHECKING:
    from resource import struct_rusage


__all__ = ["WORK_HORSE_TERMINATED", "SimpleWorker", "Worker"]

log = logging.getLogger("queuelens.integrations.rq")

#: exception type recorded when a work horse dies without reporting (killed, crashed, stopped)
WORK_HORSE_TERMINATED = "WorkHorseTerminated"
# One report line goes out in one write() under PIPE_BUF bytes: atomic, never blocking.
_REPORT_MAX_BYTES = 3800
_MAXRSS_UNIT = 1024 * 1024 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB elsewhere


@dataclass(slots=True)
class _Attempt:
    """What is known about the attempt in progress; filled in by RQ's hooks."""

    job: str
    queue: str
    status: JobStatus | None = None
    exception_type: str | None = None
    exception_message: str | None = None
    timed_out: bool = False
    duration_s: float | None = None
    wait_s: float | None = None
    cpu_s: float | None = None
    memory_peak_mb: float | None = None
    memory_delta_mb: float | None = None
    perf_start: float | None = None
    cpu_start: float | None = None
    measurement: JobMeasurement | None = None
    # forking worker, in the worker process
    forked_at: float | None = None
    fork_wait_s: float | None = None
    rusage: struct_rusage | None = None
    exit_status: int | None = None
    parent_status: JobStatus | None = None
    parent_message: str | None = None

    def finish_measurement(self) -> None:
        if self.measurement is not None:
            m, self.measurement = self.measurement.finish(), None
            self.duration_s, self.cpu_s = m.duration_s, m.cpu_s
            self.memory_peak_mb, self.memory_delta_mb = m.memory_peak_mb, m.memory_delta_mb

    def outcome(self) -> JobOutcome:
        fields = {name: getattr(self, name) for name in _OUTCOME_FIELDS}
        return JobOutcome(**fields | {"status": self.status or JobStatus.failed})


#: the fields of _Attempt that make a JobOutcome
_OUTCOME_FIELDS = (
    *("queue", "job", "status", "duration_s", "wait_s", "cpu_s", "memory_peak_mb"),
    *("memory_delta_mb", "exception_type", "exception_message"),
)
#: what the horse sends the worker at the end of an attempt
_REPORTED = ("status", "duration_s", "wait_s", "cpu_s", "exception_type", "exception_message")


class _Instrumented(rq.worker.BaseWorker):
    """What both workers share: runtime, tracker, and the hooks that fill in an attempt."""

    #: app of this worker class's series (None: the ``app`` setting)
    queuelens_app: ClassVar[str | None] = None
    #: storage URL (None: the ``storage_url`` setting)
    queuelens_storage_url: ClassVar[str | None] = None
    #: settings to start from (None: :func:`~queuelens.config.load_settings`)
    queuelens_settings: ClassVar[Settings | None] = None

    _ql_runtime: Runtime | None = None
    _ql_tracker: WorkerTracker | None = None
    _ql_attempt: _Attempt | None = None
    _ql_in_process = True

    @classmethod
    def configure(
        cls,
        *,
        app: str | None = None,
        storage_url: str | None = None,
        settings: Settings | None = None,
    ) -> type[Self]:
        """A subclass whose records go to ``app`` / ``storage_url`` / ``settings``."""
        attrs = {
            "__module__": cls.__module__,
            "__qualname__": cls.__qualname__,
            "queuelens_app": app if app is not None else cls.queuelens_app,
            "queuelens_storage_url": storage_url or cls.queuelens_storage_url,
            "queuelens_settings": settings or cls.queuelens_settings,
        }
        return cast("type[Self]", type(cls.__name__, (cls,), attrs))

    @property
    def queuelens(self) -> Runtime:
        """This worker's runtime: settings and recorder (one RQ worker runs per process)."""
        if self._ql_runtime is None:
            self._ql_runtime = Runtime.create(
                "rq",
                app=self.queuelens_app,
                storage_url=self.queuelens_storage_url,
                settings=self.queuelens_settings,
            )
        return self._ql_runtime

    # -- worker lifecycle (worker process) -------------------------------------------------

    def bootstrap(self, *args: Any, **kwargs: Any) -> None:
        runtime = self.queuelens  # a bad setting fails here, before the worker registers
        super().bootstrap(*args, **kwargs)
        if self._ql_tracker is None:
            self._ql_tracker = runtime.tracker(name=self.name, queues=self.queue_names())
            self._ql_tracker.start()

    def teardown(self) -> None:
        runtime, tracker = self._ql_runtime, self._ql_tracker
        if not self.is_horse and runtime is not None:
            self._ql_runtime = self._ql_tracker = None
            try:
                if tracker is not None:
                    tracker.stop()  # a last heartbeat: "stopped"
                runtime.close()  # the final flush; work() again makes a new runtime
            except Exception:
                log.exception("queuelens: stopping the worker's metrics failed")
        super().teardown()  # type: ignore[no-untyped-call]

    def execute_job(self, job: Job, queue: Queue) -> None:
        attempt = self._ql_attempt = _Attempt(_job_name(job), queue.name)
        if self._ql_tracker is not None:
            self._ql_tracker.job_started(job.id, attempt.job)
        try:
            super().execute_job(job, queue)
        finally:
            self._ql_attempt = None
            try:
                outcome = self._ql_outcome(job, attempt)
                if outcome is not None:
                    self.queuelens.recorder.record(outcome)
                if self._ql_tracker is not None:
                    failed = outcome is None or outcome.status is not JobStatus.succeeded
                    self._ql_tracker.job_finished(job.id, failed=failed)
            except Exception:
                log.exception("queuelens: could not record job %s", job.id)

    def _ql_outcome(self, job: Job, attempt: _Attempt) -> JobOutcome | None:
        """The outcome of an attempt measured in this process (SimpleWorker)."""
        attempt.finish_measurement()  # if the job never reached handle_execution_ended
        return attempt.outcome() if attempt.perf_start is not None or attempt.status else None

    # -- job hooks (in the work horse, or in the SimpleWorker process) ----------------------

    def prepare_job_execution(self, job: Job, remove_from_intermediate_queue: bool = False) -> None:
        super().prepare_job_execution(job, remove_from_intermediate_queue)
        attempt = self._ql_attempt
        if attempt is not None:  # RQ sets job.started_at and calls the function next
            with contextlib.suppress(Exception):  # import the job's module outside the clock
                _ = job.func  # (if that fails, RQ fails the job in its usual place)
            if self._ql_in_process:
                attempt.measurement = JobMeasurement.start()
            else:
                attempt.cpu_start = _cpu_with_children()
            attempt.perf_start = time.perf_counter()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        attempt = self._ql_attempt
        if attempt is not None and attempt.duration_s is None and attempt.perf_start is not None:
            attempt.duration_s = time.perf_counter() - attempt.perf_start
            if attempt.cpu_start is not None:
                attempt.cpu_s = _cpu_with_children() - attempt.cpu_start
            attempt.finish_measurement()
            attempt.wait_s = _seconds_between(job.enqueued_at, job.started_at)
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def handle_exception(self, job: Job, *exc_info: Any) -> None:
        attempt = self._ql_attempt
        if attempt is not None and len(exc_info) > 1 and isinstance(exc_info[1], BaseException):
            attempt.exception_type = exception_name(exc_info[1])
            attempt.exception_message = str(exc_info[1])
            attempt.timed_out = isinstance(exc_info[1], JobTimeoutException)
        super().handle_exception(job, *exc_info)

    def handle_job_success(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        if self._ql_attempt is not None:
            self._ql_attempt.status = JobStatus.succeeded
        super().handle_job_success(job, queue, *args, **kwargs)

    def handle_job_retry(
        self, job: Job, queue: Queue, retry: Retry, *args: Any, **kwargs: Any
    ) -> None:
        if self._ql_attempt is not None:  # the job returned a Retry
            exhausted = bool(job.number_of_retries and job.number_of_retries >= retry.max)
            self._ql_attempt.status = JobStatus.failed if exhausted else JobStatus.retried
        super().handle_job_retry(job, queue, retry, *args, **kwargs)

    def handle_job_failure(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> None:
        # (job, queue, started_job_registry=None, exc_string="", execution=None) in RQ 3
        exc_string = kwargs.get("exc_string", args[1] if len(args) > 1 else "")
        attempt = self._ql_attempt
        if attempt is not None:
            # a horse that died or was stopped is handled by RQ in the worker process
            in_worker = attempt.forked_at is not None and not self.is_horse
            timeout = job.timeout if isinstance(job.timeout, int | float) else 0
            overran = in_worker and 0 < timeout <= time.perf_counter() - (attempt.forked_at or 0)
            if self._stopped_job_id == job.id:
                status = JobStatus.revoked
            elif attempt.timed_out or overran:
                status = JobStatus.timed_out
            else:
                status = JobStatus.retried if _will_retry(job) else JobStatus.failed
            if in_worker:
                attempt.parent_status = status
                attempt.parent_message = str(exc_string).strip().split("\n")[0] or None
            else:
                attempt.status = status
        super().handle_job_failure(job, queue, *args, **kwargs)


class Worker(_Instrumented, rq.worker.Worker):
    """RQ's forking worker, recording each job attempt and beating while it runs."""

    _ql_in_process = False
    _ql_pipe: tuple[int, int] | None = None
    _ql_report_fd: int | None = None

    def fork_work_horse(self, job: Job, queue: Queue) -> None:
        attempt, pipe = self._ql_attempt, None
        if attempt is not None:
            with contextlib.suppress(OSError):
                pipe = os.pipe()
            attempt.forked_at = time.perf_counter()
            attempt.fork_wait_s = _seconds_between(
                job.enqueued_at, datetime.datetime.now(datetime.UTC)
            )
        self._ql_pipe = pipe
        try:
            super().fork_work_horse(job, queue)  # only the worker returns; the horse os._exit()s
        except BaseException:  # no horse: nothing to record
            if attempt is not None:
                attempt.forked_at = None
            if pipe is not None:
                os.close(pipe[0])
                self._ql_pipe = None
            raise
        finally:
            if pipe is not None:
                os.close(pipe[1])

    def main_work_horse(self, job: Job, queue: Queue) -> None:
        pipe = self._ql_pipe
        if pipe is not None:
            with contextlib.suppress(OSError):
                os.close(pipe[0])
                os.set_blocking(pipe[1], False)
                self._ql_report_fd = pipe[1]
                # Sent now, so the worker knows it even if the horse is killed (OOM) later.
                self._ql_report({"rss_start_mb": _horse_start_rss_mb()})
        super().main_work_horse(job, queue)

    def perform_job(self, job: Job, queue: Queue, *args: Any, **kwargs: Any) -> bool:
        try:
            return super().perform_job(job, queue, *args, **kwargs)
        finally:
            if self._ql_report_fd is not None and self._ql_attempt is not None:
                self._ql_report_final(self._ql_attempt)

    def wait_for_horse(self) -> tuple[int | None, int | None, struct_rusage | None]:
        pid, status, rusage = super().wait_for_horse()
        if self._ql_attempt is not None and pid:
            self._ql_attempt.rusage, self._ql_attempt.exit_status = rusage, status
        return pid, status, rusage

    def _ql_report(self, fields: dict[str, Any]) -> bool:
        """Send one line to the worker (from the horse); False if it did not fit or failed.

        The line is the dict's ``repr``, read back with :func:`ast.literal_eval`: unlike
        ``json.dumps``, it needs no module whose memory the horse would first have to copy.
        """
        line = repr(fields).encode("utf-8", "backslashreplace") + b"\n"
        if self._ql_report_fd is None or len(line) > _REPORT_MAX_BYTES:
            return False
        try:
            return os.write(self._ql_report_fd, line) == len(line)
        except OSError:
            return False

    def _ql_report_final(self, attempt: _Attempt) -> None:
        fields = {name: getattr(attempt, name) for name in _REPORTED}
        if attempt.status is not None:
            fields["status"] = attempt.status.value  # a literal, for ast.literal_eval
        message = attempt.exception_message
        if message is not None:
            message = fields["exception_message"] = message[
                : self.queuelens.settings.exception_message_max
            ]
        for _ in range(12):  # halve an over-long message until the line fits in one write
            if self._ql_report(fields) or not message:
                return
            message = fields["exception_message"] = message[: len(message) // 2]

    def _ql_outcome(self, job: Job, attempt: _Attempt) -> JobOutcome | None:
        """The outcome, assembled in the worker from the horse's report and its rusage."""
        pipe, self._ql_pipe = self._ql_pipe, None
        if attempt.forked_at is None:
            return None  # no horse was forked
        elapsed = time.perf_counter() - attempt.forked_at
        report = _read_report(pipe[0]) if pipe is not None else {}
        attempt.status = _status(report.get("status"))
        if attempt.status is None or attempt.parent_status is JobStatus.revoked:
            died = JobStatus.retried if _will_retry(job) else JobStatus.failed  # as RQ will
            attempt.status = attempt.parent_status or died
            attempt.exception_type = WORK_HORSE_TERMINATED
            attempt.exception_message = attempt.parent_message or _describe(attempt.exit_status)
        else:
            attempt.exception_type = _text(report.get("exception_type"))
            attempt.exception_message = _text(report.get("exception_message"))
        attempt.duration_s = _number(report.get("duration_s"), elapsed)
        attempt.wait_s = _number(report.get("wait_s"), attempt.fork_wait_s)
        if (rusage := attempt.rusage) is not None:
            attempt.cpu_s = _number(report.get("cpu_s"), rusage.ru_utime + rusage.ru_stime)
            attempt.memory_peak_mb = peak = rusage.ru_maxrss / _MAXRSS_UNIT
            if (start := _number(report.get("rss_start_mb"))) is not None:
                attempt.memory_delta_mb = max(peak - start, 0.0)
        return attempt.outcome()


class SimpleWorker(_Instrumented, rq.worker.SimpleWorker):
    """RQ's in-process worker, recording each job attempt and beating while it runs."""


# -- helpers --------------------------------------------------------------------------------


def _job_name(job: Job) -> str:
    try:
        return str(job.func_name)
    except Exception:  # the job's payload cannot be deserialized
        return "<DeserializationError>"


def _seconds_between(
    start: datetime.datetime | None, end: datetime.datetime | None
) -> float | None:
    if start is None or end is None:
        return None
    if start.tzinfo is None:  # RQ before 3.0 kept naive UTC
        start = start.replace(tzinfo=datetime.UTC)
    if end.tzinfo is None:
        end = end.replace(tzinfo=datetime.UTC)
    return (end - start).total_seconds()


def _will_retry(job: Job) -> bool:
    """Whether RQ retries a job that failed now (``Job.should_retry`` in RQ 3)."""
    return bool(job.retries_left and job.retries_left > 0)


def _horse_start_rss_mb() -> float | None:
    """RSS of a horse just forked. On Linux its peak RSS so far is that (a child's peak
    starts at its RSS on fork): one system call, and no /proc file to open in every horse."""
    if sys.platform.startswith("linux"):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / _MAXRSS_UNIT
    return current_rss_mb()


def _cpu_with_children() -> float:
    """CPU seconds (user + system) of this process and the children it waited for."""
    own = resource.getrusage(resource.RUSAGE_SELF)
    kids = resource.getrusage(resource.RUSAGE_CHILDREN)
    return own.ru_utime + own.ru_stime + kids.ru_utime + kids.ru_stime


def _number(value: object, default: float | None = None) -> float | None:
    return float(value) if isinstance(value, int | float) else default


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


def _status(value: object) -> JobStatus | None:
    try:
        return JobStatus(value) if isinstance(value, str) else None
    except ValueError:
        return None


def _read_report(fd: int) -> dict[str, Any]:
    """What the horse wrote, merged. Never blocks (a grandchild may hold the pipe open)."""
    chunks = []
    try:
        os.set_blocking(fd, False)
        while chunk := os.read(fd, 65536):
            chunks.append(chunk)
    except OSError:  # BlockingIOError: nothing more was written
        pass
    finally:
        os.close(fd)
    report: dict[str, Any] = {}
    for line in b"".join(chunks).splitlines():
        with contextlib.suppress(ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            fields = ast.literal_eval(line.decode("utf-8", "replace"))
            if isinstance(fields, dict):
                report.update(fields)
    return report


def _describe(status: int | None) -> str:
    if status is not None and os.WIFSIGNALED(status):
        return f"the work horse was killed by signal {os.WTERMSIG(status)}"
    code = "?" if status is None else os.waitstatus_to_exitcode(status)
    return f"the work horse exited with status {code} without a report"
