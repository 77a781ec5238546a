"""Each health reason appears exactly when its input crosses its threshold, and not before."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from queuelens.analytics.health import (
    HealthStatus,
    HealthThresholds,
    QueueInputs,
    fleet_health,
    health_thresholds,
    queue_health,
    server_health,
)
from queuelens.analytics.state import DiskView, QueueDepth, ServerView, WorkerView
from queuelens.analytics.summary import Distribution, Stats
from queuelens.config import ConfigError
from queuelens.model import WorkerState

T = HealthThresholds()
NOW = 1_800_000_000.0


def depth(**values: Any) -> QueueDepth:
    base: dict[str, Any] = {
        "app": "a",
        "queue": "q",
        "pending": 0.0,
        "scheduled": None,
        "reserved": None,
        "failed": None,
        "oldest_pending_age_s": 0.0,
        "sampled_at": NOW,
        "sample_age_s": 1.0,
    }
    base.update(values)
    return QueueDepth(**base)


def stats(processed: int = 100, failed: int = 0, wait_p95_s: float | None = None) -> Stats:
    wait = Distribution(p95=wait_p95_s * 1000) if wait_p95_s is not None else Distribution()
    return Stats(
        processed=processed,
        failed=failed,
        failure_rate=failed / processed if processed else 0.0,
        wait_ms=wait,
    )


def codes(inputs: QueueInputs, thresholds: HealthThresholds = T) -> dict[str, HealthStatus]:
    return {r.code: r.severity for r in queue_health(inputs, thresholds).reasons}


def test_nothing_wrong_is_healthy_and_nothing_known_is_unknown() -> None:
    health = queue_health(QueueInputs(depth=depth(), stats=stats(), live_workers=2), T)
    assert (health.score, health.status, health.reasons) == (100, HealthStatus.healthy, ())
    assert queue_health(QueueInputs(), T).status is HealthStatus.unknown


@pytest.mark.parametrize(
    ("make", "below", "warning", "critical", "code"),
    [
        (
            lambda v: QueueInputs(depth=depth(oldest_pending_age_s=v)),
            299.9,
            300.0,
            1800.0,
            "oldest_pending_age",
        ),
        (lambda v: QueueInputs(stats=stats(wait_p95_s=v)), 59.9, 60.0, 180.0, "wait_p95"),
        (
            lambda v: QueueInputs(stats=stats(processed=1000, failed=round(v * 1000))),
            0.049,
            0.05,
            0.25,
            "failure_rate",
        ),
        (
            lambda v: QueueInputs(depth=depth(pending=v)),
            99.0,
            100.0,
            1000.0,
            "pending",
        ),
    ],
)
def test_queue_reason_crosses_at_its_threshold(
    make: Any, below: float, warning: float, critical: float, code: str
) -> None:
    thresholds = replace(T, pending_warning=100.0, pending_critical=1000.0)
    assert code not in codes(make(below), thresholds)
    assert codes(make(warning), thresholds)[code] is HealthStatus.warning
    assert codes(make(critical), thresholds)[code] is HealthStatus.critical
    health = queue_health(make(critical), thresholds)
    reason = next(r for r in health.reasons if r.code == code)
    assert reason.value == pytest.approx(critical)
    assert reason.threshold == critical
    assert health.status is HealthStatus.critical
    assert health.score <= 49


def test_failure_rate_against_its_baseline() -> None:
    # usual 1%: 3% crosses 2x baseline + margin (3%) -> warning; 6% -> critical (2x of that)
    base: dict[str, Any] = {"baseline_failure_rate": 0.01}
    assert "failure_rate_vs_baseline" not in codes(QueueInputs(stats=stats(1000, 29), **base))
    assert (
        codes(QueueInputs(stats=stats(1000, 30), **base))["failure_rate_vs_baseline"]
        is HealthStatus.warning
    )
    # 5% is also over the absolute threshold: said once, by the absolute reason
    assert set(codes(QueueInputs(stats=stats(1000, 50), **base))) == {"failure_rate"}
    # too few jobs to judge a rate
    assert codes(QueueInputs(stats=stats(10, 9), **base)) == {}


def test_waiting_jobs_with_no_live_worker() -> None:
    assert "no_live_worker" not in codes(QueueInputs(depth=depth(pending=5), live_workers=1))
    assert "no_live_worker" not in codes(QueueInputs(depth=depth(pending=0), live_workers=0))
    assert "no_live_worker" not in codes(QueueInputs(depth=depth(pending=5), live_workers=None))
    assert (
        codes(QueueInputs(depth=depth(pending=5), live_workers=0))["no_live_worker"]
        is HealthStatus.critical
    )


def test_stale_depth_sample() -> None:
    assert "depth_sample_stale" not in codes(QueueInputs(depth=depth(sample_age_s=299)))
    assert "depth_sample_stale" in codes(QueueInputs(depth=depth(sample_age_s=300)))


def test_per_queue_override_and_score_order() -> None:
    thresholds = health_thresholds({"queues": {"emails": {"wait_p95_target": "5s"}}})
    slow = QueueInputs(queue="emails", stats=stats(wait_p95_s=6))
    assert "wait_p95" in codes(slow, thresholds)
    assert "wait_p95" not in codes(replace(slow, queue="reports"), thresholds)
    a = queue_health(QueueInputs(stats=stats(wait_p95_s=61)), T).score
    b = queue_health(QueueInputs(stats=stats(wait_p95_s=120)), T).score
    assert 49 < b < a <= 79  # further past the threshold, lower score


def worker(
    state: WorkerState,
    heartbeat_age_s: float = 1.0,
    busy: int = 0,
    slots: int = 4,
    pid: int = 1,
    ratio: float | None = None,
) -> WorkerView:
    return WorkerView(
        id=f"w{pid}",
        app="a",
        framework="rq",
        hostname="h",
        pid=pid,
        name="w",
        queues=["q"],
        concurrency=slots,
        busy_slots=busy,
        state=state,
        current_jobs=[],
        started_at=NOW - 100,
        last_heartbeat_at=NOW - heartbeat_age_s,
        heartbeat_age_s=heartbeat_age_s,
        processed=0,
        failed=0,
        busy_ratio=ratio,
        rss_mb=None,
        cpu_percent=None,
    )


def fleet_codes(workers: list[WorkerView]) -> dict[str, HealthStatus]:
    return {r.code: r.severity for r in fleet_health(workers, T, NOW).reasons}


def test_fleet_reasons() -> None:
    assert fleet_health([], T, NOW).status is HealthStatus.unknown
    assert fleet_codes([worker(WorkerState.idle)]) == {}
    assert fleet_codes([worker(WorkerState.idle), worker(WorkerState.stale, 20, pid=2)]) == {
        "stale_workers": HealthStatus.warning
    }
    assert "dead_workers" in fleet_codes(
        [worker(WorkerState.idle), worker(WorkerState.dead, 600, pid=2)]
    )
    # died long ago: history, not a present problem
    assert fleet_codes([worker(WorkerState.idle), worker(WorkerState.dead, 7200, pid=2)]) == {}
    assert fleet_codes([worker(WorkerState.dead, 600)])["no_live_worker"] is HealthStatus.critical
    assert "busy_ratio" not in fleet_codes([worker(WorkerState.busy, busy=4)])  # unmeasured
    assert "busy_ratio" not in fleet_codes([worker(WorkerState.busy, ratio=0.89)])
    saturated = [worker(WorkerState.busy, ratio=0.95), worker(WorkerState.idle, ratio=0.8, pid=2)]
    assert "busy_ratio" not in fleet_codes(saturated)  # 87.5% over both
    saturated.append(worker(WorkerState.busy, ratio=1.0, pid=3, slots=12))
    assert fleet_codes(saturated)["busy_ratio"] is HealthStatus.warning
    many = [worker(WorkerState.stale, 20, pid=n) for n in range(5)] + [
        worker(WorkerState.idle, pid=9)
    ]
    message = fleet_health(many, T, NOW).reasons[0].message
    assert message.startswith("5 workers missed")
    assert "and 2 more" in message


def server(**values: Any) -> ServerView:
    base: dict[str, Any] = {
        "hostname": "ip-10-0-0-1.ec2.internal",
        "app": "a",
        "sampled_at": NOW,
        "sample_age_s": 1.0,
        "cpu_percent": 10.0,
        "cpu_count": 4.0,
        "load": (1.0, 1.0, 1.0),
        "memory_total_mb": 1000.0,
        "memory_used_mb": 100.0,
        "memory_percent": 10.0,
        "disks": [DiskView("/", 100.0, 10.0, 10.0)],
    }
    base.update(values)
    return ServerView(**base)


@pytest.mark.parametrize(
    ("field", "make", "below", "warning", "critical"),
    [
        ("cpu", lambda v: server(cpu_percent=v), 84.9, 85.0, 95.0),
        ("memory", lambda v: server(memory_percent=v), 84.9, 85.0, 95.0),
        ("disk", lambda v: server(disks=[DiskView("/data", 1.0, 1.0, v)]), 84.9, 85.0, 95.0),
        ("load", lambda v: server(load=(v * 4, 0.0, 0.0)), 1.49, 1.5, 2.0),
        ("sample_stale", lambda v: server(sample_age_s=v), 299.0, 300.0, None),
    ],
)
def test_server_reason_crosses_at_its_threshold(
    field: str, make: Any, below: float, warning: float, critical: float | None
) -> None:
    def of(v: float) -> dict[str, HealthStatus]:
        return {r.code: r.severity for r in server_health(make(v), T).reasons}

    assert field not in of(below)
    assert of(warning)[field] is HealthStatus.warning
    if critical is not None:
        assert of(critical)[field] is HealthStatus.critical
    assert server_health(server(), T).status is HealthStatus.healthy


def test_thresholds_from_toml_and_bad_values(tmp_path: Path) -> None:
    t = health_thresholds(
        {"oldest_pending_age_warning": "10m", "failure_rate_warning": 0.1, "min_jobs": 5}
    )
    assert (t.oldest_pending_age_warning_s, t.failure_rate_warning, t.min_jobs) == (600.0, 0.1, 5)
    assert health_thresholds(None) == HealthThresholds()
    with pytest.raises(
        ConfigError, match=r"unknown key 'wait_target' in \[health\]; known keys: .*wait_p95_target"
    ):
        health_thresholds({"wait_target": "5s"})
    with pytest.raises(
        ConfigError, match=r"oldest_pending_age_warning = 'soon' in \[health\] is invalid"
    ):
        health_thresholds({"oldest_pending_age_warning": "soon"})
    with pytest.raises(ConfigError, match="a number >= 0"):
        health_thresholds({"cpu_percent_warning": -1})
    with pytest.raises(ConfigError, match="whole number"):
        health_thresholds({"min_jobs": 2.5})
    with pytest.raises(ConfigError, match=r"\[health\]\.queues\.'emails' must be a table"):
        health_thresholds({"queues": {"emails": 5}})
    with pytest.raises(ConfigError, match="table of tables"):
        health_thresholds({"queues": 5})
    as_dict = queue_health(QueueInputs(stats=stats(wait_p95_s=100)), T).as_dict()
    assert as_dict["status"] == "warning"
    assert as_dict["reasons"][0]["message"] == "p95 wait is 1m40s (target 1m00s)"
