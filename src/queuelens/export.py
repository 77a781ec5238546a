"""Export job figures per series and step as CSV or JSON, streamed, for windows of any size.

    analytics, _ = open_analytics(storage)
    rows = iter_rows(analytics, analytics.window("30d"), step_s=3600, app="billing")
    for text in iter_csv(rows):
        out.write(text)

One row per (app, queue, job, step) that had jobs, with the columns in :data:`COLUMNS`. The
window is read a time chunk at a time and, within a chunk, a batch of series at a time, so
memory stays bounded however long the window or however many the series: rows come out
ordered by chunk, then series, then time. The figures are those of
:class:`~queuelens.analytics.summary.Stats` — the numbers every other surface shows.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any

from queuelens.analytics.overview import Analytics
from queuelens.analytics.summary import Stats
from queuelens.analytics.window import Window, parse_step
from queuelens.model import Aggregate, SeriesKey, bucket_start

__all__ = ["COLUMNS", "FORMATS", "chunk_count", "iter_csv", "iter_json", "iter_rows"]

#: the export formats every surface offers
FORMATS = ("csv", "json")
#: every row's fields, in CSV column order
COLUMNS = (
    "time",
    "at",
    "step_s",
    "app",
    "queue",
    "job",
    "processed",
    "succeeded",
    "failed",
    "retried",
    "timed_out",
    "revoked",
    "rejected",
    "failure_rate",
    "throughput_per_min",
    "duration_ms_avg",
    "duration_ms_p50",
    "duration_ms_p95",
    "duration_ms_p99",
    "duration_ms_max",
    "wait_ms_avg",
    "wait_ms_p50",
    "wait_ms_p95",
    "wait_ms_p99",
    "wait_ms_max",
    "cpu_ms_avg",
    "cpu_ms_p95",
    "memory_mb_avg",
    "memory_mb_max",
)
#: time read at once (rounded up to whole steps)
CHUNK_S = 6 * 3600
#: series read at once within a chunk
SERIES_BATCH = 100


def _chunk_s(step_s: int, chunk_s: int) -> int:
    return max(step_s, -(-chunk_s // step_s) * step_s)


def chunk_count(
    window: Window,
    *,
    step_s: int | None = None,
    analytics: Analytics | None = None,
    chunk_s: int = CHUNK_S,
) -> int:
    """How many time chunks :func:`iter_rows` reads ``window`` in (for a progress bar)."""
    step = parse_step(step_s, window)
    if analytics is not None:
        step = analytics.jobs.step_resolution(window, step)[1]
    size = _chunk_s(step, chunk_s)
    first = bucket_start(window.start, step)
    return max(1, math.ceil((window.end - first) / size))


def iter_rows(
    analytics: Analytics,
    window: Window,
    *,
    step_s: int | None = None,
    app: str | None = None,
    queue: str | None = None,
    job: str | None = None,
    chunk_s: int = CHUNK_S,
    on_chunk: Callable[[int], None] | None = None,
) -> Iterator[dict[str, Any]]:
    """Rows of figures per series and step over ``window``; ``on_chunk(n)`` after each chunk.

    ``step_s`` is parsed as everywhere else (None: about 60 steps over the window) and
    raised to the finest resolution still kept at the window's start; the window widens
    to whole steps, as time series do.
    """
    jobs = analytics.jobs
    resolution, step = jobs.step_resolution(window, parse_step(step_s, window))
    series = jobs.series(app, queue, job)
    size = _chunk_s(step, chunk_s)
    start = bucket_start(window.start, step)
    done = 0
    while start < window.end:
        end = min(start + size, int(window.end))
        for batch in range(0, len(series), SERIES_BATCH):
            keys = series[batch : batch + SERIES_BATCH]
            read = jobs.storage.read_buckets(keys, resolution, start, end)
            for key in sorted(read, key=lambda k: (k.app, k.queue, k.job)):
                yield from _series_rows(key, read[key], step, window.end)
        done += 1
        if on_chunk is not None:
            on_chunk(done)
        start = end


def _series_rows(
    key: SeriesKey, buckets: dict[int, Aggregate], step: int, window_end: float
) -> Iterator[dict[str, Any]]:
    steps: dict[int, Aggregate] = {}
    for at, aggregate in buckets.items():
        mine = steps.get(bucket_start(at, step))
        if mine is None:
            steps[bucket_start(at, step)] = aggregate
        else:
            mine.merge(aggregate)
    for at in sorted(steps):
        minutes = (min(at + step, window_end) - at) / 60.0
        yield _row(key, at, step, Stats.of(steps[at], minutes, top_exceptions=0))


def _row(key: SeriesKey, at: int, step: int, stats: Stats) -> dict[str, Any]:
    duration, wait = stats.duration_ms, stats.wait_ms
    return {
        "time": datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z"),
        "at": at,
        "step_s": step,
        "app": key.app,
        "queue": key.queue,
        "job": key.job,
        "processed": stats.processed,
        "succeeded": stats.succeeded,
        "failed": stats.failed,
        "retried": stats.retried,
        "timed_out": stats.timed_out,
        "revoked": stats.revoked,
        "rejected": stats.rejected,
        "failure_rate": stats.failure_rate,
        "throughput_per_min": stats.throughput_per_min,
        "duration_ms_avg": duration.avg,
        "duration_ms_p50": duration.p50,
        "duration_ms_p95": duration.p95,
        "duration_ms_p99": duration.p99,
        "duration_ms_max": duration.max,
        "wait_ms_avg": wait.avg,
        "wait_ms_p50": wait.p50,
        "wait_ms_p95": wait.p95,
        "wait_ms_p99": wait.p99,
        "wait_ms_max": wait.max,
        "cpu_ms_avg": stats.cpu_ms.avg,
        "cpu_ms_p95": stats.cpu_ms.p95,
        "memory_mb_avg": stats.memory_mb.avg,
        "memory_mb_max": stats.memory_mb.max,
    }


def iter_csv(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """A header line, then one CSV line per row (empty cells for unknown values)."""
    buffer = io.StringIO()
    writer = csv.DictWriter(buffer, fieldnames=COLUMNS, lineterminator="\n")
    writer.writeheader()
    yield buffer.getvalue()
    for row in rows:
        buffer.seek(0)
        buffer.truncate()
        writer.writerow(row)
        yield buffer.getvalue()


def iter_json(rows: Iterable[dict[str, Any]]) -> Iterator[str]:
    """One JSON array, streamed an element at a time (unknown values are null)."""
    yield "["
    first = True
    for row in rows:
        yield ("\n" if first else ",\n") + json.dumps(row, ensure_ascii=False, allow_nan=False)
        first = False
    yield "\n]\n"
