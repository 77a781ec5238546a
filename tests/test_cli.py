"""The command line: help that helps, and one-line errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import typer

from queuelens import __version__
from queuelens.cli import app, main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queuelens", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


COMMANDS = sorted(typer.main.get_command(app).commands)  # type: ignore[attr-defined]


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "migrate", "prune", "settings", "status", "top", "doctor"):
        assert command in result.stdout


def test_every_command_is_there() -> None:
    assert set(COMMANDS) == {
        "status", "top", "queues", "jobs", "workers", "servers", "export", "serve", "demo",
        "probe", "celery-events", "doctor", "migrate", "prune", "settings", "alerts",
    }  # fmt: skip


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    out = capsys.readouterr().out
    assert "Usage: queuelens" in out
    assert "status" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_help_says_what_and_gives_an_example(
    command: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([command, "--help"]) == 0
    out = capsys.readouterr().out
    assert "Examples" in out
    assert f"queuelens {command}" in out.split("Examples", 1)[1]


def test_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--version"]) == 0
    assert capsys.readouterr().out.strip() == f"queuelens {__version__}"


def test_a_missing_config_file_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--config", str(tmp_path / "nope.toml"), "settings"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("queuelens: error: config file ")
    assert len(err.strip().splitlines()) == 1


def test_a_probe_error_is_one_line(tmp_path: Path) -> None:
    result = run("probe", "--once", "--framework", "nope", "--broker", "redis://x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("queuelens: error: unknown probe framework 'nope'")
    assert len(result.stderr.strip().splitlines()) == 1


def test_bad_setting_is_one_line_without_traceback(tmp_path: Path) -> None:
    result = run("prune", "--storage", "redis:/x", cwd=tmp_path)
    assert result.returncode == 2
    assert result.stderr.startswith("queuelens: error: ")
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


def test_settings_redacts_password(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUEUELENS_STORAGE_URL", "postgresql://bob:hunter2@db/ql")
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "hunter2" not in out
    assert "bob:***@db" in out


def test_settings_hides_token_hashes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    entry = "viewer:sha256:" + "ab" * 32
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUEUELENS_API_TOKENS", entry)
    assert main(["settings"]) == 0
    out = capsys.readouterr().out
    assert "ab" * 32 not in out
    assert "api_tokens = ('viewer:***',)" in out


def test_migrate_and_prune_sqlite(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    assert main(["migrate", "--storage", url]) == 0
    assert "schema at revision" in capsys.readouterr().out
    assert main(["prune", "--storage", url]) == 0
    assert "removed" in capsys.readouterr().out


def test_migrate_redis_needs_nothing(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["migrate", "--storage", "redis://127.0.0.1:6379/0"]) == 0
    assert "needs no migration" in capsys.readouterr().out


def test_unreachable_storage_is_one_line(tmp_path: Path) -> None:
    result = run("prune", "--storage", "postgresql://u:secret@127.0.0.1:1/db", cwd=tmp_path)
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "secret" not in result.stderr
    assert "127.0.0.1:1" in result.stderr


def test_demo_rejects_bad_seconds(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--seconds", "0"]) == 2
    assert "--seconds" in capsys.readouterr().err


@pytest.mark.parametrize("source", [["--broker", "foo://x"], ["-A", "no_such_module_here"]])
def test_celery_events_bad_source_is_one_line(source: list[str], tmp_path: Path) -> None:
    result = run(
        "celery-events",
        *source,
        "--seconds",
        "1",
        "--storage",
        f"sqlite:///{tmp_path / 'e.db'}",
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "cannot consume Celery events" in result.stderr


def test_probe_needs_a_configuration(tmp_path: Path) -> None:
    result = run("probe", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert "no probes configured" in result.stderr
    result = run("probe", "--once", "--framework", "rq", cwd=tmp_path)
    assert "--framework and --broker go together" in result.stderr
