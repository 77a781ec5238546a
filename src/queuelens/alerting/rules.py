"""Alert rules: what to watch, read from ``[[rules]]`` in queuelens.toml, checked at start-up.

    rules = load_rules()                                  # defaults, then queuelens.toml
    rules = load_rules(rules_path="alerts.toml")          # plus a separate rules file
    [r.name for r in rules if r.enabled]                  # ['failure_rate_warning', ...]

A rule names an analytics metric (see :data:`METRICS` and docs/alerting.md for the field each
one reads), a comparison and a scope of globs over app, queue, job and host. Evaluating a
rule is the alert engine's job; this module holds the model, the validation and the default
rule set. A bad rule raises :class:`RuleError`, one line naming the rule (position and name),
the field and what is accepted.
"""

from __future__ import annotations

import math
import os
import re
import string
import tomllib
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from queuelens.alerting.rule_model import (
    DEFAULT_RULES,
    DEFAULT_RULES_TOML,
    KIND_FIELDS,
    KIND_METRICS,
    LABEL_RE,
    METRICS,
    NAME_RE,
    OPS,
    PER_LEVEL,
    PLACEHOLDERS,
    SCOPE_KEYS,
    MetricInfo,
    MetricLevel,
    Rule,
    RuleError,
    RuleKind,
    Scope,
    Severity,
    matches,
    metric_names,
)
from queuelens.config import _read_toml, _toml_path, parse_duration

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
    "default_rules",
    "glob_to_regex",
    "load_rules",
    "matches",
    "metric_names",
    "parse_rule",
    "parse_rules",
]


class _Where:
    """Names a rule in messages: ``rule #2 'slow_emails' in 'queuelens.toml'``."""

    def __init__(self, position: int, name: object, source: str) -> None:
        self.position, self.source = position, source
        self.name = name if isinstance(name, str) else None

    def __str__(self) -> str:
        named = f" {self.name!r}" if self.name else ""
        return f"rule #{self.position}{named} in {self.source!r}"

    def error(self, message: str) -> RuleError:
        return RuleError(f"{self}: {message}")


def _duration(where: _Where, key: str, value: object, example: str, zero: bool = False) -> float:
    if zero and value in (0, "0", "0s"):
        return 0.0
    try:
        return parse_duration(value)
    except ValueError as exc:
        raise where.error(f"{key} {value!r} is invalid ({exc}); expected e.g. {example}") from None


def _number(where: _Where, key: str, value: object, unit: str) -> float:
    if unit == "seconds" and isinstance(value, str):
        return _duration(where, key, value, "5m")
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise where.error(f"{key} {value!r} is not a number; expected e.g. {_EXAMPLE[unit]}")
    if value < 0:
        raise where.error(
            f"{key} {value!r} is negative; expected a number >= 0, e.g. {_EXAMPLE[unit]}"
        )
    top = {"ratio": 1.0, "percent": 100.0}.get(unit)
    if top is not None and value > top:
        raise where.error(f"{key} {value!r} is above {top:g} (a {unit}); expected e.g. "
                          f"{_EXAMPLE[unit]}")  # fmt: skip
    return float(value)


_EXAMPLE = {
    "ratio": "0.1 (10%)",
    "percent": "90 (%)",
    "seconds": '"5m" or 300',
    "jobs": "1000",
    "workers": "0",
    "per_min": "100",
    "score": "3.5",
}


def _globs(where: _Where, key: str, value: object) -> tuple[str, ...]:
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not items or not all(isinstance(g, str) for g in items):
        raise where.error(
            f'scope.{key} must be a glob string or a list of them, e.g. "emails.*"; got {value!r}'
        )
    for glob in items:
        if not glob:
            raise where.error(f'scope.{key} has an empty glob; use "*" for any {key}')
        try:
            re.compile(glob_to_regex(glob))
        except re.error as exc:
            raise where.error(f"scope.{key} glob {glob!r} is not a valid pattern ({exc})") from None
    return tuple(items)


