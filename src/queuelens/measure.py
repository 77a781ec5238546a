"""Per-job measurements: execution time, CPU time and memory, cheaply and honestly.

    measurement = JobMeasurement.start()           # when the job starts executing
    ...                                            # the job runs
    m = measurement.finish()
    m.duration_s, m.cpu_s, m.memory_peak_mb, m.memory_delta_mb

Duration is on the monotonic clock. CPU is the process's CPU time (``cpu="process"``, for
pools that run one job per process at a time: Celery prefork, RQ, Huey processes) or the
thread's (``cpu="thread"``, for thread pools). When ``cpu="process"`` and another job of
this process started or was running while this one ran (asyncio, threads), the CPU time
cannot be attributed and is reported as None rather than guessed.

Memory on Linux: the process's peak RSS (``VmHWM``) is reset when a job starts on an idle
process and read when it ends, so ``memory_peak_mb`` is the peak RSS while the job ran and
``memory_delta_mb`` its increase over the RSS at the job's start. Jobs that overlap in one
process share the process's peak. Elsewhere the current RSS (psutil) stands in for the peak.
Together the measurements cost a few microseconds per job.
"""

from __future__ import annotations

import os
import sys
import threading
import time
import weakref
from dataclasses import dataclass
from typing import Literal

__all__ = ["JobMeasurement", "Measured", "current_rss_mb"]

_PAGE_MB = os.sysconf("SC_PAGE_SIZE") / (1024 * 1024) if hasattr(os, "sysconf") else 4096 / 2**20


@dataclass(frozen=True, slots=True)
class Measured:
    duration_s: float
    cpu_s: float | None
    memory_peak_mb: float | None
    memory_delta_mb: float | None


class _ProcMemory:
    """Reads /proc/self memory counters through file descriptors kept open (Linux)."""

    def __init__(self) -> None:
        self.pid = os.getpid()
        self.status_fd = os.open("/proc/self/status", os.O_RDONLY)
        self.statm_fd = os.open("/proc/self/statm", os.O_RDONLY)
        try:
            self.clear_fd: int | None = os.open("/proc/self/clear_refs", os.O_WRONLY)
        except OSError:  # some containers forbid it; then the peak is the lifetime peak
            self.clear_fd = None

    def rss_mb(self) -> float:
        return int(os.pread(self.statm_fd, 256, 0).split()[1]) * _PAGE_MB

    def peak_mb(self) -> float:
        data = os.pread(self.status_fd, 8192, 0)
        start = data.index(b"VmHWM:") + 6
        return int(data[start : data.index(b"kB", start)]) / 1024

    def reset_peak(self) -> None:
        if self.clear_fd is not None:
            try:
                os.write(self.clear_fd, b"5")
            except OSError:
                self.clear_fd = None


_lock = threading.Lock()
# Measurements started and not finished. Weak, so that a job abandoned without finish()
# (a killed thread, an integration that lost track) cannot make this process look busy
# forever and silently turn off CPU attribution.
_active: weakref.WeakSet[JobMeasurement] = weakref.WeakSet()
_starts = 0
_proc: _ProcMemory | None = None


def _memory() -> _ProcMemory | None:
    """The /proc reader of this process (re-opened after fork), or None off Linux."""
    global _proc
    if not sys.platform.startswith("linux"):
        return None
    if _proc is None or _proc.pid != os.getpid():
        try:
            _proc = _ProcMemory()
        except OSError:
            return None
    return _proc


def current_rss_mb() -> float | None:
    """Resident set size of this process in MB (None if it cannot be read)."""
    proc = _memory()
    if proc is not None:
        return proc.rss_mb()
    try:
        import psutil

        rss: int = psutil.Process().memory_info().rss
        return rss / (1024 * 1024)
    except Exception:  # pragma: no cover - psutil is a core dependency
        return None


class JobMeasurement:
    """One job's measurement, from :meth:`start` to :meth:`finish`. Never raises."""

    __slots__ = (
        "__weakref__",
        "_cpu_start",
        "_exclusive",
        "_perf_start",
        "_rss_start",
        "_starts_seen",
        "_thread_cpu",
        "_track_memory",
    )

    _cpu_start: float
    _exclusive: bool
    _perf_start: float
    _rss_start: float | None
    _starts_seen: int
    _thread_cpu: bool
    _track_memory: bool

    @classmethod
    def start(
        cls, *, cpu: Literal["process", "thread"] = "process", memory: bool = True
    ) -> JobMeasurement:
        global _starts
        self = cls()
        self._thread_cpu = cpu == "thread"
        self._track_memory = memory
        proc = _memory() if memory else None
        with _lock:
            self._exclusive = not _active
            _active.add(self)
            _starts += 1
            self._starts_seen = _starts
            if proc is not None and self._exclusive:
                proc.reset_peak()
        self._rss_start = (
            proc.rss_mb() if proc is not None else (current_rss_mb() if memory else None)
        )
        self._cpu_start = time.thread_time() if self._thread_cpu else time.process_time()
        self._perf_start = time.perf_counter()
        return self

    def finish(self) -> Measured:
        duration = time.perf_counter() - self._perf_start
        cpu_now = time.thread_time() if self._thread_cpu else time.process_time()
        with _lock:
            _active.discard(self)
            alone = self._exclusive and _starts == self._starts_seen
        cpu: float | None = cpu_now - self._cpu_start
        if not self._thread_cpu and not alone:
            cpu = None  # another job shared the process: its CPU cannot be split
        peak: float | None = None
        delta: float | None = None
        if self._track_memory:
            try:
                proc = _memory()
                peak = proc.peak_mb() if proc is not None else current_rss_mb()
                if peak is not None and self._rss_start is not None:
                    delta = max(peak - self._rss_start, 0.0)
            except (OSError, ValueError):
                peak = delta = None
        return Measured(duration, cpu, peak, delta)
