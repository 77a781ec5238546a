"""A series' log: the records a flush appends, and the script calls that write them.

    record = encode_record(minute, aggregate, 0.01)    # bytes; None when it holds nothing
    for record in read_log(log):                       # oldest first
        fold_record(record, into=bucket_aggregate)

A flush appends one record per minute of each series (that minute's aggregate) to the
series' log, ``P:{sid}:log`` (``APPEND``: no read and no merge on the server); on one
flush in ``compact_every`` the write_series script folds the log into the minute, hour and
day bucket hashes instead (see ``_redis_scripts``), and readers add in whatever is still in
the log. Records concatenate, each self-delimiting; numbers are little-endian::

    <B d I 6d           format version (1), sketch accuracy, minute start, a count per
                        JobStatus (in the enum's order)
    4d 4d 4d 3d 3d      duration, wait and CPU: zero count, sum, min, max (empty:
                        0, 0, inf, -inf); memory peak and increase: count, sum, max
                        (empty: 0, 0, -inf) -- the lanes of the ``d``, ``wu`` and ``m``
                        bucket fields, see ``_redis_keys``
    I I I I             bins of duration, wait and CPU (nd, nw, nu), exception types (e)
    nd i4, nd d, ...    per sketch: its bin indexes (int32), then their counts
    e x (H name, d count, d last seen, I message length, message)   UTF-8 names

One fixed layout is what makes a record cheap to pack here and to read in Lua: a single
``struct`` call each, but for the exceptions. Bins travel as plain lists and become 16-bin
groups only when folded.
"""

from __future__ import annotations

import struct
from typing import Any, NamedTuple

from queuelens.model import (
    Aggregate,
    ExceptionStat,
    JobStatus,
    Resolution,
    SeriesKey,
    Stat,
    bucket_start,
)
from queuelens.sketch import Sketch
from queuelens.storage._redis_client import Command
from queuelens.storage._redis_codec import WIDTHS, Arg, finite
from queuelens.storage._redis_keys import KeyLayout
from queuelens.storage._redis_scripts import SCRIPTS
from queuelens.storage.base import StorageError

__all__ = [
    "FORMAT_VERSION",
    "LogRecord",
    "SeriesWrites",
    "encode_record",
    "fold_records",
    "read_log",
]

#: the record format this version writes and folds
FORMAT_VERSION = 1

_STATUSES = tuple(JobStatus)
_FIXED = f"<BdI{len(_STATUSES)}d18dIIII"
_EXCEPTION_NAME = struct.Struct("<H")
_EXCEPTION = struct.Struct("<ddI")
_INF = float("inf")
_EMPTY_SKETCH = (0, 0.0, _INF, -_INF)
_EMPTY_MEMORY = (0, 0.0, -_INF)
_FOLD_SHA, _APPEND_SHA = SCRIPTS["write_series"].sha, SCRIPTS["append_series"].sha
#: a whole record but its exceptions, by bins per sketch (a flush sees a few shapes)
_SHAPES: dict[tuple[int, int, int], struct.Struct] = {}
_SHAPES_KEPT = 4096
_FIXED_PART = struct.Struct(_FIXED)


def _shape(nd: int, nw: int, nu: int) -> struct.Struct:
    packer = _SHAPES.get((nd, nw, nu))
    if packer is None:
        packer = struct.Struct(f"{_FIXED}{nd}i{nd}d{nw}i{nw}d{nu}i{nu}d")
        if len(_SHAPES) < _SHAPES_KEPT:
            _SHAPES[nd, nw, nu] = packer
    return packer


def _sketch(sketch: Sketch) -> tuple[float, float, float, float]:
    if not sketch.count:
        return _EMPTY_SKETCH
    return sketch.zero_count, finite(sketch.sum), finite(sketch.min), finite(sketch.max)


def _memory(stat: Stat) -> tuple[float, float, float]:
    return (stat.count, finite(stat.total), finite(stat.max)) if stat.count else _EMPTY_MEMORY