def glob_to_regex(glob: str) -> str:
    """An RE2- and Python-compatible regex (unanchored) matching what ``fnmatchcase`` does."""
    out: list[str] = []
    i, n = 0, len(glob)
    while i < n:
        char = glob[i]
        i += 1
        if char == "*":
            if not out or out[-1] != ".*":
                out.append(".*")
        elif char == "?":
            out.append(".")
        elif char == "[":
            j = i
            if j < n and glob[j] == "!":
                j += 1
            if j < n and glob[j] == "]":
                j += 1
            while j < n and glob[j] != "]":
                j += 1
            if j >= n:
                out.append("\\[")
                continue
            body, i = glob[i:j], j + 1
            negate = body.startswith("!")
            body = body[1:] if negate else body
            escaped = "".join("\\" + c if c in "\\[]^&~|" else c for c in body)
            out.append("[" + ("^" if negate else "") + escaped + "]")
        elif char.isalnum() or char == "_" or ord(char) > 127:
            out.append(char)
        else:
            out.append("\\" + char)
    return "".join(out)


def _strings(
    where: _Where, key: str, value: object, names: re.Pattern[str] | None
) -> dict[str, str]:
    if not isinstance(value, dict):
        raise where.error(f'{key} must be a table of strings, e.g. {{ team = "payments" }}')
    out: dict[str, str] = {}
    for name, text in value.items():
        if names is not None and (not names.match(name) or name.startswith("__")):
            raise where.error(
                f"{key}.{name} is not a label name; use letters, digits and _ (not leading __)"
            )
        if not isinstance(text, str):
            raise where.error(f"{key}.{name} must be a string, got {text!r}")
        out[name] = text
    return out


def _templates(where: _Where, annotations: dict[str, str]) -> dict[str, str]:
    for key, text in annotations.items():
        try:
            parts = list(string.Formatter().parse(text))
        except ValueError as exc:
            raise where.error(
                f"annotations.{key} is not a valid template ({exc}); write {{{{ for a brace"
            ) from None
        for _, placeholder, spec, conversion in parts:
            if placeholder is None:
                continue
            if placeholder not in PLACEHOLDERS or spec or conversion:
                raise where.error(
                    f"annotations.{key} has placeholder {{{placeholder}}}; accepted: "
                    + ", ".join(f"{{{p}}}" for p in PLACEHOLDERS)
                )
    return annotations


def _choice(
    where: _Where, key: str, value: object, accepted: Sequence[str], why: str = "is invalid"
) -> str:
    if not isinstance(value, str) or value not in accepted:
        raise where.error(f"{key} {value!r} {why}; accepted: {', '.join(accepted)}")
    return value


def parse_rule(raw: Mapping[str, Any], where: _Where) -> Rule:
    """One rule from its TOML table; RuleError naming ``where`` on any bad field."""
    if "name" not in raw:
        raise where.error('name is missing; every rule needs one, e.g. name = "slow_emails"')
    name = raw["name"]
    if not isinstance(name, str) or not NAME_RE.match(name):
        raise where.error(
            f"name {name!r} is invalid; use letters, digits and _, not starting with a digit"
        )
    if "kind" not in raw:
        raise where.error(f"kind is missing; accepted: {', '.join(RuleKind)}")
    kind = RuleKind(_choice(where, "kind", raw["kind"], list(RuleKind), "is unknown"))
    for key in raw:
        if key not in KIND_FIELDS[kind]:
            raise where.error(
                f"unknown field {key!r} for kind {kind.value!r}; accepted: "
                + ", ".join(KIND_FIELDS[kind])
            )
    metric_default = "wait" if kind is RuleKind.long_wait else None
    metric = raw.get("metric", metric_default)
    if metric is None:
        raise where.error(f"metric is missing; accepted: {', '.join(KIND_METRICS[kind])}")
    if not isinstance(metric, str) or metric not in KIND_METRICS[kind]:
        raise where.error(
            f"unknown metric {metric!r} for kind {kind.value!r}; accepted: "
            + ", ".join(KIND_METRICS[kind])
        )
    values: dict[str, Any] = {"name": name, "kind": kind, "metric": metric}
    values["severity"] = Severity(
        _choice(where, "severity", raw.get("severity", "warning"), list(Severity))
    )
    enabled = raw.get("enabled", True)
    if not isinstance(enabled, bool):
        raise where.error(f"enabled {enabled!r} must be true or false")
    values["enabled"] = enabled
    values["for_s"] = _duration(where, "for", raw.get("for", 0), "5m", zero=True)
    values["labels"] = _strings(where, "labels", raw.get("labels", {}), LABEL_RE)
    reserved = {"severity", "alertname"} & set(values["labels"])
    if reserved:
        raise where.error(f"labels.{min(reserved)} is set by queuelens; remove it")
    values["annotations"] = _templates(
        where, _strings(where, "annotations", raw.get("annotations", {}), None)
    )
    level = _level(kind, metric)
    values["scope"] = _scope(where, raw.get("scope", {}), level, metric)
    values.update(_kind_fields(where, kind, metric, level, raw))
    return Rule(**values)


