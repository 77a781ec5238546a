"""doctor: every check against real storages, and each failure with its hint."""

from __future__ import annotations

import importlib
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from queuelens.cli import doctor
from queuelens.cli._clock import ClockReading, server_time
from queuelens.cli.doctor import Status, run_checks
from tests.cli.conftest import CLI, Workload


def statuses(cli: CLI, *args: str) -> dict[str, dict[str, Any]]:
    result = cli("doctor", "--json", *args)
    return {check["name"]: {**check, "code": result.code} for check in json.loads(result.out)}


def test_a_healthy_sqlite_storage_is_ok(cli: CLI, workload: Workload) -> None:
    result = cli("doctor", "--storage", workload.url)

    assert result.code == 0, result.out
    lines = result.out.splitlines()
    for name in ("settings", "storage", "migrations", "clock", "integrations", "server"):
        (line,) = [line for line in lines if line.split()[1:2] == [name]]
        assert line.startswith("ok "), line
    assert "schema at revision" in result.out
    assert "celery" in result.out  # the dev install has every framework


def test_an_unreachable_redis_fails_with_a_hint(cli: CLI) -> None:
    result = cli("doctor", "--storage", "redis://127.0.0.1:1/0")

    assert result.code == 1
    lines = result.out.splitlines()
    (failed,) = [line for line in lines if line.startswith("fail")]
    assert failed.split()[1] == "storage"
    assert "127.0.0.1:1" in failed
    hint = lines[lines.index(failed) + 1].strip()
    assert hint.startswith("fix: check that the storage server is running")
    assert [line.split()[0] for line in lines if line.split()[1:2] == ["clock"]] == ["skip"]


def test_a_missing_sqlite_file_is_a_warning_and_is_not_created(cli: CLI, tmp_path: Path) -> None:
    checks = statuses(cli, "--storage", f"sqlite:///{tmp_path / 'later.db'}")

    assert checks["storage"]["status"] == "warn"
    assert "queuelens migrate" in checks["storage"]["hint"]
    assert checks["migrations"]["status"] == "skip"
    assert checks["storage"]["code"] == 0
    assert not (tmp_path / "later.db").exists()


def test_a_bad_setting_fails_and_skips_the_storage(
    cli: CLI, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("QUEUELENS_HISTOGRAM_ACCURACY", "5")

    checks = statuses(cli)

    assert checks["settings"]["status"] == "fail"
    assert "QUEUELENS_HISTOGRAM_ACCURACY" in checks["settings"]["detail"]
    assert checks["settings"]["code"] == 1
    assert {checks[n]["status"] for n in ("storage", "migrations", "clock")} == {"skip"}
    assert checks["integrations"]["status"] == "ok"


def test_a_bad_health_table_fails_the_settings(cli: CLI, tmp_path: Path) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text("[health]\nno_such_threshold = 1\n", encoding="utf-8")

    result = cli("--config", str(config), "doctor", "--json")

    (settings,) = [c for c in json.loads(result.out) if c["name"] == "settings"]
    assert settings["status"] == "fail"
    assert "no_such_threshold" in settings["detail"]


def test_an_unmigrated_postgresql_fails_migrations(cli: CLI, postgres_url: str) -> None:
    checks = statuses(cli, "--storage", postgres_url)

    assert checks["storage"]["status"] == "ok"
    assert checks["migrations"]["status"] == "fail"
    assert "queuelens migrate" in checks["migrations"]["hint"]
    assert checks["clock"]["status"] == "ok"
    assert checks["migrations"]["code"] == 1

    assert cli("migrate", "--storage", postgres_url).code == 0
    assert statuses(cli, "--storage", postgres_url)["migrations"]["status"] == "ok"


def test_a_reachable_redis_is_ok(cli: CLI, redis_url: str) -> None:
    checks = statuses(cli, "--storage", redis_url)

    assert {checks[n]["status"] for n in ("storage", "migrations", "clock")} == {"ok"}
    assert checks["migrations"]["detail"] == "Redis needs no migration"


@pytest.mark.parametrize("fixture", ["workload", "redis_url", "postgres_url"])
def test_server_time_reads_the_storage_clock(fixture: str, request: pytest.FixtureRequest) -> None:
    found = request.getfixturevalue(fixture)
    url = found.url if isinstance(found, Workload) else found

    reading = server_time(url)

    # the same machine: the clocks agree within the round trip
    assert abs(reading.skew_s) <= reading.uncertainty_s + 0.05
    assert abs(reading.local_s - time.time()) < 60
    assert 0 <= reading.round_trip_s < 5


@pytest.mark.parametrize(
    ("skew_s", "status"), [(0.2, Status.ok), (5.0, Status.warn), (-100.0, Status.fail)]
)
def test_clock_skew_thresholds(
    skew_s: float, status: Status, workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    now = time.time()
    monkeypatch.setattr(
        doctor, "server_time", lambda url: ClockReading(now + skew_s, now, round_trip_s=0.002)
    )

    (clock,) = [c for c in run_checks(None, workload.url) if c.name == "clock"]

    assert clock.status is status
    assert ("behind" if skew_s < 0 else "ahead of") in clock.detail
    assert bool(clock.hint) == (status is not Status.ok)
    if status is Status.fail:
        assert "look stale" in clock.detail
        assert "NTP" in clock.hint


def test_integrations_without_any_framework(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("importlib.util.find_spec", lambda name: None)

    check = doctor._integrations()

    assert check.status is Status.warn
    assert "no task queue framework installed" in check.detail
    assert "pip install 'queuelens[celery]'" in check.hint


def test_an_integration_that_fails_to_import(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.import_module

    def import_module(name: str) -> ModuleType:
        if name == "queuelens.integrations.huey":
            raise ImportError("cannot import name 'signals' from 'huey'")
        return real(name)

    monkeypatch.setattr("importlib.import_module", import_module)

    check = doctor._integrations()

    assert check.status is Status.warn
    assert "huey" in check.detail
    assert "cannot import name 'signals'" in check.detail
    assert "celery" in check.detail


def test_server_extra_missing(monkeypatch: pytest.MonkeyPatch) -> None:
    real = doctor._version
    monkeypatch.setattr(doctor, "_version", lambda name: None if name == "uvicorn" else real(name))

    check = doctor._server()

    assert check.status is Status.warn
    assert "uvicorn not installed" in check.detail
    assert check.hint == "pip install 'queuelens[server]'"
