"""The alert rule model: kinds, metrics, scopes, rules and the default rule set.

    rule = default_rules()[0]                     # (from queuelens.alerting.rules)
    rule.crosses(0.3), rule.scope.matches(app="billing", queue="emails")

Parsing and validation live in :mod:`queuelens.alerting.rules`, which re-exports all of this.
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass, field
from enum import StrEnum
from fnmatch import fnmatchcase
from typing import Any

from queuelens.config import ConfigError

__all__ = [
    "DEFAULT_RULES",
    "DEFAULT_RULES_TOML",
    "METRICS",
    "MetricInfo",
    "MetricLevel",
    "Rule",
    "RuleError",
    "RuleKind",
    "Scope",
    "Severity",
    "matches",
    "metric_names",
]


class RuleError(ConfigError):
    """A rule is invalid; ``str(error)`` names the rule, the field and what is accepted."""


class RuleKind(StrEnum):
    #: a metric compared with a threshold
    threshold = "threshold"
    #: depth will exceed N within a horizon, or the backlog takes longer than T to drain
    trend = "trend"
    #: an anomaly score (robust z-score against the baseline) above k
    anomaly = "anomaly"
    #: something that should happen does not: worker heartbeats, jobs processed
    absence = "absence"
    #: jobs of a queue wait too long (p95 wait or the oldest pending job)
    long_wait = "long_wait"


class Severity(StrEnum):
    #: someone should look during working hours
    warning = "warning"
    #: someone should look now
    critical = "critical"


class MetricLevel(StrEnum):
    #: per job series, added up per queue or app as the rule's ``per`` says
    job = "job"
    #: per queue, from the newest probe sample
    queue = "queue"
    #: per app, over its workers
    fleet = "fleet"
    #: per host (and per disk)
    server = "server"


@dataclass(frozen=True, slots=True)
class MetricInfo:
    """One metric a threshold rule can watch and the analytics field it reads."""

    name: str
    level: MetricLevel
    #: ``ratio`` (0..1), ``percent`` (0..100), ``seconds``, ``jobs``, ``workers`` or ``per_min``
    unit: str
    #: where the value comes from in ``queuelens.analytics``
    source: str
    #: True when the value is computed over the rule's ``window``
    windowed: bool = False


METRICS: dict[str, MetricInfo] = {
    m.name: m
    for m in (
        MetricInfo("failure_rate", MetricLevel.job, "ratio", "Stats.failure_rate", True),
        MetricInfo("retry_rate", MetricLevel.job, "ratio", "Stats.retry_rate", True),
        MetricInfo("throughput", MetricLevel.job, "per_min", "Stats.throughput_per_min", True),
        MetricInfo("wait_p95", MetricLevel.job, "seconds", "Stats.wait_ms.p95 / 1000", True),
        MetricInfo(
            "duration_p95", MetricLevel.job, "seconds", "Stats.duration_ms.p95 / 1000", True
        ),
        MetricInfo("depth", MetricLevel.queue, "jobs", "QueueDepth.pending"),
        MetricInfo(
            "oldest_pending_age", MetricLevel.queue, "seconds", "QueueDepth.oldest_pending_age_s"
        ),
        MetricInfo(
            "busy_ratio", MetricLevel.fleet, "ratio", "WorkerView.busy_ratio, slot-weighted"
        ),
        MetricInfo(
            "dead_workers",
            MetricLevel.fleet,
            "workers",
            "WorkerView.state == dead, last heartbeat within the window",
            True,
        ),
        MetricInfo("server_cpu", MetricLevel.server, "percent", "ServerView.cpu_percent"),
        MetricInfo("server_memory", MetricLevel.server, "percent", "ServerView.memory_percent"),
        MetricInfo("server_disk", MetricLevel.server, "percent", "DiskView.percent, per disk"),
    )
}

#: the metrics each kind accepts (threshold: every one in METRICS)
KIND_METRICS: dict[RuleKind, tuple[str, ...]] = {
    RuleKind.threshold: tuple(METRICS),
    RuleKind.trend: ("depth", "time_to_drain"),
    RuleKind.anomaly: ("throughput", "failure_rate", "duration_p95", "wait_p95"),
    RuleKind.absence: ("heartbeat", "processed"),
    RuleKind.long_wait: ("wait",),
}
OPS = (">", ">=", "<", "<=")
#: placeholders of summary and description templates
PLACEHOLDERS = ("rule", "severity", "metric", "app", "queue", "job", "host", "mount", "value",
                "threshold")  # fmt: skip
SCOPE_KEYS = {
    MetricLevel.job: ("app", "queue", "job"),
    MetricLevel.queue: ("app", "queue"),
    MetricLevel.fleet: ("app",),
    MetricLevel.server: ("host",),
}
PER_LEVEL = {
    MetricLevel.job: ("queue", "app", "job"),
    MetricLevel.queue: ("queue", "app"),
    MetricLevel.fleet: ("app",),
    MetricLevel.server: ("host",),
}
_COMMON = ("name", "kind", "severity", "enabled", "for", "scope", "labels", "annotations")
KIND_FIELDS: dict[RuleKind, tuple[str, ...]] = {
    RuleKind.threshold: (*_COMMON, "metric", "op", "threshold", "window", "per", "min_jobs"),
    RuleKind.trend: (*_COMMON, "metric", "threshold", "horizon", "window"),
    RuleKind.anomaly: (*_COMMON, "metric", "threshold", "window", "per"),
    RuleKind.absence: (*_COMMON, "metric", "window", "while_waiting"),
    RuleKind.long_wait: (*_COMMON, "metric", "threshold", "window"),
}
NAME_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
LABEL_RE = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True, slots=True)
class Scope:
    """Globs (``fnmatch``, case-sensitive) a series must match; a tuple matches if any does.

    Scope(queue=("emails.*",)).matches("billing", "emails.high", "send")   # True
    """

    app: tuple[str, ...] = ("*",)
    queue: tuple[str, ...] = ("*",)
    job: tuple[str, ...] = ("*",)
    host: tuple[str, ...] = ("*",)

    def matches(
        self,
        app: str | None = None,
        queue: str | None = None,
        job: str | None = None,
        host: str | None = None,
    ) -> bool:
        """True when every name given matches its globs; a name not given is not checked."""
        for name, globs in ((app, self.app), (queue, self.queue), (job, self.job),
                            (host, self.host)):  # fmt: skip
            if name is not None and not any(fnmatchcase(name, glob) for glob in globs):
                return False
        return True


def matches(
    rule_scope: Scope,
    app: str | None = None,
    queue: str | None = None,
    job: str | None = None,
    host: str | None = None,
) -> bool:
    """Whether a series (app, queue, job) or a host falls in ``rule_scope``."""
    return rule_scope.matches(app, queue, job, host)


def metric_names(kind: RuleKind | str = RuleKind.threshold) -> tuple[str, ...]:
    """The metric names a rule of ``kind`` accepts."""
    return KIND_METRICS[RuleKind(kind)]


@dataclass(frozen=True, slots=True)
class Rule:
    """One alert rule, validated; durations in seconds.

    rule = Rule("slow_emails", RuleKind.threshold, "wait_p95", threshold=60.0, for_s=300.0,
                scope=Scope(queue=("emails.*",)))
    """

    name: str
    kind: RuleKind
    metric: str
    #: how the value compares with ``threshold`` to fire (trend, anomaly, long_wait: ``>``)
    op: str = ">"
    #: in the metric's unit: ratio 0..1, percent 0..100, seconds, jobs or an anomaly score
    threshold: float = 0.0
    #: how long the condition must hold before the alert fires (0: at once)
    for_s: float = 0.0
    #: the history the value is computed over (rates, percentiles, trend fits, absence)
    window_s: float | None = None
    #: trend of depth: how far ahead the forecast looks
    horizon_s: float | None = None
    #: the series one alert is about: ``queue``, ``app``, ``job`` or ``host``
    per: str = "queue"
    #: rates are judged only over at least this many jobs
    min_jobs: int = 0
    #: absence of heartbeats: only while jobs wait in the queue
    while_waiting: bool = False
    scope: Scope = field(default_factory=Scope)
    labels: dict[str, str] = field(default_factory=dict)
    #: ``summary`` and ``description`` templates with ``{queue}``, ``{value}``, ...
    annotations: dict[str, str] = field(default_factory=dict)
    severity: Severity = Severity.warning
    enabled: bool = True

    @property
    def info(self) -> MetricInfo | None:
        """The catalogue entry of a threshold rule's metric (None for other kinds)."""
        return METRICS.get(self.metric) if self.kind is RuleKind.threshold else None

    def crosses(self, value: float) -> bool:
        """Whether ``value`` is on the firing side of the threshold."""
        if self.op == ">":
            return value > self.threshold
        if self.op == ">=":
            return value >= self.threshold
        if self.op == "<":
            return value < self.threshold
        return value <= self.threshold


