"""Alert rules: every kind parses, every bad input is refused with a message that says how to
fix it, the defaults ship and yield to the user, and scopes match names of every shape."""

from __future__ import annotations

import re
from dataclasses import fields
from pathlib import Path
from typing import Any

import pytest

from queuelens.alerting.rules import (
    DEFAULT_RULES,
    METRICS,
    MetricLevel,
    Rule,
    RuleError,
    RuleKind,
    Scope,
    Severity,
    default_rules,
    load_rules,
    matches,
    metric_names,
    parse_rules,
)
from queuelens.analytics.state import QueueDepth, ServerView, WorkerView
from queuelens.analytics.summary import Stats

DEFAULT_NAMES = [
    "failure_rate_warning",
    "failure_rate_critical",
    "oldest_pending_age",
    "long_wait",
    "no_live_worker",
    "queue_stalled",
    "dead_workers",
    "server_disk_full",
]


def only(tables: list[dict[str, Any]]) -> list[Rule]:
    return parse_rules(tables, "queuelens.toml", defaults=False)


def error_of(tables: list[Any]) -> str:
    with pytest.raises(RuleError) as info:
        only(tables)
    return str(info.value)


# -- every kind ---------------------------------------------------------------------------


def test_threshold_rule_with_every_field() -> None:
    (rule,) = only(
        [
            {
                "name": "slow_emails",
                "kind": "threshold",
                "metric": "wait_p95",
                "op": ">=",
                "threshold": "90s",
                "window": "15m",
                "for": "10m",
                "per": "job",
                "scope": {"app": "billing", "queue": ["emails.*", "mail:*"], "job": "send_*"},
                "labels": {"team": "payments"},
                "annotations": {"summary": "{queue}/{job} waits {value}", "runbook": "see wiki"},
                "severity": "critical",
                "enabled": True,
            }
        ]
    )
    assert rule == Rule(
        name="slow_emails",
        kind=RuleKind.threshold,
        metric="wait_p95",
        op=">=",
        threshold=90.0,
        for_s=600.0,
        window_s=900.0,
        per="job",
        scope=Scope(app=("billing",), queue=("emails.*", "mail:*"), job=("send_*",)),
        labels={"team": "payments"},
        annotations={"summary": "{queue}/{job} waits {value}", "runbook": "see wiki"},
        severity=Severity.critical,
    )
    assert rule.crosses(90.0)
    assert not rule.crosses(89.9)


@pytest.mark.parametrize(
    ("metric", "threshold", "expected"),
    [
        ("failure_rate", 0.2, 0.2),
        ("retry_rate", 0, 0.0),
        ("throughput", 1000, 1000.0),
        ("duration_p95", 2.5, 2.5),
        ("depth", 5000, 5000.0),
        ("oldest_pending_age", "1h", 3600.0),
        ("busy_ratio", 0.9, 0.9),
        ("dead_workers", 0, 0.0),
        ("server_cpu", 95, 95.0),
        ("server_memory", 90.5, 90.5),
        ("server_disk", 100, 100.0),
    ],
)
def test_threshold_on_every_metric(metric: str, threshold: object, expected: float) -> None:
    (rule,) = only(
        [{"name": "r", "kind": "threshold", "metric": metric, "op": "<", "threshold": threshold}]
    )
    assert (rule.metric, rule.op, rule.threshold) == (metric, "<", expected)
    assert (
        rule.per
        == {"job": "queue", "queue": "queue", "fleet": "app", "server": "host"}[
            METRICS[metric].level
        ]
    )


def test_trend_anomaly_absence_and_long_wait_rules() -> None:
    rules = only(
        [
            {"name": "fill", "kind": "trend", "metric": "depth", "threshold": 10000,
             "horizon": "2h"},
            {"name": "drain", "kind": "trend", "metric": "time_to_drain", "threshold": "30m",
             "window": "30m"},
            {"name": "odd", "kind": "anomaly", "metric": "duration_p95", "threshold": 5,
             "per": "job"},
            {"name": "odd_default", "kind": "anomaly", "metric": "throughput"},
            {"name": "silent", "kind": "absence", "metric": "heartbeat", "for": "2m"},
            {"name": "stuck", "kind": "absence", "metric": "processed", "window": "10m"},
            {"name": "wait", "kind": "long_wait", "threshold": 120,
             "scope": {"queue": "critical"}},
        ]
    )  # fmt: skip
    by_name = {rule.name: rule for rule in rules}
    assert (by_name["fill"].threshold, by_name["fill"].horizon_s, by_name["fill"].window_s) == (
        10000.0,
        7200.0,
        3600.0,
    )
    assert (by_name["drain"].threshold, by_name["drain"].window_s) == (1800.0, 1800.0)
    assert (by_name["odd"].threshold, by_name["odd"].per) == (5.0, "job")
    assert by_name["odd_default"].threshold == 3.5
    assert (by_name["silent"].for_s, by_name["silent"].while_waiting) == (120.0, False)
    assert (by_name["stuck"].window_s, by_name["stuck"].while_waiting) == (600.0, True)
    assert by_name["wait"].metric == "wait"
    assert (by_name["wait"].threshold, by_name["wait"].window_s) == (120.0, 300.0)
    assert by_name["wait"].scope.queue == ("critical",)


