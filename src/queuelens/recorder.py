"""The hot path: aggregate job outcomes in memory, flush them in batches.

    recorder = Recorder(open_storage("sqlite:///queuelens.db"), app="billing")
    recorder.record(JobOutcome(queue="emails", job="send_mail",
                               status=JobStatus.succeeded, duration_s=0.12, wait_s=0.8))
    recorder.close()                       # final flush; also runs at interpreter exit

``record()`` is thread-safe, O(1) and never raises: it folds the outcome into a per
(series, minute) :class:`~queuelens.model.Aggregate`. A daemon thread flushes every
``flush_interval_s`` as one idempotent :class:`~queuelens.model.FlushBatch`: each recorder is
a writer with an id of its own and numbers its batches 1, 2, 3, ...; a batch is retried under
the same number until it is applied, and only then is the next one cut, so storage needs to
remember one number per writer, not one id per flush. While storage is unreachable the batch
is retried with backoff and new data keeps aggregating; past
``buffer_max_buckets`` the oldest data is dropped and counted, and the count is written (as
``dropped``) once storage is back. After ``os.fork()`` the child starts empty with a flusher
and a writer id of its own, so the parent's data is never flushed twice.
"""

from __future__ import annotations

import atexit
import logging
import os
import threading
import time
import uuid
import weakref
from collections.abc import Callable
from dataclasses import dataclass

from queuelens.model import (
    OVERFLOW_JOB,
    Aggregate,
    FlushBatch,
    JobOutcome,
    SeriesKey,
    clean_name,
)
from queuelens.storage.base import Storage

__all__ = ["Recorder", "RecorderStats"]

log = logging.getLogger("queuelens.recorder")

_MAX_BACKOFF_S = 30.0
# (app, queue, job, minute start): a plain tuple, because building a dataclass per job costs
# more than the rest of record() together.
_Key = tuple[str, str, str, int]


@dataclass(frozen=True, slots=True)
class RecorderStats:
    """What a recorder has done since it started (or since its process forked)."""

    recorded: int
    dropped: int
    pending_buckets: int
    flushes: int
    flush_failures: int
    last_flush_at: float | None
    last_error: str | None
    internal_errors: int


