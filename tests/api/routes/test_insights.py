"""Time series, trends, anomalies, forecasts and capacity over the known workload."""

from __future__ import annotations

from pathlib import Path

import pytest

from queuelens.api import create_app
from queuelens.model import Aggregate, FlushBatch, JobOutcome, JobStatus, SeriesKey, bucket_start
from queuelens.storage import open_storage
from tests.api.conftest import AT, NOW, WORKLOAD, Client, make_settings, settings_file

MINUTE = bucket_start(AT, 60)


def test_timeseries_of_a_job_metric(client: Client) -> None:
    body = client.get(
        "/api/v1/timeseries",
        params={"metric": "processed", "app": "billing", "queue": "emails", "step": "1m"},
    ).json()
    assert (body["metric"], body["unit"], body["step_s"]) == ("processed", "jobs", 60)
    values = {p["at"]: p["value"] for p in body["points"]}
    assert values[MINUTE] == 100
    assert sum(values.values()) == 100
    rate = client.get(
        "/api/v1/timeseries", params={"metric": "failure_rate", "queue": "emails", "step": "60"}
    ).json()
    by_minute = {p["at"]: p["value"] for p in rate["points"]}
    assert by_minute[MINUTE] == pytest.approx(10 / 104)  # billing and shop share the name
    assert {v for at, v in by_minute.items() if at != MINUTE} == {None}  # no jobs: no rate


def test_timeseries_of_everything_and_of_one_job(client: Client) -> None:
    everything = client.get("/api/v1/timeseries", params={"metric": "processed"}).json()
    assert sum(p["value"] for p in everything["points"]) == sum(
        ok + bad for ok, bad in WORKLOAD.values()
    )
    job = client.get("/api/v1/timeseries", params={"metric": "processed", "job": "a:b/c"}).json()
    assert (job["app"], job["queue"], job["job"]) == (
        "billing",
        "ip-10-0-0-1.ec2.internal",
        "a:b/c",
    )
    assert sum(p["value"] for p in job["points"]) == 5
    p95 = client.get("/api/v1/timeseries", params={"metric": "duration_p95", "job": "größe"}).json()
    assert {p["at"]: p["value"] for p in p95["points"]}[MINUTE] == pytest.approx(200, rel=0.02)


def test_timeseries_of_queue_depth(client: Client) -> None:
    body = client.get(
        "/api/v1/timeseries", params={"metric": "depth", "queue": "emails", "app": "billing"}
    ).json()
    assert body["unit"] == "jobs"
    assert [p["value"] for p in body["points"] if p["value"] is not None] == [12.0]
    needs_queue = client.get("/api/v1/timeseries", params={"metric": "depth"})
    assert needs_queue.status_code == 422
    assert needs_queue.json()["message"] == (
        "queue: metric 'depth' is per queue; pass queue=<name>"
    )


def test_trends_per_queue_and_per_job(client: Client) -> None:
    queue = client.get("/api/v1/trends", params={"queue": "emails", "app": "billing"}).json()
    assert {(t["queue"], t["metric"]) for t in queue["trends"]} == {
        ("emails", m) for m in ("depth", "duration_p95", "failure_rate", "throughput", "wait_p95")
    }
    throughput = next(t["trend"] for t in queue["trends"] if t["metric"] == "throughput")
    assert throughput["n"] >= 60  # a point per minute of the window
    job = client.get("/api/v1/trends", params={"job": "send", "app": "shop"}).json()
    assert {(t["app"], t["job"]) for t in job["trends"]} == {("shop", "send")}
    everything = client.get("/api/v1/trends").json()
    assert {(t["app"], t["queue"]) for t in everything["trends"]} == {
        (app, queue) for app, queue, _ in WORKLOAD
    }


def test_forecast_and_capacity(client: Client) -> None:
    body = client.get(
        "/api/v1/forecast", params={"queue": "emails", "app": "billing", "horizon": "30m"}
    ).json()
    assert body["horizon_s"] == 1800
    (emails,) = body["forecasts"]
    assert emails["depth"] is None  # one depth sample is no series
    assert emails["arrival"]["points"][-1]["at_s"] >= emails["arrival"]["last_at_s"] + 1800 - 60
    capacity = client.get("/api/v1/capacity").json()
    advice = {(q["app"], q["queue"]): q["advice"] for q in capacity["queues"]}
    assert set(advice) == {(app, queue) for app, queue, _ in WORKLOAD}
    assert advice[("billing", "emails")]["current_workers"] == 2
    assert advice[("billing", "emails")]["service_time_s"] == pytest.approx(0.2, rel=0.02)
    assert advice[("billing", "emails")]["reasons"]


def test_anomalies_found_against_history(tmp_path: Path) -> None:
    """Five days of ~100 ms jobs, then two hours at 2 s: one duration anomaly."""
    storage = open_storage(f"sqlite:///{tmp_path / 'a.db'}")
    aggregates: dict[tuple[SeriesKey, int], Aggregate] = {}
    key = SeriesKey("billing", "emails", "render")
    for hours_ago in range(120, 0, -1):
        at = NOW - hours_ago * 3600
        slow = hours_ago in (5, 6)
        aggregate = Aggregate()
        for n in range(20):
            duration = 2.0 if slow else 0.1 + 0.002 * ((n + hours_ago) % 7)
            aggregate.add(JobOutcome("emails", "render", JobStatus.succeeded, duration, 0.5), at)
        aggregates[(key, bucket_start(at, 60))] = aggregate
    storage.write(FlushBatch("seed", 1, NOW, aggregates, {("billing", "emails"): "rq"}))
    settings = make_settings(tmp_path)
    client = Client(create_app(settings, storage=storage, toml_path=settings_file(tmp_path)))
    try:
        body = client.get("/api/v1/anomalies", params={"window": "24h", "step": "1h"}).json()
    finally:
        storage.close()
    assert body["series_checked"] == 1
    # (throughput is anomalous too: the 28-day history reads as zeros before the job existed)
    (spike,) = [a for a in body["anomalies"] if a["metric"] == "duration_p95"]
    assert spike["scope"] == {"app": "billing", "queue": "emails", "job": "render"}
    assert spike["observed"] == pytest.approx(2000, rel=0.02)
    assert spike["method"] == "robust_z"
    assert (spike["start"], spike["end"]) == (
        bucket_start(NOW - 6 * 3600, 3600),
        bucket_start(NOW - 5 * 3600, 3600),
    )
    assert spike["expected_high"] < 200