def test_for_may_be_zero() -> None:
    for zero in (0, "0", "0s"):
        (rule,) = only([{"name": "r", "kind": "absence", "metric": "heartbeat", "for": zero}])
        assert rule.for_s == 0.0


# -- bad input: one exact line each ----------------------------------------------------------

WHERE = "rule #1 'r' in 'queuelens.toml'"


@pytest.mark.parametrize(
    ("table", "message"),
    [
        (
            {"name": "r", "kind": "treshold"},
            "kind 'treshold' is unknown; accepted: threshold, trend, anomaly, absence, "
            "long_wait",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "failures", "op": ">", "threshold": 1},
            "unknown metric 'failures' for kind 'threshold'; accepted: failure_rate, retry_rate, "
            "throughput, wait_p95, duration_p95, depth, oldest_pending_age, busy_ratio, "
            "dead_workers, server_cpu, server_memory, server_disk",
        ),
        (
            {"name": "r", "kind": "trend", "metric": "failure_rate", "threshold": 1},
            "unknown metric 'failure_rate' for kind 'trend'; accepted: depth, time_to_drain",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "op": "=>", "threshold": 1},
            "op '=>' is invalid; accepted: >, >=, <, <=",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "op": ">", "threshold": -1},
            "threshold -1 is negative; expected a number >= 0, e.g. 1000",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "failure_rate", "op": ">",
             "threshold": 10},
            "threshold 10 is above 1 (a ratio); expected e.g. 0.1 (10%)",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "op": ">", "threshold": "many"},
            "threshold 'many' is not a number; expected e.g. 1000",
        ),
        (
            {"name": "r", "kind": "absence", "metric": "heartbeat", "for": "5 minutes"},
            "for '5 minutes' is invalid (a duration such as 30s, 15m, 12h or 2d); expected e.g. "
            "5m",
        ),
        (
            {"name": "r", "kind": "absence", "metric": "heartbeat", "for": "-5m"},
            "for '-5m' is invalid (a positive duration); expected e.g. 5m",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "wait_p95", "op": ">",
             "threshold": "soon"},
            "threshold 'soon' is invalid (a duration such as 30s, 15m, 12h or 2d); expected e.g. "
            "5m",
        ),
        (
            {"name": "r", "kind": "absence", "metric": "heartbeat", "treshold": 1},
            "unknown field 'treshold' for kind 'absence'; accepted: name, kind, severity, "
            "enabled, for, scope, labels, annotations, metric, window, while_waiting",
        ),
        (
            {"name": "r", "kind": "trend", "metric": "depth", "threshold": 1, "horizon": "1h",
             "op": "<"},
            "unknown field 'op' for kind 'trend'; accepted: name, kind, severity, enabled, for, "
            "scope, labels, annotations, metric, threshold, horizon, window",
        ),
        (
            {"name": "r", "kind": "long_wait", "scope": {"queue": 5}},
            'scope.queue must be a glob string or a list of them, e.g. "emails.*"; got 5',
        ),
        (
            {"name": "r", "kind": "long_wait", "scope": {"queue": ["a", 5]}},
            "scope.queue must be a glob string or a list of them, e.g. \"emails.*\"; "
            "got ['a', 5]",
        ),
        (
            {"name": "r", "kind": "long_wait", "scope": "emails"},
            'scope must be a table of globs, e.g. scope = { queue = "emails.*" }',
        ),
        (
            {"name": "r", "kind": "long_wait", "scope": {"job": "send"}},
            "scope.job does not apply to metric 'wait' (a queue metric); accepted: app, queue",
        ),
        (
            {"name": "r", "kind": "long_wait", "scope": {"queue": "[z-a]"}},
            "scope.queue glob '[z-a]' is not a valid pattern (bad character range z-a at "
            "position 1)",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "server_disk", "op": ">",
             "threshold": 90, "scope": {"queue": "q"}},
            "scope.queue does not apply to metric 'server_disk' (a server metric); accepted: host",
        ),
        (
            {"name": "r", "kind": "long_wait", "severity": "page"},
            "severity 'page' is invalid; accepted: warning, critical",
        ),
        (
            {"name": "r", "kind": "long_wait", "enabled": "no"},
            "enabled 'no' must be true or false",
        ),
        (
            {"name": "r", "kind": "long_wait", "labels": {"severity": "low"}},
            "labels.severity is set by queuelens; remove it",
        ),
        (
            {"name": "r", "kind": "long_wait", "labels": {"team-name": "x"}},
            "labels.team-name is not a label name; use letters, digits and _ (not leading __)",
        ),
        (
            {"name": "r", "kind": "long_wait", "annotations": {"summary": "{queue_name} slow"}},
            "annotations.summary has placeholder {queue_name}; accepted: {rule}, {severity}, "
            "{metric}, {app}, {queue}, {job}, {host}, {mount}, {value}, {threshold}",
        ),
        (
            {"name": "r", "kind": "long_wait", "annotations": {"summary": "{value:.2f}"}},
            "annotations.summary has placeholder {value}; accepted: {rule}, {severity}, "
            "{metric}, {app}, {queue}, {job}, {host}, {mount}, {value}, {threshold}",
        ),
        (
            {"name": "r", "kind": "trend", "metric": "depth", "threshold": 100},
            'horizon is missing: how far ahead to look, e.g. "1h"',
        ),
        (
            {"name": "r", "kind": "absence", "metric": "processed"},
            'window is missing: how long without a processed job, e.g. "15m"',
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "op": ">", "threshold": 1,
             "window": "5m"},
            "window does not apply to metric 'depth', a value of now",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "op": ">", "threshold": 1,
             "per": "job"},
            "per 'job' is invalid for metric 'depth'; accepted: queue, app",
        ),
        (
            {"name": "r", "kind": "threshold", "metric": "depth", "threshold": 1},
            "op is missing; accepted: >, >=, <, <=",
        ),
    ],
)  # fmt: skip
def test_bad_rule_is_refused_with_an_exact_message(table: dict[str, Any], message: str) -> None:
    assert error_of([table]) == f"{WHERE}: {message}"


