"""Depth of RQ queues, read from Redis in two pipelined round trips, without RQ or workers.

    probe = from_config(ProbeConfig(framework="rq", broker_url="redis://localhost:6379/0",
                                    app="billing", queues=["default", "emails"]))
    probe.sample()     # [GaugeSample(kind="queue", key="default", values={"pending": 3, …}), …]
    probe.close()

Per queue: ``pending`` (length of the queue list), ``scheduled`` (ScheduledJobRegistry plus
DeferredJobRegistry: jobs waiting for their time or for a dependency), ``reserved`` (live
entries of StartedJobRegistry), ``failed`` (FailedJobRegistry) and
``oldest_pending_age_s`` (now minus ``enqueued_at`` of the job at the head of the queue —
the oldest one unless jobs were enqueued ``at_front``; 0 for an empty queue).

With ``queues`` empty the probe lists RQ's own set of queues (``rq:queues``, one SMEMBERS):
no keyspace scan. Options: ``key_prefix`` (default ``$RQ_KEY_PREFIX`` or ``rq``, as RQ
does) and ``socket_timeout`` in seconds (default 5).
"""

from __future__ import annotations

import datetime
import os
import time
from typing import Any

import redis

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

__all__ = ["RQProbe", "from_config"]


class RQProbe:
    """Reads the depth of RQ queues on one Redis for one app."""

    def __init__(self, config: ProbeConfig) -> None:
        self.config = config
        options = config.options
        self.prefix = str(options.get("key_prefix") or os.environ.get("RQ_KEY_PREFIX") or "rq")
        timeout = float(options.get("socket_timeout", 5.0))
        try:
            self._client: redis.Redis = redis.Redis.from_url(
                config.broker_url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
        except ValueError as exc:
            url = _redacted(config.broker_url)
            raise ProbeError(f"RQ probe: bad broker URL {url}: {exc}") from None

    def key(self, kind: str, name: str) -> str:
        """RQ's key: ``kind`` is queue, scheduled, deferred, wip, failed (of a queue) or job."""
        return f"{self.prefix}:{kind}:{name}"

    def queues(self) -> list[str]:
        """The configured queues, or every queue RQ has registered."""
        if self.config.queues:
            return list(self.config.queues)
        head = f"{self.prefix}:queue:"
        members = self._run(lambda pipe: pipe.smembers(f"{self.prefix}:queues"))[0]
        return sorted(name[len(head) :] for m in members if (name := _text(m)).startswith(head))

    def sample(self) -> list[GaugeSample]:
        """One ``GaugeSample(kind="queue")`` per queue; ProbeError if Redis cannot be read."""
        names = self.queues()
        now = time.time()

        def counts(pipe: Any) -> None:
            for name in names:
                pipe.llen(self.key("queue", name))
                pipe.zcard(self.key("scheduled", name))
                pipe.zcard(self.key("deferred", name))
                pipe.zcount(self.key("wip", name), now, "+inf")  # expired: worker died
                pipe.zcount(self.key("failed", name), now, "+inf")
                pipe.lindex(self.key("queue", name), 0)

        replies = self._run(counts) if names else []
        heads = [
            (name, _text(h)) for name, h in zip(names, replies[5::6], strict=True) if h is not None
        ]
        stamps = (
            self._run(lambda pipe: [pipe.hget(self.key("job", h), "enqueued_at") for _, h in heads])
            if heads
            else []
        )
        enqueued = {name: _timestamp(v) for (name, _), v in zip(heads, stamps, strict=True)}
        samples = []
        for i, name in enumerate(names):
            pending, scheduled, deferred, reserved, failed = replies[6 * i : 6 * i + 5]
            values = {
                PENDING: float(pending),
                SCHEDULED: float(scheduled + deferred),
                RESERVED: float(reserved),
                FAILED: float(failed),
            }
            if not pending:
                values[OLDEST_PENDING_AGE_S] = 0.0
            elif (at := enqueued.get(name)) is not None:
                values[OLDEST_PENDING_AGE_S] = max(now - at, 0.0)
            samples.append(GaugeSample("queue", self.config.app, name, values, now))
        return samples

    def close(self) -> None:
        self._client.close()

    def _run(self, queue_commands: Any) -> list[Any]:
        """Run the commands that ``queue_commands(pipe)`` adds, in one round trip."""
        try:
            with self._client.pipeline(transaction=False) as pipe:
                queue_commands(pipe)
                return list(pipe.execute())
        except redis.RedisError as exc:
            raise ProbeError(
                f"RQ probe cannot read {_redacted(self.config.broker_url)}: {exc}"
            ) from exc


def from_config(config: ProbeConfig) -> RQProbe:
    """The probe for ``config`` (``framework="rq"``); see the module docstring for options."""
    return RQProbe(config)


def _text(value: bytes | str) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else value


def _timestamp(value: bytes | str | None) -> float | None:
    """Unix time of an RQ timestamp (``2024-05-01T12:00:00.123456Z``, UTC)."""
    if not value:
        return None
    try:
        parsed = datetime.datetime.fromisoformat(_text(value))
    except ValueError:
        return None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=datetime.UTC)
    return parsed.timestamp()


def _redacted(url: str) -> str:
    from queuelens.storage import redact_url

    return repr(redact_url(url))
