"""The RQ depth probe against a real Redis: each kind of depth, the oldest job's age,
discovery from RQ's queue set, two pipelined round trips, no scans, clear errors."""

from __future__ import annotations

import time
from datetime import timedelta
from typing import Any

import pytest
from redis import Redis
from redis.client import Pipeline
from rq import Queue
from rq.job import Job
from rq.registry import (
    DeferredJobRegistry,
    FailedJobRegistry,
    ScheduledJobRegistry,
    StartedJobRegistry,
)

from queuelens.probes import (
    FAILED,
    OLDEST_PENDING_AGE_S,
    PENDING,
    RESERVED,
    SCHEDULED,
    ProbeConfig,
    ProbeError,
    QueueProbe,
    build_probe,
)
from queuelens.probes.rq import RQProbe, from_config
from tests.integrations import rq_jobs
from tests.integrations.rq_helpers import REDIS_URL, isolated_queue, job_id


@pytest.fixture
def pipelines(monkeypatch: pytest.MonkeyPatch) -> list[list[str]]:
    """The command names of every pipeline redis-py executes, one list per round trip."""
    sent: list[list[str]] = []
    execute = Pipeline.execute

    def spy(self: Pipeline, raise_on_error: bool = True) -> list[Any]:
        sent.append([str(args[0]).upper() for args, _ in self.command_stack])
        return execute(self, raise_on_error)

    monkeypatch.setattr(Pipeline, "execute", spy)
    return sent


def test_keys_are_the_ones_rq_uses() -> None:
    probe = from_config(ProbeConfig("rq", REDIS_URL))
    queue = Queue("emails", connection=Redis.from_url(REDIS_URL))  # no I/O needed
    assert probe.key("queue", "emails") == queue.key
    assert probe.key("scheduled", "emails") == ScheduledJobRegistry(queue=queue).key  # type: ignore[no-untyped-call]
    assert probe.key("deferred", "emails") == DeferredJobRegistry(queue=queue).key
    assert probe.key("wip", "emails") == StartedJobRegistry(queue=queue).key
    assert probe.key("failed", "emails") == FailedJobRegistry(queue=queue).key
    assert probe.key("job", "abc") == Job.key_for("abc")
    assert f"{probe.prefix}:queues" == Queue.redis_queues_keys
    assert isinstance(build_probe(ProbeConfig("rq", REDIS_URL)), QueueProbe)
    probe.close()


def test_each_kind_of_depth_in_two_round_trips(pipelines: list[list[str]]) -> None:
    with isolated_queue() as (redis, queue):
        first = queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, "a"))
        for label in ("b", "c"):
            queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, label))
        queue.enqueue(rq_jobs.sleep_100ms, depends_on=first, job_id=job_id(queue, "deferred"))
        for label in ("s1", "s2"):
            queue.enqueue_in(timedelta(hours=1), rq_jobs.sleep_100ms, job_id=job_id(queue, label))
        broken = queue.create_job(rq_jobs.fail, args=("x",), job_id=job_id(queue, "failed"))
        broken.save()
        FailedJobRegistry(queue=queue).add(broken, ttl=600, exc_string="ValueError: x")
        now = time.time()  # a live execution, and one whose worker died (its lease expired)
        redis.zadd(queue.started_job_registry.key, {"live:1": now + 60, "dead:2": now - 60})

        probe = from_config(ProbeConfig("rq", REDIS_URL, app="shop", queues=[queue.name]))
        pipelines.clear()
        (sample,) = probe.sample()
        probe.close()

    assert pipelines == [
        ["LLEN", "ZCARD", "ZCARD", "ZCOUNT", "ZCOUNT", "LINDEX"],
        ["HGET"],
    ]
    assert (sample.kind, sample.app, sample.key) == ("queue", "shop", queue.name)
    values = sample.values
    assert (values[PENDING], values[SCHEDULED], values[RESERVED], values[FAILED]) == (3, 3, 1, 1)
    assert 0 <= values[OLDEST_PENDING_AGE_S] < 5


def test_oldest_pending_age_grows_and_an_empty_queue_is_zero() -> None:
    with isolated_queue() as (_, queue):
        probe = from_config(ProbeConfig("rq", REDIS_URL, queues=[queue.name]))
        (empty,) = probe.sample()
        assert empty.values == {
            PENDING: 0,
            SCHEDULED: 0,
            RESERVED: 0,
            FAILED: 0,
            OLDEST_PENDING_AGE_S: 0,
        }
        queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, "old"))
        time.sleep(0.3)
        queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, "new"))
        first = probe.sample()[0].values[OLDEST_PENDING_AGE_S]
        time.sleep(0.5)
        second = probe.sample()[0].values[OLDEST_PENDING_AGE_S]
        probe.close()
    assert first >= 0.3  # the head of the queue, not the newest job
    assert second - first == pytest.approx(0.5, abs=0.1)


def test_discovers_queues_from_rqs_queue_set(pipelines: list[list[str]]) -> None:
    with isolated_queue() as (_, queue), isolated_queue() as (_, unused):
        queue.enqueue(rq_jobs.sleep_100ms, job_id=job_id(queue, "a"))
        probe = build_probe(ProbeConfig("rq", REDIS_URL))
        assert isinstance(probe, RQProbe)
        pipelines.clear()
        samples = {sample.key: sample.values for sample in probe.sample()}
        probe.close()
    assert samples[queue.name][PENDING] == 1
    assert unused.name not in samples  # never used, so RQ never registered it
    assert pipelines[0] == ["SMEMBERS"]
    assert all(command not in ("SCAN", "KEYS") for sent in pipelines for command in sent)


def test_a_custom_key_prefix() -> None:
    with isolated_queue() as (redis, queue):
        prefix = f"{queue.name}-prefix"
        redis.sadd(f"{prefix}:queues", f"{prefix}:queue:mail")
        redis.rpush(f"{prefix}:queue:mail", "j1", "j2")
        redis.hset(f"{prefix}:job:j1", "enqueued_at", "2020-01-01T00:00:00.000000Z")
        probe = from_config(ProbeConfig("rq", REDIS_URL, options={"key_prefix": prefix}))
        (sample,) = probe.sample()
        probe.close()
    assert sample.key == "mail"
    assert sample.values[PENDING] == 2
    assert sample.values[OLDEST_PENDING_AGE_S] > 5 * 365 * 86400


def test_unreachable_or_malformed_broker_is_a_probe_error() -> None:
    down = from_config(ProbeConfig("rq", "redis://:hunter2@127.0.0.1:1/0", queues=["q"]))
    with pytest.raises(ProbeError, match=r"RQ probe cannot read 'redis://:\*\*\*@127.0.0.1:1/0'"):
        down.sample()
    down.close()
    with pytest.raises(ProbeError, match="bad broker URL"):
        from_config(ProbeConfig("rq", "http://127.0.0.1:6379"))
