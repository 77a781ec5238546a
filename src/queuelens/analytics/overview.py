"""The one entry point every surface uses: queues, jobs, workers and servers with health.

    analytics = Analytics(storage)
    window = analytics.window("1h")
    overview = analytics.overview(window)             # totals, queues, workers, servers
    queues = analytics.queue_summaries(window, app="billing")

The API, CLI, dashboard, alerts and Prometheus export all call this, so they show the same
numbers. It imports no web framework.

Job figures of a named window (``1h``, ``24h``, ...) come from a
:class:`~queuelens.analytics.cache.WindowCache` when the storage offers
:class:`~queuelens.storage.base.WindowReads` (the SQL storages): kept between calls and
checked against storage on each one, so a long-lived ``Analytics`` (a server) answers
repeated questions in milliseconds with what a fresh read would give.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from queuelens.analytics.cache import WindowCache
from queuelens.analytics.health import (
    Health,
    HealthThresholds,
    QueueInputs,
    fleet_health,
    queue_health,
    server_health,
)
from queuelens.analytics.query import JobReader, WindowFigures
from queuelens.analytics.state import QueueDepth, ServerView, StateReader, WorkerView
from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import WINDOWS, Window, parse_window
from queuelens.model import JobStatus, Resolution, WorkerState, bucket_start
from queuelens.storage.base import Retention, Storage, WindowReads

__all__ = ["Analytics", "Overview", "QueueSummary", "ServerSummary"]

#: the reference window of a failure-rate baseline: the last seven whole days
BASELINE_DAYS = 7


@dataclass(frozen=True, slots=True)
class QueueSummary:
    app: str
    queue: str
    framework: str
    depth: QueueDepth | None
    stats: Stats
    workers_total: int
    workers_busy: int
    health: Health
    #: failure rate over the last seven whole days (None: no jobs then)
    baseline_failure_rate: float | None = None

    def as_dict(self) -> dict[str, Any]:
        depth = self.depth
        return {
            "app": self.app,
            "queue": self.queue,
            "framework": self.framework,
            "depth": {
                "pending": depth.pending if depth else None,
                "scheduled": depth.scheduled if depth else None,
                "reserved": depth.reserved if depth else None,
                "failed": depth.failed if depth else None,
            },
            "oldest_pending_age_s": depth.oldest_pending_age_s if depth else None,
            "depth_sampled_at": depth.sampled_at if depth else None,
            **self.stats.as_dict(),
            "workers": {"total": self.workers_total, "busy": self.workers_busy},
            "health": self.health.as_dict(),
            "baseline_failure_rate": self.baseline_failure_rate,
        }


@dataclass(frozen=True, slots=True)
class ServerSummary:
    server: ServerView
    workers: int
    health: Health


@dataclass(frozen=True, slots=True)
class Overview:
    window: Window
    generated_at: float
    totals: Stats
    queues: list[QueueSummary]
    workers: dict[str, int]
    fleet_health: Health
    servers: list[ServerSummary]
    #: outcomes recorders had to drop in the window, per app (storage was unreachable)
    dropped: dict[str, int] = field(default_factory=dict)


class Analytics:
    """Reads a storage and answers with figures, health and reasons."""

    def __init__(
        self,
        storage: Storage,
        *,
        retention: Retention | None = None,
        thresholds: HealthThresholds | None = None,
        clock: Callable[[], float] = time.time,
        cache: bool = True,
        cache_max_age_s: float = 0.0,
    ) -> None:
        """``cache=False`` reads every window whole each time. ``cache_max_age_s`` lets a
        cached answer be served without asking storage whether it changed for that long
        (at most a recorder flush interval, so an answer is never staler than the data in
        storage can be); 0 asks every time."""
        self.storage = storage
        self.retention = retention or Retention()
        self.thresholds = thresholds or HealthThresholds()
        self.clock = clock
        self.jobs = JobReader(storage, retention=self.retention, clock=clock)
        self.state = StateReader(storage, retention=self.retention, clock=clock)
        self.cache: WindowCache | None = None
        if cache and isinstance(storage, WindowReads):
            self.cache = WindowCache(storage, max_age_s=cache_max_age_s, clock=clock)

    def window(
        self,
        window: str | None = "1h",
        *,
        since: str | float | None = None,
        until: str | float | None = None,
    ) -> Window:
        return parse_window(
            window, since=since, until=until, now=self.clock(), retention=self.retention
        )

    def figures(self, window: Window, app: str | None = None) -> WindowFigures:
        """Every job of ``app`` (or of every app) over ``window``, with queue, app and total
        figures: from the cache for a named window, else read whole."""
        if self.cache is not None and self._cached(window):
            return self.cache.figures(window, app)
        return self.jobs.figures(window, app)

    def _cached(self, window: Window) -> bool:
        # named windows end now; a custom one may lie past the retention of some buckets
        return self.cache is not None and window.label in WINDOWS

    # -- queues ------------------------------------------------------------------------------

    def queue_summaries(
        self, window: Window, app: str | None = None, queue: str | None = None
    ) -> list[QueueSummary]:
        """Every queue with jobs in storage or a depth sample, with its health."""
        if queue is not None and not self._cached(window):
            stats = self.jobs.queue_stats(window, app, queue)  # that queue's series alone
        else:
            stats = self.figures(window, app).queues
        return self._queue_summaries(stats, self.state.workers(app), app, queue)

    def _queue_summaries(
        self,
        stats: dict[tuple[str, str], Stats],
        workers: list[WorkerView],
        app: str | None,
        queue: str | None,
    ) -> list[QueueSummary]:
        depths = {(d.app, d.queue): d for d in self.state.queue_depths(app)}
        frameworks = {(q.app, q.queue): q.framework for q in self.jobs.queues(app)}
        baselines = self.baseline_failure_rates(app, queue)
        names = set(frameworks) | set(depths)
        if queue is not None:
            names = {n for n in names if n[1] == queue}
        summaries = []
        for name in sorted(names):
            serving = [w for w in workers if w.app == name[0] and name[1] in w.queues]
            live = [w for w in serving if w.alive]
            reporting = bool(serving) or any(w.app == name[0] for w in workers)
            queue_stats = stats.get(name, Stats())
            health = queue_health(
                QueueInputs(
                    queue=name[1],
                    depth=depths.get(name),
                    stats=queue_stats,
                    baseline_failure_rate=baselines.get(name),
                    live_workers=len(live) if reporting else None,
                ),
                self.thresholds,
            )
            summaries.append(
                QueueSummary(
                    app=name[0],
                    queue=name[1],
                    framework=frameworks.get(name) or (serving[0].framework if serving else ""),
                    depth=depths.get(name),
                    stats=queue_stats,
                    workers_total=len(live),
                    workers_busy=sum(1 for w in live if w.state is WorkerState.busy),
                    health=health,
                    baseline_failure_rate=baselines.get(name),
                )
            )
        return summaries

    def baseline_failure_rates(
        self, app: str | None = None, queue: str | None = None
    ) -> dict[tuple[str, str], float]:
        """Failure rate per queue over the last seven whole UTC days (day buckets)."""
        today = bucket_start(self.clock(), Resolution.day)
        start = today - BASELINE_DAYS * int(Resolution.day)
        window = Window(float(start), float(today), f"{BASELINE_DAYS}d-baseline")
        if self.cache is not None:
            counts = self.cache.queue_counts(window, app)
        else:
            counts = self.jobs.queue_counts(window, app)
        rates = {}
        for name, per_status in counts.items():
            processed = sum(per_status.values())
            if processed and (queue is None or name[1] == queue):
                failed = per_status.get(JobStatus.failed, 0)
                failed += per_status.get(JobStatus.timed_out, 0)
                rates[name] = failed / processed  # as Stats.failure_rate defines it
        return rates

    # -- jobs, workers, servers --------------------------------------------------------------

    def job_summaries(
        self, window: Window, app: str | None = None, queue: str | None = None
    ) -> list[JobSummary]:
        """Every job with data in ``window``, most processed first."""
        if not self._cached(window):
            return self.jobs.job_summaries(window, app, queue)
        return self.figures(window, app).job_summaries(queue=queue)

    def workers(
        self,
        app: str | None = None,
        *,
        state: WorkerState | str | None = None,
        queue: str | None = None,
    ) -> list[WorkerView]:
        return self.state.workers(app, state=state, queue=queue)

    def server_summaries(self, app: str | None = None) -> list[ServerSummary]:
        return self._server_summaries(self.state.workers(app), app)

    def _server_summaries(self, workers: list[WorkerView], app: str | None) -> list[ServerSummary]:
        per_host = Counter(w.hostname for w in workers if w.alive)
        return [
            ServerSummary(
                server, per_host.get(server.hostname, 0), server_health(server, self.thresholds)
            )
            for server in self.state.servers(app)
        ]

    def overview(self, window: Window, app: str | None = None) -> Overview:
        """Totals, every queue, worker counts by state and servers, for one window."""
        workers = self.state.workers(app)
        counts = Counter(str(w.state) for w in workers)
        figures = self.figures(window, app)
        return Overview(
            window=window,
            generated_at=self.clock(),
            totals=figures.totals,
            queues=self._queue_summaries(figures.queues, workers, app, None),
            workers={
                "total": len(workers),
                **{str(state): counts.get(str(state), 0) for state in WorkerState},
            },
            fleet_health=fleet_health(workers, self.thresholds, self.clock()),
            servers=self._server_summaries(workers, app),
            dropped={
                name: n
                for name, n in self.storage.read_dropped(window.start, window.end).items()
                if app is None or name == app
            },
        )
