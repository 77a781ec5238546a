"""Known workloads for storage tests: outcomes whose exact statistics the tests know."""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Iterable

from queuelens.model import Aggregate, FlushBatch, JobOutcome, JobStatus, SeriesKey, bucket_start
from queuelens.storage import open_storage

ODD_NAMES = (
    "emails.high",
    "app.tasks.send_mail",
    "a:b/c",
    "größe",
    "{tag}",
    "with space",
    "Emails",
    "emails",
)


def outcome(
    status: JobStatus = JobStatus.succeeded,
    *,
    at: float,
    duration_s: float | None = 0.1,
    wait_s: float | None = 0.5,
    cpu_s: float | None = 0.05,
    memory_peak_mb: float | None = 100.0,
    memory_delta_mb: float | None = 1.0,
    exception: tuple[str, str] | None = None,
) -> JobOutcome:
    return JobOutcome(
        queue="ignored",
        job="ignored",
        status=status,
        duration_s=duration_s,
        wait_s=wait_s,
        cpu_s=cpu_s,
        memory_peak_mb=memory_peak_mb,
        memory_delta_mb=memory_delta_mb,
        exception_type=exception[0] if exception else None,
        exception_message=exception[1] if exception else None,
        finished_at=at,
    )


def make_batch(
    items: Iterable[tuple[SeriesKey, JobOutcome]],
    *,
    accuracy: float = 0.01,
    writer_id: str | None = None,
    sequence: int = 1,
    frameworks: dict[tuple[str, str], str] | None = None,
    dropped: dict[str, int] | None = None,
) -> FlushBatch:
    """A flush batch as the recorder would build it from ``items``; without ``writer_id``,
    the first batch of a new writer."""
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    seen_frameworks: dict[tuple[str, str], str] = {}
    for series, item in items:
        assert item.finished_at is not None
        key = (series, bucket_start(item.finished_at, 60))
        aggregates.setdefault(key, Aggregate(accuracy)).add(item, item.finished_at)
        seen_frameworks.setdefault((series.app, series.queue), "python")
    return FlushBatch(
        writer_id=writer_id or uuid.uuid4().hex,
        sequence=sequence,
        created_at=time.time(),
        aggregates=aggregates,
        frameworks=frameworks or seen_frameworks,
        dropped=dropped or {},
    )


def random_items(
    series: list[SeriesKey], n: int, start: float, span_s: float, seed: int
) -> list[tuple[SeriesKey, JobOutcome]]:
    """``n`` outcomes spread over ``series`` and ``[start, start + span_s)``."""
    rng = random.Random(seed)
    statuses = [JobStatus.succeeded] * 8 + [JobStatus.failed, JobStatus.retried]
    items = []
    for _ in range(n):
        status = rng.choice(statuses)
        failed = status is not JobStatus.succeeded
        items.append(
            (
                rng.choice(series),
                outcome(
                    status,
                    at=start + rng.random() * span_s,
                    duration_s=rng.lognormvariate(-2.0, 1.0),
                    wait_s=rng.expovariate(2.0),
                    cpu_s=rng.random() * 0.1,
                    memory_peak_mb=50 + rng.random() * 100,
                    memory_delta_mb=rng.random() * 5,
                    exception=("ValueError", f"bad {rng.randint(0, 9)}") if failed else None,
                ),
            )
        )
    return items


def write_from_process(
    url: str, series: list[SeriesKey], batches: int, per_batch: int, start: float, seed: int
) -> int:
    """Entry point for a writer process: write ``batches`` batches; return outcomes written."""
    storage = open_storage(url)
    writer = uuid.uuid4().hex
    written = 0
    try:
        for i in range(batches):
            items = random_items(series, per_batch, start, 600.0, seed * 1000 + i)
            assert storage.write(make_batch(items, writer_id=writer, sequence=i + 1))
            written += len(items)
    finally:
        storage.close()
    return written
