"""What every integration shares: settings, one recorder per process, worker trackers.

    runtime = Runtime.create("rq", app=None, storage_url=None)   # settings fill the gaps
    runtime.recorder.record(outcome)
    tracker = runtime.tracker(name="rq:host:42", queues=["emails"], concurrency=1)

Storage is opened lazily (on the flusher or heartbeat thread), so a storage that is down
when a worker starts delays nothing and raises nothing into the worker.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

from queuelens.config import Settings, load_settings
from queuelens.heartbeat import WorkerTracker
from queuelens.measure import Measured
from queuelens.model import JobOutcome, JobStatus
from queuelens.recorder import Recorder
from queuelens.storage import Storage, open_storage
from queuelens.system import ServerSampler

__all__ = ["Runtime", "exception_name", "outcome_from"]

log = logging.getLogger("queuelens.integrations")


@dataclass
class Runtime:
    """Settings plus the recorder of this process for one framework."""

    framework: str
    settings: Settings
    recorder: Recorder
    _storage: Storage | None = field(default=None, repr=False)
    _sampler: ServerSampler | None = field(default=None, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @classmethod
    def create(
        cls,
        framework: str,
        *,
        app: str | None = None,
        storage_url: str | None = None,
        settings: Settings | None = None,
    ) -> Runtime:
        """Build from ``settings`` (default: :func:`load_settings`) with explicit overrides.

        A bad setting raises :class:`~queuelens.config.ConfigError` here, at start-up,
        where the user sees it — never later inside a job.
        """
        overrides: dict[str, str] = {}
        if app is not None:
            overrides["app"] = app
        if storage_url is not None:
            overrides["storage_url"] = storage_url
        if settings is None:
            settings = load_settings(None, None, **overrides)
        elif overrides:
            settings = settings.model_copy(update=overrides)
        runtime = cls(framework=framework, settings=settings, recorder=None)  # type: ignore[arg-type]
        runtime.recorder = Recorder(
            runtime.storage,
            app=settings.app,
            framework=framework,
            flush_interval_s=settings.flush_interval_s,
            relative_accuracy=settings.histogram_accuracy,
            max_jobs_per_queue=settings.max_jobs_per_queue,
            max_queues_per_app=settings.max_queues_per_app,
            buffer_max_buckets=settings.buffer_max_buckets,
            exception_message_max=settings.exception_message_max,
            owns_storage=False,  # shared with trackers and the sampler; Runtime.close closes it
        )
        return runtime

    def storage(self) -> Storage:
        """The storage of this runtime, opened on first use (from a background thread)."""
        with self._lock:
            if self._storage is None:
                self._storage = open_storage(
                    self.settings.storage_url,
                    relative_accuracy=self.settings.histogram_accuracy,
                    retention=self.settings.retention,
                )
            return self._storage

    def tracker(
        self,
        *,
        name: str,
        queues: Sequence[str],
        concurrency: int = 1,
        worker_id: str | None = None,
    ) -> WorkerTracker:
        """A tracker for one worker; also starts this host's resource sampler (by lease,
        so one process per host samples however many workers run there)."""
        self.start_server_sampler()
        return WorkerTracker(
            self.storage,
            app=self.settings.app,
            framework=self.framework,
            name=name,
            queues=queues,
            concurrency=concurrency,
            heartbeat_interval_s=self.settings.heartbeat_interval_s,
            worker_id=worker_id,
            owns_storage=False,
        )

    def warm_up(self, tracker: WorkerTracker | None = None, timeout_s: float = 5.0) -> bool:
        """Pay queuelens's one-off costs before the first job: open the storage (imports,
        connection, schema check) and send the first heartbeat. Paid later, on a background
        thread, they would hold the GIL while the first jobs run and count in their CPU and
        memory. Waits at most ``timeout_s`` for a slow or unreachable storage (the flusher
        and heartbeats keep retrying it); True when done in time. Never raises."""

        def warm() -> None:
            try:
                self.storage()
                if tracker is not None:
                    tracker.beat()
            except Exception as exc:  # the recorder buffers until storage is back
                log.warning("queuelens: storage not reachable at worker start: %s", exc)

        thread = threading.Thread(target=warm, name="queuelens-warm-up", daemon=True)
        thread.start()
        thread.join(timeout_s)
        return not thread.is_alive()

    def start_server_sampler(self) -> None:
        with self._lock:
            if self._sampler is not None:
                return
            self._sampler = ServerSampler(
                self.storage,
                app=self.settings.app,
                interval_s=self.settings.server_sample_interval_s,
            )
        self._sampler.start()

    def close(self) -> None:
        if self._sampler is not None:
            self._sampler.stop()
        self.recorder.close()
        with self._lock:
            if self._storage is not None:
                self._storage.close()
                self._storage = None


def outcome_from(
    measured: Measured | None,
    *,
    queue: str,
    job: str,
    status: JobStatus,
    wait_s: float | None = None,
    exception: BaseException | None = None,
    finished_at: float | None = None,
) -> JobOutcome:
    """A :class:`JobOutcome` from a measurement and what the framework told us."""
    return JobOutcome(
        queue=queue,
        job=job,
        status=status,
        duration_s=measured.duration_s if measured else None,
        wait_s=wait_s,
        cpu_s=measured.cpu_s if measured else None,
        memory_peak_mb=measured.memory_peak_mb if measured else None,
        memory_delta_mb=measured.memory_delta_mb if measured else None,
        exception_type=exception_name(exception) if exception is not None else None,
        exception_message=str(exception) if exception is not None else None,
        finished_at=finished_at,
    )


def exception_name(exception: BaseException) -> str:
    """``ValueError`` for builtins, ``package.module.Error`` for everything else."""
    cls = type(exception)
    module = cls.__module__
    return (
        cls.__qualname__ if module in ("builtins", "__main__") else f"{module}.{cls.__qualname__}"
    )
