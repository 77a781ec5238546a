"""Liveness and readiness, for load balancers and orchestrators; no token, no rate limit.

    GET /healthz    200 {"status": "ok"} while the process serves requests
    GET /readyz     200 when the storage answers, 503 when not; with the age of the newest
                    flush of job outcomes and of the newest worker heartbeat

The answers say nothing about the storage beyond reachable or not (details go to the log):
probes are unauthenticated.
"""

from __future__ import annotations

import logging
import time

from fastapi import APIRouter
from fastapi.responses import JSONResponse

from queuelens.api.deps import State
from queuelens.api.schemas import HealthzOut, ReadyzOut
from queuelens.storage.base import StorageError

__all__ = ["router"]

log = logging.getLogger("queuelens.api")

router = APIRouter(tags=["health"])


@router.get("/healthz")
def healthz() -> HealthzOut:
    """The process is alive and serving."""
    return HealthzOut(status="ok")


@router.get(
    "/readyz",
    response_model=ReadyzOut,
    responses={503: {"model": ReadyzOut, "description": "The storage did not answer."}},
)
def readyz(state: State) -> JSONResponse:
    """Ready when the storage answers; how fresh the newest flush and heartbeat are."""
    storage = state.storage
    try:
        storage.ping()
        flushes = [q.last_seen for q in storage.list_queues()]
        beats = [w.last_heartbeat_at for w in storage.list_workers()]
    except StorageError as exc:
        log.warning("queuelens: readiness check failed: %s", exc)
        body = ReadyzOut(
            status="unavailable", storage_reachable=False, detail="the storage did not answer"
        )
        return JSONResponse(body.model_dump(), status_code=503)
    now = time.time()
    newest_flush = max(flushes, default=None)
    newest_beat = max(beats, default=None)
    body = ReadyzOut(
        status="ready",
        storage_reachable=True,
        newest_flush_at=newest_flush,
        newest_flush_age_s=None if newest_flush is None else max(0.0, now - newest_flush),
        newest_heartbeat_at=newest_beat,
        newest_heartbeat_age_s=None if newest_beat is None else max(0.0, now - newest_beat),
    )
    return JSONResponse(body.model_dump(), status_code=200)
