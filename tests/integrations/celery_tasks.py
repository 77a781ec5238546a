"""Tasks of the Celery integration tests, on an app made for a broker, queue and key prefix.

    app = make_app("redis://127.0.0.1:6379/0", queue="ql_q1", keyprefix="qltest_x_")
    app.send_task("ql.sleep", args=[0.1], queue="ql_q1")

Workers load them through ``tests.integrations.celery_app`` (configured by environment).
"""

from __future__ import annotations

import time
from typing import Any

from celery import Celery
from celery.exceptions import Reject

#: one worker slot is held this long so that heartbeats can be seen "busy"
LONG_JOB_S = 4.0


def make_app(broker_url: str, *, queue: str = "celery", keyprefix: str = "") -> Celery:
    """A Celery app whose tasks are all named ``ql.*``; nothing is connected yet."""
    app = Celery("ql_celery_tests", broker=broker_url, set_as_current=False)
    app.conf.update(
        task_default_queue=queue,
        worker_prefetch_multiplier=1,
        broker_connection_retry_on_startup=True,
        worker_hijack_root_logger=False,
        task_send_sent_event=False,
    )
    if keyprefix:
        app.conf.broker_transport_options = {"global_keyprefix": keyprefix}

    def sleep(seconds: float) -> float:
        time.sleep(seconds)
        return seconds

    def fail(message: str) -> None:
        raise ValueError(message)

    def flaky(self: Any, failures: int) -> int:
        if self.request.retries < failures:
            raise self.retry(exc=ConnectionError("not yet"), countdown=0)
        return int(self.request.retries)

    def burn(seconds: float) -> None:
        end = time.thread_time() + seconds
        while time.thread_time() < end:
            pass

    def allocate(megabytes: int) -> int:
        block = b"\x01" * (megabytes << 20)  # filled, so every page is resident
        time.sleep(0.05)
        return len(block)

    def limited() -> None:
        time.sleep(3)

    def reject() -> None:
        raise Reject("not for us", requeue=False)

    tasks: list[tuple[str, Any, dict[str, Any]]] = [
        *((name, sleep, {}) for name in ("sleep", "short", "medium", "later")),
        ("long", sleep, {"acks_late": True}),  # unacknowledged while it runs
        ("fail", fail, {}),
        ("flaky", flaky, {"bind": True, "max_retries": 5}),
        ("burn", burn, {}),
        ("allocate", allocate, {}),
        ("soft_limit", limited, {"soft_time_limit": 0.3}),
        ("hard_limit", limited, {"time_limit": 0.5}),
        ("reject", reject, {}),
    ]
    for name, function, options in tasks:  # shared=False: the tests make several apps
        app.task(shared=False, name=f"ql.{name}", **options)(function)
    return app
