"""``GET /api/v1/stream``: the overview as server-sent events, one shared producer per window.

    hub = hub_for(state, "1h", app=None)        # one hub per (window, app) and app instance
    async with hub.subscribe() as updates:      # starts the producer for the first client
        async for event, data in updates:       # ("overview", the newest overview as JSON)
            ...
                                                # the last client to leave stops it

However many clients watch one (window, app), the overview is computed once per interval
(in a worker thread, since storage reads block) and the same JSON text goes to each. A
client that falls behind gets the newest overview, never a backlog. When a client
disconnects its subscription is removed; when the last one goes, the producer task is
cancelled and the hub forgotten, so nothing keeps running for nobody. FastAPI's
EventSourceResponse sends a ``: ping`` comment after 15 s without an event.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import AsyncIterator, Callable
from typing import Annotated

from fastapi import APIRouter, Query
from fastapi.sse import EventSourceResponse, ServerSentEvent
from starlette.concurrency import run_in_threadpool

from queuelens.api.convert import overview_out
from queuelens.api.deps import ApiState, State
from queuelens.api.params import AppParam, WindowName
from queuelens.storage.base import StorageError

__all__ = ["OverviewHub", "router"]

log = logging.getLogger("queuelens.api.stream")

router = APIRouter(tags=["stream"])


#: an event's name and its data
Update = tuple[str, str]


class OverviewHub:
    """Computes a payload every ``interval_s`` while anyone listens, and fans it out."""

    def __init__(
        self,
        compute: Callable[[], str],
        *,
        interval_s: float,
        on_idle: Callable[[], None] | None = None,
    ) -> None:
        self.compute = compute
        self.interval_s = interval_s
        #: called when the last subscriber leaves (the owner forgets the hub)
        self.on_idle = on_idle
        self.latest: Update | None = None
        self._subscribers: set[asyncio.Queue[Update]] = set()
        self._task: asyncio.Task[None] | None = None

    @property
    def subscribers(self) -> int:
        return len(self._subscribers)

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()

    @contextlib.asynccontextmanager
    async def subscribe(self) -> AsyncIterator[AsyncIterator[Update]]:
        queue: asyncio.Queue[Update] = asyncio.Queue(maxsize=1)
        if self.latest is not None:
            queue.put_nowait(self.latest)
        self._subscribers.add(queue)
        if self._task is None:
            self._task = asyncio.create_task(self._produce(), name="queuelens-stream")
        try:
            yield _drain(queue)
        finally:
            self._subscribers.discard(queue)
            if not self._subscribers:
                # No await before the hub is forgotten: a client arriving meanwhile finds
                # no hub and makes a new one, instead of joining one that is stopping.
                if self.on_idle is not None:
                    self.on_idle()
                await self.stop()

    async def stop(self) -> None:
        """Cancel the producer (subscribers, if any, get nothing more)."""
        task, self._task = self._task, None
        if task is not None:
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    async def _produce(self) -> None:
        while True:
            try:
                update = ("overview", await run_in_threadpool(self.compute))
            except StorageError as exc:
                log.warning("queuelens: live stream: the storage did not answer: %s", exc)
                update = ("error", json.dumps({"detail": f"the storage did not answer: {exc}"}))
            except Exception:  # a producer that died would leave every client waiting
                log.exception("queuelens: live stream: computing the overview failed")
                update = ("error", json.dumps({"detail": "computing the overview failed"}))
            self.latest = update
            for queue in self._subscribers:
                if queue.full():  # a slow client gets the newest overview, not a backlog
                    queue.get_nowait()
                queue.put_nowait(update)
            await asyncio.sleep(self.interval_s)


async def _drain(queue: asyncio.Queue[Update]) -> AsyncIterator[Update]:
    while True:
        yield await queue.get()


def hub_for(state: ApiState, window: str, app: str | None) -> OverviewHub:
    """The one hub of ``(window, app)`` in this app, made on first use."""
    key = (window, app)
    hub = state.hubs.get(key)
    if hub is None:
        analytics = state.analytics

        def compute() -> str:
            overview = analytics.overview(analytics.window(window), app)
            return overview_out(overview).model_dump_json()

        def forget() -> None:
            state.hubs.pop(key, None)

        hub = OverviewHub(compute, interval_s=state.settings.stream_interval_s, on_idle=forget)
        state.hubs[key] = hub
    return hub


@router.get("/stream", response_class=EventSourceResponse)
async def stream(
    state: State,
    window: Annotated[WindowName, Query(description="The overview's window.")] = "1h",
    app: AppParam = None,
) -> AsyncIterator[ServerSentEvent]:
    """The overview (as ``GET /api/v1/overview`` answers it) as an ``overview`` event every
    ``stream_interval`` seconds; an ``error`` event when the storage did not answer."""
    # after a dropped connection, browsers retry after one interval
    retry_ms: int | None = int(state.settings.stream_interval_s * 1000)
    async with hub_for(state, window, app).subscribe() as updates:
        async for event, data in updates:
            yield ServerSentEvent(raw_data=data, event=event, retry=retry_ms)
            retry_ms = None
