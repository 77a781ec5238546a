"""Looking after the storage and the settings: ``migrate``, ``prune``, ``settings``."""

from __future__ import annotations

import typer

from queuelens.cli._app import StorageOption, load, opened
from queuelens.storage import redact_url, scheme_of


def migrate(ctx: typer.Context, storage: StorageOption = None) -> None:
    """Create or upgrade the SQL schema (PostgreSQL, MySQL/MariaDB, SQLite).

    SQLite is also migrated automatically when opened; Redis needs no migration. Safe to
    run again: an up-to-date schema is left as it is.

    Examples:

    ```
    queuelens migrate
    queuelens migrate --storage postgresql://queuelens@db/queuelens
    ```
    """
    url = load(ctx, storage).storage_url
    if scheme_of(url).startswith("redis"):
        print(f"{redact_url(url)}: Redis needs no migration")
        return
    from queuelens.storage.sql import migrate as migrate_sql

    revision = migrate_sql(url)
    print(f"{redact_url(url)}: schema at revision {revision}")


def prune(ctx: typer.Context, storage: StorageOption = None) -> None:
    """Delete data older than its retention.

    Buckets, gauges, batch ids and workers, by the retention settings
    `QUEUELENS_RETENTION_MINUTE`, `_HOUR`, `_DAY` and `_WORKERS`.

    Examples:

    ```
    queuelens prune
    QUEUELENS_RETENTION_DAY=90d queuelens prune --storage redis://cache:6379/0
    ```
    """
    with opened(load(ctx, storage)) as store:
        report = store.prune()
    for kind, n in sorted(report.removed.items()):
        print(f"{kind:>20}: {n} removed")
    print(f"{'total':>20}: {report.total} removed from {store.url}")


def settings(ctx: typer.Context, storage: StorageOption = None) -> None:
    """Print the effective settings (passwords and token hashes hidden).

    Examples:

    ```
    queuelens settings
    queuelens --config /etc/queuelens.toml settings
    ```
    """
    for name, value in load(ctx, storage).model_dump().items():
        if name == "storage_url":
            value = redact_url(value)
        elif name == "api_tokens":  # hashes, but nothing to hand out: roles only
            value = tuple(f"{token.split(':', 1)[0]}:***" for token in value)
        print(f"{name} = {value!r}")
