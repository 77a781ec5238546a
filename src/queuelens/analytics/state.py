"""The present: queue depths, workers and servers as they are now, and gauge history.

    state = StateReader(storage)
    state.queue_depths(app="billing")      # [QueueDepth] from the newest probe samples
    state.workers(state="busy")            # [WorkerView] with derived state and busy ratio
    state.servers()                        # [ServerView] newest resources per host
    state.gauge_series("queue", "billing", "emails", window, step_s=60)

Worker state is derived at read time from the last heartbeat: ``stale`` after three missed
heartbeats, ``dead`` after twenty, so a crashed worker shows as such without a cleanup job.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from queuelens.analytics.window import Window, finest_available, resolution_for_step
from queuelens.model import WorkerState, bucket_start
from queuelens.storage.base import GaugeStat, Retention, Storage, WorkerRecord

__all__ = [
    "DEPTH_FIELDS",
    "DiskView",
    "GaugePoint",
    "QueueDepth",
    "ServerView",
    "StateReader",
    "WorkerView",
]

#: depth by state, as probes report it
DEPTH_FIELDS = ("pending", "scheduled", "reserved", "failed")


@dataclass(frozen=True, slots=True)
class QueueDepth:
    """The newest probe sample of one queue; a field the broker lacks is None."""

    app: str
    queue: str
    pending: float | None
    scheduled: float | None
    reserved: float | None
    failed: float | None
    oldest_pending_age_s: float | None
    #: unix seconds of the sample
    sampled_at: float
    #: how old the sample was when read
    sample_age_s: float

    @property
    def waiting(self) -> float:
        """Jobs ready to run and not yet taken (pending)."""
        return self.pending or 0.0


@dataclass(frozen=True, slots=True)
class WorkerView:
    id: str
    app: str
    framework: str
    hostname: str
    pid: int
    name: str
    queues: list[str]
    concurrency: int
    busy_slots: int
    state: WorkerState
    current_jobs: list[str]
    started_at: float
    last_heartbeat_at: float
    heartbeat_age_s: float
    processed: int
    failed: int
    #: busy slot-seconds over all slot-seconds since the worker started (0..1)
    busy_ratio: float | None
    rss_mb: float | None
    cpu_percent: float | None

    @property
    def alive(self) -> bool:
        return self.state in (WorkerState.busy, WorkerState.idle)


@dataclass(frozen=True, slots=True)
class DiskView:
    mount: str
    total_gb: float | None
    used_gb: float | None
    percent: float | None


@dataclass(frozen=True, slots=True)
class ServerView:
    hostname: str
    app: str
    sampled_at: float
    sample_age_s: float
    cpu_percent: float | None
    cpu_count: float | None
    load: tuple[float | None, float | None, float | None]
    memory_total_mb: float | None
    memory_used_mb: float | None
    memory_percent: float | None
    disks: list[DiskView] = field(default_factory=list)
    values: dict[str, float] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class GaugePoint:
    """One step of a gauge: per field, the last value and the spread within the step."""

    at: int
    step_s: int
    fields: dict[str, GaugeStat]

    def last(self, name: str) -> float | None:
        stat = self.fields.get(name)
        return stat.last if stat is not None else None


class StateReader:
    """Reads gauges and heartbeats from a storage and derives what users need."""

    def __init__(
        self,
        storage: Storage,
        *,
        retention: Retention | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        self.retention = retention or Retention()
        self.clock = clock

    def queue_depths(self, app: str | None = None) -> list[QueueDepth]:
        now = self.clock()
        out = []
        for sample in self.storage.latest_gauges("queue", app):
            values = sample.values
            out.append(
                QueueDepth(
                    app=sample.app,
                    queue=sample.key,
                    pending=values.get("pending"),
                    scheduled=values.get("scheduled"),
                    reserved=values.get("reserved"),
                    failed=values.get("failed"),
                    oldest_pending_age_s=values.get("oldest_pending_age_s"),
                    sampled_at=sample.at,
                    sample_age_s=max(0.0, now - sample.at),
                )
            )
        return out

    def workers(
        self,
        app: str | None = None,
        *,
        state: WorkerState | str | None = None,
        queue: str | None = None,
    ) -> list[WorkerView]:
        """Workers (of one app, in one state, serving one queue), newest heartbeat first."""
        now = self.clock()
        views = [_worker_view(record, now) for record in self.storage.list_workers(app)]
        if state is not None:
            views = [v for v in views if v.state == WorkerState(state)]
        if queue is not None:
            views = [v for v in views if queue in v.queues]
        views.sort(key=lambda v: (-v.last_heartbeat_at, v.id))
        return views

    def servers(self, app: str | None = None) -> list[ServerView]:
        """The newest sample of every host (a host sampled under several apps shows once)."""
        now = self.clock()
        newest: dict[str, ServerView] = {}
        for sample in self.storage.latest_gauges("server", app):
            view = _server_view(sample.app, sample.key, sample.values, sample.at, now)
            if sample.key not in newest or newest[sample.key].sampled_at < view.sampled_at:
                newest[sample.key] = view
        return sorted(newest.values(), key=lambda v: v.hostname)

    def gauge_series(
        self, kind: str, app: str, key: str, window: Window, step_s: int
    ) -> list[GaugePoint]:
        """One point per step of ``window``; a step without samples has no fields."""
        available = finest_available(window.start, self.clock(), self.retention)
        step_s = max(step_s, int(available))
        resolution = resolution_for_step(step_s)
        first = bucket_start(window.start, step_s)
        buckets = self.storage.read_gauges(kind, app, key, resolution, first, window.end)
        steps: dict[int, dict[str, GaugeStat]] = {}
        for start in sorted(buckets):
            mine = steps.setdefault(bucket_start(start, step_s), {})
            for name, stat in buckets[start].items():
                if name in mine:
                    mine[name].merge(stat)
                else:
                    mine[name] = stat
        return [
            GaugePoint(at, step_s, steps.get(at, {}))
            for at in range(first, int(window.end), step_s)
        ]


def _worker_view(record: WorkerRecord, now: float) -> WorkerView:
    beat = record.heartbeat
    slot_s = beat.busy_s + beat.idle_s
    return WorkerView(
        id=beat.worker_id,
        app=beat.app,
        framework=beat.framework,
        hostname=beat.hostname,
        pid=beat.pid,
        name=beat.name,
        queues=list(beat.queues),
        concurrency=beat.concurrency,
        busy_slots=beat.busy_slots,
        state=record.state_at(now),
        current_jobs=list(beat.current_jobs),
        started_at=beat.started_at,
        last_heartbeat_at=record.last_heartbeat_at,
        heartbeat_age_s=max(0.0, now - record.last_heartbeat_at),
        processed=beat.processed,
        failed=beat.failed,
        busy_ratio=beat.busy_s / slot_s if slot_s > 0 else None,
        rss_mb=beat.rss_mb,
        cpu_percent=beat.cpu_percent,
    )


def _server_view(
    app: str, hostname: str, values: dict[str, float], at: float, now: float
) -> ServerView:
    disks = []
    for name in sorted(values):
        if name.startswith("disk:") and name.endswith(":percent"):
            mount = name[len("disk:") : -len(":percent")]
            prefix = f"disk:{mount}:"
            disks.append(
                DiskView(
                    mount,
                    values.get(prefix + "total_gb"),
                    values.get(prefix + "used_gb"),
                    values.get(prefix + "percent"),
                )
            )
    return ServerView(
        hostname=hostname,
        app=app,
        sampled_at=at,
        sample_age_s=max(0.0, now - at),
        cpu_percent=values.get("cpu_percent"),
        cpu_count=values.get("cpu_count"),
        load=(values.get("load_1"), values.get("load_5"), values.get("load_15")),
        memory_total_mb=values.get("memory_total_mb"),
        memory_used_mb=values.get("memory_used_mb"),
        memory_percent=values.get("memory_percent"),
        disks=disks,
        values={k: v for k, v in values.items() if math.isfinite(v)},
    )
