"""arq worker settings run by the ``arq`` CLI in tests/integrations/test_arq.py.

    QL_TEST_QUEUE=q1 QL_TEST_HOOK_LOG=/tmp/hooks arq tests.integrations.arq_app.WorkerSettings

Every job is fast and known: sleeps, a ValueError, a Retry until a given try, a job that
outlives its timeout, a CPU burner and a memory allocator. The user hooks append a line to
``$QL_TEST_HOOK_LOG`` so the test can see they still run.
"""

from __future__ import annotations

import asyncio
import os
import time
from typing import Any

from arq.connections import RedisSettings
from arq.worker import Retry, func

from queuelens.integrations.arq import instrument

QUEUE = os.environ.get("QL_TEST_QUEUE", "arq:queue")
HOOK_LOG = os.environ.get("QL_TEST_HOOK_LOG")
#: the timeout of hanging_job
HANG_TIMEOUT_S = 0.4


def _note(line: str) -> None:
    if HOOK_LOG:
        with open(HOOK_LOG, "a", encoding="utf-8") as log:
            log.write(line + "\n")


async def short_job(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


async def long_job(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


async def failing_job(ctx: dict[str, Any], message: str) -> None:
    raise ValueError(message)


async def flaky_job(ctx: dict[str, Any], failures: int) -> str:
    if ctx["job_try"] <= failures:
        raise Retry(defer=0.05)
    return "done"


async def hanging_job(ctx: dict[str, Any]) -> None:
    await asyncio.sleep(30)


async def burn_cpu(ctx: dict[str, Any], seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


async def allocate(ctx: dict[str, Any], megabytes: int) -> int:
    block = b"\x01" * (megabytes << 20)  # written, so the pages are resident
    await asyncio.sleep(0.05)
    return len(block)


async def ping(ctx: dict[str, Any]) -> None:
    return None


async def user_startup(ctx: dict[str, Any]) -> None:
    _note("startup")


async def user_shutdown(ctx: dict[str, Any]) -> None:
    _note("shutdown")


async def user_job_start(ctx: dict[str, Any]) -> None:
    _note(f"job_start {ctx['job_id']}")


async def user_job_end(ctx: dict[str, Any]) -> None:
    _note(f"job_end {ctx['job_id']}")


class WorkerSettings:
    functions = (
        short_job,
        long_job,
        failing_job,
        func(flaky_job, max_tries=5),
        func(hanging_job, timeout=HANG_TIMEOUT_S),
        burn_cpu,
        allocate,
        ping,
    )
    queue_name = QUEUE
    redis_settings = RedisSettings(host="127.0.0.1", port=6379)
    max_jobs = int(os.environ.get("QL_TEST_MAX_JOBS", "10"))
    poll_delay = 0.05
    keep_result = 2
    on_startup = user_startup
    on_shutdown = user_shutdown
    on_job_start = user_job_start
    on_job_end = user_job_end


instrument(WorkerSettings)
