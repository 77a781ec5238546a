"""The present and the window's figures: overview, queues, jobs, workers, servers.

GET /api/v1/overview?window=1h          totals, queues, workers, servers
GET /api/v1/queues?app=billing          [QueueSummary]
GET /api/v1/jobs?queue=emails           [JobSummary]
GET /api/v1/workers?state=busy          [Worker]
GET /api/v1/servers                     [Server]
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from queuelens.analytics.serialize import worker_dict
from queuelens.api.convert import job_summary_out, overview_out, queue_summary_out, server_out
from queuelens.api.deps import State
from queuelens.api.params import AppParam, QueueParam, SelectedWindow
from queuelens.api.schemas import (
    JobSummaryOut,
    OverviewOut,
    QueueSummaryOut,
    ServerOut,
    WorkerOut,
)
from queuelens.model import WorkerState

__all__ = ["router"]

router = APIRouter(tags=["figures"])


@router.get("/overview")
def overview(state: State, window: SelectedWindow, app: AppParam = None) -> OverviewOut:
    """Totals, every queue with its health, workers by state and servers, for one window."""
    return overview_out(state.analytics.overview(window, app))


@router.get("/queues")
def queues(state: State, window: SelectedWindow, app: AppParam = None) -> list[QueueSummaryOut]:
    """Every queue with jobs or a depth sample: depth, figures, workers and health."""
    return [queue_summary_out(q) for q in state.analytics.queue_summaries(window, app)]


@router.get("/jobs")
def jobs(
    state: State, window: SelectedWindow, app: AppParam = None, queue: QueueParam = None
) -> list[JobSummaryOut]:
    """Every job with jobs in the window, most processed first."""
    return [job_summary_out(j) for j in state.analytics.job_summaries(window, app, queue)]


@router.get("/workers")
def workers(
    state: State,
    app: AppParam = None,
    worker_state: Annotated[
        WorkerState | None, Query(alias="state", description="Only workers in this state.")
    ] = None,
    queue: Annotated[
        str | None, Query(min_length=1, description="Only workers serving this queue.")
    ] = None,
) -> list[WorkerOut]:
    """Workers, newest heartbeat first; state is derived from the heartbeat's age."""
    found = state.analytics.workers(app, state=worker_state, queue=queue)
    return [WorkerOut.model_validate(worker_dict(w)) for w in found]


@router.get("/servers")
def servers(state: State, app: AppParam = None) -> list[ServerOut]:
    """The newest resource sample of every host, with its health and live workers."""
    return [server_out(s) for s in state.analytics.server_summaries(app)]
