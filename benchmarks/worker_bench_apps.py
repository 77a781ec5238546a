"""Jobs for ``worker_overhead.py``: no-op jobs that only mark when they ran.

Each job does one Redis round trip of its own (``INCR`` plus first/last timestamps), the
same in every mode, so throughput is measured from the first job's start to the last
job's end, free of worker start-up time.
"""

from __future__ import annotations

import os
import time

import redis
from celery import Celery

BROKER = os.environ.get("BENCH_BROKER", "redis://127.0.0.1:6379/5")
PREFIX = os.environ.get("BENCH_PREFIX", "qlbench")

_client = redis.Redis.from_url(BROKER)


def mark() -> None:
    """The job body: count one run and keep the first start and last end."""
    now = time.time()
    pipe = _client.pipeline(transaction=False)
    pipe.set(f"{PREFIX}:first", now, nx=True)
    pipe.incr(f"{PREFIX}:done")
    pipe.set(f"{PREFIX}:last", now)
    pipe.execute()


def noop() -> None:
    mark()


celery_app = Celery("qlbench", broker=BROKER)
celery_app.conf.update(
    worker_prefetch_multiplier=4, task_ignore_result=True, worker_hijack_root_logger=False
)

if os.environ.get("BENCH_MODE") == "queuelens":
    from queuelens.integrations.celery import instrument

    instrument(celery_app)


@celery_app.task(name="bench.noop")  # type: ignore[untyped-decorator]
def celery_noop() -> None:
    mark()
