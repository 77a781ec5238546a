"""One queue or one job in depth.

    GET /api/v1/queues/{queue}?app=&window=     summary + series, trends, forecasts, capacity
    GET /api/v1/jobs/{job}?queue=&app=&window=  summary + series, trends, baselines, anomalies

Names may hold dots, colons, slashes, spaces and any unicode: percent-encode the name as
one path segment (``a:b/c`` -> ``a%3Ab%2Fc``); the route takes the rest of the path.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from queuelens.api.convert import job_detail_out, queue_detail_out
from queuelens.api.deps import State, find_job, find_queue
from queuelens.api.errors import NOT_FOUND
from queuelens.api.params import (
    AppParam,
    HorizonParam,
    QueueParam,
    SelectedWindow,
    StepParam,
    horizon_seconds,
    step_seconds,
)
from queuelens.api.schemas import JobDetailOut, QueueDetailOut

__all__ = ["router"]

router = APIRouter(tags=["details"], responses=NOT_FOUND)


@router.get("/queues/{queue:path}")
def queue_detail(
    state: State,
    window: SelectedWindow,
    queue: Annotated[str, Path(description="The queue's name, percent-encoded.")],
    app: AppParam = None,
    step: StepParam = None,
    horizon: HorizonParam = "1h",
    depth_threshold: Annotated[
        float | None,
        Query(ge=0, description="Forecast when the pending depth reaches this many jobs."),
    ] = None,
) -> QueueDetailOut:
    """The queue's summary plus its time series, trends, forecasts and capacity advice."""
    step_s = step_seconds(state.analytics, step, window)
    horizon_s = horizon_seconds(horizon, step_s)
    summary = find_queue(state.analytics, window, queue, app)
    detail = state.insights.queue_detail(
        window,
        summary.app,
        summary.queue,
        step_s=step_s,
        horizon_s=horizon_s,
        depth_threshold=depth_threshold,
    )
    return queue_detail_out(detail, window)


@router.get("/jobs/{job:path}")
def job_detail(
    state: State,
    window: SelectedWindow,
    job: Annotated[str, Path(description="The job's name, percent-encoded.")],
    queue: QueueParam = None,
    app: AppParam = None,
    step: StepParam = None,
) -> JobDetailOut:
    """The job's summary plus its time series, trends, baselines and anomalies."""
    step_s = step_seconds(state.analytics, step, window)
    key = find_job(state.analytics, job, queue, app)
    detail = state.insights.job_detail(window, key.app, key.queue, key.job, step_s=step_s)
    return job_detail_out(detail, window, key.app, key.queue, key.job)
