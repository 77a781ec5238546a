"""Queue and job details, for names with dots, colons, slashes, spaces, unicode and %2F."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from urllib.parse import quote

import pytest
from fastapi import FastAPI

from queuelens.api import create_app
from queuelens.model import bucket_start
from queuelens.storage import open_storage
from tests.api.conftest import AT, WORKLOAD, Client, make_settings, seed, settings_file

NAMED = [(app, queue, job, ok + bad) for (app, queue, job), (ok, bad) in WORKLOAD.items()]


def path(*parts: str) -> str:
    """A URL path whose last part is one name, percent-encoded as clients should."""
    return "/".join([*parts[:-1], quote(parts[-1], safe="")])


@pytest.fixture(params=["sqlite", "redis"])
def any_client(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Client]:
    """The app over the workload in SQLite and in Redis (names are keys there)."""
    url = (
        f"sqlite:///{tmp_path / 'q.db'}"
        if request.param == "sqlite"
        else request.getfixturevalue("redis_url")
    )
    storage = open_storage(url)
    seed(storage)
    settings = make_settings(tmp_path, rate_limit_ip_per_min=0, rate_limit_token_per_min=0)
    try:
        yield Client(create_app(settings, storage=storage, toml_path=settings_file(tmp_path)))
    finally:
        storage.close()


@pytest.mark.parametrize(("app", "queue", "job", "processed"), NAMED)
def test_every_name_is_addressable(
    any_client: Client, app: str, queue: str, job: str, processed: int
) -> None:
    detail = any_client.get(path("/api/v1/queues", queue), params={"app": app})
    assert detail.status_code == 200, detail.text
    body = detail.json()
    assert (body["app"], body["queue"], body["processed"]) == (app, queue, processed)
    job_detail = any_client.get(path("/api/v1/jobs", job), params={"queue": queue, "app": app})
    assert job_detail.status_code == 200, job_detail.text
    assert (job_detail.json()["job"], job_detail.json()["processed"]) == (job, processed)


def test_a_slash_in_a_name_needs_no_encoding_either(client: Client) -> None:
    # {queue:path} takes the rest of the path, so a client that forgets to encode still works
    assert client.get("/api/v1/queues/a:b/c").json()["processed"] == 7
    assert client.get("/api/v1/jobs/a:b/c").json()["queue"] == "ip-10-0-0-1.ec2.internal"


def test_queue_detail_series_trends_forecast_and_capacity(client: Client) -> None:
    body = client.get(
        "/api/v1/queues/emails", params={"app": "billing", "window": "1h", "step": "60"}
    ).json()
    assert (body["processed"], body["failed"]) == (100, 10)
    assert body["window"]["label"] == "1h"
    by_minute = {p["at"]: p for p in body["points"]}
    assert all(p["step_s"] == 60 for p in body["points"])
    assert by_minute[bucket_start(AT, 60)]["processed"] == 100
    assert sum(p["processed"] for p in body["points"]) == 100
    (sampled,) = [p["fields"] for p in body["depth_points"] if p["fields"]]
    assert sampled["pending"]["last"] == 12.0
    assert set(body["trends"]) == {
        "throughput",
        "failure_rate",
        "duration_p95",
        "wait_p95",
        "depth",
    }
    assert body["trends"]["depth"]["n"] == 1
    assert body["capacity"]["current_workers"] == 2  # w1: two slots
    assert body["capacity"]["backlog"] == 12
    assert body["depth_forecast"] is None
    assert body["notes"] == ["no depth forecast: fewer than 2 points in the window"]
    assert body["arrival_forecast"]["method"] == "holt"


def test_job_detail_series_and_baselines(client: Client) -> None:
    body = client.get("/api/v1/jobs/send", params={"app": "billing", "step": "5m"}).json()
    assert (body["app"], body["queue"], body["job"]) == ("billing", "emails", "send")
    assert (body["processed"], body["succeeded"], body["failed"]) == (100, 90, 10)
    assert {p["step_s"] for p in body["points"]} == {300}
    assert sum(p["processed"] for p in body["points"]) == 100
    assert body["anomalies"] == []  # no history to judge against


def test_a_job_without_jobs_in_the_window_has_an_empty_summary(client: Client) -> None:
    body = client.get(
        "/api/v1/jobs/send",
        params={"app": "shop", "since": str(AT - 7200), "until": str(AT - 3600)},
    ).json()
    assert (body["app"], body["queue"], body["job"], body["processed"]) == (
        "shop",
        "emails",
        "send",
        0,
    )


def test_unknown_names_are_404(client: Client) -> None:
    missing = client.get("/api/v1/queues/nope")
    assert missing.status_code == 404
    assert missing.json()["detail"] == "no queue named 'nope'; GET /api/v1/queues lists them"
    assert client.get("/api/v1/queues/emails", params={"app": "nope"}).status_code == 404
    assert client.get("/api/v1/jobs/nope").status_code == 404
    assert client.get("/api/v1/jobs/send", params={"queue": "a:b/c"}).status_code == 404


def test_a_name_in_several_apps_asks_for_the_app(client: Client) -> None:
    answer = client.get("/api/v1/queues/emails")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["query", "app"]
    assert "exists in apps 'billing', 'shop'; pass app=<name>" in answer.json()["message"]
    job = client.get("/api/v1/jobs/send")
    assert job.status_code == 422
    assert job.json()["detail"][0]["loc"] == ["query", "app"]
    assert "billing/emails, shop/emails" in job.json()["message"]
    assert client.get("/api/v1/queues/emails", params={"app": "shop"}).json()["processed"] == 4


def test_an_empty_name_is_422(app: FastAPI) -> None:
    answer = Client(app).get("/api/v1/queues/")
    assert answer.status_code == 422
    assert answer.json()["detail"][0]["loc"] == ["path", "queue"]