def encode_record(minute: int, aggregate: Aggregate, relative_accuracy: float) -> bytes | None:
    """``aggregate`` of ``minute`` as one record (see the module docstring); None when it
    holds nothing.

    This runs for every series of every flush, so it is one ``struct`` call (by the shape of
    its bins) but for exceptions.
    """
    counts = aggregate.counts
    duration, wait, cpu = aggregate.duration, aggregate.wait, aggregate.cpu
    peak, delta = aggregate.memory_peak, aggregate.memory_delta
    raised = aggregate.exceptions
    if not (any(counts.values()) or duration.count or wait.count or cpu.count or peak.count
            or delta.count or raised):  # fmt: skip
        return None
    d, w, u = duration.bins, wait.bins, cpu.bins
    try:
        record = _shape(len(d), len(w), len(u)).pack(
            FORMAT_VERSION,
            relative_accuracy,
            minute,
            *[counts.get(status, 0) for status in _STATUSES],
            *_sketch(duration),
            *_sketch(wait),
            *_sketch(cpu),
            *_memory(peak),
            *_memory(delta),
            len(d),
            len(w),
            len(u),
            len(raised),
            *d,
            *d.values(),
            *w,
            *w.values(),
            *u,
            *u.values(),
        )
    except struct.error:
        indexes = [*d, *w, *u]
        raise StorageError(
            f"histogram bin indexes {min(indexes)}..{max(indexes)} do not fit in 32 bits; "
            "use a coarser histogram accuracy"
        ) from None
    if not raised:
        return record
    parts = [record]
    for name, stat in raised.items():
        raw_name = name.encode("utf-8", "surrogatepass")
        message = stat.last_message.encode("utf-8", "surrogatepass")
        if len(raw_name) > 0xFFFF:
            raise StorageError(
                f"exception type {name[:40]!r}... is {len(raw_name)} bytes long; at most "
                "65535 fit (the recorder cuts names to 1024 characters)"
            )
        parts += (_EXCEPTION_NAME.pack(len(raw_name)), raw_name,
                  _EXCEPTION.pack(stat.count, finite(stat.last_seen), len(message)),
                  message)  # fmt: skip
    return b"".join(parts)


_COUNTS_AT, _LANES_AT = 3, 3 + len(_STATUSES)
_BINS_AT = _LANES_AT + 22  # after the 18 stat lanes and the 4 lengths
_SKETCH_LANES = (_LANES_AT, _LANES_AT + 4, _LANES_AT + 8)
_MEMORY_LANES = (_LANES_AT + 12, _LANES_AT + 15)


class LogRecord(NamedTuple):
    """One record of a series' log: a minute and its aggregate, as packed."""

    minute: int
    #: what the record's struct holds (see the module docstring)
    values: tuple[Any, ...]
    #: (type, count, last seen, message) per exception type
    raised: list[tuple[str, int, float, str]]

    @property
    def accuracy(self) -> float:
        return float(self.values[1])


def read_log(data: bytes) -> list[LogRecord]:
    """The records of a series' log, oldest first.

    Raises StorageError on a record of a newer format, or on damaged bytes.
    """
    records: list[LogRecord] = []
    pos, end = 0, len(data)
    try:
        while pos < end:
            fixed = _FIXED_PART.unpack_from(data, pos)
            if fixed[0] != FORMAT_VERSION:
                raise StorageError(
                    f"a series log record has format {fixed[0]}, which this queuelens "
                    f"cannot read (it reads format {FORMAT_VERSION}); upgrade queuelens"
                )
            shape = _shape(*fixed[_LANES_AT + 18 : _LANES_AT + 21])
            values = shape.unpack_from(data, pos)
            pos += shape.size
            raised = []
            for _ in range(fixed[_LANES_AT + 21]):
                (length,) = _EXCEPTION_NAME.unpack_from(data, pos)
                name = data[pos + 2 : pos + 2 + length].decode("utf-8", "surrogatepass")
                pos += 2 + length
                count, seen, length = _EXCEPTION.unpack_from(data, pos)
                pos += _EXCEPTION.size
                message = data[pos : pos + length].decode("utf-8", "surrogatepass")
                raised.append((name, int(count), seen, message))
                pos += length
            if pos > end:
                raise IndexError(pos)
            records.append(LogRecord(fixed[2], values, raised))
    except (struct.error, IndexError, ValueError) as exc:
        raise StorageError(f"a series log is damaged at byte {pos}: {exc!r}") from exc
    return records