def test_missing_or_bad_name_and_kind() -> None:
    assert error_of([{"kind": "long_wait"}]) == (
        "rule #1 in 'queuelens.toml': name is missing; every rule needs one, "
        'e.g. name = "slow_emails"'
    )
    assert error_of([{"name": "slow emails", "kind": "long_wait"}]) == (
        "rule #1 'slow emails' in 'queuelens.toml': name 'slow emails' is invalid; use letters, "
        "digits and _, not starting with a digit"
    )
    assert error_of([{"name": "r"}]) == (
        f"{WHERE}: kind is missing; accepted: threshold, trend, anomaly, absence, long_wait"
    )
    assert error_of(["r"]) == (
        "rule #1 in 'queuelens.toml': must be a table, e.g. [[rules]] with name = ... below it"
    )


def test_duplicate_names_name_both_rules() -> None:
    tables = [
        {"name": "a", "kind": "long_wait"},
        {"name": "b", "kind": "long_wait"},
        {"name": "a", "kind": "absence", "metric": "heartbeat"},
    ]
    assert error_of(tables) == (
        "rule #3 'a' in 'queuelens.toml': name 'a' is already used by rule #1 'a' in "
        "'queuelens.toml'; rule names must be unique"
    )


def test_the_position_names_the_bad_rule_among_good_ones() -> None:
    tables = [{"name": "ok", "kind": "long_wait"}, {"name": "bad", "kind": "long_wait", "x": 1}]
    assert error_of(tables).startswith("rule #2 'bad' in 'queuelens.toml': unknown field 'x'")


def test_errors_are_config_errors() -> None:
    from queuelens.config import ConfigError

    assert issubclass(RuleError, ConfigError)


# -- defaults --------------------------------------------------------------------------------