class Recorder:
    """Collects job outcomes of one process and flushes them to a :class:`Storage`.

    ``storage`` may be a factory, called on the flusher thread, so that a storage that is
    down when a worker starts delays nothing: the recorder buffers until it can connect.
    """

    # Mutable state, (re)set by _reset_state() at construction and in a forked child.
    _lock: threading.Lock
    _flush_lock: threading.Lock
    _current: dict[_Key, Aggregate]
    _frameworks: dict[tuple[str, str], str]
    _queues: dict[str, set[str]]
    _jobs: dict[tuple[str, str], set[str]]
    _inflight: FlushBatch | None
    _writer_id: str
    _sequence: int
    _dropped: dict[str, int]
    _dropped_total: int
    _recorded: int
    _flushes: int
    _flush_failures: int
    _failures_in_row: int
    _internal_errors: int
    _last_flush_at: float | None
    _last_error: str | None
    _backoff_s: float
    _started: bool
    _stop: threading.Event | None
    _thread: threading.Thread | None

    def __init__(
        self,
        storage: Storage | Callable[[], Storage],
        *,
        app: str = "default",
        framework: str = "python",
        flush_interval_s: float = 1.0,
        relative_accuracy: float = 0.01,
        max_jobs_per_queue: int = 500,
        max_queues_per_app: int = 1000,
        buffer_max_buckets: int = 20_000,
        exception_message_max: int = 500,
        clock: Callable[[], float] = time.time,
        owns_storage: bool | None = None,
    ) -> None:
        if isinstance(storage, Storage):
            self._storage: Storage | None = storage
            self._storage_factory: Callable[[], Storage] | None = None
        else:
            self._storage, self._storage_factory = None, storage
        # A storage made by our factory is ours to close at close(), unless it is shared.
        self._owns_storage = (
            self._storage_factory is not None if owns_storage is None else (owns_storage)
        )
        self.app = app
        self.framework = framework
        self.flush_interval_s = flush_interval_s
        self._accuracy = relative_accuracy
        self._max_jobs = max_jobs_per_queue
        self._max_queues = max_queues_per_app
        self._buffer_max = buffer_max_buckets
        self._message_max = exception_message_max
        self._clock = clock
        self._reset_state()
        _live_recorders.add(self)

    # -- the hot path ----------------------------------------------------------------------

    def record(self, outcome: JobOutcome) -> None:
        """Fold one job outcome into the in-memory aggregates. Never raises."""
        try:
            finished_at = outcome.finished_at
            if finished_at is None:
                finished_at = self._clock()
            key = (outcome.app or self.app, outcome.queue, outcome.job, int(finished_at // 60) * 60)
            with self._lock:
                aggregate = self._current.get(key)
                if aggregate is None:
                    aggregate = self._new_aggregate(key)
                    if aggregate is None:
                        return
                aggregate.add(outcome, finished_at, self._message_max)
                self._recorded += 1
            if not self._started:
                self._start()
        except Exception:  # a metrics bug must never fail a job
            self._internal_errors += 1
            log.exception("queuelens: recording a job outcome failed; the job is unaffected")

    def _new_aggregate(self, key: _Key) -> Aggregate | None:
        """Make room for a new (series, minute); apply cardinality caps. Holds ``_lock``."""
        app, queue, job = clean_name(key[0]), clean_name(key[1]), clean_name(key[2])
        minute = key[3]
        queues = self._queues.setdefault(app, set())
        if queue not in queues:
            if len(queues) >= self._max_queues:
                queue = OVERFLOW_JOB
            queues.add(queue)
        jobs = self._jobs.setdefault((app, queue), set())
        if job not in jobs:
            if len(jobs) >= self._max_jobs:
                job = OVERFLOW_JOB
            jobs.add(job)
        key = (app, queue, job, minute)
        aggregate = self._current.get(key)
        if aggregate is not None:
            return aggregate
        # Hard stop at twice the bound; the flusher trims back to the bound, oldest first.
        if len(self._current) >= 2 * self._buffer_max:
            self._count_dropped(app, 1)
            self._recorded += 1
            return None
        aggregate = self._current[key] = Aggregate(self._accuracy)
        self._frameworks.setdefault((app, queue), self.framework)
        return aggregate

    # -- flushing --------------------------------------------------------------------------

    def flush(self) -> bool:
        """Write what is buffered now; True when nothing is left pending. Never raises."""
        with self._flush_lock:
            try:
                return self._flush_locked()
            except Exception as exc:  # pragma: no cover - defensive: the flusher must live on
                self._internal_errors += 1
                self._last_error = f"{type(exc).__name__}: {exc}"
                log.exception("queuelens: unexpected error while flushing")
                return False

    def _flush_locked(self) -> bool:
        # At most two writes: a batch left over from a failed attempt, then what is new.
        for _ in range(2):
            if self._inflight is None and not self._cut_batch():
                return True
            if not self._write_inflight():
                return False
        return not self._current and not self._dropped

    def _cut_batch(self) -> bool:
        """Move the current aggregates into a new in-flight batch; False if nothing to send."""
        with self._lock:
            if not self._current and not self._dropped:
                return False
            aggregates, self._current = self._current, {}
            frameworks, self._frameworks = self._frameworks, {}
            dropped = dict(self._dropped)
        self._sequence += 1
        self._inflight = FlushBatch(
            writer_id=self._writer_id,
            sequence=self._sequence,
            created_at=self._clock(),
            aggregates={
                (SeriesKey(app, queue, job), minute): aggregate
                for (app, queue, job, minute), aggregate in aggregates.items()
            },
            frameworks=frameworks,
            dropped=dropped,
        )
        return True

    def _write_inflight(self) -> bool:
        batch = self._inflight
        assert batch is not None
        try:
            storage = self._storage
            if storage is None:
                assert self._storage_factory is not None
                storage = self._storage = self._storage_factory()
            storage.write(batch)  # False means applied by an earlier attempt: also done
        except Exception as exc:
            self._on_flush_failure(exc)
            return False
        with self._lock:
            for app, n in batch.dropped.items():
                left = self._dropped.get(app, 0) - n
                if left > 0:
                    self._dropped[app] = left
                else:
                    self._dropped.pop(app, None)
        self._inflight = None
        self._flushes += 1
        self._last_flush_at = self._clock()
        if self._failures_in_row:
            log.warning("queuelens: storage is back after %d failed flushes", self._failures_in_row)
        self._failures_in_row = 0
        self._backoff_s = self.flush_interval_s
        return True

    def _on_flush_failure(self, exc: Exception) -> None:
        self._flush_failures += 1
        self._failures_in_row += 1
        self._last_error = f"{type(exc).__name__}: {exc}"
        if self._failures_in_row == 1:
            log.warning("queuelens: flush failed, buffering and retrying: %s", self._last_error)
        self._backoff_s = min(max(self._backoff_s * 2, self.flush_interval_s), _MAX_BACKOFF_S)
        self._enforce_bound()

    def _enforce_bound(self) -> None:
        """Past ``buffer_max_buckets``, drop the oldest minutes: in-flight first, then new.

        Dropping part of the in-flight batch keeps its sequence number: SQL applies a batch
        all or nothing, and Redis skips the series an earlier attempt had already applied.
        An in-flight batch trimmed to nothing is abandoned; its number is not reused (the
        next batch gets a higher one), so nothing a storage remembers is ever contradicted.
        """
        with self._lock:
            inflight = self._inflight
            held = len(inflight.aggregates) if inflight is not None else 0
            excess = len(self._current) + held - self._buffer_max
            if excess <= 0:
                return
            if inflight is not None:
                for key in sorted(inflight.aggregates, key=lambda k: k[1])[:excess]:
                    self._count_dropped(key[0].app, inflight.aggregates.pop(key).total)
                    excess -= 1
                if not inflight.aggregates and not inflight.dropped:
                    self._inflight = None
            for current_key in sorted(self._current, key=lambda k: k[3])[: max(excess, 0)]:
                self._count_dropped(current_key[0], self._current.pop(current_key).total)

    def _count_dropped(self, app: str, n: int) -> None:
        self._dropped[app] = self._dropped.get(app, 0) + n
        self._dropped_total += n

    # -- lifecycle -------------------------------------------------------------------------

    def _start(self) -> None:
        with self._lock:
            if self._started:
                return
            self._started = True
            self._stop = threading.Event()
            thread = threading.Thread(
                target=_flusher_loop,
                args=(weakref.ref(self), self._stop),
                name="queuelens-flusher",
                daemon=True,
            )
        thread.start()
        self._thread = thread

    def close(self, timeout_s: float = 5.0) -> None:
        """Stop the flusher and make a last flush attempt (bounded by ``timeout_s``)."""
        stop, thread = self._stop, self._thread
        if stop is not None:
            stop.set()
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout_s)
        self.flush()
        if self._inflight is not None or self._current:
            log.warning(
                "queuelens: %d buffered buckets could not be written at close",
                len(self._current) + len(self._inflight.aggregates if self._inflight else {}),
            )
        with self._lock:
            self._started = True  # a closed recorder does not restart its thread
        _live_recorders.discard(self)  # nothing left for the exit hook to do
        storage = self._storage
        if storage is not None and self._owns_storage:
            storage.close()

    def stats(self) -> RecorderStats:
        inflight = self._inflight
        return RecorderStats(
            recorded=self._recorded,
            dropped=self._dropped_total,
            pending_buckets=len(self._current) + (len(inflight.aggregates) if inflight else 0),
            flushes=self._flushes,
            flush_failures=self._flush_failures,
            last_flush_at=self._last_flush_at,
            last_error=self._last_error,
            internal_errors=self._internal_errors,
        )

    def _reset_state(self) -> None:
        """Fresh in-memory state: at construction, and in a forked child."""
        self._lock = threading.Lock()
        self._flush_lock = threading.Lock()
        self._current = {}
        self._frameworks = {}
        self._queues: dict[str, set[str]] = {}
        self._jobs: dict[tuple[str, str], set[str]] = {}
        self._inflight = None
        # A fresh writer: a forked child must not reuse its parent's id, or storage would
        # take the child's batches for duplicates of the parent's (or the reverse).
        self._writer_id = uuid.uuid4().hex
        self._sequence = 0
        self._dropped: dict[str, int] = {}
        self._dropped_total = 0
        self._recorded = 0
        self._flushes = 0
        self._flush_failures = 0
        self._failures_in_row = 0
        self._internal_errors = 0
        self._last_flush_at = None
        self._last_error = None
        self._backoff_s = self.flush_interval_s
        self._started = False
        self._stop = None
        self._thread = None

    def _after_fork_in_child(self) -> None:
        # The parent flushes its own data; the child keeps its caps but none of the data.
        queues, jobs = self._queues, self._jobs
        self._reset_state()
        self._queues, self._jobs = queues, jobs


def _flusher_loop(ref: weakref.ReferenceType[Recorder], stop: threading.Event) -> None:
    while True:
        recorder = ref()
        if recorder is None:
            return
        delay = recorder._backoff_s
        del recorder  # do not keep the recorder alive while sleeping
        if stop.wait(delay):
            return
        recorder = ref()
        if recorder is None:
            return
        recorder.flush()
        del recorder


_live_recorders: weakref.WeakSet[Recorder] = weakref.WeakSet()


def _reset_children() -> None:
    for recorder in list(_live_recorders):
        recorder._after_fork_in_child()


def _close_all_at_exit() -> None:
    for recorder in list(_live_recorders):
        try:
            recorder.close(timeout_s=2.0)
        except Exception:  # pragma: no cover - exit must not fail
            log.exception("queuelens: final flush at exit failed")


os.register_at_fork(after_in_child=_reset_children)
atexit.register(_close_all_at_exit)
