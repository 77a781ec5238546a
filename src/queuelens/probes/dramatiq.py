"""Dramatiq queue depth for the Redis and RabbitMQ brokers.

    probe = from_config(ProbeConfig(framework="dramatiq", broker_url="redis://localhost:6379/0",
                                    app="billing", queues=["default", "emails"],
                                    options={"namespace": "dramatiq"}))
    probe.sample()     # [GaugeSample(kind="queue", key="default", values={"pending": 4.0, ...})]

``queues`` names the queues (without ``.DQ``/``.XQ``): neither broker lists them.

Redis (``redis://``, ``rediss://``, ``unix://``; option ``namespace``, default
``dramatiq``): ``pending`` is the queue's list, ``reserved`` the messages workers have
fetched and not acked, ``scheduled`` every delayed message (``<queue>.DQ``, including those a
worker holds until its eta), ``failed`` the dead letters (``<queue>.XQ``), and
``oldest_pending_age_s`` the age of the message at the head of the queue (from enqueue, or
from its eta). Two pipelined round trips for all queues: the counts and head ids in one
MULTI snapshot, then the head messages.

RabbitMQ (``amqp://``, ``amqps://``): a passive declare of ``<queue>``, ``<queue>.DQ`` and
``<queue>.XQ`` gives ``pending``, ``scheduled`` and ``failed`` (messages ready in each; a
delayed message a worker has prefetched is not counted). AMQP cannot peek at a message
without consuming it, so there is no age. A queue that does not exist is left out.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any
from urllib.parse import urlsplit

from queuelens.model import GaugeSample
from queuelens.probes import (
    FAILED,
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    SCHEDULED,
    ProbeConfig,
    ProbeError,
)

__all__ = [
    "ETA_OPTION",
    "DramatiqRabbitmqProbe",
    "DramatiqRedisProbe",
    "from_config",
    "ready_at_ms",
]

#: message option holding a delayed message's eta (unix ms), noted by the QueueLens middleware
ETA_OPTION = "queuelens_eta"

log = logging.getLogger("queuelens.probes.dramatiq")


def ready_at_ms(options: dict[str, Any], message_timestamp: object) -> float | None:
    """When a message became due (unix ms): its enqueue time, or the latest eta or retry
    time it carries — the time its wait is counted from."""
    ready: float | None = None
    for value in (
        message_timestamp,
        options.get(ETA_OPTION),
        options.get("eta"),
        options.get("requeue_timestamp"),
    ):
        if isinstance(value, int | float) and not isinstance(value, bool):
            ready = value if ready is None else max(ready, value)
    return ready


def from_config(config: ProbeConfig) -> DramatiqRedisProbe | DramatiqRabbitmqProbe:
    """A probe for the broker ``config.broker_url`` names; ProbeError if it is neither."""
    if not config.queues:
        raise ProbeError("dramatiq probe: name the queues to read in queues (brokers keep no list)")
    scheme = config.broker_url.split("://", 1)[0].lower()
    if scheme in ("redis", "rediss", "unix"):
        return DramatiqRedisProbe(config)
    if scheme in ("amqp", "amqps"):
        return DramatiqRabbitmqProbe(config)
    raise ProbeError(
        f"dramatiq probe: unsupported broker URL scheme {scheme!r}; use redis://host:6379/0 "
        "or amqp://user:password@host:5672/vhost"
    )


def _head_ready_ms(data: object) -> float | None:
    """The due time of one encoded message (Dramatiq's default JSON encoding)."""
    try:
        message = json.loads(data) if isinstance(data, bytes | str) else None
    except ValueError:
        return None
    if not isinstance(message, dict):
        return None
    options = message.get("options")
    return ready_at_ms(
        options if isinstance(options, dict) else {}, message.get("message_timestamp")
    )


class DramatiqRedisProbe:
    """Depth of queues of a Dramatiq ``RedisBroker``."""

    def __init__(self, config: ProbeConfig) -> None:
        import redis

        self.config = config
        self.namespace = str(config.options.get("namespace", "dramatiq"))
        self._client: Any = redis.Redis.from_url(
            config.broker_url, socket_timeout=5.0, socket_connect_timeout=5.0
        )

    def sample(self) -> list[GaugeSample]:
        import redis

        ns, queues = self.namespace, self.config.queues
        try:
            pipe = self._client.pipeline(transaction=True)
            for queue in queues:
                key = f"{ns}:{queue}"
                pipe.llen(key)
                pipe.hlen(f"{key}.msgs")
                pipe.hlen(f"{key}.DQ.msgs")
                pipe.zcard(f"{key}.XQ")
                pipe.lindex(key, 0)
            counts = pipe.execute()
            heads = [(q, counts[i * 5 + 4]) for i, q in enumerate(queues) if counts[i * 5 + 4]]
            pipe = self._client.pipeline(transaction=False)
            for queue, message_id in heads:
                pipe.hget(f"{ns}:{queue}.msgs", message_id)
            messages = dict(zip((q for q, _ in heads), pipe.execute(), strict=True))
        except redis.RedisError as exc:
            raise ProbeError(
                f"dramatiq probe cannot read {_safe(self.config.broker_url)}: {exc}"
            ) from None
        now = time.time()
        samples = []
        for index, queue in enumerate(queues):
            pending, held, delayed, dead, _ = counts[index * 5 : index * 5 + 5]
            values = {
                PENDING: float(pending),
                RESERVED: float(max(held - pending, 0)),
                SCHEDULED: float(delayed),
                FAILED: float(dead),
            }
            ready = _head_ready_ms(messages.get(queue))
            if pending and ready is not None:
                values[OLDEST_PENDING_AGE_S] = max(now - ready / 1000.0, 0.0)
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def close(self) -> None:
        self._client.close()


class DramatiqRabbitmqProbe:
    """Depth of queues of a Dramatiq ``RabbitmqBroker``, by passive queue declares."""

    def __init__(self, config: ProbeConfig) -> None:
        import pika

        self.config = config
        self._parameters = pika.URLParameters(config.broker_url)
        self._parameters.socket_timeout = 5.0
        self._parameters.blocked_connection_timeout = 5.0
        self._connection: Any = None
        self._channel: Any = None
        self._missing: set[str] = set()

    def sample(self) -> list[GaugeSample]:
        import pika

        try:
            return self._sample()
        except pika.exceptions.AMQPError:
            self.close()  # the connection may have idled out: retry once on a new one
            try:
                return self._sample()
            except pika.exceptions.AMQPError as exc:
                self.close()
                raise ProbeError(
                    f"dramatiq probe cannot read {_safe(self.config.broker_url)}: {exc!r}"
                ) from None

    def _sample(self) -> list[GaugeSample]:
        samples = []
        for queue in self.config.queues:
            ready = self._ready(queue)
            if ready is None:
                if queue not in self._missing:
                    log.warning("queuelens: RabbitMQ has no queue %r (yet); not sampled", queue)
                    self._missing.add(queue)
                continue
            self._missing.discard(queue)
            values = {
                PENDING: float(ready),
                SCHEDULED: float(self._ready(f"{queue}.DQ") or 0),
                FAILED: float(self._ready(f"{queue}.XQ") or 0),
            }
            samples.append(GaugeSample("queue", self.config.app, queue, values, time.time()))
        return samples

    def _ready(self, name: str) -> int | None:
        """Messages ready in queue ``name``, or None if it does not exist."""
        import pika

        if self._connection is None or not self._connection.is_open:
            self._connection = pika.BlockingConnection(self._parameters)
            self._channel = None
        if self._channel is None or not self._channel.is_open:
            self._channel = self._connection.channel()
        try:
            frame = self._channel.queue_declare(queue=name, passive=True)
        except pika.exceptions.ChannelClosedByBroker as exc:
            self._channel = None  # the broker closes the channel on a missing queue
            if exc.reply_code == 404:
                return None
            raise
        return int(frame.method.message_count)

    def close(self) -> None:
        connection, self._connection, self._channel = self._connection, None, None
        if connection is not None and connection.is_open:
            try:
                connection.close()
            except Exception:  # pragma: no cover - closing a broken connection
                log.debug("closing the RabbitMQ probe connection failed", exc_info=True)


def _safe(url: str) -> str:
    parts = urlsplit(url)
    if parts.password is None:
        return url
    return url.replace(f":{parts.password}@", ":***@", 1)
