"""``create_app``: the one ASGI application behind ``queuelens serve`` and every embedding.

    app = create_app(load_settings())                    # opens storage_url itself
    app = create_app(settings, storage=my_storage)       # or reads a storage you own
    host_app.mount("/queuelens", app)                    # see docs/embedding.md

Routes (docs/api.md): ``/api/v1/...`` JSON with an OpenAPI document at ``/openapi.json``,
``/api/v1/stream`` server-sent events, ``/metrics``, ``/healthz`` and ``/readyz``. Every
``/api/v1`` route needs a token of the role it names (docs/security.md) when tokens are
configured; with none, access is anonymous, for loopback use only.

A mounted app does not get lifespan events from its host, so nothing here depends on them:
the storage is opened at creation. On shutdown (when lifespan runs) the app stops its live
streams and the pruner, and closes the storage if it opened it.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import APIRouter, Depends, FastAPI
from fastapi.middleware.cors import CORSMiddleware
from starlette.concurrency import run_in_threadpool

from queuelens import __version__
from queuelens.analytics import open_analytics
from queuelens.analytics.housekeeping import Pruner
from queuelens.api import stream
from queuelens.api.deps import ApiState
from queuelens.api.errors import UNAVAILABLE, VALIDATION, as_json, install_error_handlers
from queuelens.api.headers import SecurityHeaders
from queuelens.api.params import strict_query
from queuelens.api.routes import admin, details, export, figures, health, insights, metrics
from queuelens.api.schemas import ErrorOut
from queuelens.api.security import Guard, Role
from queuelens.config import Settings, load_settings
from queuelens.storage import Storage, open_storage

__all__ = ["create_app"]

log = logging.getLogger("queuelens.api")

API_PREFIX = "/api/v1"


def create_app(
    settings: Settings | None = None,
    *,
    storage: Storage | None = None,
    toml_path: str | Path | None = None,
    run_pruner: bool = False,
) -> FastAPI:
    """The queuelens ASGI app over ``storage`` (or ``settings.storage_url``).

    ``toml_path`` names the ``queuelens.toml`` read for settings (when ``settings`` is None)
    and for the ``[health]`` and ``[capacity]`` tables. ``run_pruner`` deletes data past its
    retention every ``prune_interval`` while the app runs (``serve`` sets it).
    """
    if settings is None:
        settings = load_settings(toml_path)
    owns_storage = storage is None
    if storage is None:
        storage = open_storage(
            settings.storage_url,
            relative_accuracy=settings.histogram_accuracy,
            retention=settings.retention,
        )
    try:
        analytics, insights_ = open_analytics(storage, settings, toml_path)
    except Exception:  # a bad [health] or [capacity] table: do not leak what we opened
        if owns_storage:
            storage.close()
        raise
    guard = Guard.from_settings(settings)
    state = ApiState(
        settings, storage, analytics, insights_, guard, owns_storage, run_pruner=run_pruner
    )
    if guard.anonymous:
        log.warning(
            "queuelens: no api_tokens configured: the API answers anyone who can reach it; "
            "keep it on a loopback address (see docs/security.md)"
        )

    app = FastAPI(
        title="queuelens",
        version=__version__,
        summary="Queue, job, worker and server metrics for Python task queues.",
        lifespan=_lifespan,
        redoc_url=None,
    )
    app.state.queuelens = state
    install_error_handlers(app)

    def include(router: APIRouter, role: Role | None, prefix: str = API_PREFIX) -> None:
        responses = {**VALIDATION, **UNAVAILABLE, **_guard_responses(guard, role)}
        app.include_router(
            router,
            prefix=prefix,
            dependencies=[*guard.dependencies(role), Depends(strict_query)],
            # the stream's own answers are events; its errors are JSON like everyone's
            responses=as_json(responses) if router is stream.router else responses,
        )

    for router in (figures.router, details.router, insights.router, stream.router):
        include(router, Role.viewer)
    include(export.router, Role.operator)
    include(admin.router, Role.admin)
    include(metrics.router, None if settings.metrics_public else Role.viewer, prefix="")
    app.include_router(health.router)

    if settings.cors_origins:
        app.add_middleware(
            CORSMiddleware,
            allow_origins=list(settings.cors_origins),
            allow_methods=["GET", "POST"],
            allow_headers=["Authorization"],
            allow_credentials=False,  # tokens travel in a header, never in cookies
            max_age=600,
        )
    app.add_middleware(SecurityHeaders)
    return app


def _guard_responses(guard: Guard, role: Role | None) -> dict[int | str, dict[str, object]]:
    """The OpenAPI answers the guard may give: 401 and 403 with tokens, 429 with limits."""
    out: dict[int | str, dict[str, object]] = {}
    if role is not None and not guard.anonymous:
        challenge = {"WWW-Authenticate": {"schema": {"type": "string"}}}
        out[401] = {"model": ErrorOut, "description": "No token, or an unknown one."}
        out[403] = {"model": ErrorOut, "description": f"The token's role is below {role}."}
        for answer in (out[401], out[403]):
            answer["headers"] = challenge
    per_token = guard.token_limiter is not None and role is not None and not guard.anonymous
    if guard.ip_limiter is not None or per_token:
        out[429] = {
            "model": ErrorOut,
            "description": "Over the rate limit.",
            "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Seconds."}},
        }
    return out


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    state: ApiState = app.state.queuelens
    if state.run_pruner:
        state.pruner = Pruner(state.storage, interval_s=state.settings.prune_interval_s)
        state.pruner.start()
    try:
        yield
    finally:
        for hub in list(state.hubs.values()):
            await hub.stop()
        if state.pruner is not None:
            await run_in_threadpool(state.pruner.stop)  # joins its thread
            state.pruner = None
        if state.owns_storage:
            state.storage.close()
