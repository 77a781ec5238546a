"""Every Redis key and hash field the Redis driver uses, in one place.

    keys = KeyLayout("queuelens")
    keys.bucket(SeriesKey("default", "emails", "app.tasks.send_mail"), Resolution.minute, t)
    # 'queuelens:{3f2a9c1d0e4b5a6c}:b:60:1700000040'

Keys
----
Every key starts with ``<prefix>:`` so deployments sharing one Redis never meet, and holds
a Redis Cluster hash tag ``{...}`` right after it. User-chosen names (apps, queues, jobs,
kinds, workers) never appear in key names: they become 16-hex-digit ids (a BLAKE2b hash of
the length-prefixed prefix and names) and live, exactly as given, in ZSET members and
hash fields. So ``a:b`` / ``c`` never collides with ``a`` / ``b:c``, and a name holding
braces cannot change a key's slot.

Per job series (tag ``{<sid>}``, ``sid = id(prefix, app, queue, job)``), so one series'
log and its minute, hour and day buckets share one slot and one script can update them
atomically::

    P:{sid}:b:<width>:<start>      hash  one bucket (fields below); EXPIREAT start+width+retention
    P:{sid}:x:<width>:<start>      hash  its exceptions: c:<type> count, t:<type> last seen,
                                         m:<type> last message; same EXPIREAT
    P:{sid}:log                    str   records not folded into the buckets yet: a minute
                                         and its packed aggregate each, oldest first (see
                                         ``_redis_log``); EXPIREAT of the newest day
                                         bucket it holds data for; deleted when folded
    P:{sid}:seq                    hash  writer id -> "<last sequence>:<writer clock>", the
                                         idempotency record: one field per writer, not
                                         per flush; EX retention.batch_id_s, refreshed

A bucket is its hash (and exceptions hash) plus the records of its minutes still in the
series' log; readers add those in, in log order, exactly as a fold would.

Per gauge (tag ``{<gid>}``, ``gid = id(prefix, "gauge", kind, app, key)``)::

    P:{gid}:g:<width>:<start>      hash  l:/t:/n:/x:/s:/c:<field> = last, last_at, min, max,
                                         sum, count; EXPIREAT start+width+gauge retention

Everything else shares the meta tag ``{<prefix>:meta}`` (one slot, so its scripts may touch
several of these keys); each key's TTL is refreshed on every write::

    P:{P:meta}:seq                 hash  the same for the batches' ``dropped`` counts
    P:{P:meta}:dropped             zset  JSON [batch id, app, count] scored by created_at
    P:{P:meta}:apps                zset  app scored by last seen (newest minute written)
    P:{P:meta}:queues:<aid>        zset  queue of one app, scored by last seen
    P:{P:meta}:fw:<aid>            hash  queue -> framework
    P:{P:meta}:jobs:<qid>          zset  job of one app/queue (qid = id(P, app, queue))
    P:{P:meta}:workers             zset  worker id scored by last heartbeat
    P:{P:meta}:workers:<aid>       zset  the same, per app
    P:{P:meta}:wapps               zset  apps having workers, scored by last heartbeat
    P:{P:meta}:w:<wid>             hash  one worker: every heartbeat field, first_seen_at,
                                         last_heartbeat_at; EX retention.worker_s
    P:{P:meta}:gkinds              zset  gauge kinds scored by last sample
    P:{P:meta}:gi:<kid>            zset  JSON [app, key] of one kind, scored by last sample
    P:{P:meta}:gl:<kid>            hash  JSON [app, key] -> JSON {"at", "values"} newest sample
    P:{P:meta}:lease:<lid>         str   holder of one lease (lid = id(P, "lease", name));
                                         PX the lease time, so it expires on Redis's clock

Bucket hash fields
------------------
``ra`` the sketch accuracy the bucket was written with (text); ``n:<status>`` attempts per
:class:`JobStatus` (text integer); ``d:g<k>``, ``w:g<k>``, ``u:g<k>`` one bin group of the
duration, wait and CPU sketch: the counts of log buckets ``16k ... 16k+15`` (see
:attr:`Sketch.bins`; ``k = floor(i / 16)``, so bin -1 is in ``g-1``), packed as 16
little-endian uint32 (64 bytes) or, once one of them would pass ``2**32 - 1``, as 16
little-endian doubles (128 bytes; exact below ``2**53``); the length tells them apart. A
sketch spanning a few decades holds some 20 groups rather than 300 bin fields, so a big
hour or day bucket stays small enough for its listpack lookups to be fast. (Buckets from
before bin groups hold ``d:<i>`` text counts per bin; readers still add those in.) The
scalars are packed little-endian doubles in three fields, so a fold merges all of them
with three field reads and writes instead of fifteen::

    d     32 bytes  duration:  zero count, sum, min, max
    wu    64 bytes  wait, then CPU: zero count, sum, min, max each
    m     48 bytes  memory peak, then memory increase: count, sum, max each

An empty sketch block is ``(0, 0, inf, -inf)`` and an empty memory block ``(0, 0, -inf)``,
so the script merges lane by lane (add, add, min, max) with no special case; the count of
a sketch is its zero count plus its bins. Doubles are stored bit for bit, so sums, minima
and maxima read back exactly; counters are added by Lua as doubles (exact below 2**53)
and written back as integers by Redis (``%.17g``). No value exceeds 64 bytes (save a bin
group past uint32), so buckets keep Redis's compact ``listpack`` encoding. The bucket hash
is read with ``HGETALL`` undecoded (redis-py ``NEVER_DECODE``); everything else is UTF-8
text.
"""

