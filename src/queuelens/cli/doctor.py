"""``doctor``: is this installation able to work, and if not, what to do about it.

    checks = run_checks(config=None, storage=None)
    [(c.name, c.status, c.hint) for c in checks if c.status is Status.fail]

Checks the settings, that the storage answers, that a SQL schema is at the revision this
queuelens needs, how far the storage's clock is from this host's, which framework
integrations import (and at which version), and whether ``queuelens serve`` can run.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import importlib.util
import os
import time
import warnings
from dataclasses import asdict, dataclass
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table
from rich.text import Text

from queuelens.cli._app import (
    StorageOption,
    config_path,
    console,
    print_json,
    settings_file,
)
from queuelens.cli._clock import server_time
from queuelens.config import ConfigError, Settings, load_settings, load_table
from queuelens.probes import FRAMEWORKS
from queuelens.storage import StorageError, open_storage, redact_url, scheme_of

__all__ = ["Check", "Status", "run_checks"]

#: a clock this far from the storage's is worth fixing even if nothing shows it yet
CLOCK_WARN_S = 1.0
#: clocks drift apart by CLOCK_WARN_S on hosts without NTP within days
_NTP_HINT = (
    "synchronise the clocks with NTP (chrony or systemd-timesyncd) on this host, the "
    "workers' hosts and the storage server"
)


class Status(StrEnum):
    #: works
    ok = "ok"
    #: works, but something deserves a look
    warn = "warn"
    #: does not work; the hint says how to fix it
    fail = "fail"
    #: not checked, because a check it depends on failed
    skip = "skip"


_STORAGE_CHECKS = ("storage", "migrations", "clock")
_STYLE = {Status.ok: "green", Status.warn: "yellow", Status.fail: "bold red", Status.skip: "dim"}


@dataclass(frozen=True, slots=True)
class Check:
    name: str
    status: Status
    detail: str
    #: what to do about a warning or failure
    hint: str = ""


def doctor(
    ctx: typer.Context,
    storage: StorageOption = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="print the checks as JSON: name, status, detail, hint")
    ] = False,
) -> None:
    """Check settings, storage, migrations, integrations and clock skew.

    Each check reports ok, warn or fail with a hint on how to fix it; exit code 1 if any
    check fails.

    Examples:

    ```
    queuelens doctor
    queuelens doctor --storage postgresql://ql@db/queuelens
    QUEUELENS_STORAGE_URL=redis://cache:6379/0 queuelens doctor --json
    ```
    """
    checks = run_checks(config_path(ctx), storage)
    if as_json:
        print_json([{**asdict(check), "status": str(check.status)} for check in checks])
    else:
        _print(checks)
    if any(check.status is Status.fail for check in checks):
        raise typer.Exit(1)


def _print(checks: list[Check]) -> None:
    table = Table(box=None, show_header=False, pad_edge=False)
    table.add_column("status")
    table.add_column("check", style="bold")
    table.add_column("detail", overflow="fold")
    for check in checks:
        detail = Text(check.detail)
        if check.hint:
            detail.append(f"\nfix: {check.hint}", style="italic")
        table.add_row(Text(str(check.status), style=_STYLE[check.status]), check.name, detail)
    console().print(table)


def run_checks(config: Path | None, storage: str | None) -> list[Check]:
    """Every check, in order; a check whose input is missing is skipped, not failed."""
    settings, check = _settings(config, storage)
    checks = [check]
    if settings is None:
        checks += [Check(name, Status.skip, "no usable settings") for name in _STORAGE_CHECKS]
    else:
        checks += _storage(settings)
    checks += [_integrations(), _server()]
    return checks


def _settings(config: Path | None, storage: str | None) -> tuple[Settings | None, Check]:
    from queuelens.analytics.health import health_thresholds
    from queuelens.analytics.insights import capacity_settings

    try:
        settings = load_settings(config, None, **({"storage_url": storage} if storage else {}))
        health_thresholds(load_table("health", config))
        capacity_settings(load_table("capacity", config))
    except ConfigError as exc:
        return None, Check(
            "settings", Status.fail, str(exc), "see docs/configuration.md for every setting"
        )
    path = settings_file(config)
    source = f"file {path}" if path.exists() else "no settings file, defaults"
    return settings, Check(
        "settings",
        Status.ok,
        f"storage {redact_url(settings.storage_url)} · app {settings.app!r} · "
        f"{source} and QUEUELENS_* variables",
    )


def _storage(settings: Settings) -> list[Check]:
    """Reachability, schema and clock, which all need the storage."""
    url = settings.storage_url
    shown = redact_url(url)
    is_redis = scheme_of(url).startswith("redis")
    revision: str | None = None
    try:
        if is_redis:
            store = open_storage(url)
            try:
                started = time.perf_counter()
                store.ping()
                elapsed_s = time.perf_counter() - started
            finally:
                store.close()
        elif _sqlite_missing(url):
            return [
                Check(
                    "storage",
                    Status.warn,
                    f"{shown} does not exist yet",
                    "it is created on first use; `queuelens migrate` creates it now",
                ),
                Check("migrations", Status.skip, "no database yet"),
                Check("clock", Status.skip, "no database yet"),
            ]
        else:
            from queuelens.storage.sql import schema_revision

            started = time.perf_counter()
            revision = schema_revision(url)  # connects, and asks without changing anything
            elapsed_s = time.perf_counter() - started
    except StorageError as exc:
        return [
            Check(
                "storage",
                Status.fail,
                str(exc),
                "check that the storage server is running and reachable from here, and the "
                "URL in QUEUELENS_STORAGE_URL (or --storage)",
            ),
            Check("migrations", Status.skip, "storage unreachable"),
            Check("clock", Status.skip, "storage unreachable"),
        ]
    reachable = Check("storage", Status.ok, f"{shown} answered in {elapsed_s * 1000:.0f} ms")
    if is_redis:
        schema = Check("migrations", Status.ok, "Redis needs no migration")
    else:
        schema = _schema(url, revision)
    return [reachable, schema, _clock(url, settings.heartbeat_interval_s)]


def _sqlite_missing(url: str) -> bool:
    if scheme_of(url) != "sqlite":
        return False
    from queuelens.storage.sql_engine import engine_url

    return not os.path.exists(engine_url(url).database or "")


def _schema(url: str, revision: str | None) -> Check:
    from queuelens.storage.sql_engine import head_revision

    head = head_revision()
    if revision == head:
        return Check("migrations", Status.ok, f"schema at revision {head}, the newest known here")
    state = "no queuelens schema" if revision is None else f"schema revision {revision}"
    detail = f"{state}; this queuelens needs revision {head}"
    if scheme_of(url) == "sqlite":
        return Check(
            "migrations",
            Status.warn,
            detail,
            "SQLite is migrated when queuelens next opens it; `queuelens migrate` does it now",
        )
    return Check(
        "migrations",
        Status.fail,
        detail,
        "run `queuelens migrate` with this storage URL (if the database is newer than "
        "this queuelens, upgrade queuelens here instead)",
    )


def _clock(url: str, heartbeat_interval_s: float) -> Check:
    try:
        reading = server_time(url)
    except StorageError as exc:
        return Check("clock", Status.warn, f"cannot read the storage's clock: {exc}")
    skew = reading.skew_s
    beyond = max(0.0, abs(skew) - reading.uncertainty_s)
    # a reader judges liveness by heartbeat age: three missed heartbeats look stale
    stale_s = 3 * heartbeat_interval_s
    detail = (
        f"the storage's clock is {abs(skew):.3f} s {'ahead of' if skew >= 0 else 'behind'} "
        f"this host's (± {reading.uncertainty_s:.3f} s)"
    )
    if beyond >= stale_s:
        return Check(
            "clock",
            Status.fail,
            f"{detail}; over {stale_s:g} s, live workers can look stale",
            _NTP_HINT,
        )
    if beyond >= CLOCK_WARN_S:
        return Check("clock", Status.warn, detail, _NTP_HINT)
    return Check("clock", Status.ok, detail)


def _version(distribution: str) -> str | None:
    """The installed version of ``distribution``, None when it is not installed."""
    try:
        return importlib.metadata.version(distribution)
    except importlib.metadata.PackageNotFoundError:
        return None


def _integrations() -> Check:
    found, broken, missing = [], [], []
    for name in FRAMEWORKS:
        if importlib.util.find_spec(name) is None:
            missing.append(name)
            continue
        installed = f"{name} {_version(name) or '(version unknown)'}"
        try:
            with warnings.catch_warnings():  # a framework's deprecation notices are not ours
                warnings.simplefilter("ignore")
                importlib.import_module(f"queuelens.integrations.{name}")
        except Exception as exc:
            broken.append(f"{installed}: {type(exc).__name__}: {exc}")
            continue
        found.append(installed)
    not_installed = [f"not installed: {', '.join(missing)}"] if missing else []
    if broken:
        return Check(
            "integrations",
            Status.warn,
            "; ".join([*broken, *found, *not_installed]),
            "install a supported version, e.g. pip install 'queuelens[celery]'",
        )
    if not found:
        return Check(
            "integrations",
            Status.warn,
            f"no task queue framework installed ({', '.join(missing)})",
            "pip install 'queuelens[celery]' (or rq, dramatiq, huey, arq, taskiq)",
        )
    return Check(
        "integrations", Status.ok, "; ".join([f"{', '.join(found)} importable", *not_installed])
    )


def _server() -> Check:
    """What `queuelens serve` needs: the ``server`` extra."""
    needed = ("fastapi", "uvicorn", "prometheus_client")
    versions = {name: _version(name) for name in needed}
    missing = [name for name, version in versions.items() if version is None]
    if missing:
        return Check(
            "server",
            Status.warn,
            f"`queuelens serve` cannot run: {', '.join(missing)} not installed",
            "pip install 'queuelens[server]'",
        )
    return Check("server", Status.ok, ", ".join(f"{n} {v}" for n, v in versions.items()))