#: the rules that ship enabled (TOML, as users write theirs); a user rule of the same name
#: overrides or disables one
DEFAULT_RULES_TOML = """
[[rules]]
name = "failure_rate_warning"
kind = "threshold"
metric = "failure_rate"
op = ">"
threshold = 0.10
window = "5m"
for = "5m"
min_jobs = 20
severity = "warning"
annotations.summary = "Queue {queue} ({app}) fails {value} of its jobs"
annotations.description = "Over {threshold} of the jobs of {queue} failed over the last 5 minutes."

[[rules]]
name = "failure_rate_critical"
kind = "threshold"
metric = "failure_rate"
op = ">"
threshold = 0.25
window = "5m"
for = "5m"
min_jobs = 20
severity = "critical"
annotations.summary = "Queue {queue} ({app}) fails {value} of its jobs"
annotations.description = "Over {threshold} of the jobs of {queue} failed over the last 5 minutes."

[[rules]]
name = "oldest_pending_age"
kind = "threshold"
metric = "oldest_pending_age"
op = ">"
threshold = "10m"
for = "1m"
severity = "warning"
annotations.summary = "The oldest job in {queue} ({app}) has waited {value}"
annotations.description = "A job in {queue} has been pending for more than {threshold}."

[[rules]]
name = "long_wait"
kind = "long_wait"
threshold = "5m"
window = "5m"
for = "5m"
severity = "warning"
annotations.summary = "Jobs of {queue} ({app}) wait {value}"
annotations.description = "The p95 wait of {queue}, or its oldest pending job, is past {threshold}."

[[rules]]
name = "no_live_worker"
kind = "absence"
metric = "heartbeat"
while_waiting = true
for = "2m"
severity = "critical"
annotations.summary = "No live worker serves {queue} ({app}) while jobs wait"
annotations.description = "Jobs are pending in {queue} and no worker of it sends heartbeats."

[[rules]]
name = "queue_stalled"
kind = "absence"
metric = "processed"
window = "15m"
severity = "critical"
annotations.summary = "No job of {queue} ({app}) ended in 15m while jobs wait"
annotations.description = "Jobs are pending in {queue} but none ended in 15m: workers stuck?"

[[rules]]
name = "dead_workers"
kind = "threshold"
metric = "dead_workers"
op = ">"
threshold = 0
window = "1h"
severity = "warning"
annotations.summary = "{value} workers of {app} died"
annotations.description = "Workers stopped heartbeating without shutting down in the last hour."

[[rules]]
name = "server_disk_full"
kind = "threshold"
metric = "server_disk"
op = ">"
threshold = 90
for = "5m"
severity = "warning"
annotations.summary = "Disk {mount} of {host} is {value} full"
annotations.description = "Disk {mount} of {host} is more than {threshold} full."
"""
DEFAULT_RULES: tuple[dict[str, Any], ...] = tuple(tomllib.loads(DEFAULT_RULES_TOML)["rules"])