from __future__ import annotations

import functools
import hashlib
import math
import time
from typing import NamedTuple

from queuelens.model import Resolution, SeriesKey
from queuelens.storage.base import StorageError

__all__ = [
    "ACCURACY_FIELD",
    "COUNT_PREFIX",
    "DURATION_FIELD",
    "GROUP_BINS",
    "MEMORY_FIELD",
    "SKETCH_FIELDS",
    "WAIT_CPU_FIELD",
    "KeyLayout",
    "bucket_starts",
    "name_id",
]

#: refuse reads that would fetch more buckets than this in one call
_MAX_READ_BUCKETS = 2_000_000
#: how far a writer's clock may run behind Redis's before a read misses its oldest bucket
_CLOCK_SKEW_S = 3600

#: bucket field prefix of a per-status count: ``n:succeeded``
COUNT_PREFIX = "n:"
#: Aggregate attribute -> bucket field prefix of a :class:`Sketch`
SKETCH_FIELDS = {"duration": "d", "wait": "w", "cpu": "u"}
#: histogram bins per bin group field (a power of two): ``d:g<k>`` holds bins 16k ... 16k+15
GROUP_BINS = 16
#: bucket field of the duration sketch's scalars (packed, see the module docstring)
DURATION_FIELD = "d"
#: bucket field of the wait and CPU sketches' scalars
WAIT_CPU_FIELD = "wu"
#: bucket field of the memory peak and memory increase stats
MEMORY_FIELD = "m"
#: bucket field holding the sketch relative accuracy the bucket was written with
ACCURACY_FIELD = "ra"


