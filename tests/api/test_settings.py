"""The server's settings: tokens, CORS, rate limits, intervals; one clear line when bad."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuelens.api.security import Role
from queuelens.config import TOKEN_ROLES, ConfigError, load_settings

DIGEST = "9F86D081884C7D659A2FEAA0C55AD015A3BF4F1B2B0B822CD15D6C15B0F00A08"


def test_defaults_are_closed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert settings.api_tokens == ()
    assert settings.metrics_public is False
    assert settings.cors_origins == ()
    assert (settings.rate_limit_ip_per_min, settings.rate_limit_token_per_min) == (600, 1200)
    assert settings.rate_limit_burst == 100
    assert (settings.stream_interval_s, settings.prune_interval_s) == (5.0, 3600.0)


def test_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(
        env={
            "QUEUELENS_API_TOKENS": f"viewer:sha256:{DIGEST}, admin:sha256:{'a' * 64}",
            "QUEUELENS_METRICS_PUBLIC": "true",
            "QUEUELENS_CORS_ORIGINS": "https://ops.example.com,http://localhost:3000",
            "QUEUELENS_RATE_LIMIT_IP_PER_MIN": "0",
            "QUEUELENS_STREAM_INTERVAL": "2s",
            "QUEUELENS_PRUNE_INTERVAL": "15m",
        }
    )
    assert settings.api_tokens == (f"viewer:sha256:{DIGEST.lower()}", f"admin:sha256:{'a' * 64}")
    assert settings.metrics_public is True
    assert settings.cors_origins == ("https://ops.example.com", "http://localhost:3000")
    assert settings.rate_limit_ip_per_min == 0
    assert (settings.stream_interval_s, settings.prune_interval_s) == (2.0, 900.0)


def test_from_toml(tmp_path: Path) -> None:
    toml = tmp_path / "queuelens.toml"
    toml.write_text(
        f'api_tokens = ["operator:sha256:{DIGEST}"]\ncors_origins = ["*"]\n'
        'stream_interval = "10s"\nrate_limit_burst = 5\n'
    )
    settings = load_settings(toml, env={})
    assert settings.api_tokens == (f"operator:sha256:{DIGEST.lower()}",)
    assert settings.cors_origins == ("*",)  # a wildcard only when written down
    assert (settings.stream_interval_s, settings.rate_limit_burst) == (10.0, 5)


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        (
            {"QUEUELENS_API_TOKENS": "viewer:my-plain-secret-token"},
            "QUEUELENS_API_TOKENS '<not shown>' is invalid (entry 1 is not "
            "<role>:sha256:<64 hex digits>; put the digest of a token here, never the token)",
        ),
        (
            {"QUEUELENS_API_TOKENS": f"viewer:sha256:{'a' * 64},boss:sha256:{DIGEST}"},
            "(entry 2 has role 'boss'; roles: viewer, operator, admin)",
        ),
        (
            {"QUEUELENS_API_TOKENS": f"viewer:sha256:{DIGEST},admin:sha256:{DIGEST.lower()}"},
            "(entry 2 repeats the digest of an earlier entry)",
        ),
        (
            {"QUEUELENS_CORS_ORIGINS": "https://ops.example.com/"},
            "QUEUELENS_CORS_ORIGINS 'https://ops.example.com/' is invalid "
            "('https://ops.example.com/' is not an origin (scheme://host[:port], no path or "
            "slash)); expected e.g. https://ops.example.com",
        ),
        ({"QUEUELENS_CORS_ORIGINS": "ops.example.com"}, "is not an origin"),
        ({"QUEUELENS_RATE_LIMIT_IP_PER_MIN": "-1"}, "greater than or equal to 0"),
        ({"QUEUELENS_RATE_LIMIT_BURST": "0"}, "QUEUELENS_RATE_LIMIT_BURST '0' is invalid"),
        ({"QUEUELENS_METRICS_PUBLIC": "maybe"}, "QUEUELENS_METRICS_PUBLIC 'maybe' is invalid"),
        ({"QUEUELENS_STREAM_INTERVAL": "0s"}, "a positive duration"),
        ({"QUEUELENS_PRUNE_INTERVAL": "hourly"}, "a duration such as"),
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
    assert "my-plain-secret-token" not in message


def test_roles_of_the_settings_are_the_roles_of_the_api() -> None:
    assert tuple(Role) == TOKEN_ROLES


def test_metrics_histogram_and_cardinality_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(env={})
    assert (settings.metrics_buckets, settings.metrics_max_series) == ((), 2000)
    path = tmp_path / "queuelens.toml"
    path.write_text("metrics_buckets = [0.1, 1, 10]\nmetrics_max_series = 50\n")
    settings = load_settings(path, env={"QUEUELENS_METRICS_WAIT_BUCKETS": "1,60"})
    assert settings.metrics_buckets == (0.1, 1.0, 10.0)
    assert settings.metrics_wait_buckets == (1.0, 60.0)
    assert settings.metrics_max_series == 50
    for bad, reason in (("1,0.5", "must increase"), ("0,1", "above 1e-09"), ("x", "number")):
        with pytest.raises(ConfigError, match=f"QUEUELENS_METRICS_BUCKETS .*{reason}"):
            load_settings(env={"QUEUELENS_METRICS_BUCKETS": bad})
    with pytest.raises(ConfigError, match="QUEUELENS_METRICS_MAX_SERIES '-1' is invalid"):
        load_settings(env={"QUEUELENS_METRICS_MAX_SERIES": "-1"})
