"""How records become Redis hash fields and script arguments, and back.

    update = encode_update(aggregate)            # ARGV slice for the write_series script
    aggregate = decode_bucket(fields, exceptions, relative_accuracy=0.01)

Field names are described in :mod:`queuelens.storage._redis_keys`.
"""

from __future__ import annotations

import json
import math
import struct
from dataclasses import dataclass, field
from typing import TypeAlias

from queuelens.model import (
    Aggregate,
    ExceptionStat,
    JobStatus,
    Resolution,
    SeriesKey,
    Stat,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.sketch import Sketch
from queuelens.storage._redis_keys import (
    ACCURACY_FIELD,
    COUNT_PREFIX,
    DURATION_FIELD,
    GROUP_BINS,
    MEMORY_FIELD,
    SKETCH_FIELDS,
    WAIT_CPU_FIELD,
    KeyLayout,
)
from queuelens.storage.base import GaugeStat, WorkerRecord

__all__ = [
    "WIDTHS",
    "Arg",
    "SeriesUpdates",
    "decode_bucket",
    "decode_gauges",
    "decode_worker",
    "encode_update",
    "finite",
    "number",
    "worker_fields",
]

#: bucket widths in seconds: minute, hour, day
WIDTHS = tuple(int(resolution) for resolution in Resolution)
#: one script argument as redis-py sends it
Arg: TypeAlias = "str | int | bytes"

#: a sketch's scalars: zero count, sum, min, max (little-endian doubles); an empty sketch
#: is (0, 0, inf, -inf), so merging lane by lane needs no special case
SKETCH_BLOCK = struct.Struct("<dddd")
#: the two memory stats, peak then increase: count, sum, max each (empty: 0, 0, -inf)
MEMORY_BLOCKS = struct.Struct("<dddddd")
_EMPTY_SKETCH = (0, 0.0, math.inf, -math.inf)
_GROUP_SHIFT = GROUP_BINS.bit_length() - 1
_GROUP_MASK = GROUP_BINS - 1

#: a stored bin group, bins 16k ... 16k+15: 16 uint32 (64 bytes, the usual case) or, once
#: a count passes 2**32 - 1, 16 doubles (128 bytes); the length tells them apart
GROUP_SMALL = struct.Struct(f"<{GROUP_BINS}I")
GROUP_LARGE = struct.Struct(f"<{GROUP_BINS}d")
#: one touched lane of a bin group update: lane, count (exact below 2**53)
GROUP_LANE = struct.Struct("<Bd")

_STATUS_FIELDS = {status: COUNT_PREFIX + status.value for status in JobStatus}
#: bin group field names (``d:g-22``) by sketch field and group index, made once
_D, _W, _U = SKETCH_FIELDS["duration"], SKETCH_FIELDS["wait"], SKETCH_FIELDS["cpu"]
_GROUP_NAMES: dict[str, dict[int, str]] = {_D: {}, _W: {}, _U: {}}
_GROUP_NAMES_CACHED = 65536


#: packed lanes by (lane, count) for small counts, made once
_GROUP_LANES: dict[tuple[int, int], bytes] = {}


def _lane(lane: int, n: int) -> bytes:
    packed = GROUP_LANE.pack(lane, n)
    if n < 64:
        _GROUP_LANES[lane, n] = packed
    return packed


def finite(value: float) -> float:
    """``value``, or 0.0 when it is infinite or NaN (Redis numbers must be finite)."""
    return value if math.isfinite(value) else 0.0


def number(value: float) -> str:
    """Decimal text of a float that round-trips exactly; non-finite values become 0."""
    return repr(float(finite(value)))


def encode_update(aggregate: Aggregate) -> list[Arg] | None:
    """An aggregate as the write_series script reads an update (see ``_redis_scripts``).

    ``[a, g, s, e, "ra", *counter names, *group names, *stat names, *counters, *groups,
    *stats, *exceptions]``; None when the aggregate holds nothing. A group's update is its
    touched lanes, :data:`GROUP_LANE` each. This runs for every series of every flush, so it
    does the least it can: no per-field formatting beyond what redis-py does anyway.
    """
    names: list[Arg] = []
    values: list[int] = []
    for status, n in aggregate.counts.items():
        if n:
            names.append(_STATUS_FIELDS[status])
            values.append(n)
    duration, wait, cpu = aggregate.duration, aggregate.wait, aggregate.cpu
    group_names: list[Arg] = []
    groups: list[Arg] = []
    for prefix, sketch in ((_D, duration), (_W, wait), (_U, cpu)):
        if sketch.bins:
            lanes: dict[int, list[bytes]] = {}
            for index, n in sketch.bins.items():
                lane = _GROUP_LANES.get((index & _GROUP_MASK, n)) or _lane(index & _GROUP_MASK, n)
                group = lanes.get(index >> _GROUP_SHIFT)
                if group is None:
                    lanes[index >> _GROUP_SHIFT] = [lane]
                else:
                    group.append(lane)
            cached = _GROUP_NAMES[prefix]
            for k, touched in lanes.items():
                name = cached.get(k)
                if name is None:
                    name = f"{prefix}:g{k}"
                    if len(cached) < _GROUP_NAMES_CACHED:
                        cached[k] = name
                group_names.append(name)
                groups.append(touched[0] if len(touched) == 1 else b"".join(touched))
    stat_names: list[Arg] = []
    stats: list[Arg] = []
    if duration.count:
        stat_names.append(DURATION_FIELD)
        stats.append(SKETCH_BLOCK.pack(*_sketch_block(duration)))
    if wait.count or cpu.count:
        stat_names.append(WAIT_CPU_FIELD)
        stats.append(SKETCH_BLOCK.pack(*_sketch_block(wait)) +
                     SKETCH_BLOCK.pack(*_sketch_block(cpu)))  # fmt: skip
    peak, delta = aggregate.memory_peak, aggregate.memory_delta
    if peak.count or delta.count:
        stat_names.append(MEMORY_FIELD)
        stats.append(MEMORY_BLOCKS.pack(*_memory_block(peak), *_memory_block(delta)))
    exceptions: list[Arg] = []
    for name, raised in aggregate.exceptions.items():
        exceptions += (name, raised.count, number(raised.last_seen), raised.last_message)
    if not values and not groups and not stats and not exceptions:
        return None
    return [len(values), len(groups), len(stats), len(aggregate.exceptions), ACCURACY_FIELD,
            *names, *group_names, *stat_names, *values, *groups, *stats,
            *exceptions]  # fmt: skip


def _sketch_block(sketch: Sketch) -> tuple[float, float, float, float]:
    if not sketch.count:
        return _EMPTY_SKETCH
    return sketch.zero_count, finite(sketch.sum), finite(sketch.min), finite(sketch.max)


def _memory_block(stat: Stat) -> tuple[float, float, float]:
    if not stat.count:
        return 0, 0.0, -math.inf
    return stat.count, finite(stat.total), finite(stat.max)


class SeriesUpdates:
    """KEYS and ARGV of the write_series script (see ``_redis_scripts``) for each series of
    one flush batch.

    A series with one minute in the batch (the usual case) sends one update, shared by its
    minute, hour and day buckets (``u = 1``); the KEYS suffixes and EXPIREAT times of that
    minute are made once for every series that wrote it. A series with several minutes
    sends one update per bucket, hour and day ones merged in batch order exactly as
    :meth:`FlushBatch.rollup` does.
    """

    def __init__(self, keys: KeyLayout, head: list[Arg], keep_s: dict[int, int]) -> None:
        self._keys, self._head, self._keep_s = keys, head, keep_s
        #: minute -> KEYS suffixes without / with exceptions hashes, EXPIREAT per bucket
        self._plans: dict[int, tuple[list[str], list[str], list[int]]] = {}

    def script(
        self, series: SeriesKey, parts: list[tuple[int, Aggregate]]
    ) -> tuple[list[str], list[Arg]]:
        """KEYS and ARGV for ``series``, given its ``(minute, aggregate)`` parts."""
        if len(parts) == 1:
            minute, aggregate = parts[0]
            update = encode_update(aggregate)
            if update is None:  # nothing counted: only the sequence is recorded
                suffixes, args = self._keys.write_suffixes([]), [*self._head, 0]
            else:
                plan = self._plans.get(minute) or self._minute_plan(minute)
                suffixes = plan[1] if update[3] else plan[0]
                args = [*self._head, 1, *update, *plan[2]]
        else:
            suffixes, args = self._merged(parts)
        tag = self._keys.series_tag(series)
        return [tag + suffix for suffix in suffixes], args

    def _minute_plan(self, minute: int) -> tuple[list[str], list[str], list[int]]:
        buckets = [(width, bucket_start(minute, width)) for width in WIDTHS]
        expiry = [start + width + self._keep_s[width] for width, start in buckets]
        write_suffixes = self._keys.write_suffixes
        plain = write_suffixes([(w, t, False) for w, t in buckets])
        raised = write_suffixes([(w, t, True) for w, t in buckets])
        plan = self._plans[minute] = (plain, raised, expiry)
        return plan

    def _merged(self, parts: list[tuple[int, Aggregate]]) -> tuple[list[str], list[Arg]]:
        groups: dict[tuple[int, int], list[Aggregate]] = {}
        for minute, aggregate in parts:
            for width in WIDTHS:
                groups.setdefault((width, bucket_start(minute, width)), []).append(aggregate)
        buckets: list[tuple[int, int, bool]] = []
        expiry: list[int] = []
        updates: list[Arg] = []
        for (width, start), aggregates in groups.items():
            merged = aggregates[0]
            if len(aggregates) > 1:
                merged = merged.copy()
                for aggregate in aggregates[1:]:
                    merged.merge(aggregate)
            update = encode_update(merged)
            if update is not None:
                buckets.append((width, start, bool(update[3])))
                expiry.append(start + width + self._keep_s[width])
                updates += update
        suffixes = self._keys.write_suffixes(buckets)
        return suffixes, [*self._head, len(buckets), *updates, *expiry]


def decode_bucket(
    fields: dict[bytes, bytes], exceptions: dict[str, str], relative_accuracy: float
) -> Aggregate:
    """Rebuild an :class:`Aggregate` from a bucket hash (undecoded) and its exceptions."""
    aggregate = Aggregate(relative_accuracy)
    parts = {_D: _SketchParts(), _W: _SketchParts(), _U: _SketchParts()}
    for raw_name, raw in fields.items():
        name = raw_name.decode("utf-8", "surrogatepass")
        head, _, tail = name.partition(":")
        if head == "n":
            try:
                status = JobStatus(tail)
            except ValueError:  # a status of a newer queuelens: not ours to show
                continue
            aggregate.counts[status] = int(float(raw))
        elif tail and head in parts:
            bins = parts[head].bins
            if tail[0] == "g":  # a bin group: bins 16k ... 16k+15
                first = int(tail[1:]) * GROUP_BINS
                lanes = (GROUP_SMALL if len(raw) == GROUP_SMALL.size else GROUP_LARGE).unpack(raw)
                for lane, n in enumerate(lanes):
                    if n:
                        bins[first + lane] = bins.get(first + lane, 0) + int(n)
            else:  # one bin, as queuelens wrote them before bin groups
                index = int(tail)
                bins[index] = bins.get(index, 0) + int(float(raw))
        elif name == DURATION_FIELD:
            parts[_D].scalars(SKETCH_BLOCK.unpack(raw))
        elif name == WAIT_CPU_FIELD:
            parts[_W].scalars(SKETCH_BLOCK.unpack_from(raw, 0))
            parts[_U].scalars(SKETCH_BLOCK.unpack_from(raw, SKETCH_BLOCK.size))
        elif name == MEMORY_FIELD:
            lanes = MEMORY_BLOCKS.unpack(raw)
            for stat, at in ((aggregate.memory_peak, 0), (aggregate.memory_delta, 3)):
                if lanes[at]:
                    stat.count, stat.total, stat.max = int(lanes[at]), *lanes[at + 1 : at + 3]
    aggregate.duration = parts[_D].sketch(relative_accuracy)
    aggregate.wait = parts[_W].sketch(relative_accuracy)
    aggregate.cpu = parts[_U].sketch(relative_accuracy)
    for name, value in exceptions.items():
        head, _, exception_type = name.partition(":")
        raised = aggregate.exceptions.get(exception_type)
        if raised is None:
            raised = aggregate.exceptions[exception_type] = ExceptionStat()
        if head == "c":
            raised.count = int(float(value))
        elif head == "t":
            raised.last_seen = float(value)
        elif head == "m":
            raised.last_message = value
    return aggregate


def decode_gauges(fields: dict[str, str]) -> dict[str, GaugeStat]:
    """Rebuild the :class:`GaugeStat` of every field of one gauge bucket hash."""
    raw: dict[str, dict[str, str]] = {}
    for name, value in fields.items():
        head, _, field = name.partition(":")
        raw.setdefault(field, {})[head] = value
    out: dict[str, GaugeStat] = {}
    for field, parts in raw.items():
        if "c" not in parts:
            continue
        out[field] = GaugeStat(
            last=float(parts.get("l", "nan")),
            last_at=float(parts.get("t", "0")),
            min=float(parts.get("n", "nan")),
            max=float(parts.get("x", "nan")),
            total=float(parts.get("s", "0")),
            count=int(float(parts["c"])),
        )
    return out


def worker_fields(beat: WorkerHeartbeat) -> list[str]:
    """A heartbeat as hash field/value pairs; ``processed``/``failed`` travel apart."""
    return [
        "worker_id", beat.worker_id,
        "app", beat.app,
        "framework", beat.framework,
        "hostname", beat.hostname,
        "pid", str(beat.pid),
        "name", beat.name,
        "queues", json.dumps(beat.queues),
        "concurrency", str(beat.concurrency),
        "busy_slots", str(beat.busy_slots),
        "state", beat.state.value,
        "started_at", number(beat.started_at),
        "sent_at", number(beat.sent_at),
        "heartbeat_interval_s", number(beat.heartbeat_interval_s),
        "current_jobs", json.dumps(beat.current_jobs),
        "busy_s", number(beat.busy_s),
        "idle_s", number(beat.idle_s),
        "rss_mb", "" if beat.rss_mb is None else number(beat.rss_mb),
        "cpu_percent", "" if beat.cpu_percent is None else number(beat.cpu_percent),
    ]  # fmt: skip


def decode_worker(fields: dict[str, str]) -> WorkerRecord:
    """Rebuild a :class:`WorkerRecord` from a worker hash written by the heartbeat script."""

    def optional(name: str) -> float | None:
        value = fields.get(name, "")
        return float(value) if value else None

    beat = WorkerHeartbeat(
        worker_id=fields["worker_id"],
        app=fields["app"],
        framework=fields["framework"],
        hostname=fields["hostname"],
        pid=int(fields["pid"]),
        name=fields["name"],
        queues=list(json.loads(fields["queues"])),
        concurrency=int(fields["concurrency"]),
        busy_slots=int(fields["busy_slots"]),
        state=WorkerState(fields["state"]),
        started_at=float(fields["started_at"]),
        sent_at=float(fields["sent_at"]),
        heartbeat_interval_s=float(fields["heartbeat_interval_s"]),
        current_jobs=list(json.loads(fields["current_jobs"])),
        processed=int(float(fields["processed"])),
        failed=int(float(fields["failed"])),
        busy_s=float(fields["busy_s"]),
        idle_s=float(fields["idle_s"]),
        rss_mb=optional("rss_mb"),
        cpu_percent=optional("cpu_percent"),
    )
    return WorkerRecord(
        heartbeat=beat,
        first_seen_at=float(fields["first_seen_at"]),
        last_heartbeat_at=float(fields["last_heartbeat_at"]),
    )


@dataclass(slots=True)
class _SketchParts:
    bins: dict[int, int] = field(default_factory=dict)
    zero_count: int = 0
    total: float = 0.0
    low: float = 0.0
    high: float = 0.0

    def scalars(self, lanes: tuple[float, ...]) -> None:
        zero_count, self.total, self.low, self.high = lanes
        self.zero_count = int(zero_count)

    def sketch(self, relative_accuracy: float) -> Sketch:
        return Sketch.from_bins(
            relative_accuracy, self.bins, self.zero_count, self.total, self.low, self.high
        )
