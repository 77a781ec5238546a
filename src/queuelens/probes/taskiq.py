"""Depth of taskiq-redis queues: lists (``ListQueueBroker``) or streams (``RedisStreamBroker``).

    probe = from_config(ProbeConfig(framework="taskiq", broker_url="redis://localhost:6379/0",
                                    queues=["taskiq"], options={"broker": "stream"}))
    probe.sample()   # [GaugeSample(kind="queue", key="taskiq",
                     #              values={"pending": 7, "reserved": 2,
                     #                      "oldest_pending_age_s": 1.5})]

Options: ``broker`` is ``"list"`` (default) or ``"stream"``; ``consumer_group`` (stream only,
default ``"taskiq"``, as in taskiq-redis). Queues default to ``["taskiq"]``.

- **list**: ``pending`` is ``LLEN``. Messages are pushed on the left and taken from the
  right, so the oldest is ``LINDEX -1``; ``oldest_pending_age_s`` comes from its
  ``queuelens_enqueued_at`` label (stamped by ``QueueLensMiddleware``) when the message is
  JSON (taskiq's default serializer), and is absent otherwise. One round trip.
- **stream**: from ``XINFO GROUPS``, ``pending`` is the group's ``lag`` (entries not yet
  delivered to the group; Redis 7+) and ``reserved`` its pending-entries list (delivered,
  not acknowledged: what ``XPENDING``'s summary counts). ``oldest_pending_age_s`` comes from
  the id of the first entry after the group's last delivered one (a stream id starts with
  the Redis time of ``XADD``, in ms), read in a second round trip when something is
  pending. Until a worker has created the group every entry (``XLEN``) counts as pending.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from typing import Any

import redis

from queuelens.model import GaugeSample
from queuelens.probes import (
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    ProbeConfig,
    ProbeError,
)
from queuelens.storage import redact_url

__all__ = ["DEFAULT_QUEUE", "TaskiqListProbe", "TaskiqStreamProbe", "from_config"]

#: taskiq-redis's default ``queue_name``
DEFAULT_QUEUE = "taskiq"
DEFAULT_GROUP = "taskiq"
#: the label QueueLensMiddleware stamps (kept here so probes need no taskiq install)
ENQUEUED_AT_LABEL = "queuelens_enqueued_at"


class _RedisProbe:
    def __init__(self, config: ProbeConfig, client: redis.Redis) -> None:
        self.config = config
        self.queues = list(config.queues) or [DEFAULT_QUEUE]
        self._client = client

    def _error(self, exc: Exception) -> ProbeError:
        return ProbeError(
            f"cannot read taskiq queues at {redact_url(self.config.broker_url)!r}: {exc}"
        )

    def close(self) -> None:
        self._client.close()


class TaskiqListProbe(_RedisProbe):
    """Samples the Redis lists of taskiq-redis ``ListQueueBroker`` queues."""

    def sample(self) -> list[GaugeSample]:
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.llen(queue)
                    pipe.lindex(queue, -1)
                replies: list[Any] = pipe.execute()
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        now = time.time()
        samples = []
        for index, queue in enumerate(self.queues):
            length, oldest = int(replies[2 * index]), replies[2 * index + 1]
            values: dict[str, float] = {PENDING: length}
            if oldest is None:
                values[OLDEST_PENDING_AGE_S] = 0.0
            else:
                enqueued_at = _enqueued_at(oldest)
                if enqueued_at is not None:
                    values[OLDEST_PENDING_AGE_S] = max(now - enqueued_at, 0.0)
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples


def _enqueued_at(raw: bytes) -> float | None:
    """The enqueue stamp of a JSON taskiq message, or None."""
    try:
        labels = json.loads(raw)["labels"]
        return float(labels[ENQUEUED_AT_LABEL])
    except (ValueError, TypeError, KeyError, UnicodeDecodeError):
        return None


@dataclass(slots=True)
class _StreamState:
    length: int
    group: dict[str, Any] | None


class TaskiqStreamProbe(_RedisProbe):
    """Samples the Redis streams of taskiq-redis ``RedisStreamBroker`` queues."""

    def __init__(self, config: ProbeConfig, client: redis.Redis, *, group: str) -> None:
        super().__init__(config, client)
        self.group = group

    def sample(self) -> list[GaugeSample]:
        try:
            states, now = self._read_groups()
            oldest_ids = self._first_waiting(states)
        except redis.RedisError as exc:
            raise self._error(exc) from exc
        samples = []
        for queue, state, oldest_id in zip(self.queues, states, oldest_ids, strict=True):
            values: dict[str, float] = {}
            if state.group is None:
                values[PENDING] = state.length
            else:
                values[RESERVED] = int(state.group.get("pending") or 0)
                lag = state.group.get("lag")
                if lag is not None:
                    values[PENDING] = int(lag)
            if oldest_id is not None:
                values[OLDEST_PENDING_AGE_S] = max(now - _id_time(oldest_id), 0.0)
            elif values.get(PENDING) == 0:
                values[OLDEST_PENDING_AGE_S] = 0.0
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def _read_groups(self) -> tuple[list[_StreamState], float]:
        """Length and consumer group of each stream, plus Redis's clock: one round trip."""
        with self._client.pipeline(transaction=False) as pipe:
            pipe.time()
            for queue in self.queues:
                pipe.xlen(queue)
                pipe.xinfo_groups(queue)
            replies: list[Any] = pipe.execute(raise_on_error=False)
        clock = replies[0]
        if isinstance(clock, Exception):
            raise clock
        now = clock[0] + clock[1] / 1e6
        states = []
        for index in range(len(self.queues)):
            length, groups = replies[1 + 2 * index], replies[2 + 2 * index]
            if isinstance(length, Exception):
                raise length
            group = None
            if not isinstance(groups, Exception):  # no such key: the stream is not there yet
                group = next((g for g in groups if _text(g.get("name")) == self.group), None)
            states.append(_StreamState(int(length), group))
        return states, now

    def _first_waiting(self, states: list[_StreamState]) -> list[bytes | None]:
        """Id of the oldest entry not yet delivered to the group, per stream (one round trip)."""
        wanted: list[int] = []
        with self._client.pipeline(transaction=False) as pipe:
            for index, (queue, state) in enumerate(zip(self.queues, states, strict=True)):
                if state.group is None:
                    if state.length:
                        pipe.xrange(queue, "-", "+", count=1)
                        wanted.append(index)
                elif state.group.get("lag") != 0:
                    last = _text(state.group.get("last-delivered-id")) or "0-0"
                    pipe.xrange(queue, f"({last}", "+", count=1)
                    wanted.append(index)
            replies: list[Any] = pipe.execute() if wanted else []
        first: list[bytes | None] = [None] * len(states)
        for index, entries in zip(wanted, replies, strict=True):
            if entries:
                first[index] = entries[0][0]
        return first


