"""Retention pruning on a schedule, by one process among many.

    pruner = Pruner(storage, interval_s=3600)
    pruner.start()                  # prunes now and every hour while it holds the lease
    pruner.stop()

``queuelens serve`` runs one; with several replicas on one storage, the ``prune`` lease
makes exactly one of them prune at a time. ``queuelens prune`` does the same once, by hand.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
import uuid

from queuelens.storage.base import PruneReport, Storage

__all__ = ["Pruner"]

log = logging.getLogger("queuelens.housekeeping")

LEASE = "prune"


class Pruner:
    """Deletes what is older than its retention every ``interval_s``; never raises."""

    def __init__(self, storage: Storage, *, interval_s: float = 3600.0) -> None:
        if not interval_s > 0:
            raise ValueError(f"interval_s must be positive, got {interval_s!r}")
        self.storage = storage
        self.interval_s = interval_s
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        #: the newest report, and when it was made (None until this process has pruned)
        self.last_report: PruneReport | None = None
        self.last_run_at: float | None = None
        self.runs = 0
        self.failures = 0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def run_once(self) -> PruneReport | None:
        """Prune if this process holds (or takes) the lease; None if another one does."""
        try:
            # The lease outlives one interval so a slow prune is not started twice.
            if not self.storage.acquire_lease(LEASE, self.owner, 2 * self.interval_s):
                return None
            started = time.monotonic()
            report = self.storage.prune()
        except Exception as exc:
            self.failures += 1
            log.warning("queuelens: pruning old data failed (will retry): %s", exc)
            return None
        self.runs += 1
        self.last_report, self.last_run_at = report, time.time()
        log.info(
            "queuelens: pruned %d rows/keys in %.2fs: %s",
            report.total,
            time.monotonic() - started,
            ", ".join(f"{kind} {n}" for kind, n in sorted(report.removed.items()) if n) or "none",
        )
        return report

    def start(self) -> None:
        if self._thread is None:
            self._thread = threading.Thread(target=self._loop, name="queuelens-prune", daemon=True)
            self._thread.start()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.run_once()
            self._stop.wait(self.interval_s)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop the schedule and give the lease up so another replica can take over."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)
            self._thread = None
        try:
            self.storage.release_lease(LEASE, self.owner)
        except Exception as exc:
            log.warning("queuelens: releasing the prune lease failed: %s", exc)
