"""Jobs for ``worker_overhead.py``: no-op jobs that only mark when they ran.

Each job does one Redis round trip of its own (``INCR`` plus first/last timestamps), the
same in every mode, so throughput is measured from the first job's start to the last
job's end, free of worker start-up time.

RQ's forking worker imports this module in every work horse, so it imports only ``redis``
(which RQ has loaded already). The Celery app is built when first asked for
(``worker_bench_apps:celery_app``): importing Celery, or instrumenting it, in every RQ
horse would be a cost of the benchmark, not of RQ or queuelens.
"""

from __future__ import annotations

import os
import time
from typing import Any

import redis

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
    """The RQ job."""
    mark()


def __getattr__(name: str) -> Any:
    """``celery_app`` and its task ``celery_noop``, built on first use."""
    if name not in ("celery_app", "celery_noop"):
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from celery import Celery

    app = Celery("qlbench", broker=BROKER)
    app.conf.update(
        worker_prefetch_multiplier=4, task_ignore_result=True, worker_hijack_root_logger=False
    )
    if os.environ.get("BENCH_MODE") == "queuelens":
        from queuelens.integrations.celery import instrument

        instrument(app)

    @app.task(name="bench.noop")  # type: ignore[untyped-decorator]
    def celery_noop() -> None:
        mark()

    globals().update(celery_app=app, celery_noop=celery_noop)
    return globals()[name]