@functools.lru_cache(maxsize=65536)
def name_id(*parts: str) -> str:
    """A short stable id for a tuple of names (16 hex digits, 64 bits).

    Cached: a recorder flushes the same series again and again.
    """
    # length-prefixing keeps the encoding injective whatever characters the names hold
    encoded = "".join(f"{len(part)}:{part}" for part in parts)
    return hashlib.blake2b(encoded.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class SeriesKeys(NamedTuple):
    """What a flush needs of one series' key names, made once."""

    sid: str
    #: ``P:{sid}``, the start of each of its keys
    tag: str
    sequences: str
    log: str


@functools.lru_cache(maxsize=65536)
def _series_keys(prefix: str, app: str, queue: str, job: str) -> SeriesKeys:
    sid = name_id(prefix, app, queue, job)
    tag = f"{prefix}:{{{sid}}}"
    return SeriesKeys(sid, tag, f"{tag}:seq", f"{tag}:log")


class KeyLayout:
    """Key names for one ``prefix``; see the module docstring for the whole layout."""

    __slots__ = ("_meta", "prefix")

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix
        self._meta = f"{prefix}:{{{prefix}:meta}}:"

    # -- job series ------------------------------------------------------------------------

    def series(self, series: SeriesKey) -> SeriesKeys:
        """The id, tag, sequence hash and log of one series (cached)."""
        return _series_keys(self.prefix, series.app, series.queue, series.job)

    def series_id(self, series: SeriesKey) -> str:
        """``sid``: the 16 hex digits naming one series in its keys."""
        return self.series(series).sid

    def series_tag(self, series: SeriesKey) -> str:
        """``P:{sid}`` — the start of every key of one series."""
        return self.series(series).tag

    def bucket(self, series: SeriesKey, resolution: Resolution, start: int) -> str:
        return f"{self.series_tag(series)}:b:{int(resolution)}:{start}"

    def exceptions(self, series: SeriesKey, resolution: Resolution, start: int) -> str:
        return f"{self.series_tag(series)}:x:{int(resolution)}:{start}"

    def log(self, series: SeriesKey) -> str:
        """The series' log: records appended by flushes, not yet folded into its buckets."""
        return self.series(series).log

    def series_sequences(self, series: SeriesKey) -> str:
        """The series' idempotency hash: writer id -> last sequence applied."""
        return self.series(series).sequences

    @staticmethod
    def bucket_suffixes(width: int, start: int) -> tuple[str, str]:
        """A bucket's hash and exceptions hash, less the series tag they start with."""
        return f":b:{width}:{start}", f":x:{width}:{start}"

    # -- gauges ----------------------------------------------------------------------------

    def gauge_bucket(self, kind: str, app: str, key: str, resolution: Resolution,
                     start: int) -> str:  # fmt: skip
        gid = name_id(self.prefix, "gauge", kind, app, key)
        return f"{self.prefix}:{{{gid}}}:g:{int(resolution)}:{start}"

    def gauge_index(self, kind: str) -> str:
        return f"{self._meta}gi:{name_id(self.prefix, kind)}"

    def gauge_latest(self, kind: str) -> str:
        return f"{self._meta}gl:{name_id(self.prefix, kind)}"

    @property
    def gauge_kinds(self) -> str:
        return f"{self._meta}gkinds"

    # -- meta: writer sequences, dropped counts, indexes, workers --------------------------

    @property
    def meta_sequences(self) -> str:
        """The idempotency hash of the batches' ``dropped`` counts."""
        return f"{self._meta}seq"

    @property
    def dropped(self) -> str:
        return f"{self._meta}dropped"

    @property
    def apps(self) -> str:
        return f"{self._meta}apps"

    def queues(self, app: str) -> str:
        return f"{self._meta}queues:{name_id(self.prefix, app)}"

    def frameworks(self, app: str) -> str:
        return f"{self._meta}fw:{name_id(self.prefix, app)}"

    def jobs(self, app: str, queue: str) -> str:
        return f"{self._meta}jobs:{name_id(self.prefix, app, queue)}"

    @property
    def workers(self) -> str:
        return f"{self._meta}workers"

    def workers_of(self, app: str) -> str:
        return f"{self._meta}workers:{name_id(self.prefix, app)}"

    @property
    def worker_apps(self) -> str:
        return f"{self._meta}wapps"

    def worker(self, worker_id: str) -> str:
        return f"{self._meta}w:{name_id(self.prefix, 'worker', worker_id)}"

    def lease(self, name: str) -> str:
        return f"{self._meta}lease:{name_id(self.prefix, 'lease', name)}"


def bucket_starts(
    start: float, end: float, resolution: Resolution, series: int, retention_s: int
) -> list[int]:
    """Aligned bucket starts in ``[start, end)`` that may still exist; refuses huge reads.

    Buckets older than their retention have expired, so asking for them would only cost
    round-trip time: the range is cut to the retention (plus slack for clock skew).
    """
    width = int(resolution)
    start = max(start, time.time() - retention_s - width - _CLOCK_SKEW_S)
    if math.isnan(start) or not math.isfinite(end):
        raise StorageError(f"read range [{start}, {end}) must be finite unix seconds")
    first = -(-math.ceil(start) // width) * width
    count = max(0, math.ceil((end - first) / width))
    if count * max(series, 1) > _MAX_READ_BUCKETS:
        raise StorageError(
            f"reading {count} {resolution.name} buckets of {series} series at once is too "
            "much; use a coarser resolution or a shorter range"
        )
    return [first + i * width for i in range(count)]
