"""Job functions the RQ integration tests enqueue; imported by the ``rq worker`` subprocesses."""

from __future__ import annotations

import os
import signal
import time

from rq import Retry, get_current_job

from queuelens.integrations.rq import SimpleWorker

#: the documented way to pin settings in code: ``rq worker -w …rq_jobs.BillingWorker``
BillingWorker = SimpleWorker.configure(app="billing")


class FlakyError(Exception):
    """Raised by :func:`flaky` while it has retries left."""


def sleep_for(seconds: float) -> float:
    time.sleep(seconds)
    return seconds


def sleep_100ms() -> float:
    """Sleeps 100 ms; returns how long that took, as the job itself saw it."""
    start = time.perf_counter()
    time.sleep(0.1)
    return time.perf_counter() - start


def sleep_300ms() -> float:
    start = time.perf_counter()
    time.sleep(0.3)
    return time.perf_counter() - start


def fail(message: str) -> None:
    raise ValueError(message)


def flaky() -> str:
    """Fails while RQ has retries left for it (``Retry(max=2)``: two failures, then success)."""
    job = get_current_job()
    if job is not None and job.retries_left:
        raise FlakyError(f"{job.retries_left} retries left")
    return "ok"


def retry_once() -> object:
    """Asks RQ for another attempt by returning ``Retry`` the first time."""
    job = get_current_job()
    if job is None or not job.number_of_retries:
        return Retry(max=3)
    return "done"


def burn_cpu(seconds: float) -> int:
    """Spins until ``seconds`` of this process's CPU time are used."""
    end = time.process_time() + seconds
    n = 0
    while time.process_time() < end:
        n += 1
    return n


def allocate(megabytes: int, hold_s: float = 0.05) -> int:
    """Touches ``megabytes`` of fresh memory (every page written), then frees it."""
    block = b"\x01" * (megabytes * 1024 * 1024)
    time.sleep(hold_s)
    size = len(block)
    del block
    return size


def kill_own_process() -> None:
    """Dies the way the OOM killer kills: SIGKILL, no clean-up."""
    os.kill(os.getpid(), signal.SIGKILL)
