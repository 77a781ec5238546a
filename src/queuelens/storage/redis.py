"""Redis and Redis Cluster storage on redis-py: pipelined writes, idempotent per batch.

    storage = RedisStorage("redis://:secret@localhost:6379/0?prefix=prod")
    storage.write(batch)                  # one round trip; False if the batch was seen before
    storage.read_buckets([series], Resolution.minute, start, end)

URLs are ``redis://``, ``rediss://`` (TLS), ``redis+cluster://`` and ``rediss+cluster://``
(one seed node; the client discovers the rest). ``?prefix=NAME`` (default ``queuelens``)
namespaces every key so several deployments can share one Redis; other query parameters go
to redis-py unchanged. The key layout is documented in :mod:`queuelens.storage._redis_keys`
and the scripts in :mod:`queuelens.storage._redis_scripts`.

How a write stays correct: each job series gets one EVALSHA, and all of that series' keys
(its minute, hour and day buckets, their exception hashes, its log and its sequence hash)
share one hash tag, so the script is atomic on whatever node owns the slot. A recorder
writes its batches strictly in order, numbered 1, 2, 3, ... per writer (see
:class:`FlushBatch`). The script first reads the writer's field of the series' sequence
hash and applies the batch only if its sequence is past it, recording the new one; so a
retried batch (say after a lost reply) changes nothing, even if it was applied in part: the
series that got through are skipped and the rest applied. The batch's ``dropped`` counts
get the same treatment in a meta-tagged sequence hash. The hashes hold one field per writer
(not per flush), expire ``retention.batch_id_s`` after their last write, and forget writers
silent that long when new ones join. Index updates (``ZADD GT``) are idempotent and ride
along. All of it goes out in one non-transactional pipeline: one round trip on a single
Redis, one per node on a cluster.

How a write stays cheap: applying a batch means appending one record per minute of the
series (the minute and its aggregate, packed) to the series' log: one ``APPEND``, no read
and no merge on the server (``append_series``). On one flush in ``compact_every`` (64) per
series -- a different 1/64 of the series on each flush, by the writer's sequence number --
the script folds the log into the minute, hour and day bucket hashes instead
(``write_series``): a fold of dozens of records rewrites each bucket field once, where
merging on arrival rewrote it on every flush, and the log stays short (about 64 records).
Folding takes records in write order, and readers add in whatever the log still holds in
the same order, so a bucket reads back exactly -- counts, bins and every bit of every sum
-- as if each record had been merged on arrival, folded or not.

Nothing here uses KEYS or SCAN: reads compute key names from the bucket starts they want,
and listings read index sets.

Buckets expire by ``EXPIREAT``; every other key has a TTL refreshed on write, and
:meth:`RedisStorage.prune` trims index entries past retention. A lease is one key holding its
owner, set with ``PX`` by a script that takes it only when free, expired or already the
caller's: it expires on Redis's clock, so the holders' clocks may disagree. redis-py pools
notice a fork by pid and reconnect in the child, so one storage object may be shared across
``fork()``.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    bucket_start,
)
from queuelens.storage._redis_client import (
    RAW,
    Command,
    RedisConnection,
    evalsha,
    pairs,
    score,
    trim,
)
from queuelens.storage._redis_codec import (
    Arg,
    decode_bucket,
    decode_gauges,
    decode_worker,
    number,
    worker_fields,
)
from queuelens.storage._redis_keys import ACCURACY_FIELD, KeyLayout, bucket_starts
from queuelens.storage._redis_log import LogRecord, SeriesWrites, fold_records, read_log
from queuelens.storage._redis_url import DEFAULT_PREFIX, parse_url, redact
from queuelens.storage.base import (
    GaugeStat,
    PruneReport,
    QueueInfo,
    Retention,
    StorageError,
    WorkerRecord,
)

__all__ = ["COMPACT_EVERY", "DEFAULT_PREFIX", "RedisStorage"]

#: a writer folds a series' log into its buckets on one flush in this many (see the module
#: docstring): more makes a flush cheaper, a log longer (reads add it in) and bigger
COMPACT_EVERY = 64

_ACCURACY_FIELD = ACCURACY_FIELD.encode()


def _writer_of(batch: FlushBatch) -> str:
    writer = batch.writer_id
    if not isinstance(writer, str) or not writer:
        raise StorageError(f"batch {batch.batch_id!r} has writer id {writer!r}; need a string")
    return writer


def _sequence_of(batch: FlushBatch) -> int:
    sequence = batch.sequence
    if (
        isinstance(sequence, bool)
        or not isinstance(sequence, int)
        or not (
            0 <= sequence < 2**53  # exact as a Lua number
        )
    ):
        raise StorageError(
            f"batch {batch.batch_id!r} has sequence {sequence!r}; a writer numbers its "
            "batches 1, 2, 3, ... (below 2**53)"
        )
    return sequence


def _compact_every(value: object) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise StorageError(
            f"compact_every={value!r} must be a whole number >= 1, e.g. {COMPACT_EVERY} "
            "(1 folds each flush into the buckets at once)"
        )
    return value


class RedisStorage:
    """The :class:`~queuelens.storage.base.Storage` protocol on Redis or Redis Cluster."""

    def __init__(
        self,
        url: str,
        *,
        relative_accuracy: float = 0.01,
        retention: Retention | None = None,
        compact_every: int = COMPACT_EVERY,
    ) -> None:
        self.url = redact(url)
        self.compact_every = _compact_every(compact_every)
        #: series id -> minutes: fold that series on the next flush, declaring those too
        self._fold_now: dict[str, set[int]] = {}
        self.relative_accuracy = relative_accuracy
        self.retention = retention or Retention()
        client_url, prefix, cluster = parse_url(url, self.url)
        self._redis = RedisConnection(client_url, cluster=cluster, url=self.url)
        self.keys = KeyLayout(prefix)
        r = self.retention
        # an index entry lives as long as the last bucket it points to may exist
        self._index_keep_s = max(r.minute_s + 60, r.hour_s + 3600, r.day_s + 86400)
        self._bucket_keep_s = {int(res): r.for_resolution(res) for res in Resolution}
        self._gauge_keep_s = max(r.gauge_minute_s + 60, r.hour_s + 3600, r.day_s + 86400)

    # -- writing ---------------------------------------------------------------------------

    def write(self, batch: FlushBatch) -> bool:
        ttl = str(max(self.retention.batch_id_s, 1))
        writer, sequence, now = _writer_of(batch), str(_sequence_of(batch)), number(time.time())
        head: list[Arg] = [ttl, repr(self.relative_accuracy), writer, sequence, now]
        minutes: dict[SeriesKey, list[tuple[int, Aggregate]]] = {}
        for (series, minute), aggregate in batch.aggregates.items():
            minutes.setdefault(series, []).append((minute, aggregate))
        writes = SeriesWrites(
            self.keys,
            head,
            self._bucket_keep_s,
            relative_accuracy=self.relative_accuracy,
            sequence=int(sequence),
            compact_every=self.compact_every,
            fold_now=self._fold_now,
        )
        commands = [writes.command(series, parts) for series, parts in minutes.items()]
        dropped = [json.dumps([batch.batch_id, app, n]) for app, n in batch.dropped.items() if n]
        commands.append(
            evalsha(
                "write_dropped",
                [self.keys.meta_sequences, self.keys.dropped],
                [
                    ttl,
                    writer,
                    sequence,
                    now,
                    number(batch.created_at),
                    str(self._index_keep_s),
                    *dropped,
                ],
            )
        )
        scripted = len(commands)
        commands += self._index_commands(batch)
        with self._redis.translate("writing a batch"):
            results = self._redis.run(commands, plain=True)
        # 2 or [2, minute, ...]: applied, but fold that series' log on the next flush (it
        # grew long, or a fold left records of those minutes in it). A hint lost (say to a
        # concurrent write) only means the log waits for its scheduled fold.
        fold_now: dict[str, set[int]] = {}
        for sid, result in zip(writes.sids, results, strict=False):
            if isinstance(result, list):
                fold_now[sid] = {int(minute) for minute in result[1:]}
            elif result == 2:
                fold_now[sid] = set()
        self._fold_now = fold_now
        return any(result != 0 for result in results[:scripted])

    def _index_commands(self, batch: FlushBatch) -> list[Command]:
        """ZADD GT the batch's apps, queues and jobs, scored by their newest minute."""
        keys, keep = self.keys, str(self._index_keep_s)
        apps: dict[str, int] = {}
        queues: dict[str, dict[str, int]] = {}
        jobs: dict[tuple[str, str], dict[str, int]] = {}
        for series, minute in batch.aggregates:
            for seen, name in (
                (apps, series.app),
                (queues.setdefault(series.app, {}), series.queue),
                (jobs.setdefault((series.app, series.queue), {}), series.job),
            ):
                seen[name] = max(seen.get(name, minute), minute)
        sets = [(keys.apps, apps)]
        sets += [(keys.queues(app), members) for app, members in queues.items()]
        sets += [(keys.jobs(app, queue), members) for (app, queue), members in jobs.items()]
        commands: list[Command] = []
        for key, members in sets:
            if members:  # a batch may carry only dropped counts
                scored = [part for name, seen in members.items() for part in (seen, name)]
                commands += [("ZADD", key, "GT", *scored), ("EXPIRE", key, keep)]
        frameworks: dict[str, list[str]] = {}
        for (app, queue), framework in batch.frameworks.items():
            frameworks.setdefault(app, []).extend((queue, framework))
        for app, fields in frameworks.items():
            key = keys.frameworks(app)
            commands += [("HSET", key, *fields), ("EXPIRE", key, keep)]
        return commands

    def write_gauges(self, samples: Sequence[GaugeSample]) -> None:
        keys, commands = self.keys, []
        for sample in samples:
            values = {name: v for name, v in sample.values.items() if math.isfinite(v)}
            if values:
                bucket_keys: list[str] = []
                expires: list[str] = []
                for resolution in Resolution:
                    start = bucket_start(sample.at, resolution)
                    ttl = self._gauge_retention(resolution)
                    bucket_keys.append(
                        keys.gauge_bucket(sample.kind, sample.app, sample.key, resolution, start)
                    )
                    expires.append(str(start + int(resolution) + ttl))
                fields = [part for name, v in values.items() for part in (name, number(v))]
                args = [number(sample.at), *expires, *fields]
                commands.append(evalsha("write_gauge", bucket_keys, args))
            latest_keys = [
                keys.gauge_latest(sample.kind),
                keys.gauge_index(sample.kind),
                keys.gauge_kinds,
            ]
            member = json.dumps([sample.app, sample.key])
            payload = json.dumps({"at": sample.at, "values": values})
            args = [member, number(sample.at), payload, str(self._gauge_keep_s), sample.kind]
            commands.append(evalsha("write_latest_gauge", latest_keys, args))
        with self._redis.translate("writing gauges"):
            self._redis.run(commands)

    def _gauge_retention(self, resolution: Resolution) -> int:
        if resolution is Resolution.minute:
            return self.retention.gauge_minute_s
        return self.retention.for_resolution(resolution)

    def heartbeat(self, beat: WorkerHeartbeat) -> None:
        keys = self.keys
        command = evalsha(
            "heartbeat",
            [keys.worker(beat.worker_id), keys.workers, keys.workers_of(beat.app),
             keys.worker_apps],
            [number(beat.sent_at), str(beat.processed), str(beat.failed),
             str(max(self.retention.worker_s, 1)), beat.worker_id, beat.app,
             *worker_fields(beat)],
        )  # fmt: skip
        with self._redis.translate("recording a heartbeat"):
            self._redis.run([command])

    # -- reading ---------------------------------------------------------------------------

    def read_buckets(
        self, series: Sequence[SeriesKey], resolution: Resolution, start: float, end: float
    ) -> dict[SeriesKey, dict[int, Aggregate]]:
        wanted = list(dict.fromkeys(series))
        retention_s = self.retention.for_resolution(resolution)
        starts = bucket_starts(start, end, resolution, len(wanted), retention_s)
        keys, width = self.keys, int(resolution)
        commands: list[Command] = [(RAW + "GET", keys.log(one)) for one in wanted]
        for one in wanted:
            for begin in starts:
                commands += (
                    (RAW + "HGETALL", keys.bucket(one, resolution, begin)),
                    ("HGETALL", keys.exceptions(one, resolution, begin)),
                )
        out: dict[SeriesKey, dict[int, Aggregate]] = {}
        with self._redis.translate("reading buckets"):
            replies = self._redis.run(commands)
            logs, results = replies[: len(wanted)], iter(replies[len(wanted) :])
            for one, log in zip(wanted, logs, strict=True):
                # records not folded yet, by bucket in log order: merged as the script
                # would fold them, so every sum comes out bit for bit the same
                pending: dict[int, list[LogRecord]] = {}
                for record in read_log(log) if log else ():
                    self._check_accuracy(record.accuracy)
                    pending.setdefault(record.minute // width * width, []).append(record)
                for begin in starts:
                    fields, exceptions = next(results), next(results)
                    aggregate = None
                    if fields:
                        stored = fields.get(_ACCURACY_FIELD)
                        if stored is not None:
                            self._check_accuracy(float(stored))
                        aggregate = decode_bucket(fields, exceptions, self.relative_accuracy)
                    if begin in pending:
                        if aggregate is None:
                            aggregate = Aggregate(self.relative_accuracy)
                        fold_records(pending[begin], aggregate)
                    if aggregate is not None:
                        out.setdefault(one, {})[begin] = aggregate
        return out

    def _check_accuracy(self, stored: float) -> None:
        if stored != self.relative_accuracy:
            raise StorageError(
                f"buckets in {self.url} were written with histogram accuracy {stored}, "
                f"but this storage was opened with {self.relative_accuracy}; use one accuracy "
                "for every writer and reader"
            )

    def read_gauges(
        self, kind: str, app: str, key: str, resolution: Resolution, start: float, end: float
    ) -> dict[int, dict[str, GaugeStat]]:
        starts = bucket_starts(start, end, resolution, 1, self._gauge_retention(resolution))
        commands: list[Command] = [
            ("HGETALL", self.keys.gauge_bucket(kind, app, key, resolution, begin))
            for begin in starts
        ]
        with self._redis.translate("reading gauges"):
            results = self._redis.run(commands)
            return {begin: decode_gauges(f) for begin, f in zip(starts, results, strict=True) if f}

    def latest_gauges(self, kind: str, app: str | None = None) -> list[GaugeSample]:
        out: list[GaugeSample] = []
        with self._redis.translate("reading the latest gauges"):
            (latest,) = self._redis.run([("HGETALL", self.keys.gauge_latest(kind))])
            for member, payload in latest.items():
                sample_app, key = json.loads(member)
                if app is None or sample_app == app:
                    data = json.loads(payload)
                    values = {name: float(v) for name, v in data["values"].items()}
                    out.append(GaugeSample(kind, sample_app, key, values, float(data["at"])))
        return sorted(out, key=lambda sample: (sample.app, sample.key))

    def read_dropped(self, start: float, end: float) -> dict[str, int]:
        command = ("ZRANGEBYSCORE", self.keys.dropped, score(start), "(" + score(end))
        out: dict[str, int] = {}
        with self._redis.translate("reading dropped counts"):
            (members,) = self._redis.run([command])
            for member in members:
                _, app, n = json.loads(member)
                out[app] = out.get(app, 0) + int(n)
        return out

    def list_apps(self) -> list[str]:
        with self._redis.translate("listing apps"):
            (apps,) = self._redis.run([("ZRANGE", self.keys.apps, 0, -1)])
        return sorted(apps)

    def list_queues(self, app: str | None = None) -> list[QueueInfo]:
        with self._redis.translate("listing queues"):
            apps = [app] if app is not None else self.list_apps()
            commands: list[Command] = []
            for name in apps:
                commands.append(("ZRANGE", self.keys.queues(name), 0, -1, "WITHSCORES"))
                commands.append(("HGETALL", self.keys.frameworks(name)))
            results = iter(self._redis.run(commands))
            out = []
            for name in apps:
                scored, frameworks = next(results), next(results)
                for queue, score in pairs(scored):
                    out.append(QueueInfo(name, queue, frameworks.get(queue, ""), score))
        return sorted(out, key=lambda info: (info.app, info.queue))

    def list_jobs(self, app: str, queue: str | None = None) -> list[SeriesKey]:
        with self._redis.translate("listing jobs"):
            if queue is not None:
                queues = [queue]
            else:
                (queues,) = self._redis.run([("ZRANGE", self.keys.queues(app), 0, -1)])
            results = self._redis.run([("ZRANGE", self.keys.jobs(app, q), 0, -1) for q in queues])
        jobs = [
            SeriesKey(app, q, job)
            for q, names in zip(queues, results, strict=True)
            for job in names
        ]
        return sorted(jobs, key=lambda s: (s.queue, s.job))

    def list_workers(self, app: str | None = None) -> list[WorkerRecord]:
        index = self.keys.workers if app is None else self.keys.workers_of(app)
        with self._redis.translate("listing workers"):
            (ids,) = self._redis.run([("ZRANGE", index, 0, -1)])
            hashes = self._redis.run([("HGETALL", self.keys.worker(wid)) for wid in ids])
            # a hash past its TTL is gone while prune() has not trimmed the index yet
            records = [decode_worker(fields) for fields in hashes if fields]
        records = [r for r in records if app is None or r.heartbeat.app == app]
        return sorted(records, key=lambda r: (r.heartbeat.app, r.heartbeat.worker_id))

    # -- housekeeping ----------------------------------------------------------------------

    def prune(self, now: float | None = None) -> PruneReport:
        now = time.time() if now is None else now
        keys = self.keys
        series_cut = score(now - self._index_keep_s)
        gauge_cut = score(now - self._gauge_keep_s)
        worker_cut = score(now - self.retention.worker_s)
        with self._redis.translate("pruning"):
            apps, worker_apps, kinds, stale_workers = self._redis.run([
                ("ZRANGE", keys.apps, 0, -1),
                ("ZRANGE", keys.worker_apps, 0, -1),
                ("ZRANGE", keys.gauge_kinds, 0, -1),
                ("ZRANGEBYSCORE", keys.workers, "-inf", "(" + worker_cut),
            ])  # fmt: skip
            queues = self._redis.run([("ZRANGE", keys.queues(app), 0, -1) for app in apps])
            plan: list[tuple[str, Command]] = []
            for app, names in zip(apps, queues, strict=True):
                plan += [("jobs", trim(keys.jobs(app, q), series_cut)) for q in names]
                plan.append(("queues", trim(keys.queues(app), series_cut, keys.frameworks(app))))
            plan.append(("apps", trim(keys.apps, series_cut)))
            for wid in stale_workers:
                plan.append(("", evalsha("delete_worker", [keys.worker(wid)], [worker_cut])))
            plan.append(("workers", trim(keys.workers, worker_cut)))
            plan += [("", trim(keys.workers_of(app), worker_cut)) for app in worker_apps]
            plan.append(("", trim(keys.worker_apps, worker_cut)))
            for kind in kinds:
                plan.append(
                    ("gauges", trim(keys.gauge_index(kind), gauge_cut, keys.gauge_latest(kind)))
                )
            plan.append(("", trim(keys.gauge_kinds, gauge_cut)))
            plan.append(("dropped", trim(keys.dropped, series_cut)))
            results = self._redis.run([command for _, command in plan])
        removed = dict.fromkeys(("apps", "queues", "jobs", "workers", "gauges", "dropped"), 0)
        for (kind, _), n in zip(plan, results, strict=True):
            if kind:
                removed[kind] += int(n)
        return PruneReport(removed)

    def acquire_lease(self, name: str, owner: str, ttl_s: float) -> bool:
        if not math.isfinite(ttl_s):
            raise StorageError(f"lease time {ttl_s!r} must be a finite number of seconds")
        ttl_ms = str(max(1, math.ceil(ttl_s * 1000)))  # expires on Redis's clock, not ours
        command = evalsha("acquire_lease", [self.keys.lease(name)], [owner, ttl_ms])
        with self._redis.translate(f"taking the lease {name!r}"):
            (taken,) = self._redis.run([command])
        return bool(taken)

    def release_lease(self, name: str, owner: str) -> None:
        command = evalsha("release_lease", [self.keys.lease(name)], [owner])
        with self._redis.translate(f"releasing the lease {name!r}"):
            self._redis.run([command])

    def ping(self) -> None:
        self._redis.ping()

    def close(self) -> None:
        self._redis.close()
