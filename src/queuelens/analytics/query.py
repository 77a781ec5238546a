"""Job figures over a window, per job, per queue, per app and in total, and as time series.

    reader = JobReader(storage)
    window = parse_window("1h")
    jobs = reader.job_summaries(window, app="billing")         # [JobSummary], busiest first
    queues = reader.queue_stats(window)                        # {(app, queue): Stats}
    points = reader.timeseries(window, step_s=60, app="billing", queue="emails")

Reads merge stored buckets exactly: the window is covered by day, hour and minute buckets
(:func:`~queuelens.analytics.window.cover`), so every job is counted once, and percentiles
come from the merged histograms within their stated accuracy.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import Window, cover, finest_available, resolution_for_step
from queuelens.model import Aggregate, Resolution, SeriesKey, bucket_start
from queuelens.storage.base import QueueInfo, Retention, Storage

__all__ = ["JobReader", "Point", "merge_all"]


@dataclass(frozen=True, slots=True)
class Point:
    """One step of a time series: ``[at, at + step_s)``."""

    at: int
    step_s: int
    stats: Stats


def merge_all(aggregates: Iterable[Aggregate]) -> Aggregate | None:
    """One aggregate holding all of ``aggregates`` (None when there are none)."""
    merged: Aggregate | None = None
    for aggregate in aggregates:
        if merged is None:
            merged = aggregate.copy()
        else:
            merged.merge(aggregate)
    return merged


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
        out: dict[SeriesKey, Aggregate] = {}
        if not series:
            return out
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
