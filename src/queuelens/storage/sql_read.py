"""The read queries of the SQL driver: buckets, whole windows merged, and bare counts.

    ids = series_ids(conn, series)                                  # {series id: SeriesKey}
    buckets = read_buckets(conn, ids, Resolution.minute, low, high, 0.01)
    merged = read_merged(conn, ids, [(Resolution.hour, low, high)], 0.01)
    counts = read_counts(conn, Resolution.day, low, high, app="billing")

A dashboard reads tens of thousands of buckets at a time, so these select only the columns
they use, take rows as tuples, and merge each row's sketches straight from their bytes
(:meth:`~queuelens.sketch.Sketch.merge_bytes`) into the aggregate they add to, building no
aggregate per bucket when only the merge is wanted. Counts never touch a sketch.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import (
    ColumnElement,
    CompoundSelect,
    Select,
    bindparam,
    func,
    literal,
    select,
    union_all,
)
from sqlalchemy.engine import Connection

from queuelens.model import STATUSES, Aggregate, ExceptionStat, JobStatus, Resolution, SeriesKey
from queuelens.storage.base import StorageError
from queuelens.storage.sql_rows import chunks, key_hash
from queuelens.storage.sql_schema import STATUS_COLUMNS, buckets, exceptions
from queuelens.storage.sql_schema import series as series_table
from queuelens.storage.sql_write import registry_ids

__all__ = [
    "count_attempts",
    "int_range",
    "read_buckets",
    "read_counts",
    "read_merged",
    "series_ids",
]

#: ``(resolution, start, end)``: the buckets of one resolution starting in ``[start, end)``
Span = tuple[Resolution, float, float]

_COUNTS = tuple(buckets.c[name] for name in STATUS_COLUMNS)
# positions in a row of _BUCKET_COLUMNS
_FIRST_COUNT, _PEAK, _DELTA, _SKETCHES = 2, 2 + len(STATUSES), 5 + len(STATUSES), 8 + len(STATUSES)
_BUCKET_COLUMNS = (
    buckets.c.series_id,
    buckets.c.bucket_start,
    *_COUNTS,
    buckets.c.mem_peak_count,
    buckets.c.mem_peak_total,
    buckets.c.mem_peak_max,
    buckets.c.mem_delta_count,
    buckets.c.mem_delta_total,
    buckets.c.mem_delta_max,
    buckets.c.duration_sketch,
    buckets.c.wait_sketch,
    buckets.c.cpu_sketch,
)
_EXCEPTION_COLUMNS = (
    exceptions.c.series_id,
    exceptions.c.bucket_start,
    exceptions.c.exception_type,
    exceptions.c.count,
    exceptions.c.last_message,
    exceptions.c.last_seen,
)


def int_range(start: float, end: float) -> tuple[int, int]:
    """``[start, end)`` over integer bucket starts as integer bounds: comparing a BIGINT
    column with a float parameter would keep PostgreSQL from using the index."""
    return _ceil(start), _ceil(end)


def _ceil(value: float) -> int:
    if math.isnan(value):
        raise StorageError("a time bound is NaN; pass unix seconds")
    limit = 2**62  # beyond any bucket start, within BIGINT
    if math.isinf(value):
        return limit if value > 0 else -limit
    return max(-limit, min(limit, math.ceil(value)))


def series_ids(conn: Connection, series: Iterable[SeriesKey]) -> dict[int, SeriesKey]:
    """The stored series among ``series``, by id (series never written are absent)."""
    wanted = {key_hash(s.app, s.queue, s.job): s for s in series}
    return {
        row_id: wanted[digest]
        for digest, row_id in registry_ids(conn, series_table, wanted).items()
    }


def _ranges(spans: Sequence[Span]) -> list[tuple[int, int, int]]:
    out = []
    for resolution, start, end in spans:
        low, high = int_range(start, end)
        if low < high:
            out.append((int(resolution), low, high))
    return out


def _select_range(
    columns: Sequence[Any], ids: Sequence[int], width: int, low: int, high: int
) -> Select[Any]:
    table = columns[0].table
    return select(*columns).where(
        table.c.series_id.in_(ids),
        table.c.resolution == width,
        table.c.bucket_start >= low,
        table.c.bucket_start < high,
    )


def _rows(
    conn: Connection, columns: Sequence[Any], ids: Iterable[int], spans: Sequence[Span]
) -> Iterator[Any]:
    """Rows of ``columns`` (of the buckets or the exceptions table) of series ``ids`` in
    ``spans``: one query per span and chunk of ids."""
    ranges = _ranges(spans)
    for id_chunk in chunks(sorted(ids)):
        for width, low, high in ranges:
            yield from conn.execute(_select_range(columns, id_chunk, width, low, high))


def _fold(aggregate: Aggregate, row: Any) -> None:
    """Add one row of ``_BUCKET_COLUMNS`` into ``aggregate``: what Aggregate.merge does, read
    from the columns as they are."""
    counts = aggregate.counts
    for status, n in zip(STATUSES, row[_FIRST_COUNT:_PEAK], strict=True):
        if n:
            counts[status] = counts.get(status, 0) + n
    for stat, at in ((aggregate.memory_peak, _PEAK), (aggregate.memory_delta, _DELTA)):
        n = row[at]
        if n:
            stat.max = row[at + 2] if stat.count == 0 else max(stat.max, row[at + 2])
            stat.count += n
            stat.total += row[at + 1]
    for sketch, blob in zip(
        (aggregate.duration, aggregate.wait, aggregate.cpu), row[_SKETCHES:], strict=True
    ):
        if blob is not None:
            sketch.merge_bytes(blob)


def _add_exception(aggregate: Aggregate, name: str, count: int, message: str, seen: float) -> None:
    mine = aggregate.exceptions.get(name)
    if mine is None:
        aggregate.exceptions[name] = ExceptionStat(int(count), message, seen)
    else:
        mine.merge(ExceptionStat(int(count), message, seen))


def read_buckets(
    conn: Connection,
    ids: dict[int, SeriesKey],
    resolution: Resolution,
    low: int,
    high: int,
    relative_accuracy: float,
) -> dict[SeriesKey, dict[int, Aggregate]]:
    """Every bucket of series ``ids`` starting in ``[low, high)``, per series and start."""
    out: dict[SeriesKey, dict[int, Aggregate]] = {}
    span = [(resolution, float(low), float(high))]
    for row in _rows(conn, _BUCKET_COLUMNS, ids, span):
        aggregate = Aggregate(relative_accuracy)
        _fold(aggregate, row)
        out.setdefault(ids[row[0]], {})[row[1]] = aggregate
    for series_id, start, name, count, message, seen in _rows(conn, _EXCEPTION_COLUMNS, ids, span):
        bucket = out.get(ids[series_id], {}).get(start)
        if bucket is not None:
            bucket.exceptions[name] = ExceptionStat(int(count), message, seen)
    return out


def read_merged(
    conn: Connection, ids: dict[int, SeriesKey], spans: Sequence[Span], relative_accuracy: float
) -> dict[SeriesKey, Aggregate]:
    """Per series of ``ids``, every bucket in ``spans`` merged into one aggregate."""
    merged: dict[int, Aggregate] = {}
    for row in _rows(conn, _BUCKET_COLUMNS, ids, spans):
        aggregate = merged.get(row[0])
        if aggregate is None:
            aggregate = merged[row[0]] = Aggregate(relative_accuracy)
        _fold(aggregate, row)
    for series_id, _, name, count, message, seen in _rows(conn, _EXCEPTION_COLUMNS, ids, spans):
        aggregate = merged.get(series_id)
        if aggregate is not None:
            _add_exception(aggregate, name, count, message, seen)
    return {ids[series_id]: aggregate for series_id, aggregate in merged.items()}


def _total() -> ColumnElement[Any]:
    total: ColumnElement[Any] = _COUNTS[0]
    for column in _COUNTS[1:]:
        total = total + column
    return total


_NAMES = (series_table.c.app, series_table.c.queue, series_table.c.job)
#: what read_counts and count_attempts select from each span's bucket rows
_SPAN_COLUMNS: dict[str, tuple[Any, ...]] = {
    "counts": (*_NAMES, buckets.c.bucket_start, *_COUNTS),
    "attempts": (func.count(), func.coalesce(func.sum(_total()), 0)),
}


@functools.cache
def _over_spans(what: str, n_spans: int, by_app: bool) -> CompoundSelect[Any]:
    """``_SPAN_COLUMNS[what]`` over the bucket rows of ``n_spans`` spans (parameters
    ``r<i>``, ``lo<i>``, ``hi<i>``, and ``app`` when ``by_app``), first column the span's
    position, as one UNION ALL. Made once per shape: dashboards ask the same ones all day."""
    columns = _SPAN_COLUMNS[what]
    named = by_app or what == "counts"
    parts = []
    for position in range(n_spans):
        part = select(literal(position).label("span"), *columns).where(
            buckets.c.resolution == bindparam(f"r{position}"),
            buckets.c.bucket_start >= bindparam(f"lo{position}"),
            buckets.c.bucket_start < bindparam(f"hi{position}"),
        )
        if named:
            part = part.join_from(buckets, series_table, series_table.c.id == buckets.c.series_id)
        if by_app:
            part = part.where(series_table.c.app == bindparam("app"))
        # MariaDB would otherwise start from ql_series and read every bucket of every series
        # at that resolution (the key's range part unused): 500 ms instead of 4 ms here
        for dialect in ("mysql", "mariadb"):
            part = part.prefix_with("STRAIGHT_JOIN", dialect=dialect)
        parts.append(part)
    return union_all(*parts)


def _execute_over_spans(
    conn: Connection, what: str, spans: Sequence[Span], app: str | None
) -> Iterable[Any]:
    params: dict[str, Any] = {} if app is None else {"app": app}
    for position, (resolution, start, end) in enumerate(spans):
        params[f"r{position}"] = int(resolution)
        params[f"lo{position}"], params[f"hi{position}"] = int_range(start, end)
    return conn.execute(_over_spans(what, len(spans), app is not None), params)


def read_counts(
    conn: Connection, spans: Sequence[Span], app: str | None
) -> list[dict[SeriesKey, dict[int, dict[JobStatus, int]]]]:
    """Per span: attempts per status of each bucket, per series (of one app) and start; one
    statement, so every span is read from one snapshot."""
    out: list[dict[SeriesKey, dict[int, dict[JobStatus, int]]]] = [{} for _ in spans]
    if not spans:
        return out
    keys: dict[tuple[str, str, str], SeriesKey] = {}
    for row in _execute_over_spans(conn, "counts", spans, app):
        name = (row[1], row[2], row[3])
        key = keys.get(name)
        if key is None:
            key = keys[name] = SeriesKey(*name)
        out[row[0]].setdefault(key, {})[row[4]] = {
            status: int(n) for status, n in zip(STATUSES, row[5:], strict=True) if n
        }
    return out


def count_attempts(
    conn: Connection, spans: Sequence[Span], app: str | None
) -> list[tuple[int, int]]:
    """Per span: the number of buckets and the attempts they count, over every series (of one
    app); one statement."""
    found: dict[int, tuple[int, int]] = {}
    if spans:
        for position, n, attempts in _execute_over_spans(conn, "attempts", spans, app):
            found[int(position)] = (int(n), int(attempts))
    return [found.get(position, (0, 0)) for position in range(len(spans))]
