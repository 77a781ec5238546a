"""What routes share: the app's state, and finding the one queue or job a path names.

def overview(state: State, ...) -> OverviewOut:
    return overview_out(state.analytics.overview(window, app))
summary = find_queue(state.analytics, window, "emails", app=None)   # 404 / 422 / found
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Annotated

from fastapi import Depends, HTTPException, Request

from queuelens.analytics import Analytics, Insights, QueueSummary, Window
from queuelens.analytics.housekeeping import Pruner
from queuelens.api.errors import ParameterError
from queuelens.api.security import Guard
from queuelens.config import Settings
from queuelens.model import SeriesKey
from queuelens.storage.base import Storage

if TYPE_CHECKING:
    from queuelens.api.stream import OverviewHub

__all__ = ["ApiState", "State", "api_state", "find_job", "find_queue"]


@dataclass
class ApiState:
    """Everything one app instance reads from; ``request.app.state.queuelens``."""

    settings: Settings
    storage: Storage
    analytics: Analytics
    insights: Insights
    guard: Guard
    #: close the storage on shutdown (the app opened it)
    owns_storage: bool
    run_pruner: bool = False
    pruner: Pruner | None = None
    #: live-stream producers by (window, app); see queuelens.api.stream
    hubs: dict[tuple[str, str | None], OverviewHub] = field(default_factory=dict)


async def api_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.queuelens
    return state


State = Annotated[ApiState, Depends(api_state)]


def find_queue(
    analytics: Analytics, window: Window, queue: str, app: str | None, *, given_in: str = "path"
) -> QueueSummary:
    """The one queue named ``queue``: 404 if none, 422 naming ``app`` if several apps have it.
    ``given_in`` is where the name came from (``path`` or ``query``), for the 422."""
    if not queue:
        raise ParameterError("queue", "must not be empty", location=given_in)
    found = analytics.queue_summaries(window, app, queue)
    if not found:
        where = f" in app {app!r}" if app is not None else ""
        raise HTTPException(404, f"no queue named {queue!r}{where}; GET /api/v1/queues lists them")
    if len(found) > 1:
        apps = ", ".join(repr(s.app) for s in found)
        raise ParameterError("app", f"queue {queue!r} exists in apps {apps}; pass app=<name>")
    return found[0]


def find_job(
    analytics: Analytics, job: str, queue: str | None, app: str | None, *, given_in: str = "path"
) -> SeriesKey:
    """The one series of job ``job``: 404 if none, 422 naming ``queue`` or ``app`` if several."""
    if not job:
        raise ParameterError("job", "must not be empty", location=given_in)
    found = analytics.jobs.series(app, queue, job)
    if not found:
        where = "".join(
            f" in {what} {name!r}" for what, name in (("queue", queue), ("app", app)) if name
        )
        raise HTTPException(404, f"no job named {job!r}{where}; GET /api/v1/jobs lists them")
    if len(found) > 1:
        queues = {key.queue for key in found}
        parameter = "queue" if queue is None and len(queues) > 1 else "app"
        places = ", ".join(f"{key.app}/{key.queue}" for key in found)
        raise ParameterError(
            parameter, f"job {job!r} runs in several app/queue pairs ({places}); pass {parameter}="
        )
    return found[0]
