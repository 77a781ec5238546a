"""The typer application, the options commands share, and how a command gets its storage.

    def queues(ctx: typer.Context, window: WindowOption = "1h", storage: StorageOption = None):
        with reading(ctx, storage) as analytics:
            print_json([q.as_dict() for q in analytics.queue_summaries(analytics.window(window))])

Command functions live in the modules of this package and are registered on :data:`app` by
``queuelens.cli``.
A command raises :class:`~queuelens.config.ConfigError` (or a storage, window or probe
error) for anything the user can fix; :func:`queuelens.cli.main` prints it in one line.
"""

from __future__ import annotations

import json
import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

from queuelens import __version__
from queuelens.config import ConfigError, Settings, load_settings
from queuelens.storage import open_storage

if TYPE_CHECKING:
    from queuelens.analytics import Analytics
    from queuelens.storage import Storage

__all__ = [
    "AppFilter",
    "JsonOutput",
    "Since",
    "StorageOption",
    "Until",
    "WindowOption",
    "app",
    "config_path",
    "console",
    "load",
    "opened",
    "print_json",
    "reading",
    "require_positive",
    "settings_file",
]

#: columns of tables written to a pipe or a file
PIPED_WIDTH = 200

app = typer.Typer(
    name="queuelens",
    help="Queue, job, worker and server metrics for Python task queues.\n\n"
    "Settings come from `QUEUELENS_*` environment variables and queuelens.toml "
    "(see docs/configuration.md); every command is described in docs/cli.md.\n\n"
    "Example: queuelens status --window 6h",
    no_args_is_help=True,
    rich_markup_mode="markdown",
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


@dataclass(frozen=True, slots=True)
class _Global:
    #: the --config file, None: $QUEUELENS_CONFIG or ./queuelens.toml
    config: Path | None


def _print_version(value: bool) -> None:
    if value:
        print(f"queuelens {__version__}")
        raise typer.Exit(0)


@app.callback()
def _root(
    ctx: typer.Context,
    config: Annotated[
        Path | None,
        typer.Option(
            "--config",
            metavar="FILE",
            help="settings file (default: $QUEUELENS_CONFIG or ./queuelens.toml)",
        ),
    ] = None,
    version: Annotated[
        bool,
        typer.Option("--version", callback=_print_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    ctx.obj = _Global(config)


# -- options shared by commands ----------------------------------------------------------------

StorageOption = Annotated[
    str | None,
    typer.Option("--storage", metavar="URL", help="storage URL (default: QUEUELENS_STORAGE_URL)"),
]
WindowOption = Annotated[
    str,
    typer.Option(
        "--window",
        "-w",
        metavar="WINDOW",
        help="how far back, ending now: 5m, 15m, 1h, 6h, 24h, 7d or 30d",
    ),
]
Since = Annotated[
    str | None,
    typer.Option(
        metavar="TIME",
        help="window start instead of --window: unix seconds or ISO 8601 (2026-11-28T09:00Z)",
    ),
]
Until = Annotated[
    str | None, typer.Option(metavar="TIME", help="window end with --since (default: now)")
]
AppFilter = Annotated[
    str | None, typer.Option("--app", metavar="NAME", help="only this app (default: every app)")
]
JsonOutput = Annotated[
    bool,
    typer.Option("--json", help="print JSON in the shapes of the REST API instead of a table"),
]


# -- settings, storage, analytics --------------------------------------------------------------


def config_path(ctx: typer.Context) -> Path | None:
    state = ctx.find_root().obj
    return state.config if isinstance(state, _Global) else None


def load(ctx: typer.Context, storage: str | None = None) -> Settings:
    """The settings, with ``--storage`` (when given) over everything else."""
    overrides = {"storage_url": storage} if storage else {}
    return load_settings(config_path(ctx), None, **overrides)


@contextmanager
def opened(settings: Settings) -> Iterator[Storage]:
    storage = open_storage(
        settings.storage_url,
        relative_accuracy=settings.histogram_accuracy,
        retention=settings.retention,
    )
    try:
        yield storage
    finally:
        storage.close()


@contextmanager
def reading(ctx: typer.Context, storage: str | None) -> Iterator[Analytics]:
    """Analytics over the configured storage, thresholds from queuelens.toml."""
    from queuelens.analytics import open_analytics

    settings = load(ctx, storage)
    with opened(settings) as store:
        analytics, _ = open_analytics(store, settings, config_path(ctx))
        yield analytics


def require_positive(name: str, value: float | None, example: str) -> None:
    if value is not None and not (value > 0 and math.isfinite(value)):
        raise ConfigError(f"{name} {value:g} must be positive; e.g. {name} {example}")


def console(*, stderr: bool = False) -> Console:
    """A rich console on stdout (or stderr). Output that is not a terminal (a pipe, a file)
    is not wrapped at 80 columns: it is read later, or grepped, not squeezed into a window."""
    out = Console(stderr=stderr)
    if not out.is_terminal and "COLUMNS" not in os.environ:
        out = Console(stderr=stderr, width=PIPED_WIDTH)
    return out


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout; NaN and infinities (unknowns) become null."""
    text = json.dumps(_finite(data), indent=2, ensure_ascii=False, allow_nan=False)
    sys.stdout.write(text + "\n")


def _finite(value: Any) -> Any:
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {key: _finite(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(item) for item in value]
    return value


def settings_file(config: Path | None) -> Path:
    """The settings file a run reads (if it exists): --config, $QUEUELENS_CONFIG or default."""
    return Path(config or os.environ.get("QUEUELENS_CONFIG") or "queuelens.toml")
