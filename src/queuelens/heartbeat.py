"""Worker liveness: who is alive, how busy, doing what — sent from a background thread.

    tracker = WorkerTracker(storage, app="billing", framework="rq", name="rq:worker-1",
                            queues=["emails"], concurrency=1)
    tracker.start()                       # heartbeats every heartbeat_interval_s
    tracker.job_started("job-id", "send_mail")
    tracker.job_finished("job-id", failed=False)
    tracker.stop()                        # a last heartbeat with state "stopped"

Heartbeats come from a thread of their own, so they keep coming while a long job runs (the
PHP package we take the spec from deleted workers busy for more than a minute). A worker that
stops beating is shown ``stale`` after three missed heartbeats and ``dead`` after twenty; it
never vanishes silently, and as its id is unique per process start its counters never reset.

Busy and idle time are slot-seconds: a worker with 4 slots idle for 10 s adds 40 idle
seconds; ``busy_s / (busy_s + idle_s)`` is its utilisation.
"""

from __future__ import annotations

import atexit
import contextlib
import logging
import os
import socket
import threading
import time
import weakref
from collections.abc import Callable, Sequence

from queuelens.model import WorkerHeartbeat, WorkerState
from queuelens.storage.base import Storage

__all__ = ["WorkerTracker"]

log = logging.getLogger("queuelens.heartbeat")


class WorkerTracker:
    """State of one worker (one process, or one pool parent with ``concurrency`` slots)."""

    def __init__(
        self,
        storage: Storage | Callable[[], Storage],
        *,
        app: str,
        framework: str,
        name: str,
        queues: Sequence[str],
        concurrency: int = 1,
        heartbeat_interval_s: float = 5.0,
        hostname: str | None = None,
        pid: int | None = None,
        worker_id: str | None = None,
        resources: Callable[[], tuple[float | None, float | None]] | None = None,
        clock: Callable[[], float] = time.time,
        owns_storage: bool | None = None,
    ) -> None:
        if isinstance(storage, Storage):
            self._storage: Storage | None = storage
            self._factory: Callable[[], Storage] | None = None
        else:
            self._storage, self._factory = None, storage
        # A storage made by our factory is ours to close, unless the caller shares it.
        self._owns_storage = self._factory is not None if owns_storage is None else owns_storage
        self.app = app
        self.framework = framework
        self.name = name
        self.queues = list(queues)
        self.concurrency = max(int(concurrency), 1)
        self.heartbeat_interval_s = heartbeat_interval_s
        self.hostname = hostname or socket.gethostname()
        self.pid = pid if pid is not None else os.getpid()
        self._clock = clock
        self.started_at = clock()
        self.worker_id = worker_id or (
            f"{framework}:{self.hostname}:{self.pid}:{int(self.started_at * 1000)}"
        )
        self._resources = resources or _own_resources()
        self._lock = threading.Lock()
        self._current: dict[str, str] = {}
        self._processed = 0
        self._failed = 0
        self._busy_s = 0.0
        self._idle_s = 0.0
        self._last_change = time.monotonic()
        self._state = WorkerState.idle
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._owner_pid = os.getpid()
        self.send_failures = 0

    # -- what the integration reports -----------------------------------------------------

    def job_started(self, job_id: str, job_name: str) -> None:
        with self._lock:
            self._account()
            self._current[job_id] = job_name

    def job_finished(self, job_id: str, *, failed: bool = False) -> None:
        with self._lock:
            self._account()
            self._current.pop(job_id, None)
            self._processed += 1
            if failed:
                self._failed += 1

    def set_busy(self, running: dict[str, str], processed: int, failed: int) -> None:
        """Replace the counters wholesale, for integrations that read them from the
        framework (a Celery pool parent) instead of reporting each job."""
        with self._lock:
            self._account()
            self._current = dict(running)
            self._processed = max(self._processed, processed)
            self._failed = max(self._failed, failed)

    def _account(self) -> None:
        """Add the slot-seconds since the last change. Holds ``_lock``."""
        now = time.monotonic()
        elapsed = now - self._last_change
        busy = min(len(self._current), self.concurrency)
        self._busy_s += elapsed * busy
        self._idle_s += elapsed * (self.concurrency - busy)
        self._last_change = now

    # -- heartbeats -----------------------------------------------------------------------

    def snapshot(self, state: WorkerState | None = None) -> WorkerHeartbeat:
        rss_mb, cpu_percent = self._safe_resources()
        with self._lock:
            self._account()
            running = list(self._current.values())
            busy_slots = min(len(running), self.concurrency)
            return WorkerHeartbeat(
                worker_id=self.worker_id,
                app=self.app,
                framework=self.framework,
                hostname=self.hostname,
                pid=self.pid,
                name=self.name,
                queues=list(self.queues),
                concurrency=self.concurrency,
                busy_slots=busy_slots,
                state=state or (WorkerState.busy if busy_slots else WorkerState.idle),
                started_at=self.started_at,
                sent_at=self._clock(),
                heartbeat_interval_s=self.heartbeat_interval_s,
                current_jobs=running,
                processed=self._processed,
                failed=self._failed,
                busy_s=self._busy_s,
                idle_s=self._idle_s,
                rss_mb=rss_mb,
                cpu_percent=cpu_percent,
            )

    def beat(self, state: WorkerState | None = None) -> bool:
        """Send one heartbeat now; False (and counted) if storage refused it. Never raises."""
        if os.getpid() != self._owner_pid:
            return False  # a forked child must not speak for its parent
        try:
            storage = self._storage
            if storage is None:
                assert self._factory is not None
                storage = self._storage = self._factory()
            storage.heartbeat(self.snapshot(state))
            return True
        except Exception as exc:
            self.send_failures += 1
            if self.send_failures == 1 or self.send_failures % 100 == 0:
                log.warning("queuelens: heartbeat of %s failed: %s", self.name, exc)
            return False

    def start(self) -> None:
        """Beat now and then every ``heartbeat_interval_s`` from a daemon thread."""
        if self._thread is not None:
            return
        self._thread = threading.Thread(
            target=_beat_loop,
            args=(weakref.ref(self), self._stop, self.heartbeat_interval_s),
            name="queuelens-heartbeat",
            daemon=True,
        )
        self._thread.start()
        _live_trackers.add(self)

    def stop(self) -> None:
        """Stop beating and report the worker ``stopped`` (a graceful shutdown)."""
        if self._stop.is_set() or os.getpid() != self._owner_pid:
            return
        self._stop.set()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(5.0)
        self.beat(WorkerState.stopped)
        _live_trackers.discard(self)
        if self._owns_storage and self._storage is not None:
            self._storage.close()

    def _safe_resources(self) -> tuple[float | None, float | None]:
        try:
            return self._resources()
        except Exception:
            return None, None


