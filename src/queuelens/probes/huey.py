"""Huey queue depth: pending and scheduled tasks, and how long the next one has waited.

    probe = from_config(ProbeConfig(framework="huey", broker_url="redis://localhost:6379/0",
                                    app="shop", queues=["shop"]))    # huey names
    probe.sample()     # [GaugeSample(kind="queue", key="shop", values={"pending": 3.0, ...})]

A huey *queue* is a huey instance, named by ``Huey(name)``. Two storages are read:

- Redis (``redis://``, ``rediss://``, ``unix://``): ``RedisHuey``/``RedisExpireHuey`` keep
  a list, ``PriorityRedisHuey`` a sorted set; both are read in one pipelined round trip for
  all queues, whichever kind each is. ``queues`` must name the hueys.
- SQLite (``sqlite:///path/huey.db``, or ``sqlite:////absolute/path/huey.db``):
  ``SqliteHuey``'s file, read-only; ``queues`` empty means every queue in the file.

The enqueue stamp that :mod:`queuelens.integrations.huey` adds to pickled tasks is written
and read here, so that this probe need not import huey.

``oldest_pending_age_s`` is the age of the task that runs next: from the enqueue time a
priority queue keeps, or from the stamp that instrumented producers add
(:mod:`queuelens.integrations.huey`). Nothing is unpickled. Huey has no dead-letter store.
"""

from __future__ import annotations

import gzip
import re
import sqlite3
import struct
import threading
import time
import zlib
from typing import Any
from urllib.parse import quote, urlsplit

from queuelens.model import GaugeSample
from queuelens.probes import OLDEST_PENDING_AGE_S, PENDING, SCHEDULED, ProbeConfig, ProbeError

__all__ = [
    "HueyRedisProbe",
    "HueySqliteProbe",
    "from_config",
    "read_enqueued_at",
    "stamp_bytes",
    "stamp_pickles",
]

#: marks the enqueue time appended to a serialized task: 7 bytes and a format version
TRAILER_MAGIC = b"\x00qlens\x00\x01"
_TRAILER = struct.Struct(">8sd")
_PRIORITY_PREFIX = struct.Struct(">Q")  # PriorityRedisHuey: enqueue time in microseconds


def stamp_bytes(ready_at: float) -> bytes:
    """The bytes appended to a pickled task: it waits from ``ready_at`` (unix seconds)."""
    return _TRAILER.pack(TRAILER_MAGIC, ready_at)


def read_enqueued_at(data: bytes) -> float | None:
    """The time (unix seconds) a serialized task waits from, if it carries a stamp.

    ``data`` may be gzip- or zlib-compressed, as huey's ``compression=True`` stores it.
    """
    if data[:1] in (b"\x1f", b"\x78"):
        try:
            data = gzip.decompress(data) if data[:1] == b"\x1f" else zlib.decompress(data)
        except (OSError, zlib.error, EOFError):
            return None
    if len(data) <= _TRAILER.size:
        return None
    magic, ready_at = _TRAILER.unpack_from(data, len(data) - _TRAILER.size)
    return float(ready_at) if magic == TRAILER_MAGIC else None


def stamp_pickles(serializer: Any, local: threading.local) -> None:
    """Make a huey ``Serializer`` (pickle) append ``local.ready_at``, when set, to what it
    pickles, and note in ``local.stamp`` the stamp of what it unpickles."""
    pickle_dump, pickle_load = serializer._serialize, serializer._deserialize

    def _serialize(data: Any) -> bytes:
        out: bytes = pickle_dump(data)
        ready_at = getattr(local, "ready_at", None)
        return out if ready_at is None else out + stamp_bytes(ready_at)

    def _deserialize(data: bytes) -> Any:
        value = pickle_load(data)
        local.stamp = read_enqueued_at(data)
        return value

    serializer.__dict__.update(_serialize=_serialize, _deserialize=_deserialize)


def from_config(config: ProbeConfig) -> HueyRedisProbe | HueySqliteProbe:
    """A probe for the storage ``config.broker_url`` names; ProbeError if it is neither."""
    scheme = config.broker_url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return HueyRedisProbe(config)
    if scheme == "sqlite":
        return HueySqliteProbe(config)
    raise ProbeError(
        f"huey probe: unsupported storage URL scheme {scheme!r}; use redis://host:6379/0 "
        "(RedisHuey, PriorityRedisHuey) or sqlite:///path/huey.db (SqliteHuey)"
    )


def _age(now: float, since: float | None) -> dict[str, float]:
    return {} if since is None else {OLDEST_PENDING_AGE_S: max(now - since, 0.0)}


