"""Job figures over a window, per job, per queue, per app and in total, and as time series.

    reader = JobReader(storage)
    window = parse_window("1h")
    jobs = reader.job_summaries(window, app="billing")         # [JobSummary], busiest first
    queues = reader.queue_stats(window)                        # {(app, queue): Stats}
    figures = reader.figures(window)                           # all of it from one read
    points = reader.timeseries(window, step_s=60, app="billing", queue="emails")

Reads merge stored buckets exactly: the window is covered by day, hour and minute buckets
(:func:`~queuelens.analytics.window.cover`), so every job is counted once, and percentiles
come from the merged histograms within their stated accuracy. A storage with
:class:`~queuelens.storage.base.WindowReads` merges a window's buckets as it reads them and
counts without reading sketches; any other storage is read bucket by bucket, to the same
figures.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass

from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import Window, cover, finest_available, resolution_for_step
from queuelens.model import Aggregate, JobStatus, Resolution, SeriesKey, bucket_start
from queuelens.storage.base import BucketSpan, QueueInfo, Retention, Storage, WindowReads

__all__ = [
    "JobReader",
    "Point",
    "WindowFigures",
    "busiest_first",
    "group",
    "merge_all",
    "spans_of",
]


@dataclass(frozen=True, slots=True)
class Point:
    """One step of a time series: ``[at, at + step_s)``."""

    at: int
    step_s: int
    stats: Stats


@dataclass(frozen=True, slots=True)
class WindowFigures:
    """Every job with data in one window, and the same figures per queue, per app and in
    total: a dashboard's first page, from one read of the window."""

    window: Window
    #: most processed first
    jobs: tuple[JobSummary, ...]
    queues: dict[tuple[str, str], Stats]
    apps: dict[str, Stats]
    totals: Stats

    @classmethod
    def of(cls, window: Window, merged: Mapping[SeriesKey, Aggregate]) -> WindowFigures:
        """The figures of ``merged``, each series over ``window`` (left unchanged)."""
        minutes = window.minutes
        queues, apps, total = group(merged)
        return cls(
            window=window,
            jobs=busiest_first(
                JobSummary(key.app, key.queue, key.job, Stats.of(aggregate, minutes))
                for key, aggregate in merged.items()
            ),
            queues={name: Stats.of(a, minutes) for name, a in queues.items()},
            apps={name: Stats.of(a, minutes) for name, a in apps.items()},
            totals=Stats.of(total, minutes) if total is not None else Stats(),
        )

    def job_summaries(
        self, app: str | None = None, queue: str | None = None, job: str | None = None
    ) -> list[JobSummary]:
        """The jobs (of one app, queue and job name), most processed first."""
        return [
            s
            for s in self.jobs
            if (app is None or s.app == app)
            and (queue is None or s.queue == queue)
            and (job is None or s.job == job)
        ]


def busiest_first(summaries: Iterable[JobSummary]) -> tuple[JobSummary, ...]:
    return tuple(sorted(summaries, key=lambda s: (-s.stats.processed, s.app, s.queue, s.job)))


def group(
    merged: Mapping[SeriesKey, Aggregate],
) -> tuple[dict[tuple[str, str], Aggregate], dict[str, Aggregate], Aggregate | None]:
    """New aggregates holding ``merged`` per (app, queue), per app, and all of it."""
    queues: dict[tuple[str, str], Aggregate] = {}
    for key, aggregate in merged.items():
        mine = queues.get((key.app, key.queue))
        if mine is None:
            queues[key.app, key.queue] = aggregate.copy()
        else:
            mine.merge(aggregate)
    apps: dict[str, Aggregate] = {}
    for (app, _), aggregate in queues.items():
        mine = apps.get(app)
        if mine is None:
            apps[app] = aggregate.copy()
        else:
            mine.merge(aggregate)
    return queues, apps, merge_all(apps.values())


def merge_all(aggregates: Iterable[Aggregate]) -> Aggregate | None:
    """One aggregate holding all of ``aggregates`` (None when there are none)."""
    merged: Aggregate | None = None
    for aggregate in aggregates:
        if merged is None:
            merged = aggregate.copy()
        else:
            merged.merge(aggregate)
    return merged


def spans_of(window: Window) -> list[BucketSpan]:
    """The bucket spans that cover ``window`` exactly, coarsest first (see :func:`cover`)."""
    return [(span.resolution, float(span.start), float(span.end)) for span in cover(window)]


