"""The metric families of one :class:`~._snapshot.Snapshot`, in Prometheus base units.

    snapshot = take_snapshot(analytics, max_series=2000, health_window="1h")
    families = list(snapshot_families(snapshot, buckets=DEFAULT_BUCKETS,
                                      wait_buckets=DEFAULT_BUCKETS, created=True, read_s=0.2))

Units follow Prometheus conventions: seconds, bytes and 0-1 ratios, converted from the
read side's seconds, MiB, GiB and percentages. A value the source lacks is left out, never
exported as 0; counters are exported for every known series, zeros included, so ``rate()``
works from the first job and a failure counter exists before the first failure.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Iterable, Iterator, Sequence

from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
    StateSetMetricFamily,
)
from prometheus_client.samples import Sample
from prometheus_client.utils import floatToGoString

from queuelens.analytics import Health, HealthStatus
from queuelens.analytics.insights import METRICS as ANOMALY_METRICS
from queuelens.analytics.state import DEPTH_FIELDS
from queuelens.exposition._histogram import cumulative_counts
from queuelens.exposition._snapshot import JobsToday, Snapshot
from queuelens.model import STATUSES, WorkerState
from queuelens.sketch import Sketch

__all__ = ["snapshot_families", "storage_up"]

_JOB = ("app", "queue", "job")
_QUEUE = ("app", "queue")
_MIB = 1024.0 * 1024.0
_GIB = 1024.0 * _MIB


def snapshot_families(
    snapshot: Snapshot,
    *,
    buckets: Sequence[float],
    wait_buckets: Sequence[float],
    created: bool,
    read_s: float,
) -> Iterator[Metric]:
    """Every family of ``snapshot``; ``created`` adds OpenMetrics ``_created`` samples."""
    yield from _job_families(snapshot.jobs, buckets, wait_buckets, created, _apps(snapshot))
    yield from _queue_families(snapshot)
    yield from _worker_families(snapshot)
    yield from _server_families(snapshot)
    info = InfoMetricFamily("queuelens_build", "The queuelens version serving the metrics")
    info.add_metric([], {"version": _version()})
    yield info
    yield storage_up(True)
    yield _gauge(
        "queuelens_scrape_duration_seconds",
        "Time this scrape spent reading storage",
        read_s,
        unit="seconds",
    )
    yield _gauge(
        "queuelens_counters_since_timestamp_seconds",
        "Unix time the job counters count from (00:00 UTC today); they restart then",
        float(snapshot.jobs.since),
        unit="seconds",
    )
    yield _gauge(
        "queuelens_job_series_folded",
        'Job series counted under job="__other__" because of metrics_max_series',
        float(snapshot.jobs.folded),
    )


def storage_up(up: bool) -> GaugeMetricFamily:
    return _gauge("queuelens_storage_up", "1 if the scrape could read storage", float(up))


def _job_families(
    jobs: JobsToday,
    buckets: Sequence[float],
    wait_buckets: Sequence[float],
    created: bool,
    apps: Iterable[str],
) -> Iterator[Metric]:
    since = float(jobs.since) if created else None
    total = CounterMetricFamily(
        "queuelens_jobs",
        "Job attempts that ended since 00:00 UTC, by status (resets daily at 00:00 UTC)",
        labels=(*_JOB, "status"),
    )
    duration = HistogramMetricFamily(
        "queuelens_job_duration_seconds",
        "Execution time of job attempts since 00:00 UTC",
        labels=_JOB,
        unit="seconds",
    )
    wait = HistogramMetricFamily(
        "queuelens_job_wait_seconds",
        "Time from enqueue (or eta) to start of job attempts since 00:00 UTC",
        labels=_JOB,
        unit="seconds",
    )
    duration_les, wait_les = _les(buckets), _les(wait_buckets)
    for key in sorted(jobs.series, key=lambda k: (k.app, k.queue, k.job)):
        aggregate = jobs.series[key]
        labels = [key.app, key.queue, key.job]
        for status in STATUSES:
            total.add_metric([*labels, str(status)], aggregate.count(status), created=since)
        _add_histogram(duration, labels, aggregate.duration, buckets, duration_les, since)
        _add_histogram(wait, labels, aggregate.wait, wait_buckets, wait_les, since)
    dropped = CounterMetricFamily(
        "queuelens_dropped_outcomes",
        "Job outcomes recorders had to discard since 00:00 UTC (storage unreachable too long)",
        labels=("app",),
    )
    for app in sorted(set(apps) | set(jobs.dropped)):
        dropped.add_metric([app], jobs.dropped.get(app, 0), created=since)
    yield from (total, duration, wait, dropped)


def _add_histogram(
    family: HistogramMetricFamily,
    labels: list[str],
    sketch: Sketch,
    bounds: Sequence[float],
    les: Sequence[str],
    created: float | None,
) -> None:
    counts = cumulative_counts(sketch, bounds)
    family.add_metric(labels, list(zip(les, counts, strict=True)), sketch.sum)
    if created is not None:  # HistogramMetricFamily.add_metric takes no created time
        family.samples.append(
            Sample(family.name + "_created", dict(zip(_JOB, labels, strict=True)), created)
        )


def _queue_families(snapshot: Snapshot) -> Iterator[Metric]:
    depth = GaugeMetricFamily(
        "queuelens_queue_depth",
        "Jobs in the queue by state, from the newest probe sample (absent: the broker lacks it)",
        labels=(*_QUEUE, "state"),
    )
    oldest = GaugeMetricFamily(
        "queuelens_queue_oldest_pending_age_seconds",
        "Age of the oldest pending job when the queue was last sampled",
        labels=_QUEUE,
        unit="seconds",
    )
    sample_age = GaugeMetricFamily(
        "queuelens_queue_sample_age_seconds",
        "How old the newest depth sample of the queue is",
        labels=_QUEUE,
        unit="seconds",
    )
    workers = GaugeMetricFamily(
        "queuelens_queue_workers",
        "Live workers serving the queue, busy or idle",
        labels=(*_QUEUE, "state"),
    )
    score = GaugeMetricFamily(
        "queuelens_queue_health_score",
        "Health score 0-100 of the queue (as the API's overview reports it)",
        labels=_QUEUE,
    )
    status = StateSetMetricFamily(
        "queuelens_queue_health_status", "Health status of the queue", labels=_QUEUE
    )
    reasons = GaugeMetricFamily(
        "queuelens_queue_health_reason",
        "1 for every health threshold the queue crosses now, by reason code and severity",
        labels=(*_QUEUE, "code", "severity"),
    )
    for summary in snapshot.queues:
        labels = [summary.app, summary.queue]
        if summary.depth is not None:
            for state in DEPTH_FIELDS:
                value = getattr(summary.depth, state)
                if value is not None:
                    depth.add_metric([*labels, state], value)
            if summary.depth.oldest_pending_age_s is not None:
                oldest.add_metric(labels, summary.depth.oldest_pending_age_s)
            sample_age.add_metric(labels, summary.depth.sample_age_s)
        workers.add_metric([*labels, "busy"], summary.workers_busy)
        workers.add_metric([*labels, "idle"], summary.workers_total - summary.workers_busy)
        _add_health(score, status, labels, summary.health)
        crossed = {(r.code, str(r.severity)) for r in summary.health.reasons}
        for code, severity in sorted(crossed):
            reasons.add_metric([*labels, code, severity], 1)
    yield from (depth, oldest, sample_age, workers, score, status, reasons)
    if snapshot.anomalies is not None:
        yield _anomaly_family(snapshot)


def _anomaly_family(snapshot: Snapshot) -> Metric:
    family = GaugeMetricFamily(
        "queuelens_anomalies_active",
        "Anomalies active now, per queue and metric (jobs of a queue added up)",
        labels=(*_QUEUE, "metric"),
    )
    active: Counter[tuple[str, str, str]] = Counter()
    for summary in snapshot.queues:
        for metric in ANOMALY_METRICS:
            active[(summary.app, summary.queue, metric)] += 0
    for anomaly in snapshot.anomalies or ():
        scope = anomaly.scope
        active[(scope.get("app", ""), scope.get("queue", ""), anomaly.metric)] += 1
    for (app, queue, metric), n in sorted(active.items()):
        family.add_metric([app, queue, metric], n)
    return family


def _worker_families(snapshot: Snapshot) -> Iterator[Metric]:
    by_state = GaugeMetricFamily(
        "queuelens_workers",
        "Workers by state (stale: 3 heartbeats missed, dead: 20, stopped: shut down)",
        labels=("app", "state"),
    )
    slots = GaugeMetricFamily(
        "queuelens_worker_slots",
        "Job slots (concurrency) of live workers, busy or idle",
        labels=("app", "state"),
    )
    states: dict[str, Counter[str]] = defaultdict(Counter)
    busy: Counter[str] = Counter()
    total: Counter[str] = Counter()
    for worker in snapshot.workers:
        states[worker.app][str(worker.state)] += 1
        if worker.alive:
            total[worker.app] += worker.concurrency
            busy[worker.app] += min(max(worker.busy_slots, 0), worker.concurrency)
    for app in sorted(states):
        for state in WorkerState:
            by_state.add_metric([app, str(state)], states[app][str(state)])
        slots.add_metric([app, "busy"], busy[app])
        slots.add_metric([app, "idle"], total[app] - busy[app])
    score = GaugeMetricFamily("queuelens_fleet_health_score", "Health score 0-100 of all workers")
    status = StateSetMetricFamily("queuelens_fleet_health_status", "Health status of all workers")
    _add_health(score, status, [], snapshot.fleet)
    yield from (by_state, slots, score, status)


def _server_families(snapshot: Snapshot) -> Iterator[Metric]:
    host = ("hostname",)

    def family(
        name: str, help_text: str, unit: str = "", labels: Sequence[str] = host
    ) -> GaugeMetricFamily:
        return GaugeMetricFamily(f"queuelens_server_{name}", help_text, labels=labels, unit=unit)

    cpu = family("cpu_usage_ratio", "CPU in use, 0-1, at the newest sample")
    cpus = family("cpus", "Logical CPUs")
    loads = [family(f"load{n}", f"Load average over {n} minute(s)") for n in (1, 5, 15)]
    memory_total = family("memory_total_bytes", "Memory installed", "bytes")
    memory_used = family("memory_used_bytes", "Memory in use (total - available)", "bytes")
    disk_total = family("disk_total_bytes", "Disk size", "bytes", (*host, "mount"))
    disk_used = family("disk_used_bytes", "Disk space used", "bytes", (*host, "mount"))
    sample_age = family("sample_age_seconds", "How old the newest resource sample is", "seconds")
    workers = family("workers", "Live workers on the host")
    score = family("health_score", "Health score 0-100 of the host")
    for summary in snapshot.servers:
        server = summary.server
        labels = [server.hostname]
        _add_optional(cpu, labels, server.cpu_percent, 0.01)
        _add_optional(cpus, labels, server.cpu_count)
        for gauge, value in zip(loads, server.load, strict=True):
            _add_optional(gauge, labels, value)
        _add_optional(memory_total, labels, server.memory_total_mb, _MIB)
        _add_optional(memory_used, labels, server.memory_used_mb, _MIB)
        for disk in server.disks:
            _add_optional(disk_total, [*labels, disk.mount], disk.total_gb, _GIB)
            _add_optional(disk_used, [*labels, disk.mount], disk.used_gb, _GIB)
        sample_age.add_metric(labels, server.sample_age_s)
        workers.add_metric(labels, summary.workers)
        score.add_metric(labels, summary.health.score)
    yield from (cpu, cpus, *loads, memory_total, memory_used, disk_total, disk_used)
    yield from (sample_age, workers, score)


# -- helpers -------------------------------------------------------------------------------


def _add_health(
    score: GaugeMetricFamily, status: StateSetMetricFamily, labels: list[str], health: Health
) -> None:
    score.add_metric(labels, health.score)
    status.add_metric(labels, {str(s): s is health.status for s in HealthStatus})


def _add_optional(
    family: GaugeMetricFamily, labels: list[str], value: float | None, scale: float = 1.0
) -> None:
    if value is not None:  # a value the source lacks is absent, never 0
        family.add_metric(labels, value * scale)


def _les(bounds: Sequence[float]) -> list[str]:
    """``le`` label values, formatted as prometheus_client formats its own buckets."""
    formatted: list[str] = [floatToGoString(b) for b in bounds]  # type: ignore[no-untyped-call]
    return [*formatted, "+Inf"]


def _gauge(name: str, help_text: str, value: float, unit: str = "") -> GaugeMetricFamily:
    return GaugeMetricFamily(name, help_text, value=value, unit=unit)


def _apps(snapshot: Snapshot) -> set[str]:
    apps = {key.app for key in snapshot.jobs.series}
    apps.update(worker.app for worker in snapshot.workers)
    apps.update(summary.app for summary in snapshot.queues)
    return apps


def _version() -> str:
    from queuelens import __version__

    return __version__
