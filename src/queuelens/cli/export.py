"""``export``: figures per job and step as CSV or JSON, to a file (with a progress bar) or
stdout, streamed so that a 30-day window of every series needs no more memory than an hour.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Annotated, Any, Literal, TextIO

import typer
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from queuelens.analytics.window import parse_step
from queuelens.cli._app import (
    AppFilter,
    Since,
    StorageOption,
    Until,
    WindowOption,
    console,
    reading,
)
from queuelens.config import ConfigError
from queuelens.export import chunk_count, iter_csv, iter_json, iter_rows


def export(
    ctx: typer.Context,
    fmt: Annotated[
        Literal["csv", "json"], typer.Option("--format", "-f", help="csv, or a JSON array")
    ] = "csv",
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", metavar="FILE", help="write to FILE (default: stdout)"),
    ] = None,
    step: Annotated[
        str | None,
        typer.Option(
            metavar="STEP",
            help="one row per job per STEP, e.g. 1m, 1h, 1d "
            "(default: about 60 rows per job over the window)",
        ),
    ] = None,
    window: WindowOption = "1h",
    since: Since = None,
    until: Until = None,
    app_name: AppFilter = None,
    queue: Annotated[str | None, typer.Option(metavar="NAME", help="only this queue")] = None,
    job: Annotated[str | None, typer.Option(metavar="NAME", help="only this job")] = None,
    storage: StorageOption = None,
) -> None:
    """Export figures per job and step as CSV or JSON.

    One row per job and step that had jobs: counts, failure rate, throughput, run time
    and wait percentiles, CPU and memory. The window is read in chunks, so any size works.
    Writing to a file shows a progress bar on stderr; the file appears only when complete.

    Examples:

    ```
    queuelens export --window 24h --step 1h -o jobs.csv
    queuelens export -f json --since 2026-11-01 --step 1d -o since-november.json
    queuelens export --app billing --queue emails | head
    ```
    """
    with reading(ctx, storage) as analytics:
        found = analytics.window(window, since=since, until=until)
        step_s = parse_step(step, found)
        render = iter_csv if fmt == "csv" else iter_json
        if output is None:
            rows = iter_rows(analytics, found, step_s=step_s, app=app_name, queue=queue, job=job)
            for text in render(rows):
                sys.stdout.write(text)
            return
        total = chunk_count(found, step_s=step_s, analytics=analytics)
        written = 0
        with _replacing(output) as out, _progress() as progress:
            task = progress.add_task(f"exporting to {output}", total=total, rows=0)

            def count(n: int) -> None:
                nonlocal written
                written = n
                progress.update(task, rows=n)

            rows = iter_rows(
                analytics,
                found,
                step_s=step_s,
                app=app_name,
                queue=queue,
                job=job,
                on_chunk=lambda done: progress.update(task, completed=done),
            )
            for text in render(_counting(rows, count)):
                out.write(text)
    print(f"queuelens: exported {written:,} rows to {output}", file=sys.stderr)


def _progress() -> Progress:
    return Progress(
        TextColumn("{task.description}", markup=False),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("chunks · {task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=console(stderr=True),
    )


def _counting(
    rows: Iterator[dict[str, Any]], report: Callable[[int], None]
) -> Iterator[dict[str, Any]]:
    n = 0
    for row in rows:
        yield row
        n += 1
        if n % 1000 == 0:
            report(n)
    report(n)


@contextlib.contextmanager
def _replacing(path: Path) -> Iterator[TextIO]:
    """A file written beside ``path`` and renamed over it on success, so no half export
    is ever mistaken for a whole one."""
    partial = path.with_name(path.name + ".part")
    try:
        handle = partial.open("w", encoding="utf-8", newline="")
    except OSError as exc:
        raise ConfigError(
            f"--output {str(path)!r} cannot be written: {exc.strerror}; check that the "
            "directory exists and is writable"
        ) from None
    try:
        with handle:
            yield handle
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