class HueyRedisProbe:
    """Depth of RedisHuey-family queues; list and priority (sorted set) queues alike."""

    def __init__(self, config: ProbeConfig) -> None:
        if not config.queues:
            raise ProbeError("huey probe: name the huey instances to read in queues")
        import redis

        self.config = config
        clean = bool(config.options.get("clean_name", True))
        # RedisStorage keys a huey named "my-app" as "huey.redis.myapp" (clean_name=True).
        self._names = {q: re.sub("[^A-Za-z0-9_]", "", q) if clean else q for q in config.queues}
        self._client: Any = redis.Redis.from_url(
            config.broker_url, socket_timeout=5.0, socket_connect_timeout=5.0
        )

    def sample(self) -> list[GaugeSample]:
        import redis

        pipe = self._client.pipeline(transaction=False)
        for name in self._names.values():
            queue = f"huey.redis.{name}"
            # One of each pair fails with WRONGTYPE; which one tells the queue's kind.
            pipe.llen(queue)
            pipe.lindex(queue, -1)  # LPUSH/BRPOP: the oldest task is at the tail
            pipe.zcard(queue)
            pipe.zrange(queue, 0, 0)  # ZPOPMIN: the next task is the first member
            pipe.zcard(f"huey.schedule.{name}")
        try:
            replies = pipe.execute(raise_on_error=False)
        except redis.RedisError as exc:
            url = _safe(self.config.broker_url)
            raise ProbeError(f"huey probe cannot read {url}: {exc}") from None
        now = time.time()
        samples = []
        for index, queue in enumerate(self._names):
            length, tail, size, first, scheduled = replies[index * 5 : index * 5 + 5]
            for reply in (length, size, scheduled):
                if isinstance(reply, Exception) and "WRONGTYPE" not in str(reply):
                    raise ProbeError(f"huey probe cannot read queue {queue!r}: {reply}")
            since: float | None = None
            if not isinstance(length, Exception):
                pending = int(length)
                if isinstance(tail, bytes):
                    since = read_enqueued_at(tail)
            else:
                pending = int(size)
                if isinstance(first, list) and first:
                    member = first[0]
                    since = read_enqueued_at(member[_PRIORITY_PREFIX.size :])
                    if since is None:
                        since = _PRIORITY_PREFIX.unpack_from(member)[0] / 1e6
            values = {PENDING: float(pending), SCHEDULED: float(_int(scheduled))}
            if pending:
                values.update(_age(now, since))
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def close(self) -> None:
        self._client.close()


class HueySqliteProbe:
    """Depth of SqliteHuey queues, read from the database file without writing to it."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        # SQLAlchemy's form, as for queuelens's own storage: sqlite:///relative/path.db,
        # sqlite:////absolute/path.db
        head, _, path = config.broker_url.partition(":///")
        if head.lower() != "sqlite" or not path:
            raise ProbeError(
                f"huey probe: {config.broker_url!r} is not a SQLite URL; "
                "use sqlite:///path/huey.db (sqlite:////abs/path/huey.db for an absolute path)"
            )
        self._path = path

    def sample(self) -> list[GaugeSample]:
        try:
            uri = f"file:{quote(self._path)}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=5.0)
        except sqlite3.Error as exc:
            raise ProbeError(f"huey probe cannot open {self._path!r}: {exc}") from None
        try:
            return self._read(conn)
        except sqlite3.Error as exc:
            raise ProbeError(f"huey probe cannot read {self._path!r}: {exc}") from None
        finally:
            conn.close()

    def _read(self, conn: sqlite3.Connection) -> list[GaugeSample]:
        conn.execute("begin")  # one consistent snapshot for every count
        queues = self.config.queues or [
            row[0]
            for row in conn.execute("select queue from task union select queue from schedule")
        ]
        now = time.time()
        samples = []
        for queue in queues:
            pending = conn.execute("select count(*) from task where queue = ?", (queue,))
            pending_n = int(pending.fetchone()[0])
            scheduled = conn.execute("select count(*) from schedule where queue = ?", (queue,))
            values = {PENDING: float(pending_n), SCHEDULED: float(scheduled.fetchone()[0])}
            if pending_n:
                head = conn.execute(
                    "select data from task where queue = ? order by priority desc, id limit 1",
                    (queue,),
                ).fetchone()
                values.update(_age(now, read_enqueued_at(bytes(head[0]))))
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def close(self) -> None:
        return None


def _int(reply: object) -> int:
    return int(reply) if isinstance(reply, int) else 0


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
