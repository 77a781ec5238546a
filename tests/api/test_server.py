"""``serve``: loopback only without tokens, a real uvicorn run, the pruner for its lifetime."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import cast

import httpx
import pytest
import uvicorn
from fastapi import FastAPI

from queuelens.api import serve
from queuelens.api.deps import ApiState
from queuelens.api.server import build_server, is_loopback
from queuelens.api.tokens import new_token_entry
from queuelens.config import ConfigError
from queuelens.storage import open_storage
from tests.api.conftest import TOTAL, make_settings, seed, settings_file


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.8.9.10", True),
        ("localhost", True),
        ("::1", True),
        ("[::1]", True),
        ("0.0.0.0", False),
        ("::", False),
        ("192.0.2.7", False),
        ("ops.example.com", False),
    ],
)
def test_is_loopback(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_without_tokens_only_loopback_is_served(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, storage_url=f"sqlite:///{tmp_path / 'q.db'}")
    with pytest.raises(ConfigError) as info:
        build_server(settings, host="0.0.0.0", toml_path=settings_file(tmp_path))
    assert str(info.value) == (
        "refusing to serve on '0.0.0.0': no api_tokens are configured, so anyone who can reach "
        "the port could read every figure; bind to 127.0.0.1, or add a token (python -m "
        "queuelens.api.tokens viewer) to QUEUELENS_API_TOKENS"
    )
    server = build_server(settings, toml_path=settings_file(tmp_path))
    assert (server.config.host, server.config.port) == ("127.0.0.1", 8000)
    with pytest.raises(ConfigError, match="port 70000 is not a TCP port"):
        build_server(settings, port=70000, toml_path=settings_file(tmp_path))


def test_with_a_token_any_address_may_be_served(tmp_path: Path) -> None:
    settings = make_settings(
        tmp_path,
        storage_url=f"sqlite:///{tmp_path / 'q.db'}",
        api_tokens=[new_token_entry("viewer")[1]],
    )
    server = build_server(settings, host="0.0.0.0", port=9100, toml_path=settings_file(tmp_path))
    assert (server.config.host, server.config.port) == ("0.0.0.0", 9100)


def test_serve_says_where_and_why(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    ran: list[str] = []
    monkeypatch.setattr(uvicorn.Server, "run", lambda self, sockets=None: ran.append("run"))
    settings = make_settings(tmp_path, storage_url=f"sqlite:///{tmp_path / 'q.db'}")
    serve(settings, port=8123, toml_path=settings_file(tmp_path))
    assert ran == ["run"]
    assert (
        "serving on http://127.0.0.1:8123 to this machine only: no api_tokens are configured"
        in caplog.text
    )


class Collector(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def wait_for(condition: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 30
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"{what} did not happen within 30 s")
        time.sleep(0.02)


def test_a_real_server_answers_prunes_and_stops(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'q.db'}"
    storage = open_storage(url)
    seed(storage)
    storage.close()
    token, entry = new_token_entry("viewer")
    settings = make_settings(tmp_path, storage_url=url, api_tokens=[entry])
    server = build_server(settings, port=0, toml_path=settings_file(tmp_path))
    collector = Collector()
    for name in ("uvicorn.access", "uvicorn.error", "queuelens"):
        logging.getLogger(name).addHandler(collector)
    state: ApiState = cast(FastAPI, server.config.app).state.queuelens
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        wait_for(lambda: server.started, "server start")
        port = server.servers[0].sockets[0].getsockname()[1]
        base = f"http://127.0.0.1:{port}"
        assert httpx.get(f"{base}/healthz").json() == {"status": "ok"}
        assert httpx.get(f"{base}/api/v1/overview").status_code == 401
        answer = httpx.get(f"{base}/api/v1/overview", headers={"Authorization": f"Bearer {token}"})
        assert answer.json()["totals"]["processed"] == TOTAL
        pruner = state.pruner
        assert pruner is not None
        wait_for(lambda: pruner.runs >= 1, "the first prune")
    finally:
        server.should_exit = True
        thread.join(30)
        for name in ("uvicorn.access", "uvicorn.error", "queuelens"):
            logging.getLogger(name).removeHandler(collector)
    assert not thread.is_alive()
    assert state.pruner is None  # stopped on shutdown
    access = [r.getMessage() for r in collector.records if r.name == "uvicorn.access"]
    assert any("/api/v1/overview" in line for line in access)  # the access log was captured
    assert all(token not in r.getMessage() for r in collector.records)
