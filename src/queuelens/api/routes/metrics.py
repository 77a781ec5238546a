"""``GET /metrics``: Prometheus text format or OpenMetrics, by the Accept header.

The exposition is built at scrape time by :mod:`queuelens.exposition.prometheus` from the
same analytics as the API; it needs a viewer token unless ``metrics_public`` is set.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Header, HTTPException
from fastapi.responses import Response

from queuelens.api.deps import State
from queuelens.api.schemas import ErrorOut

__all__ = ["router"]

router = APIRouter(tags=["metrics"])


@router.get(
    "/metrics",
    response_class=Response,
    responses={
        200: {
            "description": "Prometheus text format 0.0.4, or OpenMetrics 1.0 when accepted.",
            "content": {
                "text/plain": {"schema": {"type": "string"}},
                "application/openmetrics-text": {"schema": {"type": "string"}},
            },
        },
        503: {"model": ErrorOut, "description": "The storage did not answer."},
    },
)
def metrics(
    state: State, accept: Annotated[str | None, Header(include_in_schema=False)] = None
) -> Response:
    """Metrics of every queue, job, worker and server, built now from storage."""
    try:
        from queuelens.exposition.prometheus import render_metrics
    except ModuleNotFoundError as exc:  # prometheus_client is in the 'server' extra
        raise HTTPException(
            503,
            f"the Prometheus exposition is not available ({exc}); "
            "install it with: pip install 'queuelens[server]'",
        ) from None
    settings = state.settings
    options: dict[str, Any] = {"max_series": settings.metrics_max_series}
    if settings.metrics_buckets:
        options["buckets"] = settings.metrics_buckets
    if settings.metrics_wait_buckets:
        options["wait_buckets"] = settings.metrics_wait_buckets
    body, content_type = render_metrics(state.analytics, accept or "", **options)
    return Response(content=body, media_type=content_type)
