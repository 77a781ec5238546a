"""The live stream: overview events, one producer shared by all clients, nothing left after.

The app is driven at the ASGI level so a test can read one event and then disconnect the way
a server reports a closed connection (``http.disconnect``).
"""

from __future__ import annotations

import itertools
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import pytest
from fastapi import FastAPI
from starlette.types import Message, Scope

from queuelens.api import create_app
from queuelens.api.deps import ApiState
from queuelens.api.stream import OverviewHub, hub_for
from queuelens.storage import Storage, open_storage
from tests.api.conftest import TOTAL, make_settings, settings_file

pytestmark = pytest.mark.anyio


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"  # the hub's producer is an asyncio task


@dataclass
class Connection:
    """One SSE client: what the app sent, and a switch to hang up."""

    messages: list[Message] = field(default_factory=list)
    hang_up: anyio.Event = field(default_factory=anyio.Event)
    got_event: anyio.Event = field(default_factory=anyio.Event)

    def events(self) -> list[dict[str, str]]:
        body = b"".join(
            m.get("body", b"") for m in self.messages if m["type"] == "http.response.body"
        )
        out = []
        for block in body.decode().split("\n\n"):
            fields = dict(line.split(": ", 1) for line in block.splitlines() if ": " in line)
            if "event" in fields:
                out.append(fields)
        return out


@asynccontextmanager
async def connected(app: FastAPI, query: bytes = b"window=1h") -> AsyncIterator[Connection]:
    """Open the stream, wait for its first event, hang up on leaving; the app has returned
    when this exits."""
    connection = Connection()
    requested = False

    async def receive() -> Message:
        nonlocal requested
        if not requested:
            requested = True
            return {"type": "http.request", "body": b"", "more_body": False}
        await connection.hang_up.wait()
        return {"type": "http.disconnect"}

    async def send(message: Message) -> None:
        connection.messages.append(message)
        if b"event: " in message.get("body", b""):
            connection.got_event.set()

    scope: Scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/v1/stream",
        "raw_path": b"/api/v1/stream",
        "root_path": "",
        "query_string": query,
        "headers": [(b"host", b"testserver")],
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }

    async def serve() -> None:
        await app(scope, receive, send)

    async with anyio.create_task_group() as group:
        group.start_soon(serve)
        with anyio.fail_after(30):  # a hang is a failure, not a stuck suite
            await connection.got_event.wait()
        try:
            yield connection
        finally:
            connection.hang_up.set()


def stream_app(storage: Storage, tmp_path: Path, interval: str = "1h") -> FastAPI:
    settings = make_settings(tmp_path, stream_interval=interval, rate_limit_ip_per_min=0)
    return create_app(settings, storage=storage, toml_path=settings_file(tmp_path))


async def test_an_event_is_the_overview_and_a_disconnect_leaves_nothing(
    storage: Storage, tmp_path: Path
) -> None:
    app = stream_app(storage, tmp_path)
    state: ApiState = app.state.queuelens
    async with connected(app) as connection:
        (hub,) = state.hubs.values()
        assert (hub.subscribers, hub.running) == (1, True)
        start = connection.messages[0]
        assert start["status"] == 200
        headers = dict(start["headers"])
        assert headers[b"content-type"].startswith(b"text/event-stream")
        (event,) = connection.events()
        assert event["event"] == "overview"
        assert event["retry"] == str(3600 * 1000)
        overview = json.loads(event["data"])
        assert overview["totals"]["processed"] == TOTAL
        assert overview["window"]["label"] == "1h"
        assert {q["queue"] for q in overview["queues"]} >= {"emails", "a:b/c"}
    assert state.hubs == {}
    assert (hub.subscribers, hub.running) == (0, False)


async def test_clients_of_one_window_share_one_producer(storage: Storage, tmp_path: Path) -> None:
    app = stream_app(storage, tmp_path)
    state: ApiState = app.state.queuelens
    hub = hub_for(state, "1h", None)
    computed: list[str] = []
    compute = hub.compute

    def counted() -> str:
        computed.append("once")
        return compute()

    hub.compute = counted
    async with connected(app) as first, connected(app) as second:
        assert state.hubs == {("1h", None): hub}
        assert hub.subscribers == 2
        assert first.events()[0]["data"] == second.events()[0]["data"]
        async with connected(app, b"window=6h&app=shop") as other:
            assert len(state.hubs) == 2
            assert json.loads(other.events()[0]["data"])["totals"]["processed"] == 4
        assert len(state.hubs) == 1  # the 6h hub went with its only client
    assert computed == ["once"]  # the second client got the first one's overview
    assert state.hubs == {}
    assert not hub.running


async def test_each_interval_brings_a_new_overview(storage: Storage, tmp_path: Path) -> None:
    app = stream_app(storage, tmp_path, interval="0.01s")
    async with connected(app) as connection:
        while len(connection.events()) < 3:
            await anyio.sleep(0.01)
    assert all(e["event"] == "overview" for e in connection.events())
    assert app.state.queuelens.hubs == {}


async def test_an_unreachable_storage_is_an_error_event(tmp_path: Path) -> None:
    storage = open_storage("redis://127.0.0.1:1/0")
    try:
        async with connected(stream_app(storage, tmp_path)) as connection:
            (event,) = connection.events()
    finally:
        storage.close()
    assert event["event"] == "error"
    assert json.loads(event["data"])["detail"].startswith("the storage did not answer: ")


async def test_a_slow_client_gets_the_newest_update_only() -> None:
    counter = itertools.count(1)
    hub = OverviewHub(lambda: str(next(counter)), interval_s=0.0)
    async with hub.subscribe() as updates:
        while hub.latest is None or int(hub.latest[1]) < 3:
            await anyio.sleep(0.001)
        event, data = await updates.__anext__()
    assert event == "overview"
    assert int(data) >= 3  # not 1: a client that did not read keeps the newest update only
    assert not hub.running
