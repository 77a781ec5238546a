"""Collecting from outside the workers: ``probe`` (queue depths) and ``celery-events``."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from queuelens.cli._app import (
    StorageOption,
    config_path,
    load,
    opened,
    require_positive,
    settings_file,
)
from queuelens.config import ConfigError, parse_duration
from queuelens.model import GaugeSample
from queuelens.probes import FRAMEWORKS
from queuelens.storage import redact_url


def probe(
    ctx: typer.Context,
    framework: Annotated[
        str | None,
        typer.Option(
            metavar="NAME",
            help=f"framework of the broker: {', '.join(FRAMEWORKS)}",
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(metavar="URL", help="broker URL, e.g. redis://localhost:6379/0"),
    ] = None,
    queue: Annotated[
        list[str] | None,
        typer.Option(
            metavar="NAME",
            help="queue to probe (repeatable; default: every queue the broker knows)",
        ),
    ] = None,
    once: Annotated[bool, typer.Option("--once", help="sample once and exit")] = False,
    interval: Annotated[str, typer.Option(metavar="DURATION", help="time between samples")] = "15s",
    storage: StorageOption = None,
) -> None:
    """Read queue depths from brokers and store them as gauges.

    Pending, scheduled, reserved and failed counts and the oldest pending age of each
    queue. Probes come from --framework/--broker, or else from the `[[probes]]` tables of
    queuelens.toml (see docs/cli.md#probe). With --once, exit code 1 if a probe failed.

    Examples:

    ```
    queuelens probe --once
    queuelens probe --framework rq --broker redis://cache:6379/0 --queue emails
    ```
    """
    from queuelens.probes import ProbeConfig, build_probe
    from queuelens.probes.runner import ProbeRunner, probe_configs_from_toml

    settings = load(ctx, storage)
    try:
        interval_s = parse_duration(interval)
    except ValueError as exc:
        raise ConfigError(f"--interval {interval!r} is invalid ({exc}); e.g. 15s") from None
    if framework or broker:
        if not (framework and broker):
            raise ConfigError(
                "--framework and --broker go together; e.g. "
                "--framework rq --broker redis://localhost:6379/0"
            )
        configs = [ProbeConfig(framework, broker, settings.app, list(queue or []))]
    else:
        path = settings_file(config_path(ctx))
        if not path.exists():
            raise ConfigError(
                "no probes configured: pass --framework and --broker, or add [[probes]] "
                f"tables to {path} (see docs/cli.md#probe)"
            )
        configs = probe_configs_from_toml(path, settings.app)
        if not configs:
            raise ConfigError(f"{path} has no [[probes]] tables; see docs/cli.md#probe")
    probes = [build_probe(c) for c in configs]  # ProbeError names a bad framework
    with opened(settings) as store:
        runner = ProbeRunner(probes, store, interval_s=interval_s, on_sample=_print)
        try:
            if once:
                runner.run_once()
                if runner.failures:
                    raise typer.Exit(1)
                return
            runner.run_forever()
        finally:
            runner.close()


def _print(samples: list[GaugeSample]) -> None:
    columns = ("pending", "scheduled", "reserved", "failed", "oldest_pending_age_s")
    print(f"{'app':<12} {'queue':<24} " + " ".join(f"{c[:10]:>10}" for c in columns))
    for sample in samples:
        cells = []
        for column in columns:
            value = sample.values.get(column)
            cells.append(f"{'-' if value is None else round(value, 1):>10}")
        print(f"{sample.app[:12]:<12} {sample.key[:24]:<24} " + " ".join(cells))


def celery_events(
    ctx: typer.Context,
    celery_app: Annotated[
        str | None,
        typer.Option(
            "-A",
            "--app",
            metavar="APP",
            help="Celery app, as for `celery -A` (e.g. proj or proj.celery:app)",
        ),
    ] = None,
    broker: Annotated[
        str | None,
        typer.Option(metavar="URL", help="broker URL instead of -A, e.g. redis://localhost:6379/0"),
    ] = None,
    app_name: Annotated[
        str | None,
        typer.Option(metavar="NAME", help="queuelens app to record under (default: app setting)"),
    ] = None,
    seconds: Annotated[
        float | None,
        typer.Option(metavar="SECONDS", help="stop after this long (default: until Ctrl-C)"),
    ] = None,
    storage: StorageOption = None,
) -> None:
    """Record Celery metrics from the event stream, without changing the workers.

    Consumes the events of workers started with -E (or worker_send_task_events=True) and
    records the same data model as the in-worker integration; per-job CPU and memory are
    not available this way.

    Examples:

    ```
    queuelens celery-events -A proj
    queuelens celery-events --broker redis://localhost:6379/0 --seconds 60
    ```
    """
    if (celery_app is None) == (broker is None):
        raise ConfigError(
            "celery-events needs exactly one of -A/--app and --broker; e.g. "
            "queuelens celery-events -A proj"
        )
    settings = load(ctx, storage)
    try:
        from queuelens.integrations.celery_events import run_celery_events
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"celery-events needs {exc.name!r}; install it with: pip install 'queuelens[celery]'"
        ) from None
    require_positive("--seconds", seconds, "60")
    source = celery_app or broker or ""
    print(
        f"queuelens: recording Celery events from {redact_url(source)} into "
        f"{redact_url(settings.storage_url)} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    try:
        stats = run_celery_events(
            source, settings=settings, stop_after_s=seconds, app_name=app_name
        )
    except KeyboardInterrupt:
        return
    except Exception as exc:  # an unusable app spec or broker: one line, not a traceback
        raise ConfigError(
            f"cannot consume Celery events from {redact_url(source)!r}: {type(exc).__name__}: {exc}"
        ) from None
    print(f"queuelens: {stats}", file=sys.stderr)
