"""arq in one process: user hooks keep running and raising, and every status arq has.

These run arq's own Worker in burst mode inside the test process, so they also measure the
integration's code for coverage (the worker-process tests cannot).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from arq import create_pool
from arq.connections import RedisSettings
from arq.cron import cron
from arq.worker import Retry, create_worker, func

from queuelens.integrations.arq import instrument
from queuelens.model import WorkerState
from queuelens.storage import Storage
from tests.conftest import require_service, unique_name
from tests.integrations.arq_taskiq_harness import (
    counts,
    drop_arq_queue,
    exceptions,
    only_worker,
    series,
    sqlite_url,
    within,
    worker_storage,
)

REDIS = RedisSettings(host="127.0.0.1", port=6379)
# arq's Worker.close() calls redis-py's deprecated close(); only in-process workers show it.
ARQ_CLOSE_DEPRECATION = "ignore:Call to deprecated close:DeprecationWarning"

Job = tuple[str, tuple[Any, ...], dict[str, Any]]


@pytest.fixture
def queue() -> Iterator[str]:
    require_service("redis")
    name = unique_name("ql_arq")
    yield name
    drop_arq_queue(name)


@pytest.fixture
def storage(tmp_path: Path) -> Iterator[Storage]:
    with worker_storage(tmp_path) as opened:
        yield opened


async def _ok(ctx: dict[str, Any]) -> str:
    return "ok"


async def _boom(ctx: dict[str, Any]) -> None:
    raise ValueError("boom")


async def _sleepy(ctx: dict[str, Any], seconds: float) -> None:
    await asyncio.sleep(seconds)


class UserHookError(Exception):
    pass


def _run_burst(settings: dict[str, Any], queue: str, jobs: list[Job]) -> None:
    """Enqueue ``jobs`` and run an arq worker in this process until the queue is empty."""

    async def run() -> None:
        pool = await create_pool(REDIS, default_queue_name=queue)
        worker = create_worker(settings, redis_pool=pool)
        try:
            for name, args, options in jobs:
                await pool.enqueue_job(name, *args, **options)
            await worker.main()
        finally:
            try:
                await worker.close()
            finally:
                await pool.aclose()  # also when a user's on_shutdown made close() raise

    asyncio.run(run())


def _hooks_recording(calls: list[str], fail_on: str | None) -> dict[str, Any]:
    def hook(name: str) -> Callable[[dict[str, Any]], Any]:
        async def user_hook(ctx: dict[str, Any]) -> None:
            calls.append(name)
            if name == fail_on:
                raise UserHookError(name)

        return user_hook

    names = ("on_startup", "on_shutdown", "on_job_start", "on_job_end")
    return {name: hook(name) for name in names}


def _close_runtime(settings: dict[str, Any]) -> None:
    settings["on_startup"].__queuelens_arq__.runtime.close()


@pytest.mark.filterwarnings(ARQ_CLOSE_DEPRECATION)
def test_user_hooks_still_run_in_order(tmp_path: Path, queue: str, storage: Storage) -> None:
    calls: list[str] = []
    settings: dict[str, Any] = {
        "functions": [func(_ok, name="ok"), func(_boom, name="boom")],
        "queue_name": queue,
        "redis_settings": REDIS,
        "burst": True,
        "poll_delay": 0.02,
        "keep_result": 0,
        "max_jobs": 1,
        "handle_signals": False,
        **_hooks_recording(calls, fail_on=None),
    }
    assert instrument(settings, storage_url=sqlite_url(tmp_path), app_name="inproc") is settings
    hooks = {name: settings[name] for name in ("on_startup", "functions")}
    instrument(settings)  # a second call changes nothing
    assert {name: settings[name] for name in hooks} == hooks
    assert [f.name for f in settings["functions"]] == ["ok", "boom"]
    _run_burst(settings, queue, [("ok", (), {}), ("boom", (), {})])
    _close_runtime(settings)

    per_job = ["on_job_start", "on_job_end"]
    assert calls == ["on_startup", *per_job, *per_job, "on_shutdown"]
    assert counts(series(storage, queue, "ok", app="inproc")) == {"succeeded": 1}
    assert exceptions(series(storage, queue, "boom", app="inproc")) == {"ValueError": 1}
    record = only_worker(storage)
    assert record is not None
    assert record.heartbeat.state is WorkerState.stopped


@pytest.mark.filterwarnings(ARQ_CLOSE_DEPRECATION)
@pytest.mark.parametrize("failing_hook", ["on_job_end", "on_shutdown"])
def test_user_hook_errors_propagate_and_ours_still_run(
    tmp_path: Path, queue: str, storage: Storage, failing_hook: str
) -> None:
    calls: list[str] = []
    settings: dict[str, Any] = {
        "functions": [func(_ok, name="ok")],
        "queue_name": queue,
        "redis_settings": REDIS,
        "burst": True,
        "poll_delay": 0.02,
        "keep_result": 0,
        "handle_signals": False,
        **_hooks_recording(calls, fail_on=failing_hook),
    }
    instrument(settings, storage_url=sqlite_url(tmp_path))
    with pytest.raises(UserHookError, match=failing_hook):
        _run_burst(settings, queue, [("ok", (), {})])
    _close_runtime(settings)
    assert failing_hook in calls
    assert counts(series(storage, queue, "ok")) == {"succeeded": 1}  # ours ran first
    record = only_worker(storage)
    assert record is not None
    assert record.heartbeat.state is WorkerState.stopped  # our on_shutdown still ran


@pytest.mark.filterwarnings(ARQ_CLOSE_DEPRECATION)
def test_timeout_abort_and_last_retry_statuses(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    async def retry_always(ctx: dict[str, Any]) -> None:
        raise Retry(defer=0.01)

    settings: dict[str, Any] = {
        "functions": [
            func(_sleepy, name="aborted"),
            func(_sleepy, name="limited", timeout=0.2),
            func(retry_always, name="retry_always", max_tries=2),
        ],
        "queue_name": queue,
        "redis_settings": REDIS,
        "burst": True,
        "poll_delay": 0.02,
        "allow_abort_jobs": True,
        "keep_result": 5,
        "handle_signals": False,
    }
    instrument(settings, storage_url=sqlite_url(tmp_path))

    async def run() -> bool:
        pool = await create_pool(REDIS, default_queue_name=queue)
        worker = create_worker(settings, redis_pool=pool)
        try:
            job = await pool.enqueue_job("aborted", 30.0)
            await pool.enqueue_job("limited", 30.0)
            await pool.enqueue_job("retry_always")
            assert job is not None
            main = asyncio.create_task(worker.main())
            while not await pool.exists(f"arq:in-progress:{job.job_id}"):
                await asyncio.sleep(0.02)
            await asyncio.sleep(0.1)
            aborted = await job.abort(timeout=10)
            await main
            return aborted
        finally:
            await worker.close()
            await pool.aclose()

    assert asyncio.run(run())
    _close_runtime(settings)
    assert counts(series(storage, queue, "aborted")) == {"revoked": 1}
    limited = series(storage, queue, "limited")
    assert counts(limited) == {"timed_out": 1}
    assert within(limited.duration.max, 0.2)
    # max_tries=2: try 1 is retried; after try 2 arq fails the job without running it again
    assert counts(series(storage, queue, "retry_always")) == {"retried": 1, "failed": 1}


@pytest.mark.filterwarnings(ARQ_CLOSE_DEPRECATION)
def test_settings_class_and_cron_jobs_are_instrumented(
    tmp_path: Path, queue: str, storage: Storage
) -> None:
    class Settings:
        functions = (func(_ok, name="ok"),)
        cron_jobs = (cron(_ok, name="nightly", hour=3, run_at_startup=True),)
        queue_name = queue
        redis_settings = REDIS
        burst = True
        poll_delay = 0.02
        keep_result = 0
        handle_signals = False

    assert instrument(Settings, storage_url=sqlite_url(tmp_path)) is Settings
    _run_burst(dict(vars(Settings)), queue, [("ok", (), {})])
    Settings.on_startup.__queuelens_arq__.runtime.close()  # type: ignore[attr-defined]
    assert counts(series(storage, queue, "ok")) == {"succeeded": 1}
    assert counts(series(storage, queue, "nightly")) == {"succeeded": 1}
