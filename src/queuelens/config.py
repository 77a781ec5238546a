"""Settings from ``QUEUELENS_*`` environment variables and an optional ``queuelens.toml``.

    settings = load_settings()            # env, then ./queuelens.toml, then defaults
    settings.storage_url                  # 'sqlite:///queuelens.db'
    settings.retention_minute_s           # 172800

Precedence: keyword overrides, then environment (``QUEUELENS_STORAGE_URL``), then the TOML
file (``QUEUELENS_CONFIG`` or ``./queuelens.toml``; top-level keys named like the settings),
then defaults. Durations accept seconds or a number with a unit: ``90s``, ``15m``, ``12h``,
``2d``, ``1w``. A bad value raises :class:`ConfigError` whose message is one line naming the
setting, the bad value and an example of a good one.
"""

from __future__ import annotations

import math
import os
import re
import threading
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    InitSettingsSource,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from queuelens.storage.base import Retention

__all__ = ["ConfigError", "Settings", "load_settings", "load_table", "parse_duration"]

ENV_PREFIX = "QUEUELENS_"
DEFAULT_TOML = "queuelens.toml"
#: tables of queuelens.toml that belong to other features (alerting, auth) and are not settings
RESERVED_TABLES = frozenset(
    {"alerts", "auth", "health", "capacity", "receivers", "rules", "probes"}
)

_LOCK = threading.Lock()
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
_DURATION = re.compile(r"^\s*(-?\d+(?:\.\d+)?)\s*([smhdw]?)\s*$")

_EXAMPLES: dict[str, str] = {
    "storage_url": "sqlite:///queuelens.db, postgresql://user@host/queuelens, "
    "mysql://user@host/queuelens or redis://localhost:6379/0",
    "app": "billing",
    "flush_interval_s": "1s",
    "heartbeat_interval_s": "5s",
    "retention_minute_s": "2d",
    "retention_hour_s": "35d",
    "retention_day_s": "400d",
    "retention_workers_s": "7d",
    "histogram_accuracy": "0.01 (1%)",
    "max_jobs_per_queue": "500",
    "max_queues_per_app": "1000",
    "buffer_max_buckets": "20000",
    "exception_message_max": "500",
    "api_tokens": "viewer:sha256:<64 hex digits> (make one with: python -m queuelens.api.tokens "
    "viewer)",
    "metrics_public": "false",
    "cors_origins": "https://ops.example.com",
    "rate_limit_ip_per_min": "600 (0: no limit)",
    "rate_limit_token_per_min": "1200 (0: no limit)",
    "rate_limit_burst": "100",
    "stream_interval_s": "5s",
    "metrics_buckets": "[0.01, 0.1, 1, 10, 60] (seconds, increasing)",
    "metrics_wait_buckets": "[0.1, 1, 10, 60, 600] (seconds, increasing)",
    "metrics_max_series": "2000",
    "prune_interval_s": "1h",
}
# The name a user writes in queuelens.toml / the env var suffix, for fields stored with units.
_ALIASES = {
    "flush_interval_s": "flush_interval",
    "heartbeat_interval_s": "heartbeat_interval",
    "retention_minute_s": "retention_minute",
    "retention_hour_s": "retention_hour",
    "retention_day_s": "retention_day",
    "retention_workers_s": "retention_workers",
    "server_sample_interval_s": "server_sample_interval",
    "stream_interval_s": "stream_interval",
    "prune_interval_s": "prune_interval",
}
#: roles of API tokens, least privileged first; each role may do what the ones before it may
TOKEN_ROLES = ("viewer", "operator", "admin")
_TOKEN = re.compile(r"^(?P<role>[a-z]+):sha256:(?P<digest>[0-9a-fA-F]{64})$")
_ORIGIN = re.compile(r"^https?://[^/\s?#]+$")
# Settings whose bad values are not echoed in error messages (they may be secrets).
_SECRET = frozenset({"api_tokens"})


class ConfigError(ValueError):
    """A setting has a bad value; ``str(error)`` is one line that says how to fix it."""


