"""Dramatiq: job metrics and worker heartbeats from one broker middleware.

    import dramatiq
    from dramatiq.brokers.redis import RedisBroker
    from queuelens.integrations.dramatiq import QueueLens

    broker = RedisBroker(url="redis://localhost:6379/0")
    broker.add_middleware(QueueLens())        # or QueueLens(app="billing", storage_url=...)
    dramatiq.set_broker(broker)

Every execution attempt becomes one :class:`~queuelens.model.JobOutcome` in series
``(app, queue, actor_name)``, the queue named without its ``.DQ``/``.XQ`` suffix. The
attempt is measured from ``before_process_message`` to ``after_process_message`` (this
middleware runs last before the actor and first after it) and recorded when the broker acks
or nacks the message, because only then is its fate known, whatever the middleware order:

- ``succeeded``: acked, no exception;
- ``retried``: raised, and the same message was enqueued again while it was being
  processed (the Retries middleware, or ``dramatiq.Retry``);
- ``failed``: raised and not enqueued again (retries exhausted, ``throws``, no Retries);
- ``timed_out``: ``TimeLimitExceeded``, whether or not it is retried;
- ``rejected``: skipped (``SkipMessage``, e.g. AgeLimit), or dead-lettered without an
  exception (an unknown actor).

Wait is from ``message_timestamp`` — or, for a delayed or retried message, from the eta the
worker noted before its delay queue released it (``ETA_OPTION``) — to the start. CPU time is
the worker thread's (the process's for ``async def`` actors, None when it cannot be
attributed). Each worker process keeps its own recorder and sends heartbeats for its
``--threads`` slots; a killed process stops beating and is shown stale.
"""

from __future__ import annotations

import dataclasses
import inspect
import logging
import os
import socket
import sys
import threading
import time
from typing import Any, Literal

from dramatiq.broker import Broker, MessageProxy
from dramatiq.common import q_name
from dramatiq.message import Message
from dramatiq.middleware import Middleware, TimeLimitExceeded
from dramatiq.worker import Worker

from queuelens.config import Settings
from queuelens.heartbeat import WorkerTracker
from queuelens.integrations._runtime import Runtime, outcome_from
from queuelens.measure import JobMeasurement, Measured
from queuelens.model import JobStatus
from queuelens.probes.dramatiq import ETA_OPTION, ready_at_ms

__all__ = ["ETA_OPTION", "FRAMEWORK", "QueueLens"]

FRAMEWORK = "dramatiq"
#: statuses a worker heartbeat counts as failed attempts
_FAILED = frozenset({JobStatus.failed, JobStatus.retried, JobStatus.timed_out})

log = logging.getLogger("queuelens.integrations.dramatiq")
_lock = threading.Lock()


def _new_lock_in_child() -> None:
    global _lock
    _lock = threading.Lock()


os.register_at_fork(after_in_child=_new_lock_in_child)


@dataclasses.dataclass(slots=True, eq=False)
class _Attempt:
    """One message being processed by one worker thread."""

    message: MessageProxy
    queue: str
    job: str
    wait_s: float | None
    thread: int
    tracked: bool = False
    measurement: JobMeasurement | None = None
    measured: Measured | None = None
    exception: BaseException | None = None
    requeued: bool = False
    skipped: bool = False

    def end(self) -> None:
        """Stop the clock (once); CPU time is only known on the thread that started it."""
        if self.measurement is None or self.measured is not None:
            return
        measured = self.measurement.finish()
        if threading.get_ident() != self.thread:
            measured = dataclasses.replace(measured, cpu_s=None)
        self.measured = measured

    def status(self, nacked: bool) -> JobStatus:
        if self.skipped:
            return JobStatus.rejected
        if self.exception is None:
            return JobStatus.rejected if nacked else JobStatus.succeeded
        if isinstance(self.exception, TimeLimitExceeded):
            return JobStatus.timed_out
        return JobStatus.retried if self.requeued else JobStatus.failed


