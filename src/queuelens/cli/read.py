"""Reading commands: ``status``, ``top``, ``queues``, ``jobs``, ``workers``, ``servers``.

Every number comes from :mod:`queuelens.analytics`, and ``--json`` prints the shapes of the
REST API (:mod:`queuelens.analytics.serialize`), so the terminal, scripts, the API and the
dashboard agree.
"""

from __future__ import annotations

import time
from typing import Annotated

import typer
from rich.console import Group, RenderableType
from rich.live import Live
from rich.text import Text

from queuelens.analytics.serialize import overview_dict, server_dict, worker_dict
from queuelens.cli._app import (
    AppFilter,
    JsonOutput,
    Since,
    StorageOption,
    Until,
    WindowOption,
    console,
    print_json,
    reading,
    require_positive,
)
from queuelens.cli._render import (
    jobs_table,
    overview_view,
    queues_table,
    reasons_view,
    servers_table,
    window_line,
    workers_table,
)
from queuelens.model import WorkerState
from queuelens.storage import StorageError

QueueFilter = Annotated[
    str | None, typer.Option("--queue", "-q", metavar="NAME", help="only this queue")
]


def status(
    ctx: typer.Context,
    window: WindowOption = "1h",
    since: Since = None,
    until: Until = None,
    app_name: AppFilter = None,
    as_json: JsonOutput = False,
    storage: StorageOption = None,
) -> None:
    """Overview: job totals, queues with health and reasons, workers, servers.

    Examples:

    ```
    queuelens status
    queuelens status --window 24h --app billing
    queuelens status --since 2026-11-28T09:00Z --until 2026-11-28T10:00Z --json
    ```
    """
    with reading(ctx, storage) as analytics:
        overview = analytics.overview(analytics.window(window, since=since, until=until), app_name)
    if as_json:
        print_json(overview_dict(overview))
    else:
        console().print(overview_view(overview, app=app_name))


def top(
    ctx: typer.Context,
    interval: Annotated[
        float, typer.Option(metavar="SECONDS", help="seconds between refreshes")
    ] = 2.0,
    once: Annotated[bool, typer.Option("--once", help="print one frame and exit")] = False,
    window: WindowOption = "5m",
    app_name: AppFilter = None,
    storage: StorageOption = None,
) -> None:
    """Live view of the overview, refreshed every few seconds until Ctrl-C.

    The window slides with the clock: the default 5m shows what is happening now.
    If the storage stops answering, the last frame stays up with the error until it is back.

    Examples:

    ```
    queuelens top
    queuelens top --interval 5 --window 15m --app billing
    queuelens top --once
    ```
    """
    require_positive("--interval", interval, "2")
    out = console()
    with reading(ctx, storage) as analytics:

        def frame() -> RenderableType:
            overview = analytics.overview(analytics.window(window), app_name)
            return overview_view(overview, app=app_name)

        if once:
            out.print(frame())
            return
        current = frame()
        hint = Text(f"refreshing every {interval:g}s · Ctrl-C to quit", style="dim")
        try:
            # like top(1): a terminal gets a screen of its own, restored on exit
            live = Live(
                Group(current, hint), console=out, auto_refresh=False, screen=out.is_terminal
            )
            with live:
                while True:
                    time.sleep(interval)
                    try:
                        current = frame()
                        live.update(Group(current, hint), refresh=True)
                    except StorageError as exc:  # keep the last frame; storage may come back
                        error = Text(f"storage error, retrying: {exc}", style="bold red")
                        live.update(Group(current, error, hint), refresh=True)
        except KeyboardInterrupt:
            return


def queues(
    ctx: typer.Context,
    window: WindowOption = "1h",
    since: Since = None,
    until: Until = None,
    app_name: AppFilter = None,
    as_json: JsonOutput = False,
    storage: StorageOption = None,
) -> None:
    """Queues with depth, throughput, failure rate, wait and run time, health.

    Per queue: pending jobs and the oldest one's age (from probes), jobs processed and
    failed in the window, p95 of wait and run time, live workers, and the health status
    with the reasons behind it.

    Examples:

    ```
    queuelens queues
    queuelens queues --window 7d --app billing
    queuelens queues --json | jq '.[] | select(.health.status != "healthy")'
    ```
    """
    with reading(ctx, storage) as analytics:
        found = analytics.window(window, since=since, until=until)
        summaries = analytics.queue_summaries(found, app_name)
    if as_json:
        print_json([summary.as_dict() for summary in summaries])
        return
    out = console()
    out.print(queues_table(summaries, title=f"queues · {window_line(found)}"))
    reasons = reasons_view(summaries)
    if reasons is not None:
        out.print(reasons)


def jobs(
    ctx: typer.Context,
    queue: QueueFilter = None,
    window: WindowOption = "1h",
    since: Since = None,
    until: Until = None,
    app_name: AppFilter = None,
    as_json: JsonOutput = False,
    storage: StorageOption = None,
) -> None:
    """Jobs with outcomes, failure rate, run time and wait percentiles, exceptions.

    Per job: processed, failed and retried attempts in the window, throughput, p50/p95/p99
    run time, p95 wait, CPU, memory and the most frequent exceptions (with --json).

    Examples:

    ```
    queuelens jobs
    queuelens jobs --queue emails --window 24h
    queuelens jobs --app billing --json
    ```
    """
    with reading(ctx, storage) as analytics:
        found = analytics.window(window, since=since, until=until)
        summaries = analytics.job_summaries(found, app_name, queue)
    if as_json:
        print_json([summary.as_dict() for summary in summaries])
    else:
        console().print(jobs_table(summaries, title=f"jobs · {window_line(found)}"))


def workers(
    ctx: typer.Context,
    state: Annotated[
        WorkerState | None,
        typer.Option(case_sensitive=False, help="only workers in this state, as derived now"),
    ] = None,
    queue: QueueFilter = None,
    app_name: AppFilter = None,
    as_json: JsonOutput = False,
    storage: StorageOption = None,
) -> None:
    """Workers as they are now: state, busy slots, counts, memory, CPU, last heartbeat.

    State is derived when read: stale after three missed heartbeats, dead after twenty.
    Workers have no window: they are shown as of their newest heartbeat.

    Examples:

    ```
    queuelens workers
    queuelens workers --state dead
    queuelens workers --queue emails --json
    ```
    """
    with reading(ctx, storage) as analytics:
        found = analytics.workers(app_name, state=state, queue=queue)
    if as_json:
        print_json([worker_dict(worker) for worker in found])
    else:
        console().print(workers_table(found, title="workers"))


def servers(
    ctx: typer.Context,
    app_name: AppFilter = None,
    as_json: JsonOutput = False,
    storage: StorageOption = None,
) -> None:
    """Hosts as of their newest sample: CPU, load, memory, disks, workers, health.

    Examples:

    ```
    queuelens servers
    queuelens servers --json
    ```
    """
    with reading(ctx, storage) as analytics:
        found = analytics.server_summaries(app_name)
    if as_json:
        print_json([server_dict(server) for server in found])
    else:
        console().print(servers_table(found, title="servers"))
