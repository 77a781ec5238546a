"""The Prometheus export: promtool accepts it, names of every shape survive, and the
expressions fire on the series /metrics exports (checked by ``promtool test rules``).

promtool FAILS these tests when it is missing and ``CI`` is set, and skips them elsewhere.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
from fnmatch import fnmatchcase
from pathlib import Path
from typing import Any

import pytest

from queuelens.alerting.rules import Rule, default_rules, glob_to_regex, parse_rules
from queuelens.alerting.rules_prometheus import export_prometheus_rules, promql

INSTALL_PROMTOOL = "apt-get install prometheus (Debian/Ubuntu; promtool comes with it)"

VARIED: list[dict[str, Any]] = [
    {"name": "emails_wait", "kind": "threshold", "metric": "wait_p95", "op": ">",
     "threshold": "90s", "window": "10m", "for": "2m", "per": "job",
     "scope": {"app": "billing", "queue": ["emails.*", "celery:high"], "job": "tasks/send_?"},
     "labels": {"team": "payments {{ on call }}", "route": 'a "quoted" \\ value'},
     "annotations": {"summary": "{queue}/{job} waits {value} (over {threshold})",
                     "description": "Braces {{ and }}, doubled {{{{ }}}}; délai ⏳ 队列\nline 2"}},
    {"name": "retries", "kind": "threshold", "metric": "retry_rate", "op": ">=",
     "threshold": 0.5, "min_jobs": 10, "per": "app"},
    {"name": "throughput_low", "kind": "threshold", "metric": "throughput", "op": "<",
     "threshold": 1, "window": "30m", "scope": {"queue": "[!x]*"}},
    {"name": "slow", "kind": "threshold", "metric": "duration_p95", "op": ">",
     "threshold": 2.5, "scope": {"job": "*.generate_*"}},
    {"name": "deep", "kind": "threshold", "metric": "depth", "op": ">", "threshold": 10000,
     "per": "app", "scope": {"queue": "队列*"}},
    {"name": "busy", "kind": "threshold", "metric": "busy_ratio", "op": ">", "threshold": 0.9,
     "for": "15m"},
    {"name": "cpu", "kind": "threshold", "metric": "server_cpu", "op": ">", "threshold": 95,
     "scope": {"host": "web-*"}},
    {"name": "memory", "kind": "threshold", "metric": "server_memory", "op": ">=",
     "threshold": 90, "for": "1.5s"},
    {"name": "fill", "kind": "trend", "metric": "depth", "threshold": 5000, "horizon": "2h"},
    {"name": "drain", "kind": "trend", "metric": "time_to_drain", "threshold": "30m"},
    {"name": "odd", "kind": "anomaly", "metric": "wait_p95", "threshold": 4},
    {"name": "silent", "kind": "absence", "metric": "heartbeat", "for": "1m",
     "scope": {"queue": "reports/*"}},
    {"name": "stuck", "kind": "absence", "metric": "processed", "window": "20m",
     "severity": "critical"},
    {"name": "wait_critical", "kind": "long_wait", "threshold": "1m",
     "scope": {"queue": "critical"}},
    {"name": "off", "kind": "long_wait", "enabled": False},
]  # fmt: skip


def promtool() -> str:
    """The path of promtool; fail (in CI) or skip (elsewhere) when it is not installed."""
    path = shutil.which("promtool")
    if path is not None:
        return path
    message = f"promtool is not installed; install it with: {INSTALL_PROMTOOL}"
    if os.environ.get("CI"):
        pytest.fail(message)
    pytest.skip(message)


def check_rules(tmp_path: Path, text: str) -> str:
    path = tmp_path / "queuelens.rules.yml"
    path.write_text(text, encoding="utf-8")
    done = subprocess.run(
        [promtool(), "check", "rules", str(path)],
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, report + "\n" + text
    return report


def test_promtool_accepts_the_default_rules(tmp_path: Path) -> None:
    report = check_rules(tmp_path, export_prometheus_rules(default_rules()))
    assert f"SUCCESS: {len(default_rules())} rules found" in report


def test_promtool_accepts_a_varied_rule_set(tmp_path: Path) -> None:
    rules = parse_rules(VARIED, defaults=False)
    text = export_prometheus_rules(rules)
    report = check_rules(tmp_path, text)
    exported = [rule for rule in rules if rule.enabled and rule.kind != "anomaly"]
    assert f"SUCCESS: {len(exported)} rules found" in report
    assert "# odd is not exported: anomaly scores have no PromQL equivalent" in text
    assert "# off is not exported: disabled" in text


def test_the_yaml_reads_back_unchanged() -> None:
    yaml = pytest.importorskip("yaml")
    rules = parse_rules(VARIED, defaults=False)
    document = yaml.safe_load(export_prometheus_rules(rules, group="billing alerts"))
    (group,) = document["groups"]
    assert group["name"] == "billing alerts"
    by_name = {entry["alert"]: entry for entry in group["rules"]}
    assert set(by_name) == {r.name for r in rules} - {"odd", "off"}
    emails = by_name["emails_wait"]
    assert emails["for"] == "2m"
    assert emails["labels"] == {
        "team": 'payments {{ "{{" }} on call {{ "}}" }}',
        "route": 'a "quoted" \\ value',
        "severity": "warning",
    }
    assert emails["annotations"] == {
        "summary": "{{ $labels.queue }}/{{ $labels.job }} waits "
        "{{ $value | humanizeDuration }} (over 90s)",
        "description": 'Braces { and }, doubled {{ "{{" }} {{ "}}" }}; délai ⏳ 队列\nline 2',
    }
    assert by_name["memory"]["for"] == "1500ms"
    assert "for" not in by_name["cpu"]
    assert by_name["stuck"]["labels"] == {"severity": "critical"}


def test_an_empty_or_all_skipped_rule_set_is_still_valid(tmp_path: Path) -> None:
    odd = {"name": "odd", "kind": "anomaly", "metric": "throughput"}
    text = export_prometheus_rules(parse_rules([odd], defaults=False))
    assert "rules: []" in text
    check_rules(tmp_path, text)


def test_selectors_follow_the_scope() -> None:
    rules = {rule.name: rule for rule in parse_rules(VARIED, defaults=False)}
    expr = promql(rules["emails_wait"])
    assert 'app="billing"' in expr  # no wildcard: an exact match
    assert "sum by (app, queue, job, le)" in expr
    assert 'hostname=~"(?s:(?:web\\\\-.*))"' in promql(rules["cpu"])
    assert "queuelens_server_memory_used_bytes" in promql(rules["memory"])
    assert 'predict_linear(queuelens_queue_depth{state="pending"}[1h], 7200)' in promql(
        rules["fill"]
    )
    with pytest.raises(ValueError, match="no PromQL equivalent"):
        promql(rules["odd"])


@pytest.mark.parametrize(
    "glob",
    ["emails.*", "celery:*", "jobs/*/daily", "send_?", "[ab]*", "[!ab]*", "[a-c]x", "a[",
     "[]]x", "a+b(c)|d{2}^$", "ü*", "*队列", "a\\b", "x\ny*", "*"],
)  # fmt: skip
def test_glob_regex_matches_what_fnmatch_does(glob: str) -> None:
    names = ["emails.high", "emailsXhigh", "celery:default", "jobs/a/daily", "jobs/a/b/daily",
             "send_1", "send_12", "apple", "banana", "cherry", "bx", "dx", "a[", "]x",
             "a+b(c)|d{2}^$", "über", "任务队列", "a\\b", "x\nyz", "", "*"]  # fmt: skip
    regex = re.compile("(?s:" + glob_to_regex(glob) + ")")
    for name in names:
        assert bool(regex.fullmatch(name)) == fnmatchcase(name, glob), (glob, name)


# -- the expressions fire on real series (promtool's rule unit tests) ------------------------


def _quote(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def run_rule_tests(tmp_path: Path, rules: list[Rule], tests: list[dict[str, Any]]) -> None:
    (tmp_path / "rules.yml").write_text(export_prometheus_rules(rules), encoding="utf-8")
    # JSON is YAML, so the test file is written as JSON.
    spec = {"rule_files": ["rules.yml"], "evaluation_interval": "1m", "tests": tests}
    (tmp_path / "test.yml").write_text(json.dumps(spec, ensure_ascii=False), encoding="utf-8")
    done = subprocess.run(
        [promtool(), "test", "rules", "test.yml"],
        cwd=tmp_path,
        capture_output=True,
        timeout=60,
        check=False,
    )
    report = (done.stdout + done.stderr).decode(errors="replace")
    assert done.returncode == 0, report


def test_scoped_threshold_fires_only_for_matching_queues(tmp_path: Path) -> None:
    rules = parse_rules(
        [{"name": "old_emails", "kind": "threshold", "metric": "oldest_pending_age",
          "op": ">", "threshold": "10m", "for": "2m", "scope": {"queue": "emails.*"},
          "annotations": {"summary": "{queue} waits {value}"}}],
        defaults=False,
    )  # fmt: skip
    age = "queuelens_queue_oldest_pending_age_seconds"
    tests = [
        {
            "interval": "1m",
            "input_series": [
                {"series": f'{age}{{app="b",queue="emails.high"}}', "values": "700x10"},
                {"series": f'{age}{{app="b",queue="emailsXhigh"}}', "values": "700x10"},
                {"series": f'{age}{{app="b",queue="emails.low"}}', "values": "10x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "old_emails", "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": "old_emails",
                    "exp_alerts": [
                        {
                            "exp_labels": {"app": "b", "queue": "emails.high",
                                           "severity": "warning"},
                            "exp_annotations": {"summary": "emails.high waits 11m 40s"},
                        }
                    ],
                },
            ],
        }
    ]  # fmt: skip
    run_rule_tests(tmp_path, rules, tests)


def test_default_failure_rate_and_no_live_worker_fire(tmp_path: Path) -> None:
    rules = default_rules()
    jobs = "queuelens_jobs_total"
    queue = 'app="b",queue="q.é"'
    tests = [
        {
            "interval": "1m",
            "input_series": [
                # 60 attempts a minute, 18 of them failed or timed out: 30%
                {"series": f'{jobs}{{{queue},job="j",status="succeeded"}}', "values": "0+42x20"},
                {"series": f'{jobs}{{{queue},job="j",status="failed"}}', "values": "0+12x20"},
                {"series": f'{jobs}{{{queue},job="j",status="timed_out"}}', "values": "0+6x20"},
                # a quiet queue: one failure of one job is not judged (min_jobs)
                {"series": f'{jobs}{{app="b",queue="quiet",job="j",status="failed"}}',
                 "values": "0+0x5 1+0x15"},
                {"series": f'queuelens_queue_depth{{{queue},state="pending"}}',
                 "values": "5x20"},
                {"series": f'queuelens_queue_workers{{{queue},state="idle"}}',
                 "values": "1x5 0x15"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "12m",
                    "alertname": "failure_rate_critical",
                    "exp_alerts": [
                        {
                            "exp_labels": {"app": "b", "queue": "q.é", "severity": "critical"},
                            "exp_annotations": {
                                "summary": "Queue q.é (b) fails 30% of its jobs",
                                "description": "Over 25% of the jobs of q.é failed over the "
                                "last 5 minutes.",
                            },
                        }
                    ],
                },
                {
                    "eval_time": "12m",
                    "alertname": "no_live_worker",
                    "exp_alerts": [
                        {
                            "exp_labels": {"app": "b", "queue": "q.é", "severity": "critical"},
                            "exp_annotations": {
                                "summary": "No live worker serves q.é (b) while jobs wait",
                                "description": "Jobs are pending in q.é and no worker of it "
                                "sends heartbeats.",
                            },
                        }
                    ],
                },
                {"eval_time": "4m", "alertname": "no_live_worker", "exp_alerts": []},
            ],
        }
    ]  # fmt: skip
    run_rule_tests(tmp_path, rules, tests)


def test_long_wait_stalled_queue_and_drain_time_fire(tmp_path: Path) -> None:
    rules = [
        rule
        for rule in default_rules()
        if rule.name in ("long_wait", "queue_stalled")
    ] + parse_rules(
        [{"name": "slow_drain", "kind": "trend", "metric": "time_to_drain", "threshold": "30m",
          "window": "5m"}],
        defaults=False,
    )  # fmt: skip
    depth = "queuelens_queue_depth"
    tests = [
        {
            "interval": "1m",
            "input_series": [
                # stuck: jobs pending, the oldest 400s old, nothing ends after minute 5, no wait
                {"series": f'{depth}{{app="b",queue="stuck",state="pending"}}',
                 "values": "5x30"},
                {"series": 'queuelens_queue_oldest_pending_age_seconds{app="b",queue="stuck"}',
                 "values": "400x30"},
                {"series": 'queuelens_jobs_total{app="b",queue="stuck",job="j",'
                           'status="succeeded"}', "values": "0+1x5 5x25"},
                # draining 10 jobs a minute from 1000: 100 minutes to go
                {"series": 'queuelens_jobs_total{app="b",queue="slow",job="j",'
                           'status="succeeded"}', "values": "0+10x30"},
                {"series": f'{depth}{{app="b",queue="slow",state="pending"}}',
                 "values": "1000-10x30"},
                # draining 100 a minute from 2000: 10 minutes to go at minute 10
                {"series": 'queuelens_jobs_total{app="b",queue="fast",job="j",'
                           'status="succeeded"}', "values": "0+100x30"},
                {"series": f'{depth}{{app="b",queue="fast",state="pending"}}',
                 "values": "2000-100x20"},
            ],
            "alert_rule_test": [
                {
                    "eval_time": "10m",
                    "alertname": "long_wait",
                    "exp_alerts": [
                        {
                            "exp_labels": {"app": "b", "queue": "stuck", "severity": "warning"},
                            "exp_annotations": {
                                "summary": "Jobs of stuck (b) wait 6m 40s",
                                "description": "The p95 wait of stuck, or its oldest pending "
                                "job, is past 5m.",
                            },
                        }
                    ],
                },
                {"eval_time": "10m", "alertname": "queue_stalled", "exp_alerts": []},
                {
                    "eval_time": "22m",
                    "alertname": "queue_stalled",
                    "exp_alerts": [
                        {
                            "exp_labels": {"app": "b", "queue": "stuck", "severity": "critical"},
                            "exp_annotations": {
                                "summary": "No job of stuck (b) ended in 15m while jobs wait",
                                "description": "Jobs are pending in stuck but none ended in "
                                "15m: workers stuck?",
                            },
                        }
                    ],
                },
                {
                    "eval_time": "10m",
                    "alertname": "slow_drain",
                    "exp_alerts": [
                        {"exp_labels": {"app": "b", "queue": "slow", "severity": "warning"}},
                        {"exp_labels": {"app": "b", "queue": "stuck", "severity": "warning"}},
                    ],
                },
            ],
        }
    ]  # fmt: skip
    run_rule_tests(tmp_path, rules, tests)
