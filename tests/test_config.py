"""Settings: defaults, precedence, and one clear line for every kind of bad input."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuelens.config import ConfigError, load_settings, load_table, parse_duration


def test_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.storage_url == "sqlite:///queuelens.db"
    assert settings.app == "default"
    assert settings.flush_interval_s == 1.0
    assert settings.heartbeat_interval_s == 5.0
    assert settings.histogram_accuracy == 0.01
    assert settings.retention.minute_s == 2 * 86400
    assert settings.retention.hour_s == 35 * 86400
    assert settings.retention.day_s == 400 * 86400


def test_precedence_overrides_env_toml(tmp_path: Path) -> None:
    toml = tmp_path / "queuelens.toml"
    toml.write_text(
        'app = "from-toml"\nflush_interval = "2s"\nretention_minute = "3d"\n'
        "[alerts]\nsomething = 1\n"
    )
    settings = load_settings(toml, env={"QUEUELENS_APP": "from-env", "QUEUELENS_OTHER": "x"})
    assert settings.app == "from-env"
    assert settings.flush_interval_s == 2.0
    assert settings.retention_minute_s == 3 * 86400
    assert load_settings(toml, env={}, app="explicit").app == "explicit"


def test_toml_found_through_env_and_cwd(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "queuelens.toml").write_text('app = "cwd"\n')
    other = tmp_path / "other.toml"
    other.write_text('app = "pointed"\n')
    monkeypatch.chdir(tmp_path)
    assert load_settings(env={}).app == "cwd"
    assert load_settings(env={"QUEUELENS_CONFIG": str(other)}).app == "pointed"


def test_process_environment_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("QUEUELENS_HEARTBEAT_INTERVAL", "10s")
    assert load_settings().heartbeat_interval_s == 10.0


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"QUEUELENS_STORAGE_URL": "redis:/x"},
            "QUEUELENS_STORAGE_URL 'redis:/x' is invalid (not a URL)",
        ),
        ({"QUEUELENS_STORAGE_URL": "ftp://host/x"}, "unknown scheme 'ftp'"),
        ({"QUEUELENS_STORAGE_URL": "postgresql://h:99999/db"}, "Port out of range"),
        ({"QUEUELENS_STORAGE_URL": "postgresql:///db"}, "missing a host name"),
        ({"QUEUELENS_STORAGE_URL": "redis://localhost/abc"}, "is not a number"),
        ({"QUEUELENS_STORAGE_URL": "sqlite://relative.db"}, "three slashes"),
        (
            {"QUEUELENS_FLUSH_INTERVAL": "-1"},
            "QUEUELENS_FLUSH_INTERVAL '-1' is invalid (a positive duration)",
        ),
        ({"QUEUELENS_HEARTBEAT_INTERVAL": "soon"}, "a duration such as"),
        ({"QUEUELENS_RETENTION_DAY": "0d"}, "a positive duration"),
        ({"QUEUELENS_HISTOGRAM_ACCURACY": "0.5"}, "between 0.0005 and 0.1"),
        ({"QUEUELENS_HISTOGRAM_ACCURACY": "-0.01"}, "between 0.0005 and 0.1"),
        ({"QUEUELENS_HISTOGRAM_ACCURACY": "one"}, "QUEUELENS_HISTOGRAM_ACCURACY 'one'"),
        ({"QUEUELENS_MAX_JOBS_PER_QUEUE": "0"}, "QUEUELENS_MAX_JOBS_PER_QUEUE '0'"),
        ({"QUEUELENS_APP": ""}, "QUEUELENS_APP ''"),
    ],
)
def test_bad_values_give_one_clear_line(
    env: dict[str, str], expected: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(env=env)
    message = str(info.value)
    assert expected in message
    assert "\n" not in message
    assert "expected e.g." in message


def test_password_is_not_echoed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as info:
        load_settings(env={"QUEUELENS_STORAGE_URL": "postgresql://bob:s3cret@h:99999/db"})
    assert "s3cret" not in str(info.value)
    assert "bob:***@" in str(info.value)


def test_unreadable_toml(tmp_path: Path) -> None:
    broken = tmp_path / "queuelens.toml"
    broken.write_text('storage_url = "sqlite:///x.db\n')
    with pytest.raises(ConfigError, match="is not valid TOML") as info:
        load_settings(broken, env={})
    assert str(broken) in str(info.value)
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.toml", env={})
    binary = tmp_path / "binary.toml"
    binary.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(binary, env={})
    folder = tmp_path / "folder.toml"
    folder.mkdir()
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings(folder, env={})


def test_toml_bad_and_unknown_keys(tmp_path: Path) -> None:
    toml = tmp_path / "queuelens.toml"
    toml.write_text("flush_interval = -3\n")
    with pytest.raises(ConfigError) as info:
        load_settings(toml, env={})
    assert f"flush_interval in '{toml}' -3 is invalid" in str(info.value)
    toml.write_text('storage_ulr = "sqlite:///x.db"\n')
    with pytest.raises(ConfigError, match="unknown setting 'storage_ulr'"):
        load_settings(toml, env={})


def test_unknown_keyword_override(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError, match="unknown setting 'colour'"):
        load_settings(env={}, colour="blue")


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        (5, 5.0),
        (2.5, 2.5),
        ("90s", 90.0),
        ("15m", 900.0),
        ("12h", 43200.0),
        ("2d", 172800.0),
        ("1w", 604800.0),
        (" 3 ", 3.0),
        ("0.5s", 0.5),
    ],
)
def test_parse_duration(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("bad", [True, "", "5y", "-2s", 0, None, [1]])
def test_parse_duration_rejects(bad: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(bad)


def test_load_table_reads_feature_tables(tmp_path: Path) -> None:
    path = tmp_path / "queuelens.toml"
    path.write_text('app = "x"\n[capacity]\nprice_per_cpu_hour = 0.04\n')
    assert load_table("capacity", path, env={}) == {"price_per_cpu_hour": 0.04}
    assert load_table("alerts", path, env={}) is None
    path.write_text("health = 5\n")
    with pytest.raises(ConfigError, match="unknown setting 'health'"):
        load_table("health", path, env={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_table("health", None, env={"QUEUELENS_CONFIG": str(tmp_path / "none.toml")})


def test_load_table_without_a_settings_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_table("health", env={}) is None
