"""The command line: help that helps, and one-line errors instead of tracebacks."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from queuelens.cli import main


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "queuelens", *args],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=cwd,
    )


def test_help_lists_commands() -> None:
    result = run("--help")
    assert result.returncode == 0
    for command in ("demo", "migrate", "prune", "settings"):
        assert command in result.stdout


def test_no_command_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "commands" in capsys.readouterr().out


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
