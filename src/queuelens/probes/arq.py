"""Depth of arq queues, read from the queue's sorted set in one or two pipelined round trips.

    probe = from_config(ProbeConfig(framework="arq", broker_url="redis://localhost:6379/0",
                                    app="shop", queues=["arq:queue"]))
    probe.sample()   # [GaugeSample(kind="queue", key="arq:queue",
                     #              values={"pending": 12, "scheduled": 3,
                     #                      "oldest_pending_age_s": 4.2})]

An arq queue is a sorted set of job ids scored by the time (ms) each job may run. Per queue:

- ``scheduled``: members scored after now (deferred jobs, retries waiting for their delay);
- ``pending``: the others (``ZCARD`` minus ``scheduled``). arq keeps a job in the set until it
  finishes, so this includes the jobs workers are running right now;
- ``oldest_pending_age_s``: now minus the score of the oldest due job that no worker is
  running, looked for among the ``lookahead`` oldest due jobs (option, default 100) with one
  ``EXISTS arq:in-progress:<id>`` each in a second round trip; 0 when no due job waits,
  absent when all of the ``lookahead`` jobs looked at are running.

``reserved`` is not reported: arq marks a running job with a key of its own and keeps no
index of them, so counting them would need a scan of the keyspace.
"""

from __future__ import annotations

import time
from typing import Any

import redis

from queuelens.model import GaugeSample
from queuelens.probes import OLDEST_PENDING_AGE_S, PENDING, SCHEDULED, ProbeConfig, ProbeError
from queuelens.storage import redact_url

__all__ = ["DEFAULT_QUEUE", "ArqProbe", "from_config"]

#: arq's default queue name (``arq.constants.default_queue_name``)
DEFAULT_QUEUE = "arq:queue"
#: key arq sets while a job runs (``arq.constants.in_progress_key_prefix``)
IN_PROGRESS_PREFIX = "arq:in-progress:"
DEFAULT_LOOKAHEAD = 100


class ArqProbe:
    """Samples the sorted sets of arq queues on one Redis."""

    def __init__(self, config: ProbeConfig, client: redis.Redis, *, lookahead: int) -> None:
        self.config = config
        self.queues = list(config.queues) or [DEFAULT_QUEUE]
        self.lookahead = lookahead
        self._client = client

    def sample(self) -> list[GaugeSample]:
        now = time.time()
        now_ms = int(now * 1000)
        try:
            with self._client.pipeline(transaction=False) as pipe:
                for queue in self.queues:
                    pipe.zcard(queue)
                    pipe.zcount(queue, f"({now_ms}", "+inf")
                    pipe.zrangebyscore(
                        queue, "-inf", now_ms, start=0, num=self.lookahead, withscores=True
                    )
                replies: list[Any] = pipe.execute()
            heads: list[list[tuple[bytes, float]]] = replies[2::3]
            running = self._running([job_id for head in heads for job_id, _ in head])
        except redis.RedisError as exc:
            raise ProbeError(
                f"cannot read arq queues at {redact_url(self.config.broker_url)!r}: {exc}"
            ) from exc
        samples = []
        for index, queue in enumerate(self.queues):
            total, scheduled = int(replies[3 * index]), int(replies[3 * index + 1])
            values: dict[str, float] = {PENDING: total - scheduled, SCHEDULED: scheduled}
            head = heads[index]
            if not head:
                values[OLDEST_PENDING_AGE_S] = 0.0
            else:
                waiting = [score for job_id, score in head if job_id not in running]
                if waiting:
                    values[OLDEST_PENDING_AGE_S] = max(now - waiting[0] / 1000, 0.0)
                elif len(head) < self.lookahead:  # every due job is running
                    values[OLDEST_PENDING_AGE_S] = 0.0
            samples.append(GaugeSample("queue", self.config.app, queue, values, now))
        return samples

    def _running(self, job_ids: list[bytes]) -> set[bytes]:
        """The ids among ``job_ids`` that a worker is running (one pipelined round trip)."""
        if not job_ids:
            return set()
        with self._client.pipeline(transaction=False) as pipe:
            for job_id in job_ids:
                pipe.exists(IN_PROGRESS_PREFIX.encode() + job_id)
            flags = pipe.execute()
        return {job_id for job_id, flag in zip(job_ids, flags, strict=True) if flag}

    def close(self) -> None:
        self._client.close()


def from_config(config: ProbeConfig) -> ArqProbe:
    """An :class:`ArqProbe`; option ``lookahead`` bounds the running-job check."""
    lookahead = config.options.get("lookahead", DEFAULT_LOOKAHEAD)
    if not isinstance(lookahead, int) or isinstance(lookahead, bool) or lookahead < 1:
        raise ProbeError(f"arq probe option lookahead={lookahead!r} is invalid; expected e.g. 100")
    try:
        client = redis.Redis.from_url(
            config.broker_url, socket_timeout=5.0, socket_connect_timeout=5.0
        )
    except ValueError as exc:
        raise ProbeError(
            f"arq broker URL {redact_url(config.broker_url)!r} is invalid ({exc}); "
            "expected e.g. redis://localhost:6379/0"
        ) from None
    return ArqProbe(config, client, lookahead=lookahead)
