"""The examples of docs/embedding.md: mounted in FastAPI and Starlette, and behind a path
dispatcher in front of another ASGI app (Django's, in the docs; a tiny stand-in here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.responses import PlainTextResponse
from starlette.routing import Mount, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from queuelens.api import create_app
from queuelens.api.deps import ApiState
from queuelens.storage import Storage
from tests.api.conftest import TOTAL, Client, make_settings, settings_file


def test_mounted_in_fastapi(app: FastAPI) -> None:
    host = FastAPI()

    @host.get("/")
    def home() -> dict[str, str]:
        return {"app": "host"}

    host.mount("/queuelens", app)
    client = Client(host)
    assert client.get("/").json() == {"app": "host"}
    overview = client.get("/queuelens/api/v1/overview").json()
    assert overview["totals"]["processed"] == TOTAL
    assert client.get("/queuelens/api/v1/queues/a%3Ab%2Fc").json()["processed"] == 7
    assert client.get("/queuelens/healthz").json() == {"status": "ok"}
    spec = client.get("/queuelens/openapi.json").json()
    assert "/api/v1/overview" in spec["paths"]
    assert client.get("/api/v1/overview").status_code == 404  # only under the prefix


def test_mounted_in_starlette(app: FastAPI) -> None:
    async def home(request: Any) -> PlainTextResponse:
        return PlainTextResponse("host")

    host = Starlette(routes=[Route("/", home), Mount("/ops/queuelens", app)])
    client = Client(host)
    assert client.get("/").text == "host"
    assert (
        client.get("/ops/queuelens/api/v1/jobs", params={"queue": "a:b/c"}).json()[0]["job"]
        == "größe"
    )


def dispatcher(prefix: str, queuelens: ASGIApp, other: ASGIApp) -> ASGIApp:
    """The dispatcher of docs/embedding.md ("Django (ASGI)"), as printed there."""

    async def application(scope: Scope, receive: Receive, send: Send) -> None:
        path = scope.get("path", "")
        if scope["type"] == "lifespan":
            await queuelens(scope, receive, send)  # Django's ASGI handler has no lifespan
        elif path == prefix or path.startswith(prefix + "/"):
            await queuelens(
                {**scope, "root_path": scope.get("root_path", "") + prefix}, receive, send
            )
        else:
            await other(scope, receive, send)

    return application


async def django_stand_in(scope: Scope, receive: Receive, send: Send) -> None:
    """What Django's get_asgi_application() is to the dispatcher: another ASGI app."""
    await PlainTextResponse(f"django saw {scope['path']}")(scope, receive, send)


def test_behind_a_path_dispatcher_next_to_django(app: FastAPI) -> None:
    client = Client(dispatcher("/queuelens", app, django_stand_in))
    assert client.get("/admin/").text == "django saw /admin/"
    assert client.get("/queuelensx").text == "django saw /queuelensx"
    assert client.get("/queuelens/api/v1/overview").json()["totals"]["processed"] == TOTAL
    assert client.get("/queuelens/api/v1/jobs/x%20y").json()["processed"] == 3
    docs = client.get("/queuelens/openapi.json").json()
    assert docs["servers"] == [{"url": "/queuelens"}]  # links in /docs work under the prefix


def test_the_dispatcher_forwards_lifespan_so_the_pruner_runs(
    storage: Storage, tmp_path: Path
) -> None:
    settings = make_settings(tmp_path)
    app = create_app(settings, storage=storage, toml_path=settings_file(tmp_path), run_pruner=True)
    state: ApiState = app.state.queuelens
    application = dispatcher("/queuelens", app, django_stand_in)
    seen: list[str] = []

    async def run() -> None:
        inbox = [{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}]
        started = anyio.Event()

        async def receive() -> Message:
            if len(inbox) == 1:
                await started.wait()
                seen.append("pruner running" if state.pruner is not None else "no pruner")
            return inbox.pop(0)

        async def send(message: Message) -> None:
            seen.append(message["type"])
            if message["type"] == "lifespan.startup.complete":
                started.set()

        await application({"type": "lifespan", "asgi": {"version": "3.0"}}, receive, send)

    anyio.run(run)
    assert seen == [
        "lifespan.startup.complete",
        "pruner running",
        "lifespan.shutdown.complete",
    ]
    assert state.pruner is None
