"""Overview, queues, jobs, workers and servers answer the numbers of the known workload."""

from __future__ import annotations

import pytest

from tests.api.conftest import AT, TOTAL, WORKLOAD, Client


def test_overview_totals_queues_workers_and_servers(client: Client) -> None:
    response = client.get("/api/v1/overview", params={"window": "1h"})
    assert response.status_code == 200
    body = response.json()
    assert body["window"]["label"] == "1h"
    assert body["window"]["duration_s"] >= 3600
    totals = body["totals"]
    assert totals["processed"] == TOTAL == 121
    assert totals["failed"] == 10
    assert totals["failure_rate"] == pytest.approx(10 / 121)
    assert totals["throughput_per_min"] == pytest.approx(121 / (body["window"]["duration_s"] / 60))
    assert totals["duration_ms"]["p50"] == pytest.approx(200, rel=0.02)
    assert totals["exceptions"] == [
        {"type": "IOError", "count": 10, "last_message": "disk full", "last_seen": AT}
    ]
    queues = {(q["app"], q["queue"]): q for q in body["queues"]}
    assert set(queues) == {(app, queue) for app, queue, _ in WORKLOAD}
    emails = queues[("billing", "emails")]
    assert (emails["processed"], emails["failed"], emails["framework"]) == (100, 10, "rq")
    assert emails["depth"] == {"pending": 12.0, "scheduled": None, "reserved": None, "failed": None}
    assert emails["oldest_pending_age_s"] == 30.0
    assert emails["workers"] == {"total": 1, "busy": 1}
    assert emails["health"]["status"] == "warning"  # 10% failures: over 5%, under 25%
    assert [r["code"] for r in emails["health"]["reasons"]] == ["failure_rate"]
    assert emails["health"]["reasons"][0]["value"] == pytest.approx(0.1)
    assert body["workers"] == {
        "total": 2,
        "busy": 1,
        "idle": 0,
        "stale": 0,
        "dead": 1,
        "stopped": 0,
    }
    assert [r["code"] for r in body["workers_health"]["reasons"]] == ["dead_workers"]
    (server,) = body["servers"]
    assert (server["hostname"], server["cpu_percent"], server["workers"]) == ("h1", 97.0, 1)
    assert server["load"]["avg_1m"] == 0.5
    assert server["memory"]["percent"] == 40.0
    assert "cpu" in {r["code"] for r in server["health"]["reasons"]}
    assert body["alerts"] == {"firing": 0, "enabled": False}


def test_overview_of_one_app(client: Client) -> None:
    body = client.get("/api/v1/overview", params={"app": "shop"}).json()
    assert body["totals"]["processed"] == 4
    assert [(q["app"], q["queue"]) for q in body["queues"]] == [("shop", "emails")]


def test_queues_list_and_filter(client: Client) -> None:
    everything = client.get("/api/v1/queues").json()
    assert sum(q["processed"] for q in everything) == TOTAL
    shop = client.get("/api/v1/queues", params={"app": "shop"}).json()
    assert [(q["queue"], q["processed"]) for q in shop] == [("emails", 4)]


def test_jobs_busiest_first_with_exceptions(client: Client) -> None:
    jobs = client.get("/api/v1/jobs").json()
    assert [(j["app"], j["queue"], j["job"], j["processed"]) for j in jobs] == sorted(
        ((a, q, j, ok + bad) for (a, q, j), (ok, bad) in WORKLOAD.items()),
        key=lambda row: (-row[3], row[0], row[1], row[2]),
    )
    send = jobs[0]
    assert (send["succeeded"], send["failed"]) == (90, 10)
    assert send["wait_ms"]["avg"] == pytest.approx(1000.0)
    assert send["exceptions"][0]["type"] == "IOError"
    only = client.get("/api/v1/jobs", params={"queue": "a:b/c"}).json()
    assert [(j["job"], j["processed"]) for j in only] == [("größe", 7)]


def test_workers_and_their_states(client: Client) -> None:
    workers = client.get("/api/v1/workers").json()
    assert [(w["id"], w["state"]) for w in workers] == [("w1", "busy"), ("w2", "dead")]
    w1 = workers[0]
    assert (w1["queues"], w1["concurrency"], w1["busy_slots"], w1["processed"]) == (
        ["emails"],
        2,
        1,
        42,
    )
    dead = client.get("/api/v1/workers", params={"state": "dead"}).json()
    assert [w["id"] for w in dead] == ["w2"]
    assert client.get("/api/v1/workers", params={"queue": "nope"}).json() == []


def test_servers(client: Client) -> None:
    (server,) = client.get("/api/v1/servers").json()
    assert server["hostname"] == "h1"
    assert server["cpu_count"] == 2.0
    assert server["values"]["cpu_percent"] == 97.0
    assert client.get("/api/v1/servers", params={"app": "shop"}).json() == []


def test_a_window_in_the_past_has_nothing(client: Client) -> None:
    body = client.get(
        "/api/v1/overview", params={"since": str(AT - 7200), "until": str(AT - 3600)}
    ).json()
    assert body["window"]["label"] == "custom"
    assert body["totals"]["processed"] == 0
