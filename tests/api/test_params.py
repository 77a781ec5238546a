"""Every bad parameter is a 422 that names it and what is accepted; storage down is a 503."""

from __future__ import annotations

from pathlib import Path
from typing import get_args

import pytest

from queuelens.analytics.window import WINDOWS
from queuelens.api import create_app
from queuelens.api.params import WindowName
from queuelens.api.routes.insights import JOB_METRICS, QUEUE_METRICS, MetricName
from queuelens.storage import open_storage
from tests.api.conftest import Client, make_settings, settings_file

WINDOW_VALUES = "'5m', '15m', '1h', '6h', '24h', '7d' or '30d'"


@pytest.mark.parametrize(
    ("url", "params", "parameter", "message"),
    [
        ("/api/v1/overview", {"window": "2h"}, "window", f"Input should be {WINDOW_VALUES}"),
        ("/api/v1/queues", {"window": ""}, "window", f"Input should be {WINDOW_VALUES}"),
        (
            "/api/v1/jobs",
            {"since": "yesterday"},
            "since",
            "'yesterday' is not a time; use unix seconds or ISO 8601, e.g. 2026-11-28T09:00:00Z",
        ),
        ("/api/v1/overview", {"since": "-5"}, "since", "'-5' is not a time after 1970"),
        ("/api/v1/overview", {"until": "100"}, "until", "needs since; or use window=1h alone"),
        (
            "/api/v1/overview",
            {"since": "2000", "until": "1000"},
            "until",
            "must be later than since",
        ),
        (
            "/api/v1/timeseries",
            {"step": "often"},
            "step",
            "'often' is not a duration; e.g. 60s, 5m, 1h or 1d",
        ),
        ("/api/v1/timeseries", {"step": "0"}, "step", "'0' must be positive"),
        (
            "/api/v1/timeseries",
            {"window": "30d", "step": "1m"},
            "step",
            "'1m' gives more than 10,000 points; use a larger step",
        ),
        (
            "/api/v1/timeseries",
            {"metric": "speed"},
            "metric",
            "Input should be 'processed', 'succeeded', 'failed'",
        ),
        (
            "/api/v1/forecast",
            {"horizon": "soon"},
            "horizon",
            "'soon' is not a duration such as 30s, 15m, 12h or 2d",
        ),
        (
            "/api/v1/forecast",
            {"horizon": "30d", "step": "60"},
            "horizon",
            "'30d' is more than 1,000 steps of 60 s; use a shorter horizon or a larger step",
        ),
        (
            "/api/v1/forecast",
            {"depth_threshold": "-1"},
            "depth_threshold",
            "greater than or equal to 0",
        ),
        ("/api/v1/forecast", {"depth_threshold": "lots"}, "depth_threshold", "valid number"),
        (
            "/api/v1/workers",
            {"state": "asleep"},
            "state",
            "Input should be 'busy', 'idle', 'stopped', 'stale' or 'dead'",
        ),
        ("/api/v1/export", {"format": "xml"}, "format", "Input should be 'csv' or 'json'"),
        ("/api/v1/stream", {"window": "1y"}, "window", f"Input should be {WINDOW_VALUES}"),
    ],
)
def test_bad_parameters_are_422_naming_them(
    client: Client, url: str, params: dict[str, str], parameter: str, message: str
) -> None:
    answer = client.get(url, params=params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    (issue,) = body["detail"]
    assert issue["loc"] == ["query", parameter]
    assert message in issue["msg"]
    assert body["message"].startswith(f"{parameter}: ")
    assert message in body["message"]


def test_the_documented_names_are_the_accepted_names() -> None:
    assert get_args(WindowName) == tuple(WINDOWS)
    assert set(get_args(MetricName)) == set(JOB_METRICS) | set(QUEUE_METRICS)


def test_unknown_and_repeated_parameters_are_422(client: Client) -> None:
    typo = client.get("/api/v1/queues", params={"qeue": "emails"})
    assert typo.status_code == 422
    assert typo.json()["message"] == (
        "qeue: is not a parameter of this endpoint; it accepts app, since, until, window"
    )
    twice = client.get("/api/v1/jobs", params={"app": ["billing", "shop"]})
    assert twice.status_code == 422
    assert twice.json()["message"] == "app: is given 2 times; give it once"
    none = client.get("/api/v1/servers", params={"window": "1h"})
    assert none.json()["message"] == "window: is not a parameter of this endpoint; it accepts app"


def test_unreachable_storage_is_503_not_500(tmp_path: Path) -> None:
    storage = open_storage("redis://127.0.0.1:1/0")  # nothing listens on port 1
    settings = make_settings(tmp_path)
    client = Client(create_app(settings, storage=storage, toml_path=settings_file(tmp_path)))
    try:
        answer = client.get("/api/v1/overview")
        assert answer.status_code == 503
        assert answer.json()["detail"].startswith("the storage did not answer: ")
        ready = client.get("/readyz")
        assert ready.status_code == 503
        assert ready.json() == {
            "status": "unavailable",
            "storage_reachable": False,
            "detail": "the storage did not answer",
            "newest_flush_at": None,
            "newest_flush_age_s": None,
            "newest_heartbeat_at": None,
            "newest_heartbeat_age_s": None,
        }
        assert client.get("/healthz").json() == {"status": "ok"}
    finally:
        storage.close()