class JobReader:
    """Reads job buckets from a :class:`~queuelens.storage.base.Storage` and summarises them."""

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

    # -- which series exist ----------------------------------------------------------------

    def queues(self, app: str | None = None) -> list[QueueInfo]:
        return sorted(self.storage.list_queues(app), key=lambda q: (q.app, q.queue))

    def series(
        self, app: str | None = None, queue: str | None = None, job: str | None = None
    ) -> list[SeriesKey]:
        """Job series, optionally of one app, queue and job name."""
        apps = [app] if app is not None else self.storage.list_apps()
        keys: list[SeriesKey] = []
        for name in apps:
            keys.extend(
                key for key in self.storage.list_jobs(name, queue) if job is None or key.job == job
            )
        return keys

    # -- merged over a window --------------------------------------------------------------

    def merged(self, series: Sequence[SeriesKey], window: Window) -> dict[SeriesKey, Aggregate]:
        """Each series' buckets over ``window`` merged into one aggregate (absent: no data)."""
        if not series:
            return {}
        if isinstance(self.storage, WindowReads):
            return self.storage.read_merged(series, spans_of(window))
        out: dict[SeriesKey, Aggregate] = {}
        for span in cover(window):
            read = self.storage.read_buckets(series, span.resolution, span.start, span.end)
            for key, buckets in read.items():
                for aggregate in buckets.values():
                    mine = out.get(key)
                    if mine is None:
                        out[key] = aggregate  # read results are ours to merge into
                    else:
                        mine.merge(aggregate)
        return out

    def figures(self, window: Window, app: str | None = None) -> WindowFigures:
        """Every job of ``app`` (or of every app) over ``window`` with its queue, app and
        total figures, from one read."""
        return WindowFigures.of(window, self.merged(self.series(app), window))

    def queue_counts(
        self, window: Window, app: str | None = None
    ) -> dict[tuple[str, str], dict[JobStatus, int]]:
        """Attempts per status per (app, queue) over ``window``; sketches are not read where
        the storage can count alone."""
        out: dict[tuple[str, str], dict[JobStatus, int]] = {}

        def add(key: SeriesKey, counts: Mapping[JobStatus, int]) -> None:
            mine = out.setdefault((key.app, key.queue), {})
            for status, n in counts.items():
                mine[status] = mine.get(status, 0) + n

        if isinstance(self.storage, WindowReads):
            for per_series in self.storage.read_counts(spans_of(window), app):
                for key, per_bucket in per_series.items():
                    for counts in per_bucket.values():
                        add(key, counts)
        else:
            for key, aggregate in self.merged(self.series(app), window).items():
                add(key, aggregate.counts)
        return out

    def job_summaries(
        self,
        window: Window,
        app: str | None = None,
        queue: str | None = None,
        job: str | None = None,
    ) -> list[JobSummary]:
        """Every job with data in ``window``, most processed first."""
        merged = self.merged(self.series(app, queue, job), window)
        summaries = [
            JobSummary(key.app, key.queue, key.job, Stats.of(aggregate, window.minutes))
            for key, aggregate in merged.items()
        ]
        summaries.sort(key=lambda s: (-s.stats.processed, s.app, s.queue, s.job))
        return summaries

    def queue_stats(
        self, window: Window, app: str | None = None, queue: str | None = None
    ) -> dict[tuple[str, str], Stats]:
        """Per (app, queue): the merge of all its jobs over ``window``."""
        return {
            group: Stats.of(aggregate, window.minutes)
            for group, aggregate in self._grouped(window, app, queue, by_queue=True).items()
        }

    def app_stats(self, window: Window, app: str | None = None) -> dict[str, Stats]:
        """Per app: the merge of all its jobs over ``window``."""
        grouped = self._grouped(window, app, None, by_queue=False)
        return {
            group[0]: Stats.of(aggregate, window.minutes) for group, aggregate in grouped.items()
        }

    def totals(self, window: Window, app: str | None = None, queue: str | None = None) -> Stats:
        """Everything (of one app, or one queue) over ``window`` as one set of figures."""
        merged = merge_all(self.merged(self.series(app, queue), window).values())
        return Stats.of(merged, window.minutes) if merged is not None else Stats()

    def _grouped(
        self, window: Window, app: str | None, queue: str | None, *, by_queue: bool
    ) -> dict[tuple[str, str], Aggregate]:
        grouped: dict[tuple[str, str], Aggregate] = {}
        for key, aggregate in self.merged(self.series(app, queue), window).items():
            group = (key.app, key.queue if by_queue else "")
            mine = grouped.get(group)
            if mine is None:
                grouped[group] = aggregate
            else:
                mine.merge(aggregate)
        return grouped

    # -- time series -----------------------------------------------------------------------

    def timeseries(
        self,
        window: Window,
        step_s: int,
        app: str | None = None,
        queue: str | None = None,
        job: str | None = None,
    ) -> list[Point]:
        """The merge of the matching series per step, one :class:`Point` per step of
        ``window`` (steps with no jobs included, so charts show the gaps as zero)."""
        return self.timeseries_of(self.series(app, queue, job), window, step_s)

    def timeseries_of(
        self, series: Sequence[SeriesKey], window: Window, step_s: int
    ) -> list[Point]:
        resolution, step_s = self.step_resolution(window, step_s)
        first = bucket_start(window.start, step_s)
        steps: dict[int, Aggregate] = {}
        if series:
            read = self.storage.read_buckets(series, resolution, first, window.end)
            for buckets in read.values():
                for start, aggregate in buckets.items():
                    at = bucket_start(start, step_s)
                    mine = steps.get(at)
                    if mine is None:
                        steps[at] = aggregate
                    else:
                        mine.merge(aggregate)
        points: list[Point] = []
        for at in range(first, int(window.end), step_s):
            # the last step may still be filling: its rate is over the part that has passed
            minutes = (min(at + step_s, window.end) - at) / 60.0
            found = steps.get(at)
            stats = Stats.of(found, minutes) if found is not None else Stats()
            points.append(Point(at, step_s, stats))
        return points

    def step_resolution(self, window: Window, step_s: int) -> tuple[Resolution, int]:
        """The bucket resolution to read for ``step_s``, and the step actually used (raised
        to the finest resolution still kept at the window's start)."""
        available = finest_available(window.start, self.clock(), self.retention)
        if step_s < int(available):
            step_s = int(available)
        resolution = resolution_for_step(step_s)
        if int(resolution) < int(available):
            step_s = -(-step_s // int(available)) * int(available)
            resolution = resolution_for_step(step_s)
        return resolution, step_s
