"""Where health turns to warning and critical: the ``[health]`` table of ``queuelens.toml``.

    thresholds = health_thresholds(load_table("health"))     # defaults when absent
    thresholds.for_queue("emails").wait_p95_target_s

Keys are the field names of :class:`HealthThresholds`, durations without their ``_s``
(``oldest_pending_age_warning = "5m"``); per-queue overrides go under
``[health.queues."<queue>"]``. A bad key or value raises ConfigError naming it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any

__all__ = ["HealthThresholds", "health_thresholds"]


@dataclass(frozen=True, slots=True)
class HealthThresholds:
    """Where each input turns a queue, fleet or server to warning and to critical.

    Set them in the ``[health]`` table of ``queuelens.toml`` (durations as ``5m``), with
    per-queue overrides under ``[health.queues."<queue>"]``.
    """

    oldest_pending_age_warning_s: float = 300.0
    oldest_pending_age_critical_s: float = 1800.0
    #: the wait every queue should keep its p95 under; critical at 3x
    wait_p95_target_s: float = 60.0
    wait_p95_critical_factor: float = 3.0
    failure_rate_warning: float = 0.05
    failure_rate_critical: float = 0.25
    #: a failure rate this many times its baseline is a warning (twice that: critical) ...
    failure_rate_baseline_factor: float = 2.0
    #: ... if it is also at least this much above the baseline
    failure_rate_baseline_margin: float = 0.02
    #: failure rates over fewer jobs than this are not judged
    min_jobs: int = 20
    #: pending jobs at which a queue is in warning (0: depth alone never is)
    pending_warning: float = 0.0
    pending_critical: float = 0.0
    #: a probe sample older than this no longer tells the present
    sample_stale_s: float = 300.0
    #: workers that died within this long count against the fleet
    dead_worker_recent_s: float = 3600.0
    busy_ratio_warning: float = 0.9
    cpu_percent_warning: float = 85.0
    cpu_percent_critical: float = 95.0
    memory_percent_warning: float = 85.0
    memory_percent_critical: float = 95.0
    disk_percent_warning: float = 85.0
    disk_percent_critical: float = 95.0
    load_per_cpu_warning: float = 1.5
    load_per_cpu_critical: float = 2.0
    #: per-queue overrides of any field above
    queues: Mapping[str, HealthThresholds] = field(default_factory=dict)

    def for_queue(self, queue: str) -> HealthThresholds:
        return self.queues.get(queue, self)


_DURATIONS = {f.name for f in fields(HealthThresholds) if f.name.endswith("_s")}


def health_thresholds(table: Mapping[str, Any] | None, where: str = "[health]") -> HealthThresholds:
    """Thresholds from the ``[health]`` table of ``queuelens.toml``.

    Keys are the field names of :class:`HealthThresholds`, durations without their ``_s``
    (``oldest_pending_age_warning = "5m"``). Raises ConfigError naming the bad key.
    """
    from queuelens.config import ConfigError

    base = HealthThresholds()
    if not table:
        return base
    if not isinstance(table, Mapping):
        raise ConfigError(f'{where} must be a table, e.g. [health] wait_p95_target = "30s"')
    queues = table.get("queues", {})
    values = {k: v for k, v in table.items() if k != "queues"}
    base = _apply(base, values, where)
    if not isinstance(queues, Mapping):
        raise ConfigError(f"{where}.queues must be a table of tables, e.g. [health.queues.emails]")
    overrides = {}
    for name, overrides_table in queues.items():
        label = f"{where}.queues.{name!r}"
        if not isinstance(overrides_table, Mapping):
            raise ConfigError(f'{label} must be a table, e.g. wait_p95_target = "5s"')
        overrides[str(name)] = _apply(base, overrides_table, label)
    return replace(base, queues=overrides)


def _apply(base: HealthThresholds, table: Mapping[str, Any], where: str) -> HealthThresholds:
    from queuelens.config import ConfigError, parse_duration

    known = {f.name for f in fields(HealthThresholds)} - {"queues"}
    public = {name.removesuffix("_s"): name for name in known}
    changes: dict[str, Any] = {}
    for key, value in table.items():
        name = public.get(key, key if key in known else None)
        if name is None:
            raise ConfigError(
                f"unknown key {key!r} in {where}; known keys: {', '.join(sorted(public))}"
            )
        try:
            if name in _DURATIONS:
                changes[name] = parse_duration(value)
            elif name == "min_jobs":
                if isinstance(value, bool) or not isinstance(value, int) or value < 0:
                    raise ValueError("a whole number >= 0")
                changes[name] = value
            else:
                if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                    raise ValueError("a number >= 0 (0 turns the check off)")
                changes[name] = float(value)
        except ValueError as exc:
            raise ConfigError(f"{key} = {value!r} in {where} is invalid: expected {exc}") from None
    return replace(base, **changes)
