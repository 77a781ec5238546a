"""`queuelens alerts`: rules in force, their Prometheus export, and a real test delivery."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import ClassVar

import pytest

from queuelens.cli import main


def run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = main(argv)
    out, err = capsys.readouterr()
    return code, out, err


def test_rules_lists_defaults_changed_by_the_settings_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text('[[rules]]\nname = "long_wait"\nenabled = false\n')
    code, out, _ = run(["--config", str(config), "alerts", "rules", "--json"], capsys)
    assert code == 0
    rules = {rule["name"]: rule for rule in json.loads(out)}
    assert rules["long_wait"]["enabled"] is False
    assert rules["failure_rate_warning"]["threshold"] == 0.1
    code, out, _ = run(["--config", str(config), "alerts", "rules"], capsys)
    assert "failure_rate_critical" in out


def test_export_prometheus_to_a_file_that_promtool_accepts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text("")
    target = tmp_path / "rules.yml"
    code, _, err = run(
        ["--config", str(config), "alerts", "export-prometheus", "-o", str(target)], capsys
    )
    assert code == 0, err
    assert 'alert: "failure_rate_warning"' in target.read_text()
    promtool = shutil.which("promtool")
    if promtool is not None:
        checked = subprocess.run(
            [promtool, "check", "rules", str(target)], capture_output=True, text=True
        )
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_bad_rules_file_and_unknown_receiver_are_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text('[receivers.ops]\ntype = "webhook"\nurl = "http://127.0.0.1:1/hook"\n')
    code, _, err = run(
        ["--config", str(config), "alerts", "rules", "--rules", str(tmp_path / "x.toml")], capsys
    )
    assert (code, err.count("\n")) == (2, 1)
    assert "is not a file" in err
    code, _, err = run(["--config", str(config), "alerts", "test", "oncall"], capsys)
    assert code == 2
    assert "no receiver 'oncall' in [receivers]; known: ops" in err


class _Hook(BaseHTTPRequestHandler):
    received: ClassVar[list[dict[str, object]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        _Hook.received.append(json.loads(body))
        self.send_response(204)
        self.end_headers()

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def hook() -> Iterator[str]:
    server = HTTPServer(("127.0.0.1", 0), _Hook)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/hook"
    finally:
        server.shutdown()
        server.server_close()


def test_test_notification_reaches_a_real_webhook_and_a_down_one_fails(
    tmp_path: Path, hook: str, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text(
        f'[receivers.ops]\ntype = "webhook"\nurl = "{hook}"\n'
        '[receivers.down]\ntype = "webhook"\nurl = "http://127.0.0.1:1/hook"\n'
    )
    _Hook.received.clear()
    code, out, _ = run(["--config", str(config), "alerts", "test", "ops"], capsys)
    assert code == 0
    assert out.startswith("ops: delivered")
    assert len(_Hook.received) == 1
    code, _, err = run(
        ["--config", str(config), "alerts", "test", "down", "--timeout", "5"], capsys
    )
    assert code == 1
    assert "down: FAILED" in err