def _text(value: object) -> str:
    return value.decode() if isinstance(value, bytes) else str(value or "")


def _id_time(entry_id: bytes | str) -> float:
    """Unix seconds at which a stream entry with auto-generated id ``ms-seq`` was added."""
    return int(_text(entry_id).split("-", 1)[0]) / 1000


def from_config(config: ProbeConfig) -> TaskiqListProbe | TaskiqStreamProbe:
    """A list or stream probe, per option ``broker``."""
    kind = config.options.get("broker", "list")
    if kind not in ("list", "stream"):
        raise ProbeError(f"taskiq probe option broker={kind!r} is invalid; use 'list' or 'stream'")
    group = config.options.get("consumer_group", DEFAULT_GROUP)
    if not isinstance(group, str) or not group:
        raise ProbeError(f"taskiq probe option consumer_group={group!r} is invalid; e.g. 'taskiq'")
    try:
        client = redis.Redis.from_url(
            config.broker_url, socket_timeout=5.0, socket_connect_timeout=5.0
        )
    except ValueError as exc:
        raise ProbeError(
            f"taskiq broker URL {redact_url(config.broker_url)!r} is invalid ({exc}); "
            "expected e.g. redis://localhost:6379/0"
        ) from None
    if kind == "stream":
        return TaskiqStreamProbe(config, client, group=group)
    return TaskiqListProbe(config, client)
