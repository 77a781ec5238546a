"""Queue depth of Celery brokers: Redis and RabbitMQ, read without asking any worker.

    probe = build_probe(ProbeConfig(framework="celery", broker_url="redis://localhost:6379/0",
                                    app="billing", queues=["celery", "emails"],
                                    options={"global_keyprefix": "proj:"}))
    probe.sample()     # [GaugeSample(kind="queue", key="celery", values={"pending": 12, ...})]

Redis (``redis://``, ``rediss://``): one pipelined round trip reads, per queue, the length of
the list and of each priority sub-queue (``<queue>\\x06\\x16<n>`` for the ``priority_steps``)
and the oldest message of each, plus the size of the ``unacked`` hash (messages delivered to
workers and not yet acknowledged: running, prefetched, or waiting for their eta). When that
hash holds at most ``max_unacked_scan`` messages, a second round trip counts them per queue
(``reserved``); otherwise it is left out. ``oldest_pending_age_s`` comes from the enqueue
time that publishers instrumented with :func:`queuelens.integrations.celery.instrument`
stamp into each message; messages of other publishers give no age.

RabbitMQ (``amqp://``, ``amqps://``, ``pyamqp://``): a passive ``queue_declare`` per queue gives
the messages ready (``pending``); AMQP tells neither the unacknowledged count nor ages.

Options: ``global_keyprefix`` and ``priority_steps`` (as in the broker transport options),
``sep``, ``unacked_key``, ``max_unacked_scan`` (default 1000). Without ``queues`` the
``celery`` queue is read: neither broker lists queues without a scan or a management API.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from typing import Any

from queuelens.model import GaugeSample
from queuelens.probes import (
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    ProbeConfig,
    ProbeError,
    QueueProbe,
)

__all__ = ["AmqpProbe", "RedisProbe", "from_config"]

#: the message header with the publish time (see queuelens.integrations.celery)
ENQUEUED_HEADER = "queuelens_enqueued_at"
_REDIS = ("redis", "rediss")
_AMQP = ("amqp", "amqps", "pyamqp", "pyamqps")


def from_config(config: ProbeConfig) -> QueueProbe:
    """The probe for ``config.broker_url``; ProbeError for a broker it cannot read."""
    scheme = config.broker_url.split("://", 1)[0].lower() if "://" in config.broker_url else ""
    if scheme in _REDIS:
        return RedisProbe(config)
    if scheme in _AMQP:
        return AmqpProbe(config)
    raise ProbeError(
        f"celery probe: broker URL scheme {scheme!r} is not supported; "
        "use redis://, rediss://, amqp:// or amqps://"
    )


def _queues(config: ProbeConfig) -> list[str]:
    return list(dict.fromkeys(config.queues)) or ["celery"]


class RedisProbe:
    """Depths of Celery queues on a Redis broker (kombu's Redis transport layout)."""

    def __init__(self, config: ProbeConfig) -> None:
        import redis

        self.config = config
        options = config.options
        self.queues = _queues(config)
        self.prefix = str(options.get("global_keyprefix", "") or "")
        self.sep = str(options.get("sep", "\x06\x16"))
        steps = options.get("priority_steps", (0, 3, 6, 9))
        self.steps: list[int] = sorted({int(step) for step in steps}) or [0]
        self.unacked_key = self.prefix + str(options.get("unacked_key", "unacked"))
        self.max_unacked_scan = int(options.get("max_unacked_scan", 1000))
        try:
            self.client = redis.Redis.from_url(
                config.broker_url, socket_timeout=5.0, socket_connect_timeout=5.0
            )
        except ValueError as exc:
            raise ProbeError(f"celery probe: bad Redis broker URL: {exc}") from None

    def keys(self, queue: str) -> list[str]:
        """The list keys of ``queue``: the queue itself, then its priority sub-queues."""
        keys = [self.prefix + queue]
        keys += [f"{self.prefix}{queue}{self.sep}{step}" for step in self.steps if step]
        return keys

    def sample(self) -> list[GaugeSample]:
        import redis

        per_queue = [self.keys(queue) for queue in self.queues]
        try:
            pipe = self.client.pipeline(transaction=False)
            for keys in per_queue:
                for key in keys:
                    pipe.llen(key)
                    pipe.lindex(key, -1)  # kombu pushes left and pops right: -1 is oldest
            pipe.hlen(self.unacked_key)
            replies = pipe.execute()
            unacked_total = int(replies[-1])
            reserved = self._reserved(unacked_total)
        except redis.RedisError as exc:
            raise ProbeError(f"celery probe: cannot read the Redis broker: {exc}") from None
        now = time.time()
        samples = []
        position = 0
        for queue, keys in zip(self.queues, per_queue, strict=True):
            pending = 0
            oldest: float | None = None
            for _ in keys:
                pending += int(replies[position])
                enqueued = _enqueued_at(replies[position + 1])
                if enqueued is not None and (oldest is None or enqueued < oldest):
                    oldest = enqueued
                position += 2
            values: dict[str, float] = {PENDING: float(pending)}
            if oldest is not None and pending:
                values[OLDEST_PENDING_AGE_S] = max(now - oldest, 0.0)
            if reserved is not None:
                values[RESERVED] = float(reserved.get(queue, 0))
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def _reserved(self, total: int) -> dict[str, int] | None:
        """Unacknowledged messages per queue (routing key); None when too many to read."""
        if total == 0:
            return {}
        if total > self.max_unacked_scan:
            return None
        counts: dict[str, int] = {}
        values: list[bytes] = self.client.hvals(self.unacked_key)  # type: ignore[assignment]
        for raw in values:
            try:
                routing_key = json.loads(raw)[2]
            except (ValueError, IndexError, TypeError):
                continue
            counts[str(routing_key)] = counts.get(str(routing_key), 0) + 1
        return counts

    def close(self) -> None:
        self.client.close()


def _enqueued_at(raw: Any) -> float | None:
    if not raw:
        return None
    try:
        value = json.loads(raw)["headers"][ENQUEUED_HEADER]
    except (ValueError, KeyError, TypeError):
        return None
    return float(value) if isinstance(value, int | float) else None


class AmqpProbe:
    """Ready messages of Celery queues on RabbitMQ (passive declare: nothing is created)."""

    def __init__(self, config: ProbeConfig) -> None:
        from kombu import connection

        self.config = config
        self.queues = _queues(config)
        factory: Any = connection.Connection  # kombu's functions carry no annotations
        self.connection: Any = factory(config.broker_url, connect_timeout=5.0)

    def sample(self) -> list[GaugeSample]:
        try:
            counts = self._counts(self.queues)
        except Exception as exc:  # kombu raises the transport's own errors
            self.connection.close()  # reconnect on the next sample
            raise ProbeError(f"celery probe: cannot read the AMQP broker: {exc}") from None
        now = time.time()
        return [
            GaugeSample("queue", self.config.app, queue, {PENDING: float(count)}, now)
            for queue, count in zip(self.queues, counts, strict=True)
        ]

    def _counts(self, queues: Sequence[str]) -> list[int]:
        self.connection.ensure_connection(max_retries=0)  # fail now; the next sample retries
        counts = []
        channel = self.connection.channel()
        try:
            for queue in queues:
                try:
                    counts.append(int(channel.queue_declare(queue=queue, passive=True)[1]))
                except self.connection.channel_errors:
                    counts.append(0)  # no such queue (yet): nothing waits in it
                    channel = self.connection.channel()  # the broker closed that channel
        finally:
            channel.close()
        return counts

    def close(self) -> None:
        self.connection.close()
