"""Rich tables of analytics results: what ``status``, ``top`` and the listings print.

    console.print(queues_table(analytics.queue_summaries(window)))
    console.print(overview_view(analytics.overview(window)))     # status and top

Numbers are shown as analytics computed them; only units are chosen here (``12.3ms``,
``4m05s``). A value nobody measured shows as ``-``, never as 0. A table too wide for the
terminal leaves out its least important columns rather than squeezing every one.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from queuelens.analytics import Health, JobSummary, Overview, QueueSummary, ServerSummary, Window
from queuelens.analytics.state import WorkerView

__all__ = [
    "jobs_table",
    "overview_view",
    "queues_table",
    "reasons_view",
    "servers_table",
    "window_line",
    "workers_table",
]

_STYLE = {
    "healthy": "green",
    "warning": "yellow",
    "critical": "bold red",
    "unknown": "dim",
    "busy": "green",
    "idle": "cyan",
    "stale": "yellow",
    "dead": "bold red",
    "stopped": "dim",
}


# -- units --------------------------------------------------------------------------------------


def _count(value: float | None) -> str:
    if value is None:
        return "-"
    return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.1f}"


def _rate(value: float | None) -> str:
    return "-" if value is None else f"{value:.1%}"


def _per_min(value: float) -> str:
    return f"{value:,.1f}" if value < 100 else f"{value:,.0f}"


def _ms(value: float | None) -> str:
    """Milliseconds, in the unit that reads best."""
    if value is None:
        return "-"
    if value < 1000:
        return f"{value:.1f}ms"
    return _seconds(value / 1000.0)


def _seconds(value: float | None) -> str:
    if value is None:
        return "-"
    if value < 60:
        return f"{value:.1f}s"
    minutes, seconds = divmod(int(value), 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    if hours < 48:
        return f"{hours}h{minutes:02d}m"
    return f"{hours // 24}d{hours % 24:02d}h"


def _percent(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}%"


def _time(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).strftime("%Y-%m-%d %H:%M UTC")


def _styled(value: str) -> Text:
    return Text(value, style=_STYLE.get(value, ""))


def _health(health: Health) -> Text:
    text = _styled(str(health.status))
    if health.status != "unknown":
        text.append(f" {health.score}", style="dim")
    return text


# -- tables that fit --------------------------------------------------------------------------


@dataclass(slots=True)
class _Column:
    header: str
    justify: Literal["left", "right"] = "right"
    #: columns with a lower rank are left out first when the table is too wide; None: never
    drop_rank: int | None = None
    # Text, never str: rich would read brackets in a queue or job name as markup
    cells: list[Text] = field(default_factory=list)

    @property
    def natural_width(self) -> int:
        widths = [len(line) for line in self.header.split("\n")]
        return max(widths + [cell.cell_len for cell in self.cells])


class _FittedTable:
    """A table built when printed, without the columns that do not fit the console."""

    def __init__(self, title: str | None, columns: list[_Column]) -> None:
        self.title = title
        self.columns = columns

    def add_row(self, *cells: str | Text) -> None:
        for column, cell in zip(self.columns, cells, strict=True):
            column.cells.append(Text(cell) if isinstance(cell, str) else cell)

    def table(self, width: int) -> Table:
        shown = list(self.columns)
        droppable = sorted(
            (c for c in shown if c.drop_rank is not None), key=lambda c: c.drop_rank or 0
        )
        # each column takes its padding and a separator (or an edge) of one character
        while droppable and sum(c.natural_width + 2 for c in shown) > width:
            shown.remove(droppable.pop(0))
        table = Table(
            title=self.title,
            title_justify="left",
            title_style="bold",
            header_style="bold",
            box=box.SIMPLE_HEAD,
            pad_edge=False,
            collapse_padding=True,
        )
        for column in shown:
            table.add_column(
                column.header,
                justify=column.justify,
                no_wrap=column.justify == "right",
                overflow="fold",
            )
        rows = len(self.columns[0].cells) if self.columns else 0
        for index in range(rows):
            table.add_row(*(column.cells[index] for column in shown))
        return table

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        yield self.table(options.max_width)


def _names(*headers: str) -> list[_Column]:
    return [_Column(header, justify="left") for header in headers]


def _one_app(apps: Sequence[str]) -> bool:
    return len(set(apps)) <= 1


# -- tables -------------------------------------------------------------------------------------


def queues_table(queues: Sequence[QueueSummary], title: str | None = None) -> _FittedTable:
    """One row per queue: health, depth, figures of the window, live workers."""
    show_app = not _one_app([q.app for q in queues])
    columns = _names(*(["app"] if show_app else []), "queue")
    columns += [
        _Column("health", justify="left"),
        _Column("pending", drop_rank=8),
        _Column("oldest", drop_rank=7),
        _Column("processed", drop_rank=6),
        _Column("failed", drop_rank=5),
        _Column("jobs\n/min", drop_rank=4),
        _Column("wait\np95", drop_rank=3),
        _Column("run\np95", drop_rank=2),
        _Column("workers", drop_rank=1),
    ]
    table = _FittedTable(title, columns)
    for queue in queues:
        stats, depth = queue.stats, queue.depth
        table.add_row(
            *([queue.app] if show_app else []),
            queue.queue,
            _health(queue.health),
            _count(depth.pending if depth else None),
            _seconds(depth.oldest_pending_age_s if depth else None),
            _count(stats.processed),
            _rate(stats.failure_rate) if stats.processed else "-",
            _per_min(stats.throughput_per_min),
            _ms(stats.wait_ms.p95),
            _ms(stats.duration_ms.p95),
            f"{queue.workers_busy}/{queue.workers_total}",
        )
    return table


def reasons_view(queues: Sequence[QueueSummary]) -> RenderableType | None:
    """Why each queue is not healthy, one line per reason (None: every queue is fine)."""
    show_app = not _one_app([q.app for q in queues])
    lines = []
    for queue in queues:
        name = f"{queue.app}/{queue.queue}" if show_app else queue.queue
        lines += _health_lines(name, queue.health)
    return Group(*lines) if lines else None


def jobs_table(jobs: Sequence[JobSummary], title: str | None = None) -> _FittedTable:
    """One row per job: outcomes, rates, run time and wait percentiles, top exception."""
    show_app = not _one_app([j.app for j in jobs])
    columns = _names(*(["app"] if show_app else []), "queue", "job")
    columns += [
        _Column("processed"),
        _Column("failed", drop_rank=9),
        _Column("retried", drop_rank=3),
        _Column("jobs\n/min", drop_rank=6),
        _Column("run\np50", drop_rank=4),
        _Column("run\np95", drop_rank=8),
        _Column("run\np99", drop_rank=2),
        _Column("wait\np95", drop_rank=7),
        _Column("top exception", justify="left", drop_rank=5),
    ]
    table = _FittedTable(title, columns)
    for job in jobs:
        stats = job.stats
        top = stats.exceptions[0] if stats.exceptions else None
        table.add_row(
            *([job.app] if show_app else []),
            job.queue,
            job.job,
            _count(stats.processed),
            f"{_count(stats.failed)} ({_rate(stats.failure_rate)})" if stats.failed else "0",
            _count(stats.retried),
            _per_min(stats.throughput_per_min),
            _ms(stats.duration_ms.p50),
            _ms(stats.duration_ms.p95),
            _ms(stats.duration_ms.p99),
            _ms(stats.wait_ms.p95),
            f"{top.type} ×{top.count}" if top else "",
        )
    return table


def workers_table(workers: Sequence[WorkerView], title: str | None = None) -> _FittedTable:
    """One row per worker: state as derived now, slots in use, lifetime counts, resources."""
    show_app = not _one_app([w.app for w in workers])
    columns = _names(*(["app"] if show_app else []), "worker")
    columns += [
        _Column("host:pid", justify="left", drop_rank=5),
        _Column("queues", justify="left", drop_rank=7),
        _Column("state", justify="left"),
        _Column("busy", drop_rank=8),
        _Column("processed", drop_rank=6),
        _Column("failed", drop_rank=4),
        _Column("busy\nratio", drop_rank=3),
        _Column("rss", drop_rank=2),
        _Column("cpu", drop_rank=1),
        _Column("last\nheartbeat", drop_rank=9),
    ]
    table = _FittedTable(title, columns)
    for worker in workers:
        table.add_row(
            *([worker.app] if show_app else []),
            worker.name or worker.id,
            f"{worker.hostname}:{worker.pid}",
            ", ".join(worker.queues),
            _styled(str(worker.state)),
            f"{worker.busy_slots}/{worker.concurrency}",
            _count(worker.processed),
            _count(worker.failed),
            _rate(worker.busy_ratio),
            "-" if worker.rss_mb is None else f"{worker.rss_mb:.0f}MB",
            _percent(worker.cpu_percent),
            f"{_seconds(worker.heartbeat_age_s)} ago",
        )
    return table


def servers_table(servers: Sequence[ServerSummary], title: str | None = None) -> _FittedTable:
    """One row per host: health, CPU, load, memory, each disk, live workers."""
    columns = [
        *_names("host"),
        _Column("health", justify="left"),
        _Column("cpu", drop_rank=7),
        _Column("load\n1/5/15", drop_rank=4),
        _Column("memory", drop_rank=6),
        _Column("disks", justify="left", drop_rank=5),
        _Column("workers", drop_rank=3),
        _Column("sampled", drop_rank=2),
    ]
    table = _FittedTable(title, columns)
    for summary in servers:
        server = summary.server
        table.add_row(
            server.hostname,
            _health(summary.health),
            _percent(server.cpu_percent),
            "/".join("-" if v is None else f"{v:.2f}" for v in server.load),
            _percent(server.memory_percent),
            ", ".join(f"{d.mount} {_percent(d.percent)}" for d in server.disks) or "-",
            str(summary.workers),
            f"{_seconds(server.sample_age_s)} ago",
        )
    return table


def _health_lines(label: str, health: Health) -> list[Text]:
    return [
        Text.assemble(
            "  ",
            (f"{label}: ", "bold"),
            (str(reason.severity), _STYLE.get(str(reason.severity), "")),
            f" [{reason.code}] {reason.message}",
        )
        for reason in health.reasons
    ]


def window_line(window: Window) -> str:
    return f"window {window.label}: {_time(window.start)} to {_time(window.end)}"


def overview_view(overview: Overview, *, app: str | None = None) -> Group:
    """Everything ``status`` shows: totals, queues and why, workers by state, servers."""
    totals = overview.totals
    scope = f"app {app}" if app else "every app"
    parts: list[RenderableType] = [
        Text(f"{window_line(overview.window)} · {scope}", style="dim"),
        Text.assemble(
            ("jobs ", "bold"),
            f"{_count(totals.processed)} processed · {_count(totals.failed)} failed "
            f"({_rate(totals.failure_rate)}) · {_count(totals.retried)} retried · "
            f"{_per_min(totals.throughput_per_min)}/min · run p95 "
            f"{_ms(totals.duration_ms.p95)} · wait p95 {_ms(totals.wait_ms.p95)}",
        ),
    ]
    for name, dropped in sorted(overview.dropped.items()):
        parts.append(
            Text(
                f"  {name}: recorders dropped {dropped} outcomes (storage was unreachable)",
                style="yellow",
            )
        )
    if overview.queues:
        parts.append(queues_table(overview.queues, title="queues"))
        reasons = reasons_view(overview.queues)
        if reasons is not None:
            parts.append(reasons)
    else:
        parts.append(Text("no queues recorded yet", style="dim"))
    workers = overview.workers
    line = Text.assemble(("\nworkers ", "bold"), f"{workers.get('total', 0)} total")
    for state in ("busy", "idle", "stale", "dead", "stopped"):
        line.append(" · ")
        line.append(f"{workers.get(state, 0)} {state}", style=_STYLE[state])
    line.append(" · fleet ")
    line.append_text(_health(overview.fleet_health))
    parts.append(line)
    parts += _health_lines("fleet", overview.fleet_health)
    if overview.servers:
        parts.append(Text(""))
        parts.append(servers_table(overview.servers, title="servers"))
        for server in overview.servers:
            parts += _health_lines(server.server.hostname, server.health)
    return Group(*parts)