def test_defaults_ship_enabled() -> None:
    rules = default_rules()
    assert [rule.name for rule in rules] == DEFAULT_NAMES
    assert all(rule.enabled for rule in rules)
    by_name = {rule.name: rule for rule in rules}
    warning, critical = by_name["failure_rate_warning"], by_name["failure_rate_critical"]
    assert (warning.threshold, warning.for_s, warning.severity) == (0.10, 300.0, "warning")
    assert (critical.threshold, critical.for_s, critical.severity) == (0.25, 300.0, "critical")
    assert by_name["oldest_pending_age"].threshold == 600.0
    assert (by_name["long_wait"].threshold, by_name["long_wait"].kind) == (300.0, "long_wait")
    no_worker = by_name["no_live_worker"]
    assert (no_worker.for_s, no_worker.while_waiting, no_worker.severity) == (
        120.0,
        True,
        "critical",
    )
    assert (by_name["server_disk_full"].metric, by_name["server_disk_full"].threshold) == (
        "server_disk",
        90.0,
    )
    assert parse_rules([]) == rules


def test_a_default_is_disabled_or_changed_by_name() -> None:
    rules = parse_rules(
        [
            {"name": "server_disk_full", "enabled": False},
            {"name": "failure_rate_warning", "threshold": 0.2, "scope": {"queue": "emails.*"}},
        ]
    )
    by_name = {rule.name: rule for rule in rules}
    assert [rule.name for rule in rules] == DEFAULT_NAMES
    assert by_name["server_disk_full"].enabled is False
    changed = by_name["failure_rate_warning"]
    assert (changed.threshold, changed.for_s, changed.min_jobs) == (0.2, 300.0, 20)
    assert changed.scope.queue == ("emails.*",)


def test_a_default_is_replaced_when_the_user_gives_a_kind() -> None:
    rules = parse_rules([{"name": "long_wait", "kind": "threshold", "metric": "wait_p95",
                          "op": ">", "threshold": "1m"}])  # fmt: skip
    rule = next(rule for rule in rules if rule.name == "long_wait")
    assert (rule.kind, rule.metric, rule.threshold, rule.for_s) == ("threshold", "wait_p95", 60, 0)


def test_a_bad_override_names_the_users_rule() -> None:
    with pytest.raises(RuleError) as info:
        parse_rules([{"name": "long_wait", "threshold": -5}], "queuelens.toml")
    assert str(info.value) == (
        "rule #1 'long_wait' in 'queuelens.toml': threshold -5 is negative; "
        'expected a number >= 0, e.g. "5m" or 300'
    )


def test_default_rules_are_plain_tables() -> None:
    assert all(isinstance(raw, dict) for raw in DEFAULT_RULES)


# -- loading from files ----------------------------------------------------------------------


def test_load_rules_reads_toml_and_a_rules_file(tmp_path: Path) -> None:
    settings = tmp_path / "queuelens.toml"
    settings.write_text(
        'app = "billing"\n\n'
        '[[rules]]\nname = "dead_workers"\nenabled = false\n\n'
        '[[rules]]\nname = "emails_backlog"\nkind = "threshold"\nmetric = "depth"\n'
        'op = ">"\nthreshold = 500\nscope = { queue = "emails.*" }\n',
        encoding="utf-8",
    )
    extra = tmp_path / "alerts.toml"
    extra.write_text(
        '[[rules]]\nname = "emails_fill"\nkind = "trend"\nmetric = "depth"\n'
        'threshold = 10000\nhorizon = "1h"\n',
        encoding="utf-8",
    )
    rules = load_rules(settings, rules_path=extra, env={})
    names = [rule.name for rule in rules]
    assert names == [*DEFAULT_NAMES, "emails_backlog", "emails_fill"]
    assert not next(rule for rule in rules if rule.name == "dead_workers").enabled


def test_load_rules_without_any_file_gives_the_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    assert load_rules(env={}) == default_rules()
    assert load_rules(env={}, defaults=False) == []


def test_errors_name_the_file_and_duplicates_across_files(tmp_path: Path) -> None:
    settings = tmp_path / "queuelens.toml"
    settings.write_text('[[rules]]\nname = "x"\nkind = "long_wait"\n', encoding="utf-8")
    extra = tmp_path / "alerts.toml"
    extra.write_text(
        '[[rules]]\nname = "y"\nkind = "long_wait"\n\n[[rules]]\nname = "x"\nkind = "long_wait"\n',
        encoding="utf-8",
    )
    with pytest.raises(RuleError) as info:
        load_rules(settings, rules_path=extra, env={})
    assert str(info.value) == (
        f"rule #2 'x' in {str(extra)!r}: name 'x' is already used by rule #1 'x' in "
        f"{str(settings)!r}; rule names must be unique"
    )


