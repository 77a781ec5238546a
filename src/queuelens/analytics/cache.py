"""Window figures kept between queries, brought up to date from what changed in storage.

    cache = WindowCache(storage)                   # Analytics keeps one
    figures = cache.figures(window)                # WindowFigures, as a fresh read gives them
    counts = cache.queue_counts(baseline_window)   # attempts per status per queue

Why: a 24-hour overview of 1,000 job series merges some 84,000 buckets (23 hours and up to
120 minutes per series), seconds of Python whatever the storage. Between two looks at a
dashboard few of them change: the minutes recorders are writing, and now and then an older
one that a recorder retries after an outage. So the cache keeps each series' merge of the
window and asks storage only what changed.

Never stale
-----------
Each query first asks storage whether anything in the window changed (unless the answer
was checked less than ``max_age_s`` ago; 0 by default, so always), and answers only once
the answer is what a fresh read would give at that instant: the same counts, percentiles,
maxima and exceptions, averages equal up to the rounding of their sums. Asking is cheap
because writes only add: every outcome is counted under exactly one status, so a write that
changes a bucket adds at least one attempt to it, and only pruning past retention takes
one away. So :meth:`~queuelens.storage.base.WindowReads.count_attempts` of two spans, in one
statement, is a change marker:

* the *days* of the window at day resolution: minute, hour and day buckets are written
  together (one transaction; on Redis one script per series), so a change anywhere in the
  window changes these;
* the *edge*: minute buckets from two minutes before the window's end to ten minutes past
  it (within its last day), which recorders are writing now (or, with a clock running
  fast, a little later).

If the marker is unchanged, so is the answer. Otherwise the attempts per series tell which
series changed where: a series whose day attempts grew by exactly what its edge attempts
grew changed only in its last two minutes, which are read again; any other changed
elsewhere in the window (a late write), and its whole window is read again. When the days
grew by just what the edge grew (the usual case) that holds for every series, and only the
edge is counted per series; otherwise both spans are, in one statement. Counts are recorded
as read, before the contents are, so a write landing between the two is seen by the next
query, never lost. Every other series keeps its merge, and queue, app and total figures are
recomputed only where a series changed.

A window that moved (the minute turned) is read whole once and then kept the same way; the
previous window of the same length is dropped. That read costs what an uncached query does,
once a minute per window length: the price of keeping no per-minute state.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field

from queuelens.analytics.query import WindowFigures, busiest_first, spans_of
from queuelens.analytics.summary import JobSummary, Stats
from queuelens.analytics.window import Window
from queuelens.model import Aggregate, JobStatus, Resolution, SeriesKey, bucket_start
from queuelens.storage.base import BucketSpan, WindowReads

__all__ = ["AHEAD_S", "EDGE_S", "WindowCache"]

#: the end of a window that recorders may still be writing: its last two minutes
EDGE_S = 120
#: how far past a window's end the edge reaches, for recorders whose clock runs fast (a write
#: further ahead still shows, at the cost of reading its series' whole window again)
AHEAD_S = 600
#: windows kept at once (every window length and app filter asked for has one)
MAX_WINDOWS = 16

_DAY = int(Resolution.day)

Counts = dict[SeriesKey, dict[int, dict[JobStatus, int]]]


def _attempts(per_bucket: Mapping[int, Mapping[JobStatus, int]]) -> int:
    return sum(sum(counts.values()) for counts in per_bucket.values())


def _merged(base: Aggregate | None, edge: Aggregate | None) -> Aggregate | None:
    """``base`` and ``edge`` together, without changing either."""
    if base is None or edge is None:
        return base if edge is None else edge
    both = base.copy()
    both.merge(edge)
    return both


def _merge_into(target: Aggregate | None, part: Aggregate | None) -> Aggregate | None:
    if part is None:
        return target
    if target is None:
        return part.copy()
    target.merge(part)
    return target


@dataclass(slots=True)
class _Part:
    """One series, queue or app (or everything) of a window: its merge before the edge, its
    merge of the edge, and the figures of both together."""

    base: Aggregate | None = None
    edge: Aggregate | None = None
    stats: Stats = field(default_factory=Stats)

    def figure(self, minutes: float) -> None:
        both = _merged(self.base, self.edge)
        self.stats = Stats.of(both, minutes) if both is not None else Stats()

    @property
    def empty(self) -> bool:
        return self.base is None and self.edge is None


@dataclass(slots=True)
class _Series(_Part):
    #: attempts in the window's days / in the edge span, as last counted
    day_attempts: int = 0
    edge_attempts: int = 0


class _Entry:
    """One window (of every app, or of one) and what is known about it."""

    def __init__(self, window: Window, app: str | None) -> None:
        self.window = window
        self.app = app
        end = int(window.end)
        self.edge_start = max(int(window.start), bucket_start(end - EDGE_S, Resolution.minute))
        last_day_end = bucket_start(end - 1, _DAY) + _DAY
        day_span: BucketSpan = (
            Resolution.day,
            float(bucket_start(window.start, _DAY)),
            float(last_day_end),
        )
        edge_end = min(end + AHEAD_S, last_day_end)
        edge_span: BucketSpan = (Resolution.minute, float(self.edge_start), float(edge_end))
        #: what count_attempts is asked: the window's days, then its edge
        self.marker_spans = [day_span, edge_span]
        #: what read_counts is asked: the same spans, edge first
        self.count_spans = [edge_span, day_span]
        #: the buckets of the window before the edge, and of the edge itself
        self.base_spans = spans_of(Window(window.start, float(self.edge_start), window.label))
        self.edge_spans: list[BucketSpan] = [
            (Resolution.minute, float(self.edge_start), float(end))
        ]
        self.marker: list[tuple[int, int]] = []
        self.checked_at = -float("inf")
        self.series: dict[SeriesKey, _Series] = {}
        self.queues: dict[tuple[str, str], _Part] = {}
        self.apps: dict[str, _Part] = {}
        self.total = _Part()
        self.figures = WindowFigures(window, (), {}, {}, Stats())


class WindowCache:
    """Figures of windows kept between queries and checked against storage on each one.

    Needs a storage with :class:`~queuelens.storage.base.WindowReads` (see the module
    docstring for why it is never stale). Safe to share between threads; queries of one
    cache take turns.
    """

    def __init__(
        self,
        storage: WindowReads,
        *,
        max_age_s: float = 0.0,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.storage = storage
        #: serve an answer checked this recently without asking storage again
        self.max_age_s = max_age_s
        self.clock = clock
        self._windows: OrderedDict[tuple[float, float, str | None], _Entry] = OrderedDict()
        self._counts: dict[
            tuple[float, float, str | None],
            tuple[float, list[tuple[int, int]], dict[tuple[str, str], dict[JobStatus, int]]],
        ] = {}
        self._lock = threading.Lock()

    # -- figures -----------------------------------------------------------------------------

    def figures(self, window: Window, app: str | None = None) -> WindowFigures:
        """Every job of ``app`` (or of every app) over ``window``, with queue, app and total
        figures: what :meth:`JobReader.figures` would read now."""
        with self._lock:
            key = (window.start, window.end, app)
            entry = self._windows.get(key)
            now = self.clock()
            if entry is not None and now - entry.checked_at < self.max_age_s:
                return entry.figures
            if entry is None:
                entry = _Entry(window, app)
                self._keep(key, entry)
            else:
                self._windows.move_to_end(key)
            self._refresh(entry, now)
            return entry.figures

    def _keep(self, key: tuple[float, float, str | None], entry: _Entry) -> None:
        # a window of the same length and app that ended earlier has been overtaken
        length = key[1] - key[0]
        for old in [k for k in self._windows if k[1] - k[0] == length and k[2] == key[2]]:
            del self._windows[old]
        self._windows[key] = entry
        while len(self._windows) > MAX_WINDOWS:
            self._windows.popitem(last=False)

    def _refresh(self, entry: _Entry, now: float) -> None:
        marker = self.storage.count_attempts(entry.marker_spans, entry.app)
        if marker == entry.marker:
            entry.checked_at = now
            return
        # The edge lies within the days and attempts only grow: if the days grew by just what
        # the edge grew, no series changed anywhere else, and the days need no counting.
        grew = [new[1] - old[1] for new, old in zip(marker, entry.marker, strict=False)]
        if len(grew) == 2 and grew[0] == grew[1]:
            (edge_counts,) = self.storage.read_counts(entry.count_spans[:1], entry.app)
            edge = {key: _attempts(per_bucket) for key, per_bucket in edge_counts.items()}
            day = {key: edge.get(key, 0) for key in edge}
            for key, kept in entry.series.items():
                day[key] = kept.day_attempts + edge.get(key, 0) - kept.edge_attempts
        else:
            edge_counts, day_counts = self.storage.read_counts(entry.count_spans, entry.app)
            day = {key: _attempts(per_bucket) for key, per_bucket in day_counts.items()}
            edge = {key: _attempts(per_bucket) for key, per_bucket in edge_counts.items()}
        whole: set[SeriesKey] = set()  # read the whole window again
        edges: set[SeriesKey] = set()  # read the edge again
        for key in day.keys() | entry.series.keys():
            known = entry.series.get(key)
            day_attempts, edge_attempts = day.get(key, 0), edge.get(key, 0)
            if known is None or (
                day_attempts - known.day_attempts != edge_attempts - known.edge_attempts
            ):
                whole.add(key)
            elif edge_attempts != known.edge_attempts:
                edges.add(key)
        bases = self.storage.read_merged(list(whole), entry.base_spans) if whole else {}
        touched = whole | edges
        new_edges = self.storage.read_merged(list(touched), entry.edge_spans) if touched else {}
        minutes = entry.window.minutes
        for key in touched:
            series = entry.series.get(key) or _Series()
            if key in whole:
                series.base = bases.get(key)
            series.edge = new_edges.get(key)
            series.day_attempts, series.edge_attempts = day.get(key, 0), edge.get(key, 0)
            if series.empty and key not in day:
                entry.series.pop(key, None)  # pruned
                continue
            entry.series[key] = series
            series.figure(minutes)
        self._regroup(entry, whole, edges)
        entry.marker = marker
        entry.checked_at = now

    def _regroup(self, entry: _Entry, whole: set[SeriesKey], edges: set[SeriesKey]) -> None:
        """Queue, app and total parts of ``entry`` again where a series changed, and the
        figures of the window."""
        minutes = entry.window.minutes
        members: dict[tuple[str, str], list[_Series]] = {}
        for key, series in entry.series.items():
            members.setdefault((key.app, key.queue), []).append(series)
        changed_queues = {(k.app, k.queue) for k in whole | edges}
        based_queues = {(k.app, k.queue) for k in whole}
        for name in changed_queues:
            mine = members.get(name, [])
            if not any(not s.empty for s in mine):
                entry.queues.pop(name, None)
                continue
            part = entry.queues.get(name) or _Part()
            if name in based_queues or name not in entry.queues:
                part.base = _merge_all(s.base for s in mine)
            part.edge = _merge_all(s.edge for s in mine)
            part.figure(minutes)
            entry.queues[name] = part
        changed_apps = {app for app, _ in changed_queues}
        based_apps = {app for app, _ in based_queues}
        for app in changed_apps:
            queues = [p for (a, _), p in entry.queues.items() if a == app]
            if not queues:
                entry.apps.pop(app, None)
                continue
            part = entry.apps.get(app) or _Part()
            if app in based_apps or app not in entry.apps:
                part.base = _merge_all(q.base for q in queues)
            part.edge = _merge_all(q.edge for q in queues)
            part.figure(minutes)
            entry.apps[app] = part
        if changed_apps:
            if based_apps:
                entry.total.base = _merge_all(a.base for a in entry.apps.values())
            entry.total.edge = _merge_all(a.edge for a in entry.apps.values())
            entry.total.figure(minutes)
        entry.figures = WindowFigures(
            window=entry.window,
            jobs=busiest_first(
                JobSummary(key.app, key.queue, key.job, s.stats)
                for key, s in entry.series.items()
                if not s.empty
            ),
            queues={name: part.stats for name, part in entry.queues.items()},
            apps={name: part.stats for name, part in entry.apps.items()},
            totals=entry.total.stats,
        )

    # -- counts ------------------------------------------------------------------------------

    def queue_counts(
        self, window: Window, app: str | None = None
    ) -> dict[tuple[str, str], dict[JobStatus, int]]:
        """Attempts per status per (app, queue) over ``window``, counted again only when
        the attempts in its buckets changed."""
        with self._lock:
            key = (window.start, window.end, app)
            spans = spans_of(window)
            now = self.clock()
            kept = self._counts.get(key)
            if kept is not None and now - kept[0] < self.max_age_s:
                return kept[2]
            marker = self.storage.count_attempts(spans, app)
            if kept is not None and kept[1] == marker:
                self._counts[key] = (now, marker, kept[2])
                return kept[2]
            per_queue: dict[tuple[str, str], dict[JobStatus, int]] = {}
            for per_series in self.storage.read_counts(spans, app):
                for series, per_bucket in per_series.items():
                    mine = per_queue.setdefault((series.app, series.queue), {})
                    for counts in per_bucket.values():
                        for status, n in counts.items():
                            mine[status] = mine.get(status, 0) + n
            # one baseline per app filter: the one of yesterday's window is done with
            for old in [k for k in self._counts if k[2] == app and k != key]:
                del self._counts[old]
            self._counts[key] = (now, marker, per_queue)
            return per_queue

    def clear(self) -> None:
        with self._lock:
            self._windows.clear()
            self._counts.clear()


def _merge_all(parts: Iterable[Aggregate | None]) -> Aggregate | None:
    merged: Aggregate | None = None
    for part in parts:
        merged = _merge_into(merged, part)
    return merged
