"""Real storages, a known workload, and readers of both exposition formats.

``promtool`` FAILS a test when it is missing and ``CI`` is set, and skips it elsewhere with
the command that installs it, as services do in ``tests/conftest.py``.
"""

from __future__ import annotations

import math
import os
import random
import shutil
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as parse_openmetrics,
)
from prometheus_client.parser import text_string_to_metric_families as parse_text

from queuelens.analytics import Analytics
from queuelens.exposition import DEFAULT_BUCKETS
from queuelens.model import (
    Aggregate,
    FlushBatch,
    GaugeSample,
    JobOutcome,
    JobStatus,
    Resolution,
    SeriesKey,
    WorkerHeartbeat,
    WorkerState,
    bucket_start,
)
from queuelens.storage import Storage, open_storage

#: the analytics clock of every test: half a minute before the current minute
NOW = (time.time() // 60) * 60 - 30.0
TODAY = bucket_start(NOW, Resolution.day)
#: when today's workload happened: two minutes ago, or the day's first second just after 00:00
AT = max(float(TODAY), NOW - 120)
YESTERDAY_AT = float(TODAY - 3600)

INSTALL_PROMTOOL = "apt-get install -y --no-install-recommends prometheus"

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(params=["sqlite", "redis"])
def storage(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Storage]:
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    opened = open_storage(url)
    try:
        yield opened
    finally:
        opened.close()


def promtool() -> str:
    """The path of promtool; fail (in CI) or skip (elsewhere) when it is not installed."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    message = (
        f"promtool is not installed; install it with: {INSTALL_PROMTOOL} "
        "(or run `bash .ci/run`, which installs it)"
    )
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def promtool_check(body: bytes) -> None:
    """``promtool check metrics`` accepts ``body`` with no complaint at all."""
    done = subprocess.run(
        [promtool(), "check", "metrics"], input=body, capture_output=True, timeout=60, check=False
    )
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, report
    assert not report.strip(), report


def samples(body: bytes, *, openmetrics: bool = False) -> Samples:
    """Every sample of ``body``, keyed by sample name and labels; the parsers are strict."""
    text = body.decode("utf-8")
    families = (
        parse_openmetrics(text)  # type: ignore[no-untyped-call]
        if openmetrics
        else parse_text(text)
    )
    out: Samples = {}
    for family in families:
        for sample in family.samples:
            key = (sample.name, frozenset(sample.labels.items()))
            assert key not in out, f"duplicate sample {key}"
            out[key] = sample.value
    return out


def labels(**values: str) -> frozenset[tuple[str, str]]:
    return frozenset(values.items())


def pick(found: Samples, name: str, **values: str) -> float:
    return found[(name, labels(**values))]


def named(found: Samples, name: str) -> dict[frozenset[tuple[str, str]], float]:
    return {key[1]: value for key, value in found.items() if key[0] == name}


def away_from_bounds(rng: random.Random, low: float, high: float) -> float:
    """A log-uniform value in ``[low, high]`` at least 5% away from every default bound."""
    while True:
        value = math.exp(rng.uniform(math.log(low), math.log(high)))
        if all(abs(value / b - 1.0) > 0.05 for b in DEFAULT_BUCKETS):
            return value


@dataclass
class Workload:
    """What was written, per series, so tests can compare every exported figure."""

    counts: dict[SeriesKey, dict[JobStatus, int]] = field(default_factory=dict)
    durations: dict[SeriesKey, list[float]] = field(default_factory=dict)
    waits: dict[SeriesKey, list[float]] = field(default_factory=dict)
    sequence: int = 0

    def write(
        self,
        storage: Storage,
        key: SeriesKey,
        statuses: dict[JobStatus, int],
        *,
        at: float = AT,
        seed: int = 1,
        framework: str = "celery",
        dropped: dict[str, int] | None = None,
    ) -> None:
        """Outcomes of ``key``: revoked and rejected ones have no duration or wait, so the
        histograms count fewer than the counter, as in real life."""
        rng = random.Random(seed)
        aggregate = Aggregate()
        for status, n in statuses.items():
            for _ in range(n):
                ran = status not in (JobStatus.revoked, JobStatus.rejected)
                duration = away_from_bounds(rng, 0.002, 900.0) if ran else None
                wait = away_from_bounds(rng, 0.002, 120.0) if ran else None
                aggregate.add(
                    JobOutcome(key.queue, key.job, status, duration_s=duration, wait_s=wait), at
                )
                if at >= TODAY:
                    if duration is not None:
                        self.durations.setdefault(key, []).append(duration)
                    if wait is not None:
                        self.waits.setdefault(key, []).append(wait)
        if at >= TODAY:
            mine = self.counts.setdefault(key, {})
            for status, n in statuses.items():
                mine[status] = mine.get(status, 0) + n
        self.sequence += 1
        batch = FlushBatch(
            "test-writer",
            self.sequence,
            at,
            {(key, bucket_start(at, 60)): aggregate},
            {(key.app, key.queue): framework},
            dropped or {},
        )
        assert storage.write(batch)


# -- the workload most tests share --------------------------------------------------------

SEND = SeriesKey("billing", "emails", "app.tasks.send_mail")
BOUNCE = SeriesKey("billing", "emails", "app.tasks.bounce")
BUILD = SeriesKey("billing", "reports", "build")
#: dots, colons, slashes, spaces, quotes, backslashes, newlines and unicode
ODD = SeriesKey("ops", 'a.b:c/d e"f\\g\nh', "größe.🚀/x:y z 'q'")


def heartbeat(
    worker_id: str,
    queues: list[str],
    sent_at: float,
    *,
    busy: int = 0,
    concurrency: int = 1,
    state: WorkerState | None = None,
) -> WorkerHeartbeat:
    return WorkerHeartbeat(
        worker_id=worker_id,
        app="billing",
        framework="celery",
        hostname="h1",
        pid=1,
        name=worker_id,
        queues=queues,
        concurrency=concurrency,
        busy_slots=busy,
        state=state or (WorkerState.busy if busy else WorkerState.idle),
        started_at=NOW - 3600,
        sent_at=sent_at,
        heartbeat_interval_s=5.0,
    )


def populate(storage: Storage) -> Workload:
    work = Workload()
    work.write(
        storage,
        SEND,
        {
            JobStatus.succeeded: 40,
            JobStatus.failed: 5,
            JobStatus.retried: 3,
            JobStatus.timed_out: 2,
            JobStatus.revoked: 1,
            JobStatus.rejected: 1,
        },
        seed=1,
        dropped={"billing": 4},
    )
    work.write(storage, BOUNCE, {JobStatus.succeeded: 10}, seed=2)
    work.write(storage, BUILD, {JobStatus.succeeded: 7, JobStatus.failed: 1}, seed=3)
    work.write(storage, BUILD, {JobStatus.succeeded: 100}, at=YESTERDAY_AT, seed=4)
    work.write(storage, ODD, {JobStatus.succeeded: 3}, seed=5, framework="rq")
    storage.write_gauges(
        [
            GaugeSample(
                "queue",
                "billing",
                "emails",
                {"pending": 7.0, "scheduled": 2.0, "reserved": 1.0, "oldest_pending_age_s": 42.0},
                NOW - 5,
            ),
            GaugeSample("queue", "billing", "reports", {"pending": 0.0}, NOW - 5),
            GaugeSample(
                "server",
                "billing",
                "h1",
                {
                    "cpu_percent": 50.0,
                    "cpu_count": 4.0,
                    "load_1": 1.5,
                    "load_5": 1.0,
                    "load_15": 0.5,
                    "memory_total_mb": 2048.0,
                    "memory_used_mb": 1024.0,
                    "disk:/:total_gb": 100.0,
                    "disk:/:used_gb": 25.0,
                    "disk:/:percent": 25.0,
                },
                NOW - 5,
            ),
        ]
    )
    storage.heartbeat(heartbeat("w-busy", ["emails"], NOW - 1, busy=2, concurrency=4))
    storage.heartbeat(heartbeat("w-idle", ["reports"], NOW - 1, concurrency=2))
    storage.heartbeat(heartbeat("w-stale", ["emails"], NOW - 30))
    storage.heartbeat(heartbeat("w-dead", ["emails"], NOW - 600))
    storage.heartbeat(heartbeat("w-stopped", ["emails"], NOW - 1, state=WorkerState.stopped))
    return work


def analytics_of(storage: Storage) -> Analytics:
    return Analytics(storage, clock=lambda: NOW)


def job_labels(key: SeriesKey) -> dict[str, str]:
    return {"app": key.app, "queue": key.queue, "job": key.job}