def _level(kind: RuleKind, metric: str) -> MetricLevel:
    if kind is RuleKind.threshold:
        return METRICS[metric].level
    if kind is RuleKind.anomaly:
        return MetricLevel.job
    return MetricLevel.queue


def _scope(where: _Where, raw: object, level: MetricLevel, metric: str) -> Scope:
    if not isinstance(raw, dict):
        raise where.error('scope must be a table of globs, e.g. scope = { queue = "emails.*" }')
    accepted = SCOPE_KEYS[level]
    globs: dict[str, tuple[str, ...]] = {}
    for key, value in raw.items():
        if key not in accepted:
            raise where.error(
                f"scope.{key} does not apply to metric {metric!r} (a {level} metric); "
                f"accepted: {', '.join(accepted)}"
            )
        globs[key] = _globs(where, key, value)
    return Scope(**globs)


def _kind_fields(
    where: _Where, kind: RuleKind, metric: str, level: MetricLevel, raw: Mapping[str, Any]
) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if "window" in raw:
        out["window_s"] = _duration(where, "window", raw["window"], "5m")
    if kind is RuleKind.threshold:
        info = METRICS[metric]
        if "op" not in raw:
            raise where.error(f"op is missing; accepted: {', '.join(OPS)}")
        out["op"] = _choice(where, "op", raw["op"], OPS)
        if "threshold" not in raw:
            raise where.error(f"threshold is missing; expected e.g. {_EXAMPLE[info.unit]}")
        out["threshold"] = _number(where, "threshold", raw["threshold"], info.unit)
        if info.windowed:
            out.setdefault("window_s", 3600.0 if metric == "dead_workers" else 300.0)
        elif "window" in raw:
            raise where.error(f"window does not apply to metric {metric!r}, a value of now")
        if "min_jobs" in raw:
            if metric not in ("failure_rate", "retry_rate"):
                raise where.error("min_jobs applies only to failure_rate and retry_rate")
            min_jobs = raw["min_jobs"]
            if isinstance(min_jobs, bool) or not isinstance(min_jobs, int) or min_jobs < 0:
                raise where.error(f"min_jobs {min_jobs!r} is invalid; expected e.g. 20")
            out["min_jobs"] = min_jobs
    elif kind is RuleKind.trend:
        unit = "jobs" if metric == "depth" else "seconds"
        if "threshold" not in raw:
            raise where.error(f"threshold is missing; expected e.g. {_EXAMPLE[unit]}")
        out["threshold"] = _number(where, "threshold", raw["threshold"], unit)
        if metric == "depth":
            if "horizon" not in raw:
                raise where.error('horizon is missing: how far ahead to look, e.g. "1h"')
            out["horizon_s"] = _duration(where, "horizon", raw["horizon"], "1h")
        elif "horizon" in raw:
            raise where.error("horizon applies only to trend rules on depth")
        out.setdefault("window_s", 3600.0)
    elif kind is RuleKind.anomaly:
        out["threshold"] = _number(where, "threshold", raw.get("threshold", 3.5), "score")
        out.setdefault("window_s", 3600.0)
    elif kind is RuleKind.absence:
        if metric == "processed":
            if "window" not in raw:
                raise where.error('window is missing: how long without a processed job, e.g. "15m"')
            if "while_waiting" in raw and raw["while_waiting"] is not True:
                raise where.error("while_waiting is always true for metric 'processed'")
            out["while_waiting"] = True
        else:
            if "window" in raw:
                raise where.error("window does not apply to metric 'heartbeat'; use for")
            waiting = raw.get("while_waiting", False)
            if not isinstance(waiting, bool):
                raise where.error(f"while_waiting {waiting!r} must be true or false")
            out["while_waiting"] = waiting
    else:
        out["threshold"] = _number(where, "threshold", raw.get("threshold", 300), "seconds")
        out.setdefault("window_s", 300.0)
    if "per" in KIND_FIELDS[kind]:
        out["per"] = _choice(
            where,
            "per",
            raw.get("per", PER_LEVEL[level][0]),
            PER_LEVEL[level],
            f"is invalid for metric {metric!r}",
        )
    else:
        out["per"] = PER_LEVEL[level][0]
    return out


