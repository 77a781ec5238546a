"""probe and celery-events: flags, configuration from queuelens.toml, one-line errors."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import pytest

from tests.cli.conftest import CLI
from tests.conftest import require_service

BROKER = "redis://127.0.0.1:6379/0"


@pytest.fixture
def queue_name() -> str:
    require_service("redis")
    return f"ql_cli_{uuid.uuid4().hex[:10]}"  # an rq queue nobody else uses: empty


def test_probe_once_stores_the_depth(cli: CLI, queue_name: str, tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'probed.db'}"

    result = cli(
        "probe", "--once", "--framework", "rq", "--broker", BROKER, "--queue", queue_name,
        "--storage", url,
    )  # fmt: skip

    assert result.code == 0, result.err
    header, row = result.out.splitlines()[:2]
    assert header.split()[:3] == ["app", "queue", "pending"]
    assert row.split()[:3] == ["default", queue_name[:24], "0.0"]
    (queue,) = json.loads(cli("queues", "--json", "--storage", url).out)
    assert (queue["queue"], queue["depth"]["pending"]) == (queue_name, 0.0)


def test_probe_reads_probes_tables(cli: CLI, queue_name: str, tmp_path: Path) -> None:
    config = tmp_path / "probes.toml"
    config.write_text(
        f'app = "billing"\n\n[[probes]]\nframework = "rq"\nbroker_url = "{BROKER}"\n'
        f'queues = ["{queue_name}"]\n',
        encoding="utf-8",
    )
    url = f"sqlite:///{tmp_path / 'probed.db'}"

    result = cli("--config", str(config), "probe", "--once", "--storage", url)

    assert result.code == 0, result.err
    assert f"billing      {queue_name}" in result.out


def test_probe_once_exits_1_when_a_broker_is_down(cli: CLI, tmp_path: Path) -> None:
    result = cli(
        "probe", "--once", "--framework", "rq", "--broker", "redis://127.0.0.1:1/0",
        "--queue", "emails", "--storage", f"sqlite:///{tmp_path / 'p.db'}",
    )  # fmt: skip

    assert result.code == 1


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--interval", "soon"], "--interval 'soon' is invalid"),
        (["--framework", "rq"], "--framework and --broker go together"),
        ([], "no probes configured: pass --framework and --broker"),
        (["--framework", "nope", "--broker", BROKER], "unknown probe framework 'nope'"),
    ],
)
def test_probe_misconfigured_is_one_line(cli: CLI, args: list[str], message: str) -> None:
    result = cli("probe", "--once", *args)

    assert result.code == 2
    assert result.err.startswith("queuelens: error: ")
    assert message in result.err
    assert len(result.err.strip().splitlines()) == 1


def test_probe_config_without_probes(cli: CLI, tmp_path: Path) -> None:
    config = tmp_path / "queuelens.toml"
    config.write_text('app = "billing"\n', encoding="utf-8")

    result = cli("--config", str(config), "probe", "--once")

    assert result.code == 2
    assert "has no [[probes]] tables" in result.err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "needs exactly one of -A/--app and --broker"),
        (["-A", "proj", "--broker", BROKER], "needs exactly one of -A/--app and --broker"),
        (["--broker", BROKER, "--seconds", "0"], "--seconds 0 must be positive"),
        (["--broker", "foo://x", "--seconds", "1"], "cannot consume Celery events"),
    ],
)
def test_celery_events_errors_are_one_line(
    cli: CLI, args: list[str], message: str, tmp_path: Path
) -> None:
    result = cli("celery-events", *args, "--storage", f"sqlite:///{tmp_path / 'e.db'}")

    assert result.code == 2
    assert message in result.err
    assert "Traceback" not in result.err
    assert result.err.strip().splitlines()[-1].startswith("queuelens: error: ")
