"""status, top, queues, jobs, workers, servers: the workload's numbers, as tables and JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from queuelens.analytics import Analytics
from queuelens.storage import StorageError
from tests.cli.conftest import CLI, Workload


def as_json(cli: CLI, *args: str) -> Any:
    result = cli(*args, "--json")
    assert result.code == 0, result.err
    return json.loads(result.out)


def by_queue(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {row["queue"]: row for row in rows}


def reason_codes(row: dict[str, Any]) -> set[str]:
    return {reason["code"] for reason in row["health"]["reasons"]}


def test_queues_json_is_the_workload(cli: CLI, workload: Workload) -> None:
    queues = by_queue(as_json(cli, "queues", "--storage", workload.url))

    assert set(queues) == {"emails", "reports", "orders.v2:eu"}
    emails = queues["emails"]
    assert (emails["app"], emails["framework"]) == ("billing", "rq")
    assert (emails["processed"], emails["succeeded"], emails["failed"]) == (100, 90, 10)
    assert emails["failure_rate"] == pytest.approx(0.1)
    assert emails["depth"] == {"pending": 12.0, "scheduled": None, "reserved": None, "failed": None}
    assert emails["oldest_pending_age_s"] == 30.0
    assert emails["workers"] == {"total": 1, "busy": 1}
    assert emails["duration_ms"]["max"] == pytest.approx(200.0)
    assert emails["duration_ms"]["p95"] == pytest.approx(200.0, rel=0.01)
    assert emails["wait_ms"]["p50"] == pytest.approx(1000.0, rel=0.01)
    assert emails["health"]["status"] == "warning"
    assert reason_codes(emails) == {"failure_rate"}

    reports = queues["reports"]
    assert reports["processed"] == 50
    assert reports["workers"] == {"total": 0, "busy": 0}
    assert reports["health"]["status"] == "critical"
    assert reason_codes(reports) == {"oldest_pending_age", "no_live_worker"}

    assert queues["orders.v2:eu"]["app"] == "shop"
    assert queues["orders.v2:eu"]["processed"] == 20


def test_status_json_totals_workers_servers(cli: CLI, workload: Workload) -> None:
    overview = as_json(cli, "status", "--storage", workload.url)

    window = overview["window"]
    assert window["label"] == "1h"
    assert window["end"] - window["start"] == window["duration_s"] >= 3600
    totals = overview["totals"]
    assert (totals["processed"], totals["failed"]) == (170, 10)
    # the rate is over the minutes the window really spans
    assert totals["throughput_per_min"] == pytest.approx(170 / (window["duration_s"] / 60))
    assert [q["queue"] for q in overview["queues"]] == ["emails", "reports", "orders.v2:eu"]
    assert overview["workers"] == {
        "total": 2,
        "busy": 1,
        "idle": 0,
        "stale": 0,
        "dead": 1,
        "stopped": 0,
    }
    (server,) = overview["servers"]
    assert (server["hostname"], server["cpu_percent"], server["workers"]) == ("h1", 97.0, 1)
    assert server["load"] == {"avg_1m": 0.5, "avg_5m": None, "avg_15m": None}
    assert server["disks"] == [{"mount": "/", "total_gb": None, "used_gb": None, "percent": 40.0}]
    assert reason_codes(server) == {"cpu"}
    assert overview["alerts"] == {"firing": 0, "enabled": False}

    billing = as_json(cli, "status", "--app", "billing", "--storage", workload.url)
    assert billing["totals"]["processed"] == 150
    assert {q["app"] for q in billing["queues"]} == {"billing"}


def test_json_has_the_shapes_of_the_rest_api(cli: CLI, workload: Workload) -> None:
    schemas = pytest.importorskip("queuelens.api.schemas")

    def same(model: Any, data: Any) -> None:
        assert model.model_validate(data).model_dump(mode="json") == data

    same(schemas.OverviewOut, as_json(cli, "status", "--storage", workload.url))
    for row in as_json(cli, "queues", "--storage", workload.url):
        same(schemas.QueueSummaryOut, row)
    for row in as_json(cli, "jobs", "--storage", workload.url):
        same(schemas.JobSummaryOut, row)
    for row in as_json(cli, "workers", "--storage", workload.url):
        same(schemas.WorkerOut, row)
    for row in as_json(cli, "servers", "--storage", workload.url):
        same(schemas.ServerOut, row)


def test_jobs_json_filters_by_queue(cli: CLI, workload: Workload) -> None:
    (job,) = as_json(cli, "jobs", "--queue", "emails", "--storage", workload.url)

    assert (job["app"], job["queue"], job["job"]) == ("billing", "emails", "send")
    assert (job["processed"], job["failed"]) == (100, 10)
    (exception,) = job["exceptions"]
    assert (exception["type"], exception["count"], exception["last_message"]) == (
        "IOError",
        10,
        "smtp down",
    )
    shop = as_json(cli, "jobs", "--app", "shop", "--storage", workload.url)
    assert [(j["queue"], j["processed"]) for j in shop] == [("orders.v2:eu", 20)]


def test_workers_json_filters_by_state_and_queue(cli: CLI, workload: Workload) -> None:
    workers = {w["id"]: w for w in as_json(cli, "workers", "--storage", workload.url)}
    assert {w: workers[w]["state"] for w in workers} == {"w1": "busy", "w2": "dead"}
    assert workers["w1"]["queues"] == ["emails"]
    assert workers["w1"]["busy_slots"] == 1

    dead = as_json(cli, "workers", "--state", "dead", "--storage", workload.url)
    assert [w["id"] for w in dead] == ["w2"]
    serving = as_json(cli, "workers", "--queue", "emails", "--storage", workload.url)
    assert [w["id"] for w in serving] == ["w1"]
    assert as_json(cli, "workers", "--app", "shop", "--storage", workload.url) == []


def test_servers_json(cli: CLI, workload: Workload) -> None:
    (server,) = as_json(cli, "servers", "--storage", workload.url)
    assert server["health"]["status"] == "critical"
    assert server["values"]["cpu_percent"] == 97.0


def test_status_table_shows_queues_reasons_workers_servers(cli: CLI, workload: Workload) -> None:
    result = cli("status", "--storage", workload.url)

    assert result.code == 0, result.err
    out = result.out
    for name in ("emails", "reports", "orders.v2:eu", "h1"):
        assert name in out
    assert "170 processed" in out
    assert "[failure_rate] failure rate is 10.0%" in out
    assert "reports: critical [oldest_pending_age]" in out
    assert "[no_live_worker]" in out
    assert "h1: critical [cpu]" in out
    assert "1 busy" in out
    assert "1 dead" in out


def test_listing_tables(cli: CLI, workload: Workload) -> None:
    queues = cli("queues", "--app", "billing", "--storage", workload.url).out
    assert "emails" in queues
    assert "orders.v2:eu" not in queues
    assert "[oldest_pending_age]" in queues
    jobs = cli("jobs", "--storage", workload.url).out
    assert "orders.v2:eu" in jobs
    assert "IOError ×10" in jobs
    workers = cli("workers", "--storage", workload.url).out
    assert "w1" in workers
    assert "dead" in workers
    assert "h1" in cli("servers", "--storage", workload.url).out


def test_narrow_terminal_drops_columns_not_names(
    cli: CLI, workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "50")
    out = cli("queues", "--storage", workload.url).out
    assert "orders.v2:eu" in out
    assert "critical" in out
    assert "run" not in out.split("───")[0]  # the run time column went first
    assert max(len(line.rstrip()) for line in out.splitlines()) <= 50


def test_empty_storage(cli: CLI) -> None:
    url = "sqlite:///empty.db"
    assert "no queues recorded yet" in cli("status", "--storage", url).out
    assert as_json(cli, "queues", "--storage", url) == []


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["status", "--window", "2h"], "--window"),
        (["queues", "--since", "yesterday"], "--since"),
        (["jobs", "--since", "2026-01-02", "--until", "2026-01-01"], "--until"),
        (["export", "--step", "7x"], "--step"),
    ],
)
def test_a_bad_window_is_one_line_naming_the_option(
    cli: CLI, workload: Workload, args: list[str], option: str
) -> None:
    result = cli(*args, "--storage", workload.url)

    assert result.code == 2
    assert result.out == ""
    assert result.err.startswith(f"queuelens: error: {option}: ")
    assert len(result.err.strip().splitlines()) == 1


def test_window_error_lists_accepted_windows(cli: CLI, workload: Workload) -> None:
    err = cli("queues", "-w", "2h", "--storage", workload.url).err
    assert "accepted: 5m, 15m, 1h, 6h, 24h, 7d, 30d" in err


def test_top_once_prints_one_frame(cli: CLI, workload: Workload) -> None:
    result = cli("top", "--once", "--window", "1h", "--storage", workload.url)

    assert result.code == 0, result.err
    assert "emails" in result.out
    assert "[no_live_worker]" in result.out


def test_top_refreshes_until_interrupted(
    cli: CLI, workload: Workload, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two refreshes, the second failing on storage (shown, not fatal), then Ctrl-C."""
    sleeps: list[float] = []
    real_overview = Analytics.overview
    calls = 0

    def overview(self: Analytics, *args: Any, **kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 3:
            raise StorageError("sqlite:///x is unavailable")
        return real_overview(self, *args, **kwargs)

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        if len(sleeps) == 3:
            raise KeyboardInterrupt

    monkeypatch.setattr(Analytics, "overview", overview)
    monkeypatch.setattr("queuelens.cli.read.time.sleep", sleep)

    result = cli("top", "--interval", "0.5", "--window", "1h", "--storage", workload.url)

    assert result.code == 0, result.err
    assert sleeps == [0.5, 0.5, 0.5]
    assert calls == 3
    assert "storage error, retrying: sqlite:///x is unavailable" in result.out
    assert "emails" in result.out


@pytest.mark.parametrize("interval", ["0", "-1", "nan"])
def test_top_rejects_a_bad_interval(cli: CLI, workload: Workload, interval: str) -> None:
    result = cli("top", "--interval", interval, "--storage", workload.url)
    assert result.code == 2
    assert "--interval" in result.err


def test_a_storage_error_is_one_line(cli: CLI) -> None:
    result = cli("status", "--storage", "postgresql://u:secret@127.0.0.1:1/db")

    assert result.code == 2
    assert result.err.startswith("queuelens: error: ")
    assert len(result.err.strip().splitlines()) == 1
    assert "secret" not in result.err