def _own_resources() -> Callable[[], tuple[float | None, float | None]]:
    """RSS (MB) and CPU % of this process and its children (a pool's workers)."""
    import psutil

    me = psutil.Process()
    seen: dict[int, psutil.Process] = {}

    def read() -> tuple[float | None, float | None]:
        processes = [me]
        with contextlib.suppress(psutil.Error):
            processes += me.children(recursive=True)
        rss = 0.0
        cpu = 0.0
        for process in processes:
            # cpu_percent() measures since its previous call on the same object, so keep one.
            tracked = seen.setdefault(process.pid, process)
            try:
                rss += tracked.memory_info().rss / (1024 * 1024)
                cpu += tracked.cpu_percent(None)
            except psutil.Error:
                seen.pop(process.pid, None)
        for pid in set(seen) - {p.pid for p in processes}:
            del seen[pid]
        return rss, cpu

    return read


def _beat_loop(
    ref: weakref.ReferenceType[WorkerTracker], stop: threading.Event, interval: float
) -> None:
    while True:
        tracker = ref()
        if tracker is None:
            return
        tracker.beat()
        del tracker
        if stop.wait(interval):
            return


_live_trackers: weakref.WeakSet[WorkerTracker] = weakref.WeakSet()


def _stop_all_at_exit() -> None:
    for tracker in list(_live_trackers):
        tracker.stop()


atexit.register(_stop_all_at_exit)
