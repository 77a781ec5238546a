"""The ``queuelens`` command.

    queuelens demo                  # run a real workload into SQLite and print what it measured
    queuelens migrate               # create or upgrade the SQL schema of QUEUELENS_STORAGE_URL
    queuelens prune                 # delete data older than its retention
    queuelens probe --once          # read queue depths from the brokers in queuelens.toml
    queuelens celery-events -A proj # record Celery metrics from the event stream (-E)
    queuelens settings              # show the effective settings and where they came from

Every command reads settings from ``QUEUELENS_*`` variables and ``queuelens.toml``; a bad
setting or an unreachable storage is reported in one line and exit code 2, never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from queuelens import __version__
from queuelens.config import ConfigError, Settings, load_settings, parse_duration
from queuelens.model import GaugeSample
from queuelens.probes import FRAMEWORKS, ProbeError
from queuelens.storage import StorageError, open_storage, redact_url, scheme_of

EXIT_USAGE = 2


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    if not hasattr(args, "handler"):
        parser.print_help()
        return EXIT_USAGE
    try:
        settings = load_settings(args.config, None, **_overrides(args))
        code: int = args.handler(args, settings)
        return code
    except (ConfigError, StorageError, ProbeError) as exc:
        print(f"queuelens: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("queuelens: interrupted", file=sys.stderr)
        return 130


def _overrides(args: argparse.Namespace) -> dict[str, str]:
    overrides = {}
    if getattr(args, "storage", None):
        overrides["storage_url"] = args.storage
    if getattr(args, "app", None):
        overrides["app"] = args.app
    return overrides


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="queuelens",
        description="Queue, job, worker and server metrics for Python task queues.",
        epilog="Settings come from QUEUELENS_* environment variables and queuelens.toml; "
        "see docs/configuration.md.",
    )
    parser.add_argument("--version", action="version", version=f"queuelens {__version__}")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="settings file (default: $QUEUELENS_CONFIG or ./queuelens.toml)",
    )
    commands = parser.add_subparsers(title="commands", metavar="COMMAND")

    def storage_arg(sub: argparse.ArgumentParser) -> None:
        sub.add_argument(
            "--storage", metavar="URL", help="storage URL (default: QUEUELENS_STORAGE_URL)"
        )

    demo = commands.add_parser(
        "demo",
        help="run a real embedded workload and show what queuelens measured",
        description="Run threads executing real jobs of varied duration (some fail), record "
        "them through the recorder into SQLite and print a summary per queue and job.",
    )
    demo.add_argument("--seconds", type=float, default=8.0, help="how long to run (default 8)")
    demo.add_argument(
        "--storage", metavar="URL", help="storage URL (default: sqlite:///queuelens-demo.db)"
    )
    demo.set_defaults(handler=_demo)

    migrate = commands.add_parser(
        "migrate",
        help="create or upgrade the SQL schema",
        description="Apply the schema migrations to a PostgreSQL, MySQL/MariaDB or SQLite "
        "storage (SQLite is also migrated automatically). Redis needs no migration.",
    )
    storage_arg(migrate)
    migrate.set_defaults(handler=_migrate)

    prune = commands.add_parser(
        "prune",
        help="delete data older than its retention",
        description="Delete buckets, gauges, batch ids and workers past their retention "
        "(QUEUELENS_RETENTION_MINUTE, _HOUR, _DAY, _WORKERS).",
    )
    storage_arg(prune)
    prune.set_defaults(handler=_prune)

    events = commands.add_parser(
        "celery-events",
        help="record Celery metrics from the event stream, without touching workers",
        description="Consume the event stream of Celery workers started with -E (or "
        "worker_send_task_events=True) and record the same data model as the in-worker "
        "integration. Per-job CPU and memory are not available on this path.",
    )
    storage_arg(events)
    source = events.add_mutually_exclusive_group(required=True)
    source.add_argument(
        "-A",
        "--app",
        dest="celery_app",
        metavar="APP",
        help="Celery app, as for `celery -A` (e.g. proj or proj.celery:app)",
    )
    source.add_argument("--broker", metavar="URL", help="broker URL, e.g. redis://localhost:6379/0")
    events.add_argument(
        "--app-name",
        metavar="NAME",
        help="queuelens app name to record under (default: the app setting)",
    )
    events.add_argument(
        "--seconds",
        type=float,
        default=None,
        help="stop after this many seconds (default: run until interrupted)",
    )
    events.set_defaults(handler=_celery_events)

    probe = commands.add_parser(
        "probe",
        help="read queue depths from brokers and store them",
        description="Read pending, scheduled, reserved and failed counts and the oldest "
        "pending age of each queue, and store them as gauges. Probes come from --framework/"
        "--broker, or else from the [[probes]] tables of queuelens.toml.",
    )
    storage_arg(probe)
    probe.add_argument("--framework", choices=FRAMEWORKS, help="framework of the broker")
    probe.add_argument("--broker", metavar="URL", help="broker URL, e.g. redis://localhost:6379/0")
    probe.add_argument(
        "--queue",
        action="append",
        default=[],
        metavar="NAME",
        help="queue to probe (repeatable; default: every queue the broker knows)",
    )
    probe.add_argument("--once", action="store_true", help="sample once and exit")
    probe.add_argument(
        "--interval", default="15s", metavar="DURATION", help="time between samples (15s)"
    )
    probe.set_defaults(handler=_probe)

    show = commands.add_parser("settings", help="print the effective settings")
    storage_arg(show)
    show.set_defaults(handler=_settings)
    return parser


def _demo(args: argparse.Namespace, settings: Settings) -> int:
    from queuelens.demo import run_demo

    if args.seconds <= 0:
        raise ConfigError(f"--seconds {args.seconds} must be positive; e.g. --seconds 8")
    return run_demo(args.storage, seconds=args.seconds)


def _migrate(args: argparse.Namespace, settings: Settings) -> int:
    url = settings.storage_url
    if scheme_of(url).startswith("redis"):
        print(f"{redact_url(url)}: Redis needs no migration")
        return 0
    from queuelens.storage.sql import migrate

    revision = migrate(url)
    print(f"{redact_url(url)}: schema at revision {revision}")
    return 0


def _prune(args: argparse.Namespace, settings: Settings) -> int:
    storage = open_storage(
        settings.storage_url,
        relative_accuracy=settings.histogram_accuracy,
        retention=settings.retention,
    )
    try:
        report = storage.prune()
    finally:
        storage.close()
    for kind, n in sorted(report.removed.items()):
        print(f"{kind:>20}: {n} removed")
    print(f"{'total':>20}: {report.total} removed from {storage.url}")
    return 0


def _celery_events(args: argparse.Namespace, settings: Settings) -> int:
    try:
        from queuelens.integrations.celery_events import run_celery_events
    except ModuleNotFoundError as exc:
        raise ConfigError(
            f"celery-events needs {exc.name!r}; install it with: pip install 'queuelens[celery]'"
        ) from None
    if args.seconds is not None and args.seconds <= 0:
        raise ConfigError(f"--seconds {args.seconds} must be positive; e.g. --seconds 60")
    source = args.celery_app or args.broker
    print(
        f"queuelens: recording Celery events from {redact_url(source)} into "
        f"{redact_url(settings.storage_url)} (Ctrl-C to stop)",
        file=sys.stderr,
    )
    try:
        stats = run_celery_events(
            source, settings=settings, stop_after_s=args.seconds, app_name=args.app_name
        )
    except KeyboardInterrupt:
        return 0
    except Exception as exc:  # an unusable app spec or broker: one line, not a traceback
        raise ConfigError(
            f"cannot consume Celery events from {redact_url(source)!r}: {type(exc).__name__}: {exc}"
        ) from None
    print(f"queuelens: {stats}", file=sys.stderr)
    return 0


def _probe(args: argparse.Namespace, settings: Settings) -> int:
    from queuelens.probes import ProbeConfig, build_probe
    from queuelens.probes.runner import ProbeRunner, probe_configs_from_toml

    try:
        interval_s = parse_duration(args.interval)
    except ValueError as exc:
        raise ConfigError(f"--interval {args.interval!r} is invalid ({exc}); e.g. 15s") from None
    if args.framework or args.broker:
        if not (args.framework and args.broker):
            raise ConfigError(
                "--framework and --broker go together; e.g. "
                "--framework rq --broker redis://localhost:6379/0"
            )
        configs = [ProbeConfig(args.framework, args.broker, settings.app, list(args.queue))]
    else:
        path = args.config or os.environ.get("QUEUELENS_CONFIG") or "queuelens.toml"
        if not os.path.exists(path):
            raise ConfigError(
                "no probes configured: pass --framework and --broker, or add [[probes]] "
                f"tables to {path} (see docs/probes.md)"
            )
        configs = probe_configs_from_toml(path, settings.app)
        if not configs:
            raise ConfigError(f"{path} has no [[probes]] tables; see docs/probes.md")
    storage = open_storage(
        settings.storage_url,
        relative_accuracy=settings.histogram_accuracy,
        retention=settings.retention,
    )
    runner = ProbeRunner(
        [build_probe(c) for c in configs], storage, interval_s=interval_s, on_sample=_print_samples
    )
    try:
        if args.once:
            runner.run_once()
            return 1 if runner.failures else 0
        runner.run_forever()
        return 0
    finally:
        runner.close()
        storage.close()


def _print_samples(samples: list[GaugeSample]) -> None:
    columns = ("pending", "scheduled", "reserved", "failed", "oldest_pending_age_s")
    print(f"{'app':<12} {'queue':<24} " + " ".join(f"{c[:10]:>10}" for c in columns))
    for sample in samples:
        cells = []
        for column in columns:
            value = sample.values.get(column)
            cells.append(f"{'-' if value is None else round(value, 1):>10}")
        print(f"{sample.app[:12]:<12} {sample.key[:24]:<24} " + " ".join(cells))


def _settings(args: argparse.Namespace, settings: Settings) -> int:
    for name, value in settings.model_dump().items():
        shown = redact_url(value) if name == "storage_url" else value
        print(f"{name} = {shown!r}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