class QueueLens(Middleware):
    """Records every message a worker processes and sends the worker's heartbeats.

    ``app``, ``storage_url`` and ``settings`` override the ``QUEUELENS_*`` settings; a bad
    setting raises :class:`~queuelens.config.ConfigError` here, when the broker is built.
    """

    def __init__(
        self,
        *,
        app: str | None = None,
        storage_url: str | None = None,
        settings: Settings | None = None,
    ) -> None:
        runtime = Runtime.create(FRAMEWORK, app=app, storage_url=storage_url, settings=settings)
        self.settings: Settings = runtime.settings
        self._runtime = runtime
        self._runtime_pid = os.getpid()
        self._tracker: WorkerTracker | None = None
        self._attempts: dict[int, _Attempt] = {}
        self._cpu_modes: dict[str, Literal["process", "thread"]] = {}

    @property
    def runtime(self) -> Runtime:
        """The recorder and settings of this process (a forked process gets its own)."""
        if self._runtime_pid != os.getpid():
            with _lock:
                if self._runtime_pid != os.getpid():
                    self._runtime = Runtime.create(FRAMEWORK, settings=self.settings)
                    self._tracker = None
                    self._attempts = {}
                    self._runtime_pid = os.getpid()
        return self._runtime

    @property
    def tracker(self) -> WorkerTracker | None:
        """The heartbeat tracker of this worker process, once the worker has booted."""
        return self._tracker if self._runtime_pid == os.getpid() else None

    # -- worker lifecycle -----------------------------------------------------------------

    def after_process_boot(self, broker: Broker) -> None:
        self.runtime  # noqa: B018 - build this process's recorder before any job runs

    def before_worker_boot(self, broker: Broker, worker: Worker) -> None:
        # Before the worker threads start, so that no job escapes the busy count, and no
        # job runs while opening the storage (imports, migrations) holds the GIL.
        runtime = self.runtime
        runtime.warm_up()
        whitelist = getattr(worker, "consumer_whitelist", None)
        queues = sorted({q_name(q) for q in (whitelist or broker.get_declared_queues())})
        tracker = runtime.tracker(
            name=f"dramatiq:{socket.gethostname()}:{os.getpid()}",
            queues=queues,
            concurrency=int(getattr(worker, "worker_threads", 1)),
        )
        tracker.start()
        self._tracker = tracker

    def after_worker_shutdown(self, broker: Broker, worker: Worker) -> None:
        # Dramatiq's worker processes end with os._exit: no atexit hook will flush for us.
        for ident, attempt in list(self._attempts.items()):
            if self._attempts.pop(ident, None) is not None:
                self._record(attempt, nacked=bool(getattr(attempt.message, "failed", False)))
        # Flush first, so the last outcomes are stored before the worker reads "stopped".
        self.runtime.recorder.flush()
        tracker = self.tracker
        if tracker is not None:
            tracker.stop()
            self._tracker = None

    # -- messages -------------------------------------------------------------------------

    def before_delay_message(self, broker: Broker, message: MessageProxy) -> None:
        # The delay queue re-enqueues a copy without its eta; keep the eta for the wait.
        eta = message.options.get("eta")
        if isinstance(eta, int | float) and not isinstance(eta, bool):
            message.options[ETA_OPTION] = eta

    def before_process_message(self, broker: Broker, message: MessageProxy) -> None:
        attempt = self._begin(message)
        tracker = self.tracker
        if tracker is not None:
            tracker.job_started(message.message_id, message.actor_name)
            attempt.tracked = True
        attempt.measurement = JobMeasurement.start(cpu=self._cpu_mode(broker, message.actor_name))

    def after_process_message(
        self,
        broker: Broker,
        message: MessageProxy,
        *,
        result: Any | None = None,
        exception: BaseException | None = None,
    ) -> None:
        attempt = self._current(message)
        attempt.end()
        attempt.exception = exception

    def after_skip_message(self, broker: Broker, message: MessageProxy) -> None:
        attempt = self._current(message)
        attempt.end()
        attempt.skipped = True

    def after_enqueue(self, broker: Broker, message: Message[Any], delay: int | None) -> None:
        attempt = self._attempts.get(threading.get_ident())
        if attempt is not None and attempt.message.message_id == message.message_id:
            attempt.requeued = True

    def after_ack(self, broker: Broker, message: MessageProxy) -> None:
        # Acks of messages this thread did not process (delay queue releases) are not jobs.
        attempt = self._take(message)
        if attempt is not None:
            self._record(attempt, nacked=False)

    def after_nack(self, broker: Broker, message: MessageProxy) -> None:
        attempt = self._take(message)
        if attempt is None:
            # Dead-lettered by a consumer thread without running: an unknown actor.
            attempt = self._new_attempt(message)
            attempt.exception = getattr(message, "_exception", None)
            attempt.skipped = True
        self._record(attempt, nacked=True)

    # -- internals ------------------------------------------------------------------------

    def _new_attempt(self, message: MessageProxy) -> _Attempt:
        return _Attempt(
            message=message,
            queue=q_name(message.queue_name),
            job=message.actor_name,
            wait_s=_wait_s(message.options, message.message_timestamp, time.time()),
            thread=threading.get_ident(),
        )

    def _begin(self, message: MessageProxy) -> _Attempt:
        """A fresh attempt for this thread; one left over (never acked) is recorded first."""
        ident = threading.get_ident()
        left = self._attempts.pop(ident, None)
        if left is not None:
            self._record(left, nacked=bool(getattr(left.message, "failed", False)))
        attempt = self._attempts[ident] = self._new_attempt(message)
        return attempt

    def _current(self, message: MessageProxy) -> _Attempt:
        attempt = self._attempts.get(threading.get_ident())
        if attempt is None or attempt.message.message_id != message.message_id:
            # before_process_message never reached us (an earlier middleware raised).
            attempt = self._begin(message)
        return attempt

    def _take(self, message: MessageProxy) -> _Attempt | None:
        ident = threading.get_ident()
        attempt = self._attempts.get(ident)
        if attempt is None or attempt.message.message_id != message.message_id:
            return None
        del self._attempts[ident]
        return attempt

    def _record(self, attempt: _Attempt, *, nacked: bool) -> None:
        try:
            attempt.end()
            status = attempt.status(nacked)
            self.runtime.recorder.record(
                outcome_from(
                    attempt.measured,
                    queue=attempt.queue,
                    job=attempt.job,
                    status=status,
                    wait_s=attempt.wait_s,
                    exception=attempt.exception,
                )
            )
            tracker = self.tracker
            if attempt.tracked and tracker is not None:
                tracker.job_finished(attempt.message.message_id, failed=status in _FAILED)
        except Exception:  # pragma: no cover - a metrics bug must never break a worker
            log.exception("queuelens: recording a Dramatiq message failed; the job is unaffected")

    def _cpu_mode(self, broker: Broker, actor_name: str) -> Literal["process", "thread"]:
        mode = self._cpu_modes.get(actor_name)
        if mode is None:
            fn = getattr(broker.actors.get(actor_name), "fn", None)
            # async actors run on the event-loop thread, and greenlets (dramatiq-gevent)
            # share one thread: their thread's CPU is not theirs
            shared = inspect.iscoroutinefunction(fn) or _gevent_patched()
            mode = self._cpu_modes[actor_name] = "process" if shared else "thread"
        return mode


def _gevent_patched() -> bool:
    monkey = sys.modules.get("gevent.monkey")  # patched only if it was imported
    return bool(getattr(monkey, "saved", None))


def _wait_s(options: dict[str, Any], message_timestamp: object, now_s: float) -> float | None:
    ready_ms = ready_at_ms(options, message_timestamp)
    return None if ready_ms is None else now_s - ready_ms / 1000.0
