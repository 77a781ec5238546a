"""Query parameters every route shares, parsed so that a bad value is a 422 naming it.

    def overview(state: State, window: SelectedWindow, app: AppParam = None) -> OverviewOut:

Windows are parsed by :meth:`Analytics.window` and steps by ``parse_step``, so the API
accepts exactly what the CLI and docs/analytics.md describe.
"""

from __future__ import annotations

from typing import Annotated, Literal

from fastapi import Depends, Query, Request
from fastapi.dependencies.models import Dependant
from fastapi.routing import APIRoute

from queuelens.analytics import Analytics, Window
from queuelens.analytics.window import parse_step
from queuelens.api.deps import State
from queuelens.api.errors import ParameterError
from queuelens.config import parse_duration

__all__ = [
    "MAX_HORIZON_STEPS",
    "AppParam",
    "HorizonParam",
    "JobParam",
    "QueueParam",
    "SelectedWindow",
    "StepParam",
    "WindowName",
    "horizon_seconds",
    "step_seconds",
    "strict_query",
]

#: the named windows of queuelens.analytics.window.WINDOWS (a test keeps them equal), as
#: the OpenAPI document lists them
WindowName = Literal["5m", "15m", "1h", "6h", "24h", "7d", "30d"]

#: forecast points at most: a forecast is one point per step over the horizon
MAX_HORIZON_STEPS = 1000

# Names are never empty (storage refuses an empty app, queue or job name).
AppParam = Annotated[
    str | None,
    Query(min_length=1, description="Only this app (deployment or tenant); all if omitted."),
]
QueueParam = Annotated[str | None, Query(min_length=1, description="Only this queue.")]
JobParam = Annotated[
    str | None,
    Query(min_length=1, description="Only this job (with queue or app if it is ambiguous)."),
]
StepParam = Annotated[
    str | None,
    Query(
        min_length=1,
        description="Step of a time series: seconds or a duration (60, 5m, 1h, 1d), rounded to "
        "whole minutes, hours or days; about 60 points over the window if omitted.",
    ),
]
HorizonParam = Annotated[
    str,
    Query(
        min_length=1,
        description="How far to forecast: seconds or a duration (30m, 6h), up to 1,000 steps.",
    ),
]


async def selected_window(
    state: State,
    window: Annotated[
        WindowName, Query(description="A named window ending now; ignored when since is given.")
    ] = "1h",
    since: Annotated[
        str | None,
        Query(
            min_length=1,
            description="Start: unix seconds or ISO 8601 (2026-11-28T09:00:00Z; naive = UTC).",
        ),
    ] = None,
    until: Annotated[
        str | None,
        Query(
            min_length=1, description="End, with since: unix seconds or ISO 8601; now if omitted."
        ),
    ] = None,
) -> Window:
    return state.analytics.window(window, since=since, until=until)


SelectedWindow = Annotated[Window, Depends(selected_window)]


def step_seconds(analytics: Analytics, step: str | None, window: Window) -> int:
    """The step a series over ``window`` will really have, in seconds (raised to the finest
    resolution still kept at the window's start); WindowError names ``step`` if it is bad."""
    return analytics.jobs.step_resolution(window, parse_step(step, window))[1]


def horizon_seconds(horizon: str, step_s: int) -> float:
    """Seconds from ``horizon``; 422 naming it unless it is a duration of at most 1,000 steps."""
    try:
        seconds = parse_duration(horizon)
    except ValueError as exc:
        raise ParameterError("horizon", f"{horizon!r} is not {exc}") from None
    if seconds / step_s > MAX_HORIZON_STEPS:
        raise ParameterError(
            "horizon",
            f"{horizon!r} is more than {MAX_HORIZON_STEPS:,} steps of {step_s} s; "
            "use a shorter horizon or a larger step",
        )
    return seconds


async def strict_query(request: Request) -> None:
    """422 for a query parameter the endpoint does not know (``?qeue=emails`` would otherwise
    answer for every queue) or one given twice (which of ``?app=a&app=b`` was meant?)."""
    route = request.scope.get("route")
    query = request.query_params
    if not isinstance(route, APIRoute) or not query:
        return
    accepted = _query_names(route.dependant)
    for name in query:
        if name not in accepted:
            raise ParameterError(
                name,
                "is not a parameter of this endpoint; it accepts "
                + (", ".join(sorted(accepted)) if accepted else "none"),
            )
        if len(query.getlist(name)) > 1:
            raise ParameterError(name, f"is given {len(query.getlist(name))} times; give it once")


def _query_names(dependant: Dependant) -> set[str]:
    names = {field.alias for field in dependant.query_params}
    for sub in dependant.dependencies:
        names |= _query_names(sub)
    return names