def test_a_rules_file_holds_only_rules(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)  # no ./queuelens.toml
    extra = tmp_path / "alerts.toml"
    extra.write_text('app = "x"\n', encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules(rules_path=extra, env={})
    assert str(info.value) == f"rules file {str(extra)!r} has app; it holds only [[rules]] tables"
    missing = tmp_path / "nope.toml"
    with pytest.raises(RuleError) as info:
        load_rules(rules_path=missing, env={})
    assert str(info.value) == f"rules file {str(missing)!r} does not exist"
    bad = tmp_path / "bad.toml"
    bad.write_text("rules = 3\n", encoding="utf-8")
    with pytest.raises(RuleError) as info:
        load_rules(rules_path=bad, env={})
    assert str(info.value) == (f"rules in {str(bad)!r} must be an array of tables: write [[rules]]")


# -- scopes ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("globs", "name", "expected"),
    [
        (("emails.*",), "emails.high", True),
        (("emails.*",), "emailsXhigh", False),  # the dot is a dot
        (("emails.*",), "emails.", True),
        (("*.high",), "billing.emails.high", True),
        (("celery:*",), "celery:default", True),
        (("celery:*",), "rq:default", False),
        (("jobs/*",), "jobs/reports/daily", True),  # * crosses slashes
        (("app.tasks.send_?",), "app.tasks.send_1", True),
        (("app.tasks.send_?",), "app.tasks.send_10", False),
        (("[ab]*",), "billing", True),
        (("[!ab]*",), "billing", False),
        (("Emails",), "emails", False),  # case-sensitive
        (("écritures.*",), "écritures.lourdes", True),
        (("*队列",), "任务队列", True),
        (("*🚀*",), "deploy 🚀 now", True),
        (("a", "b.*"), "b.c", True),
        (("a", "b.*"), "c", False),
        (("*",), "anything at all\nwith a newline", True),
    ],
)
def test_glob_matching(globs: tuple[str, ...], name: str, expected: bool) -> None:
    assert matches(Scope(queue=globs), "app", name) is expected


def test_matches_checks_every_level_given() -> None:
    scope = Scope(app=("billing",), queue=("emails.*",), job=("tasks.send_*",))
    assert matches(scope, "billing", "emails.high", "tasks.send_invoice")
    assert not matches(scope, "shop", "emails.high", "tasks.send_invoice")
    assert not matches(scope, "billing", "emails.high", "tasks.charge")
    assert matches(scope, "billing", "emails.high")  # a queue-level series has no job
    assert matches(Scope(host=("web-*",)), host="web-1")
    assert not matches(Scope(host=("web-*",)), host="db-1")


# -- the metric catalogue maps to real analytics fields ---------------------------------------


def test_metric_names_per_kind() -> None:
    assert metric_names() == tuple(METRICS)
    assert metric_names("trend") == ("depth", "time_to_drain")
    assert metric_names(RuleKind.absence) == ("heartbeat", "processed")
    assert set(metric_names("anomaly")) <= set(METRICS)


def test_every_metric_source_is_a_real_field() -> None:
    owners: dict[str, type[Any]] = {
        "Stats": Stats,
        "QueueDepth": QueueDepth,
        "WorkerView": WorkerView,
        "ServerView": ServerView,
    }
    for info in METRICS.values():
        owner, _, rest = info.source.partition(".")
        if owner == "DiskView":
            from queuelens.analytics.state import DiskView

            assert "percent" in {f.name for f in fields(DiskView)}
            continue
        attribute = rest.split()[0].split(".")[0].rstrip(",")
        assert attribute in {f.name for f in fields(owners[owner])}, info
    assert {info.level for info in METRICS.values()} == set(MetricLevel)


def test_the_toml_examples_of_the_docs_are_valid() -> None:
    import tomllib

    text = (Path(__file__).parents[2] / "docs" / "alerting.md").read_text(encoding="utf-8")
    blocks = [
        b for b in re.findall(r"```toml\n(.*?)```", text, flags=re.DOTALL) if "[[rules]]" in b
    ]
    assert len(blocks) >= 2
    for block in blocks:
        parse_rules(tomllib.loads(block)["rules"], "docs/alerting.md")
