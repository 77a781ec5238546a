"""Serving: ``serve`` (the REST API and /metrics) and ``demo`` (a workload, then serve it)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Protocol

import typer

from queuelens.cli._app import StorageOption, config_path, load, require_positive
from queuelens.config import ConfigError

if TYPE_CHECKING:
    from queuelens.config import Settings

__all__ = ["ApiServe", "load_api_serve"]


class ApiServe(Protocol):
    """``queuelens.api.serve`` as called here: ``serve(settings, host=, port=, toml_path=)``."""

    def __call__(
        self, settings: Settings, *, host: str, port: int, toml_path: str | Path | None
    ) -> None: ...


Host = Annotated[
    str,
    typer.Option(
        metavar="HOST", help="address to listen on (beyond loopback only with api_tokens)"
    ),
]
Port = Annotated[int, typer.Option(metavar="PORT", min=1, max=65535, help="TCP port")]


def load_api_serve() -> ApiServe:
    """``queuelens.api.serve``, imported only when serving: the server extra is optional."""
    try:
        from queuelens.api import serve
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"serve needs the Python package {exc.name!r}; install it with: "
            "pip install 'queuelens[server]'"
        ) from None
    return serve


def serve(
    ctx: typer.Context,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    storage: StorageOption = None,
) -> None:
    """Serve the REST API (/api/v1, /openapi.json), /metrics and the live stream.

    Runs until Ctrl-C. With no API token configured it listens on 127.0.0.1 only.

    Examples:

    ```
    queuelens serve
    queuelens serve --port 9000 --storage postgresql://ql@db/queuelens
    ```
    """
    settings = load(ctx, storage)
    serve_api = load_api_serve()
    try:
        serve_api(settings, host=host, port=port, toml_path=config_path(ctx))
    except KeyboardInterrupt:  # Ctrl-C is how a server is stopped, not a failure
        return


def demo(
    ctx: typer.Context,
    seconds: Annotated[
        float, typer.Option(metavar="SECONDS", help="how long the workload runs")
    ] = 8.0,
    serving: Annotated[
        bool,
        typer.Option("--serve/--no-serve", help="serve the data afterwards, until Ctrl-C"),
    ] = True,
    host: Host = "127.0.0.1",
    port: Port = 8000,
    storage: Annotated[
        str | None,
        typer.Option(metavar="URL", help="storage URL (default: sqlite:///queuelens-demo.db)"),
    ] = None,
) -> None:
    """Run a real workload into SQLite, show what was measured, then serve it.

    Threads run real jobs of varied duration (some fail, some retry); every attempt is
    recorded and read back, and the stored counts are checked against the workload's own.
    Then `queuelens serve` starts on the data and prints the URL to open.
    Exit code 1 if storage disagrees with the workload.

    Examples:

    ```
    queuelens demo
    queuelens demo --seconds 30 --port 9000
    queuelens demo --no-serve --storage sqlite:////tmp/demo.db
    ```
    """
    from queuelens.demo import run_demo

    require_positive("--seconds", seconds, "8")
    code = run_demo(
        storage,
        seconds=seconds,
        out=sys.stdout,
        serve_on=(host, port) if serving else None,
        toml_path=config_path(ctx),
    )
    raise typer.Exit(code)
