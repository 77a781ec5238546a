"""Probe configuration: every bad [[probes]] entry gets a clear error."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuelens.config import ConfigError
from queuelens.probes import ProbeConfig, ProbeError, build_probe
from queuelens.probes.runner import probe_configs, probe_configs_from_toml


def test_reads_probe_tables(tmp_path: Path) -> None:
    toml = tmp_path / "queuelens.toml"
    toml.write_text(
        'app = "shop"\n'
        "[[probes]]\n"
        'framework = "rq"\n'
        'broker_url = "redis://localhost:6379/0"\n'
        'queues = ["default", "emails.high"]\n'
        "[[probes]]\n"
        'framework = "celery"\n'
        'broker_url = "amqp://guest:guest@localhost:5672//"\n'
        'app = "billing"\n'
        "[probes.options]\n"
        'global_keyprefix = "prod:"\n'
    )
    configs = probe_configs_from_toml(toml, default_app="shop")
    assert configs == [
        ProbeConfig("rq", "redis://localhost:6379/0", "shop", ["default", "emails.high"]),
        ProbeConfig(
            "celery",
            "amqp://guest:guest@localhost:5672//",
            "billing",
            [],
            {"global_keyprefix": "prod:"},
        ),
    ]


@pytest.mark.parametrize(
    ("entries", "message"),
    [
        ({"framework": "rq"}, "array of tables"),
        (["rq"], "must be a table"),
        ([{"framework": "kafka", "broker_url": "x://y"}], "framework 'kafka' is not one of"),
        ([{"framework": "rq", "broker_url": "localhost"}], "is not a URL"),
        ([{"framework": "rq", "broker_url": "redis://h", "queues": "q"}], "list of names"),
        ([{"framework": "rq", "broker_url": "redis://h", "options": 3}], "options must be"),
        ([{"framework": "rq", "broker_url": "redis://h", "app": ""}], "non-empty"),
        ([{"framework": "rq", "broker_url": "redis://h", "colour": 1}], "unknown key(s) colour"),
    ],
)
def test_bad_entries(entries: object, message: str) -> None:
    with pytest.raises(ConfigError) as info:
        probe_configs(entries, where="queuelens.toml")
    assert message in str(info.value)


def test_unreadable_files(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        probe_configs_from_toml(tmp_path / "missing.toml")
    broken = tmp_path / "broken.toml"
    broken.write_text("[[probes]\n")
    with pytest.raises(ConfigError, match="cannot read"):
        probe_configs_from_toml(broken)


def test_unknown_framework_is_refused_by_build_probe() -> None:
    with pytest.raises(ProbeError, match="unknown probe framework 'kafka'"):
        build_probe(ProbeConfig("kafka", "kafka://localhost"))
