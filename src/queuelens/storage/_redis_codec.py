"""How Redis hashes become records (buckets, gauges, workers), and heartbeats hash fields.

    aggregate = decode_bucket(fields, exceptions, relative_accuracy=0.01)

Field names are described in :mod:`queuelens.storage._redis_keys`; the records a flush
appends to a series' log, and their encoding, in :mod:`queuelens.storage._redis_log`.
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
    WorkerHeartbeat,
    WorkerState,
)
from queuelens.sketch import Sketch
from queuelens.storage._redis_keys import (
    DURATION_FIELD,
    GROUP_BINS,
    MEMORY_FIELD,
    SKETCH_FIELDS,
    WAIT_CPU_FIELD,
)
from queuelens.storage.base import GaugeStat, WorkerRecord

__all__ = [
    "WIDTHS",
    "Arg",
    "decode_bucket",
    "decode_gauges",
    "decode_worker",
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

#: a stored bin group, bins 16k ... 16k+15: 16 uint32 (64 bytes, the usual case) or, once
#: a count passes 2**32 - 1, 16 doubles (128 bytes); the length tells them apart
GROUP_SMALL = struct.Struct(f"<{GROUP_BINS}I")
GROUP_LARGE = struct.Struct(f"<{GROUP_BINS}d")

_D, _W, _U = SKETCH_FIELDS["duration"], SKETCH_FIELDS["wait"], SKETCH_FIELDS["cpu"]


def finite(value: float) -> float:
    """``value``, or 0.0 when it is infinite or NaN (Redis numbers must be finite)."""
    return value if math.isfinite(value) else 0.0


def number(value: float) -> str:
    """Decimal text of a float that round-trips exactly; non-finite values become 0."""
    return repr(float(finite(value)))


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