def parse_duration(value: object) -> float:
    """Seconds from ``5``, ``2.5``, ``"90s"``, ``"15m"``, ``"12h"``, ``"2d"`` or ``"1w"``."""
    if isinstance(value, bool):
        raise ValueError("a duration, not a boolean")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        match = _DURATION.match(value)
        if match is None:
            raise ValueError("a duration such as 30s, 15m, 12h or 2d")
        seconds = float(match.group(1)) * _UNITS[match.group(2) or "s"]
    else:
        raise ValueError("a duration such as 30s, 15m, 12h or 2d")
    if not math.isfinite(seconds) or seconds <= 0:
        raise ValueError("a positive duration")
    return seconds


def _entries(value: object) -> object:
    """A list from a comma-separated string (as environment variables give it)."""
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


def validate_api_tokens(entries: tuple[str, ...]) -> tuple[str, ...]:
    """Check ``<role>:sha256:<hex>`` entries and return them with lower-case digests.

    Messages name the entry by position, never by content: a pasted token is a secret.
    """
    seen: set[str] = set()
    out = []
    for n, entry in enumerate(entries, start=1):
        match = _TOKEN.match(entry.strip())
        if match is None:
            raise ValueError(
                f"entry {n} is not <role>:sha256:<64 hex digits>; put the digest of a token "
                "here, never the token"
            )
        role, digest = match["role"], match["digest"].lower()
        if role not in TOKEN_ROLES:
            raise ValueError(f"entry {n} has role {role!r}; roles: {', '.join(TOKEN_ROLES)}")
        if digest in seen:
            raise ValueError(f"entry {n} repeats the digest of an earlier entry")
        seen.add(digest)
        out.append(f"{role}:sha256:{digest}")
    return tuple(out)


def validate_storage_url(url: str) -> str:
    """Check that ``url`` names a known driver and is well formed; return it unchanged."""
    from queuelens.storage import SCHEMES, scheme_of

    if "://" not in url:
        raise ValueError("not a URL")
    scheme = scheme_of(url)
    if scheme not in SCHEMES:
        raise ValueError(f"unknown scheme {scheme!r}")
    if scheme == "sqlite":
        if not url.split("://", 1)[1].startswith("/") or url.rstrip("/").endswith("://"):
            raise ValueError("not a SQLite URL (it needs three slashes and a path)")
        return url
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ValueError(f"malformed ({exc})") from None
    if not parts.hostname:
        raise ValueError("missing a host name")
    if port == 0:
        raise ValueError("port 0 is not a port")
    if SCHEMES[scheme][0] == "redis":
        db = parts.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"Redis database {db!r} is not a number")
    return url