def parse_rules(
    tables: Sequence[object], source: str = "rules", *, defaults: bool = True
) -> list[Rule]:
    """Rules from ``[[rules]]`` tables, after the defaults (when ``defaults``).

    A table whose name is a default's and that has no ``kind`` changes only the fields it
    sets (``enabled = false`` disables the default); with a ``kind`` it replaces it.
    """
    return _with_defaults(_parse_tables(tables, source, {}), defaults)


def default_rules() -> list[Rule]:
    """The default rule set, parsed."""
    return parse_rules([])


def load_rules(
    toml_path: str | Path | None = None,
    *,
    rules_path: str | Path | None = None,
    env: Mapping[str, str] | None = None,
    defaults: bool = True,
) -> list[Rule]:
    """The defaults, then ``[[rules]]`` of queuelens.toml (found as by ``load_settings``),
    then those of ``rules_path`` (a TOML file of ``[[rules]]``). RuleError on a bad rule."""
    path = _toml_path(toml_path, os.environ if env is None else env)
    seen: dict[str, str] = {}
    user: list[Rule] = []
    if path is not None:
        _read_toml(path)  # the settings file's own errors first
        user += _parse_tables(_rules_array(path, only_rules=False), str(path), seen)
    if rules_path is not None:
        rules_file = Path(rules_path)
        user += _parse_tables(_rules_array(rules_file, only_rules=True), str(rules_file), seen)
    return _with_defaults(user, defaults)


def _parse_tables(tables: Sequence[object], source: str, seen: dict[str, str]) -> list[Rule]:
    """The rules of one file; ``seen`` maps names used so far (in any file) to where."""
    base = {raw["name"]: raw for raw in DEFAULT_RULES}
    rules = []
    for position, table in enumerate(tables, start=1):
        name = table.get("name") if isinstance(table, dict) else None
        where = _Where(position, name, source)
        if not isinstance(table, dict):
            raise where.error("must be a table, e.g. [[rules]] with name = ... below it")
        if isinstance(name, str):
            if name in seen:
                raise where.error(
                    f"name {name!r} is already used by {seen[name]}; rule names must be unique"
                )
            seen[name] = str(where)
        raw = dict(table)
        if isinstance(name, str) and name in base and "kind" not in raw:
            raw = {**base[name], **raw}
        rules.append(parse_rule(raw, where))
    return rules


def _with_defaults(user: list[Rule], defaults: bool) -> list[Rule]:
    """The defaults in order, each replaced by the user rule of its name, then the others."""
    result = (
        [
            parse_rule(raw, _Where(n, raw["name"], "defaults"))
            for n, raw in enumerate(DEFAULT_RULES, 1)
        ]
        if defaults
        else []
    )
    index = {rule.name: i for i, rule in enumerate(result)}
    for rule in user:
        if rule.name in index:
            result[index[rule.name]] = rule
        else:
            result.append(rule)
    return result


def _rules_array(path: Path, *, only_rules: bool) -> list[object]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise RuleError(f"rules file {str(path)!r} does not exist") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleError(f"cannot read rules file {str(path)!r}: {exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise RuleError(f"rules file {str(path)!r} is not valid TOML: {exc}") from None
    if only_rules and set(data) - {"rules"}:
        extra = sorted(set(data) - {"rules"})
        raise RuleError(
            f"rules file {str(path)!r} has {', '.join(extra)}; it holds only [[rules]] tables"
        )
    rules = data.get("rules", [])
    if not isinstance(rules, list):
        raise RuleError(f"rules in {str(path)!r} must be an array of tables: write [[rules]]")
    return rules
