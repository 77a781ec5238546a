"""serve and demo: what they hand to ``queuelens.api.serve``; no server is started here."""

from __future__ import annotations

import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

import queuelens.api
from queuelens.config import Settings
from tests.cli.conftest import CLI


@dataclass
class FakeServe:
    """Stands in for ``queuelens.api.serve`` and records how it was called."""

    calls: list[dict[str, Any]] = field(default_factory=list)
    interrupt: bool = False

    def __call__(
        self, settings: Settings, *, host: str, port: int, toml_path: str | Path | None
    ) -> None:
        self.calls.append({"settings": settings, "host": host, "port": port, "toml": toml_path})
        if self.interrupt:
            raise KeyboardInterrupt


@pytest.fixture
def fake_serve(monkeypatch: pytest.MonkeyPatch) -> FakeServe:
    fake = FakeServe()
    monkeypatch.setattr(queuelens.api, "serve", fake, raising=False)
    return fake


def test_serve_calls_the_api_with_settings_host_port_and_config(
    cli: CLI, fake_serve: FakeServe, tmp_path: Path
) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text('app = "billing"\n', encoding="utf-8")
    url = f"sqlite:///{tmp_path / 'served.db'}"

    result = cli("--config", str(config), "serve", "--port", "9001", "--storage", url)

    assert result.code == 0, result.err
    (call,) = fake_serve.calls
    assert (call["host"], call["port"], call["toml"]) == ("127.0.0.1", 9001, config)
    assert call["settings"].storage_url == url
    assert call["settings"].app == "billing"


def test_serve_defaults_and_ctrl_c(cli: CLI, fake_serve: FakeServe) -> None:
    fake_serve.interrupt = True

    assert cli("serve").code == 0

    (call,) = fake_serve.calls
    assert (call["host"], call["port"], call["toml"]) == ("127.0.0.1", 8000, None)


def test_serve_without_the_server_extra(cli: CLI, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delitem(sys.modules, "queuelens.api.server", raising=False)
    monkeypatch.setitem(sys.modules, "uvicorn", None)

    result = cli("serve")

    assert result.code == 2
    assert result.err.strip() == (
        "queuelens: error: serve needs the Python package 'uvicorn'; install it with: "
        "pip install 'queuelens[server]'"
    )


def test_serve_rejects_a_port_out_of_range(cli: CLI, fake_serve: FakeServe) -> None:
    assert cli("serve", "--port", "70000").code == 2
    assert fake_serve.calls == []


def test_demo_runs_the_workload_then_serves_it(
    cli: CLI, fake_serve: FakeServe, tmp_path: Path
) -> None:
    url = f"sqlite:///{tmp_path / 'demo.db'}"

    result = cli("demo", "--seconds", "0.5", "--port", "8765", "--storage", url)

    assert result.code == 0, result.err
    (call,) = fake_serve.calls
    assert (call["host"], call["port"]) == ("127.0.0.1", 8765)
    assert call["settings"].storage_url == url
    assert "stored == counted:   yes, exactly" in result.out
    assert "open http://127.0.0.1:8765/docs" in result.out


def test_demo_no_serve(cli: CLI, fake_serve: FakeServe, tmp_path: Path) -> None:
    result = cli(
        "demo", "--no-serve", "--seconds", "0.5", "--storage", f"sqlite:///{tmp_path}/d.db"
    )

    assert result.code == 0, result.err
    assert fake_serve.calls == []
    assert "open http" not in result.out