class Settings(BaseSettings):
    """Every queuelens setting; build it with :func:`load_settings` for friendly errors."""

    model_config = SettingsConfigDict(extra="forbid", populate_by_name=True, frozen=True)

    #: where metrics are stored; the default needs nothing installed
    storage_url: str = "sqlite:///queuelens.db"
    #: name of this deployment or tenant; every series is kept per app
    app: str = Field("default", min_length=1, max_length=200)
    #: how often recorders write their in-memory aggregates
    flush_interval_s: float = Field(1.0, alias="flush_interval")
    #: how often workers report that they are alive
    heartbeat_interval_s: float = Field(5.0, alias="heartbeat_interval")
    #: how long minute buckets are kept
    retention_minute_s: float = Field(2 * 86400.0, alias="retention_minute")
    #: how long hour buckets are kept
    retention_hour_s: float = Field(35 * 86400.0, alias="retention_hour")
    #: how long day buckets are kept
    retention_day_s: float = Field(400 * 86400.0, alias="retention_day")
    #: how long a silent worker is still listed (as dead) before it is removed
    retention_workers_s: float = Field(7 * 86400.0, alias="retention_workers")
    #: how often one process per host samples CPU, memory, disks and network
    server_sample_interval_s: float = Field(15.0, alias="server_sample_interval")
    #: relative error of every percentile (0.01 = 1%)
    histogram_accuracy: float = 0.01
    #: distinct job names kept per queue; more go to the ``__overflow__`` series
    max_jobs_per_queue: int = Field(500, ge=1)
    #: distinct queues kept per app; more go to the ``__overflow__`` queue
    max_queues_per_app: int = Field(1000, ge=1)
    #: aggregates a recorder keeps in memory while storage is unreachable
    buffer_max_buckets: int = Field(20_000, ge=100)
    #: longest exception message kept, in characters
    exception_message_max: int = Field(500, ge=0, le=100_000)

    # -- the server (queuelens serve, queuelens.api); see docs/security.md ------------------
    #: API bearer tokens as ``<role>:sha256:<digest>``; none: anonymous, loopback only
    api_tokens: tuple[str, ...] = ()
    #: serve /metrics without a token (on purpose: it names queues and jobs)
    metrics_public: bool = False
    #: browser origins allowed to call the API (CORS); none by default
    cors_origins: tuple[str, ...] = ()
    #: sustained requests per minute from one client address (0: no limit)
    rate_limit_ip_per_min: float = Field(600.0, ge=0)
    #: sustained requests per minute with one token (0: no limit)
    rate_limit_token_per_min: float = Field(1200.0, ge=0)
    #: requests a client may send at once before the per-minute rates apply
    rate_limit_burst: int = Field(100, ge=1, le=1_000_000)
    #: how often the live stream sends a new overview
    stream_interval_s: float = Field(5.0, alias="stream_interval")
    #: how often ``queuelens serve`` deletes data past its retention
    prune_interval_s: float = Field(3600.0, alias="prune_interval")
    #: upper bounds in seconds of the /metrics duration histogram (empty: the defaults)
    metrics_buckets: tuple[float, ...] = ()
    #: upper bounds in seconds of the /metrics wait histogram (empty: as metrics_buckets)
    metrics_wait_buckets: tuple[float, ...] = ()
    #: job series /metrics exports one by one; the least busy beyond go to job="__other__"
    metrics_max_series: int = Field(2000, ge=0, le=1_000_000)

    @field_validator(
        "flush_interval_s",
        "heartbeat_interval_s",
        "retention_minute_s",
        "retention_hour_s",
        "retention_day_s",
        "retention_workers_s",
        "server_sample_interval_s",
        "stream_interval_s",
        "prune_interval_s",
        mode="before",
    )
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @field_validator("histogram_accuracy")
    @classmethod
    def _accuracy(cls, value: float) -> float:
        if not 0.0005 <= value <= 0.1:
            raise ValueError("a relative accuracy between 0.0005 and 0.1")
        return value

    @field_validator("storage_url")
    @classmethod
    def _storage_url(cls, value: str) -> str:
        return validate_storage_url(value)

    @field_validator("metrics_buckets", "metrics_wait_buckets")
    @classmethod
    def _buckets(cls, value: tuple[float, ...]) -> tuple[float, ...]:
        if not value:
            return value
        from queuelens.exposition._histogram import check_buckets

        return check_buckets(value)

    @field_validator(
        "api_tokens", "cors_origins", "metrics_buckets", "metrics_wait_buckets", mode="before"
    )
    @classmethod
    def _split(cls, value: object) -> object:
        return _entries(value)

    @field_validator("api_tokens")
    @classmethod
    def _tokens(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return validate_api_tokens(value)

    @field_validator("cors_origins")
    @classmethod
    def _origins(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for origin in value:
            if origin != "*" and not _ORIGIN.match(origin):
                raise ValueError(
                    f"{origin!r} is not an origin (scheme://host[:port], no path or slash)"
                )
        return value

    @property
    def retention(self) -> Retention:
        return Retention(
            minute_s=int(self.retention_minute_s),
            hour_s=int(self.retention_hour_s),
            day_s=int(self.retention_day_s),
            gauge_minute_s=int(self.retention_minute_s),
            worker_s=int(self.retention_workers_s),
        )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        env_values, toml_values = _SOURCES.get(settings_cls, ({}, {}))
        if settings_cls not in _SOURCES:
            env_values = _env_values(os.environ)
        return (
            init_settings,
            InitSettingsSource(settings_cls, env_values),
            InitSettingsSource(settings_cls, toml_values),
        )


# load_settings hands its environment and parsed TOML to settings_customise_sources through
# this slot, because pydantic-settings builds sources from the class, not from arguments.
_SOURCES: dict[type[BaseSettings], tuple[dict[str, Any], dict[str, Any]]] = {}


def _public_names() -> dict[str, str]:
    """Public setting name (as in env and TOML) -> field name."""
    return {_ALIASES.get(name, name): name for name in Settings.model_fields}


def _env_values(environ: Mapping[str, str]) -> dict[str, Any]:
    names = _public_names()
    values: dict[str, Any] = {}
    for key, value in environ.items():
        if key.startswith(ENV_PREFIX):
            public = key[len(ENV_PREFIX) :].lower()
            if public in names:
                values[public] = value
    return values


def load_settings(
    toml_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    **overrides: Any,
) -> Settings:
    """Build :class:`Settings`, raising :class:`ConfigError` (one clear line) on bad input.

    ``toml_path`` defaults to ``$QUEUELENS_CONFIG`` or ``./queuelens.toml`` when it exists.
    """
    environ = os.environ if env is None else env
    path = _toml_path(toml_path, environ)
    toml_values = _read_toml(path) if path is not None else {}
    with _LOCK:
        _SOURCES[Settings] = (_env_values(environ), toml_values)
        try:
            return Settings(**overrides)
        except ValidationError as exc:
            raise _friendly(exc, environ, path, toml_values) from None
        finally:
            _SOURCES.pop(Settings, None)


def load_table(
    name: str, toml_path: str | Path | None = None, env: Mapping[str, str] | None = None
) -> dict[str, Any] | None:
    """The ``[name]`` table of the settings file (``[health]``, ``[capacity]``, ...), or None.

    The file is found as for :func:`load_settings`; ConfigError when it cannot be read or
    when ``name`` is not a table.
    """
    environ = os.environ if env is None else env
    path = _toml_path(toml_path, environ)
    if path is None:
        return None
    _read_toml(path)  # the same errors as load_settings for an unreadable or invalid file
    table = tomllib.loads(path.read_text(encoding="utf-8")).get(name)
    if table is None:
        return None
    if not isinstance(table, dict):
        raise ConfigError(f"{name} in {str(path)!r} must be a table, e.g. [{name}]")
    return table


def _toml_path(explicit: str | Path | None, environ: Mapping[str, str]) -> Path | None:
    if explicit is not None:
        return Path(explicit)
    configured = environ.get(f"{ENV_PREFIX}CONFIG")
    if configured:
        return Path(configured)
    default = Path(DEFAULT_TOML)
    return default if default.exists() else None


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ConfigError(
            f"config file {str(path)!r} does not exist; create it or unset QUEUELENS_CONFIG"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read config file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f'config file {str(path)!r} is not valid TOML: {exc}; e.g. storage_url = "sqlite:///queuelens.db"'
        ) from None
    known = set(_public_names())
    values: dict[str, Any] = {}
    for key, value in data.items():
        if key in RESERVED_TABLES and isinstance(value, dict | list):
            continue
        if key not in known:
            raise ConfigError(
                f"unknown setting {key!r} in {str(path)!r}; known settings: "
                + ", ".join(sorted(known))
            )
        values[key] = value
    return values


def _friendly(
    exc: ValidationError,
    environ: Mapping[str, str],
    path: Path | None,
    toml_values: Mapping[str, Any],
) -> ConfigError:
    error = exc.errors()[0]
    loc = str(error["loc"][0]) if error["loc"] else "?"
    field = next((name for name in Settings.model_fields if loc in (name, _ALIASES.get(name))), loc)
    public = _ALIASES.get(field, field)
    env_name = f"{ENV_PREFIX}{public.upper()}"
    if error["type"] == "extra_forbidden":
        known = ", ".join(sorted(_public_names()))
        return ConfigError(f"unknown setting {loc!r}; known settings: {known}")
    if env_name in environ:
        where = env_name
    elif path is not None and public in toml_values:
        where = f"{public} in {str(path)!r}"
    else:
        where = public
    reason = str(error.get("msg", "invalid")).removeprefix("Value error, ")
    value = error.get("input")
    if field == "storage_url" and isinstance(value, str):
        from queuelens.storage import redact_url

        value = redact_url(value)
    if field in _SECRET:
        value = "<not shown>"
    example = _EXAMPLES.get(field, "see docs/configuration.md")
    return ConfigError(f"{where} {value!r} is invalid ({reason}); expected e.g. {example}")
