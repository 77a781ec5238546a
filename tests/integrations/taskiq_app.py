"""Taskiq broker and tasks run by ``taskiq worker`` in tests/integrations/test_taskiq.py.

    QL_TEST_QUEUE=q1 taskiq worker tests.integrations.taskiq_app:broker --workers 1

Tasks have short fixed names (``short_job``…) so that the test can send them by name through
a broker of its own (``AsyncKicker``) on its own queue. Labels that change how a task runs
(``retry_on_error``, ``max_retries``, ``timeout``) are set by the sender, as taskiq reads them
from the message.
"""

from __future__ import annotations

import asyncio
import os
import time

from taskiq import Context, SimpleRetryMiddleware, TaskiqDepends
from taskiq_redis import ListQueueBroker

from queuelens.integrations.taskiq import QueueLensMiddleware

QUEUE = os.environ.get("QL_TEST_QUEUE", "taskiq")
#: taskiq injects the task's Context where a parameter defaults to this
CONTEXT: Context = TaskiqDepends()

broker = ListQueueBroker("redis://127.0.0.1:6379/0", queue_name=QUEUE).with_middlewares(
    SimpleRetryMiddleware(default_retry_count=3),
    QueueLensMiddleware(),  # last, so its on_error ends the measurement before a retry is sent
)


@broker.task(task_name="short_job")
async def short_job(seconds: float) -> None:
    await asyncio.sleep(seconds)


@broker.task(task_name="long_job")
async def long_job(seconds: float) -> None:
    await asyncio.sleep(seconds)


@broker.task(task_name="failing_job")
async def failing_job(message: str) -> None:
    raise ValueError(message)


@broker.task(task_name="flaky_job")
async def flaky_job(failures: int, context: Context = CONTEXT) -> str:
    if int(context.message.labels.get("_retries", 0)) < failures:
        raise RuntimeError("not yet")
    return "done"


@broker.task(task_name="hanging_job")
async def hanging_job() -> None:
    await asyncio.sleep(30)


@broker.task(task_name="burn_cpu")
async def burn_cpu(seconds: float) -> None:
    start = time.thread_time()
    while time.thread_time() - start < seconds:
        pass


@broker.task(task_name="allocate")
def allocate(megabytes: int) -> int:
    """A sync task: taskiq runs it in its thread pool."""
    block = b"\x01" * (megabytes << 20)  # written, so the pages are resident
    time.sleep(0.05)
    return len(block)


@broker.task(task_name="ping")
async def ping() -> None:
    return None
