"""The ``queuelens`` command.

    queuelens status                 # totals, queues with health and reasons, workers, servers
    queuelens top                    # the same, refreshing every 2 s until Ctrl-C
    queuelens queues --json          # one listing per thing: queues, jobs, workers, servers
    queuelens export -o jobs.csv     # figures per job and step, CSV or JSON
    queuelens doctor                 # settings, storage, schema, integrations, clock skew
    queuelens serve                  # the REST API and /metrics on 127.0.0.1:8000
    queuelens demo                   # a real workload into SQLite, then serve it
    queuelens alerts rules           # alert rules in force; export-prometheus; test <receiver>

Each command group is a module here (``read``, ``export``, ``serve``, ``collect``,
``doctor``, ``admin``), registered below in the order ``--help`` lists them. A bad setting,
window, storage or probe is reported in one line on stderr with exit code 2, never a
traceback; ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence

import typer

from queuelens.analytics.window import WindowError
from queuelens.cli import admin, alerts, collect, doctor, export, read, serve
from queuelens.cli._app import app
from queuelens.config import ConfigError
from queuelens.probes import ProbeError
from queuelens.storage import StorageError

__all__ = ["EXIT_USAGE", "app", "main"]

#: a usage error, a bad setting or an unreachable storage
EXIT_USAGE = 2
#: errors the user can fix, reported in one line without a traceback
_USER_ERRORS = (ConfigError, StorageError, WindowError, ProbeError)

#: help panel -> (command name, function), in the order --help shows them
_COMMANDS: dict[str, list[tuple[str, Callable[..., None]]]] = {
    "Reading": [
        ("status", read.status),
        ("top", read.top),
        ("queues", read.queues),
        ("jobs", read.jobs),
        ("workers", read.workers),
        ("servers", read.servers),
        ("export", export.export),
    ],
    "Serving": [("serve", serve.serve), ("demo", serve.demo)],
    "Collecting": [("probe", collect.probe), ("celery-events", collect.celery_events)],
    "Operating": [
        ("doctor", doctor.doctor),
        ("migrate", admin.migrate),
        ("prune", admin.prune),
        ("settings", admin.settings),
    ],
}
for _panel, _commands in _COMMANDS.items():
    for _name, _function in _commands:
        app.command(_name, rich_help_panel=_panel)(_function)
app.add_typer(alerts.alerts, rich_help_panel="Operating")


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``queuelens`` with ``argv`` (default: ``sys.argv[1:]``); return the exit code."""
    command = typer.main.get_command(app)
    try:
        command.main(args=argv, prog_name="queuelens", standalone_mode=True)
    except SystemExit as exc:  # typer's exit: 0, a command's code, 2 for usage, 130 for Ctrl-C
        return exc.code if isinstance(exc.code, int) else int(exc.code is not None)
    except _USER_ERRORS as exc:
        print(f"queuelens: error: {error_line(exc)}", file=sys.stderr)
        return EXIT_USAGE
    return 0


def error_line(exc: Exception) -> str:
    """One line for the user: a window error names its option (``--window: ...``)."""
    text = str(exc)
    if isinstance(exc, WindowError) and text.startswith(exc.parameter + ":"):
        text = f"--{exc.parameter}{text[len(exc.parameter) :]}"
    return " ".join(text.split())