def fold_records(records: list[LogRecord], into: Aggregate) -> None:
    """Merge ``records`` into ``into``, in order, exactly as :meth:`Aggregate.merge` would
    merge their aggregates, so that the sums come out as the write_series script folds
    them. Reads do this for every record still in a log, so it is written for speed."""
    counts = into.counts
    sketches = (into.duration, into.wait, into.cpu)
    memory = ((into.memory_peak, _MEMORY_LANES[0]), (into.memory_delta, _MEMORY_LANES[1]))
    statuses = _STATUSES
    for record in records:
        values = record.values
        for j in range(_COUNTS_AT, _LANES_AT):
            if values[j]:
                status = statuses[j - _COUNTS_AT]
                counts[status] = counts.get(status, 0) + int(values[j])
        at = _BINS_AT
        for q in range(3):
            n = values[_LANES_AT + 18 + q]
            first = _SKETCH_LANES[q]
            zero_count = values[first]
            if zero_count or n:  # else empty, which Sketch.merge skips too
                sketch = sketches[q]
                bins = sketch.bins
                get = bins.get
                for j in range(at, at + n):
                    index = values[j]
                    bins[index] = get(index, 0) + int(values[j + n])
                sketch.count += int(zero_count + sum(values[at + n : at + 2 * n]))
                sketch.zero_count += int(zero_count)
                sketch.sum += values[first + 1]
                if values[first + 2] < sketch.min:
                    sketch.min = values[first + 2]
                if values[first + 3] > sketch.max:
                    sketch.max = values[first + 3]
            at += 2 * n
        for stat, first in memory:
            count = values[first]
            if count:
                high = values[first + 2]
                if stat.count == 0 or high > stat.max:
                    stat.max = high
                stat.count += int(count)
                stat.total += values[first + 1]
        for name, n, seen, message in record.raised:
            mine = into.exceptions.get(name)
            if mine is None:
                into.exceptions[name] = ExceptionStat(n, message, seen)
            else:
                mine.merge(ExceptionStat(n, message, seen))


class SeriesWrites:
    """The append_series or write_series call (see ``_redis_scripts``) of each series of
    one flush batch.

    Each ``(minute, aggregate)`` of a series becomes one record of its log. On one flush in
    ``compact_every`` per series -- when ``(sequence + the series' phase) % compact_every
    == 0``, so a different ``1 / compact_every`` of the series each time, decided by the
    writer's sequence numbers alone -- the log is folded into the buckets instead: the
    writer declares the minute, hour and day buckets of its minutes and of the minute
    before each. ``fold_now`` maps series ids to fold at once (their log grew too long) to
    extra minutes to declare (records the last fold left in the log).
    """

    def __init__(self, keys: KeyLayout, head: list[Arg], keep_s: dict[int, int], *,
                 relative_accuracy: float, sequence: int, compact_every: int,
                 fold_now: dict[str, set[int]]) -> None:  # fmt: skip
        self._keys, self._head, self._keep_s = keys, head, keep_s
        self._accuracy = relative_accuracy
        self._sequence, self._every, self._fold_now = sequence, compact_every, fold_now
        #: minute -> the log's EXPIREAT for a record of it: when its day bucket expires
        self._log_expiry: dict[int, int] = {}
        #: frozenset of minutes -> KEYS suffixes and ARGV of the buckets a fold declares
        self._declared: dict[frozenset[int], tuple[list[str], list[Arg]]] = {}
        #: the series ids of the commands made so far, in order
        self.sids: list[str] = []

    def command(self, series: SeriesKey, parts: list[tuple[int, Aggregate]]) -> Command:
        """The EVALSHA for ``series``, given its ``(minute, aggregate)`` parts."""
        sid, tag, sequences, log = self._keys.series(series)
        self.sids.append(sid)
        records: list[Arg] = []
        expiry = 0
        for at, aggregate in parts:
            minute = at - at % 60  # a batch's minutes are aligned; the script relies on it
            record = encode_record(minute, aggregate, self._accuracy)
            if record is not None:
                records.append(record)
                expiry = max(expiry, self._log_expiry.get(minute) or self._expiry_of(minute))
        extra = self._fold_now.get(sid)
        if extra is None and (self._sequence + int(sid[:8], 16)) % self._every:
            return ("EVALSHA", _APPEND_SHA, 2, sequences, log, *self._head, expiry, *records)
        minutes = frozenset(at - at % 60 for at, _ in parts) | (extra or set())
        suffixes, declared = self._declared.get(minutes) or self._declare(minutes)
        return ("EVALSHA", _FOLD_SHA, 2 + len(suffixes), sequences, log,
                *[tag + suffix for suffix in suffixes], *self._head, expiry, *declared,
                *records)  # fmt: skip

    def _expiry_of(self, minute: int) -> int:
        day = bucket_start(minute, Resolution.day)
        expiry = self._log_expiry[minute] = day + int(Resolution.day) + self._keep_s[86400]
        return expiry

    def _declare(self, minutes: frozenset[int]) -> tuple[list[str], list[Arg]]:
        buckets = {
            (width, bucket_start(at, width))
            for minute in minutes
            for at in (minute, minute - 60)
            for width in WIDTHS
        }
        suffixes: list[str] = []
        declared: list[Arg] = [len(buckets)]
        for width, start in sorted(buckets):
            suffixes += self._keys.bucket_suffixes(width, start)
            declared += (width, start, start + width + self._keep_s[width])
        self._declared[minutes] = suffixes, declared
        return suffixes, declared
