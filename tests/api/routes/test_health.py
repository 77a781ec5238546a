"""Liveness, and readiness with the age of the newest flush and heartbeat."""

from __future__ import annotations

import time

import pytest

from tests.api.conftest import AT, Client


def test_healthz(client: Client) -> None:
    answer = client.get("/healthz")
    assert (answer.status_code, answer.json()) == (200, {"status": "ok"})


def test_readyz_reports_the_newest_flush_and_heartbeat(client: Client) -> None:
    before = time.time()
    answer = client.get("/readyz")
    after = time.time()
    assert answer.status_code == 200
    body = answer.json()
    assert (body["status"], body["storage_reachable"], body["detail"]) == ("ready", True, None)
    assert body["newest_flush_at"] == AT  # the seed's one flush was created at AT
    assert before - AT <= body["newest_flush_age_s"] <= after - AT
    # w1's heartbeat is the newest, sent while seeding, just before the request
    assert body["newest_heartbeat_at"] == pytest.approx(before, abs=60)
    assert body["newest_heartbeat_age_s"] >= 0
