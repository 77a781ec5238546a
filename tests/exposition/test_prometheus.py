"""``/metrics`` from real storage: gauges equal the read side, both formats parse, promtool
accepts the text format, label values of any shape survive, and negotiation picks right."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from prometheus_client import REGISTRY, CollectorRegistry, generate_latest

from queuelens.analytics import Analytics
from queuelens.analytics.anomaly import Anomaly
from queuelens.exposition import (
    OPENMETRICS_CONTENT_TYPE,
    TEXT_CONTENT_TYPE,
    QueueLensCollector,
    render_metrics,
    wants_openmetrics,
)
from queuelens.model import JobStatus
from queuelens.storage import Storage, open_storage
from tests.exposition.conftest import (
    NOW,
    ODD,
    SEND,
    TODAY,
    analytics_of,
    job_labels,
    labels,
    named,
    pick,
    populate,
    promtool_check,
    samples,
)

OM_ACCEPT = "application/openmetrics-text;version=1.0.0;q=0.5,text/plain;version=0.0.4;q=0.3"


# -- settings ------------------------------------------------------------------------------


def test_custom_buckets(storage: Storage) -> None:
    work = populate(storage)
    body, _ = render_metrics(
        analytics_of(storage), None, buckets=[0.1, 1, 10], wait_buckets=[1, 60]
    )
    found = samples(body)
    durations = named(found, "queuelens_job_duration_seconds_bucket")
    assert {dict(k)["le"] for k in durations} == {"0.1", "1.0", "10.0", "+Inf"}
    waits = named(found, "queuelens_job_wait_seconds_bucket")
    assert {dict(k)["le"] for k in waits} == {"1.0", "60.0", "+Inf"}
    want = sum(1 for v in work.waits[SEND] if v <= 60)
    assert pick(found, "queuelens_job_wait_seconds_bucket", **job_labels(SEND), le="60.0") == want


# -- queues, workers, servers, health ------------------------------------------------------


def test_state_gauges_equal_the_read_side(storage: Storage) -> None:
    populate(storage)
    analytics = analytics_of(storage)
    found = samples(render_metrics(analytics, None)[0])

    emails = {"app": "billing", "queue": "emails"}
    reports = {"app": "billing", "queue": "reports"}
    depth = named(found, "queuelens_queue_depth")
    assert depth == {
        labels(**emails, state="pending"): 7.0,
        labels(**emails, state="scheduled"): 2.0,
        labels(**emails, state="reserved"): 1.0,
        labels(**reports, state="pending"): 0.0,  # what the broker lacks is absent, not 0
    }
    assert named(found, "queuelens_queue_oldest_pending_age_seconds") == {labels(**emails): 42.0}
    assert pick(found, "queuelens_queue_sample_age_seconds", **emails) == pytest.approx(5.0)
    assert pick(found, "queuelens_queue_workers", **emails, state="busy") == 1
    assert pick(found, "queuelens_queue_workers", **emails, state="idle") == 0
    assert pick(found, "queuelens_queue_workers", **reports, state="idle") == 1

    assert named(found, "queuelens_workers") == {
        labels(app="billing", state="busy"): 1,
        labels(app="billing", state="idle"): 1,
        labels(app="billing", state="stale"): 1,
        labels(app="billing", state="dead"): 1,
        labels(app="billing", state="stopped"): 1,
    }
    assert pick(found, "queuelens_worker_slots", app="billing", state="busy") == 2
    assert pick(found, "queuelens_worker_slots", app="billing", state="idle") == 4

    window = analytics.window("1h")
    for summary in analytics.queue_summaries(window):
        queue = {"app": summary.app, "queue": summary.queue}
        assert pick(found, "queuelens_queue_health_score", **queue) == summary.health.score
        status = {
            dict(k)["queuelens_queue_health_status"]: v
            for k, v in named(found, "queuelens_queue_health_status").items()
            if dict(k)["queue"] == summary.queue and dict(k)["app"] == summary.app
        }
        assert status == {s: float(s == str(summary.health.status)) for s in status}
        assert len(status) == 4
        reasons = {
            (dict(k)["code"], dict(k)["severity"])
            for k in named(found, "queuelens_queue_health_reason")
            if dict(k)["queue"] == summary.queue and dict(k)["app"] == summary.app
        }
        assert reasons == {(r.code, str(r.severity)) for r in summary.health.reasons}
    overview = analytics.overview(window)
    assert pick(found, "queuelens_fleet_health_score") == overview.fleet_health.score
    assert {r.code for r in overview.fleet_health.reasons} >= {"stale_workers", "dead_workers"}

    host = {"hostname": "h1"}
    assert pick(found, "queuelens_server_cpu_usage_ratio", **host) == 0.5
    assert pick(found, "queuelens_server_cpus", **host) == 4
    assert pick(found, "queuelens_server_load1", **host) == 1.5
    assert pick(found, "queuelens_server_load5", **host) == 1.0
    assert pick(found, "queuelens_server_load15", **host) == 0.5
    assert pick(found, "queuelens_server_memory_total_bytes", **host) == 2048 * 2**20
    assert pick(found, "queuelens_server_memory_used_bytes", **host) == 1024 * 2**20
    assert pick(found, "queuelens_server_disk_total_bytes", **host, mount="/") == 100 * 2**30
    assert pick(found, "queuelens_server_disk_used_bytes", **host, mount="/") == 25 * 2**30
    assert pick(found, "queuelens_server_sample_age_seconds", **host) == pytest.approx(5.0)
    assert pick(found, "queuelens_server_workers", **host) == 2  # live ones
    (server,) = analytics.server_summaries()
    assert pick(found, "queuelens_server_health_score", **host) == server.health.score

    assert pick(found, "queuelens_storage_up") == 1
    assert pick(found, "queuelens_job_series_folded") == 0
    assert pick(found, "queuelens_scrape_duration_seconds") > 0
    assert named(found, "queuelens_build_info") == {labels(version="0.1.0"): 1}
    assert not named(found, "queuelens_anomalies_active")  # no anomaly source given


def test_active_anomalies_come_from_the_source(storage: Storage) -> None:
    populate(storage)

    def anomaly(queue: str, metric: str) -> Anomaly:
        scope = {"app": "billing", "queue": queue, "job": "build"}
        return Anomaly(metric, scope, 1.0, 2.0, 1.5, 9.0, 6.0, "robust_z", NOW - 60, NOW - 60)

    found = samples(
        render_metrics(
            analytics_of(storage),
            None,
            anomalies=lambda: [anomaly("reports", "wait_p95"), anomaly("reports", "wait_p95")],
        )[0]
    )
    active = named(found, "queuelens_anomalies_active")
    assert active[labels(app="billing", queue="reports", metric="wait_p95")] == 2
    assert active[labels(app="billing", queue="emails", metric="wait_p95")] == 0
    assert sum(active.values()) == 2
    assert {dict(k)["metric"] for k in active} == {
        "throughput",
        "failure_rate",
        "duration_p95",
        "wait_p95",
    }


# -- formats, escaping, promtool -----------------------------------------------------------


def test_openmetrics_has_the_same_values_and_created_times(storage: Storage) -> None:
    populate(storage)
    analytics = analytics_of(storage)
    text = samples(render_metrics(analytics, None)[0])
    body, content_type = render_metrics(analytics, OM_ACCEPT)
    assert content_type == OPENMETRICS_CONTENT_TYPE
    assert body.endswith(b"# EOF\n")
    om = samples(body, openmetrics=True)
    volatile = {"queuelens_scrape_duration_seconds"}
    for key, value in text.items():
        if key[0] not in volatile:
            assert om[key] == value, key
    created = {key: v for key, v in om.items() if key[0].endswith("_created")}
    assert {key[0] for key in created} == {
        "queuelens_jobs_created",
        "queuelens_job_duration_seconds_created",
        "queuelens_job_wait_seconds_created",
        "queuelens_dropped_outcomes_created",
    }
    assert set(created.values()) == {float(TODAY)}
    assert not any(key[0].endswith("_created") for key in text)
    assert b"# UNIT queuelens_job_duration_seconds seconds" in body


@pytest.mark.parametrize(
    "options",
    [
        {},  # odd label values included
        {"max_series": 2},  # with __other__ series
        {"buckets": [0.1, 1, 10], "wait_buckets": [1, 60]},
        {"anomalies": list},
    ],
    ids=["default", "folded", "custom-buckets", "anomalies"],
)
def test_promtool_accepts_the_text_format(storage: Storage, options: dict[str, Any]) -> None:
    populate(storage)
    body, _ = render_metrics(analytics_of(storage), None, **options)
    promtool_check(body)


def test_promtool_accepts_a_scrape_of_a_storage_that_is_down(unreachable: Analytics) -> None:
    promtool_check(render_metrics(unreachable, None)[0])


def test_label_values_of_any_shape_are_escaped(storage: Storage) -> None:
    populate(storage)
    analytics = analytics_of(storage)
    for accept, openmetrics in ((None, False), (OM_ACCEPT, True)):
        body, _ = render_metrics(analytics, accept)
        assert b'queue="a.b:c/d e\\"f\\\\g\\nh"' in body
        assert "größe.🚀/x:y z 'q'".encode() in body
        found = samples(body, openmetrics=openmetrics)
        assert pick(found, "queuelens_jobs_total", **job_labels(ODD), status="succeeded") == 3


# -- the collector on its own --------------------------------------------------------------


@pytest.fixture
def unreachable() -> Iterator[Analytics]:
    """Analytics over a real storage that is down: nothing listens on port 1."""
    storage = open_storage("redis://127.0.0.1:1/0")
    try:
        yield Analytics(storage, clock=lambda: NOW)
    finally:
        storage.close()


def test_storage_down_exports_only_storage_up_zero(
    unreachable: Analytics, caplog: pytest.LogCaptureFixture
) -> None:
    body, _ = render_metrics(unreachable, None)
    assert samples(body) == {("queuelens_storage_up", frozenset()): 0.0}
    assert "storage could not be read" in caplog.text


def test_registering_reads_no_storage(unreachable: Analytics) -> None:
    collector = QueueLensCollector(unreachable, anomalies=lambda: [])
    REGISTRY.register(collector)  # describes itself without a scrape
    REGISTRY.unregister(collector)
    CollectorRegistry(auto_describe=True).register(QueueLensCollector(unreachable))


def test_embedding_in_the_default_registry(storage: Storage) -> None:
    work = populate(storage)
    collector = QueueLensCollector(analytics_of(storage))
    REGISTRY.register(collector)
    try:
        found = samples(generate_latest(REGISTRY))
    finally:
        REGISTRY.unregister(collector)
    succeeded = pick(found, "queuelens_jobs_total", **job_labels(SEND), status="succeeded")
    assert succeeded == work.counts[SEND][JobStatus.succeeded]
    assert "process_cpu_seconds_total" in {name for name, _ in found}  # beside the defaults
    # a collector of its own adds the _created gauges, as prometheus_client's counters do
    assert pick(found, "queuelens_jobs_created", **job_labels(SEND), status="succeeded") == TODAY


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"max_series": -1}, "metrics_max_series = -1 is invalid"),
        ({"max_series": True}, "metrics_max_series = True is invalid"),
        ({"buckets": []}, "metrics_buckets is empty"),
        ({"wait_buckets": [2, 1]}, "metrics_wait_buckets: bounds must increase"),
        ({"health_window": "2h"}, "window: '2h' is not a window"),
    ],
)
def test_bad_options_are_refused_up_front(
    unreachable: Analytics, options: dict[str, object], message: str
) -> None:
    with pytest.raises(ValueError, match=message):
        QueueLensCollector(unreachable, **options)  # type: ignore[arg-type]


# -- content negotiation -------------------------------------------------------------------

PROMETHEUS_2 = (
    "application/openmetrics-text;version=1.0.0,application/openmetrics-text;version=0.0.1;"
    "q=0.75,text/plain;version=0.0.4;q=0.5,*/*;q=0.1"
)
PROMETHEUS_3 = (
    "application/openmetrics-text;version=1.0.0;escaping=allow-utf-8;q=0.6,"
    "application/openmetrics-text;version=0.0.1;q=0.5,"
    "text/plain;version=1.0.0;escaping=allow-utf-8;q=0.4,text/plain;version=0.0.4;q=0.3,*/*;q=0.2"
)


@pytest.mark.parametrize(
    ("accept", "openmetrics"),
    [
        (None, False),
        ("", False),
        ("*/*", False),
        ("text/plain", False),
        ("text/plain;version=0.0.4", False),
        ("application/openmetrics-text", True),
        ("Application/OpenMetrics-Text; version=1.0.0", True),
        (PROMETHEUS_2, True),
        (PROMETHEUS_3, True),
        ("text/plain;version=0.0.4;q=0.9,application/openmetrics-text;q=0.5", False),
        ("application/openmetrics-text;q=0", False),
        ("application/openmetrics-text;q=nonsense", False),
        ("application/openmetrics-text;version=0.0.1", False),  # only 1.0.0 is produced
        ("application/openmetrics-text;version=2.0.0,text/plain", False),
        ("text/html", False),
    ],
)
def test_content_negotiation(accept: str | None, openmetrics: bool) -> None:
    assert wants_openmetrics(accept) is openmetrics


def test_both_content_types_from_render(storage: Storage) -> None:
    populate(storage)
    analytics = analytics_of(storage)
    for accept in (PROMETHEUS_2, PROMETHEUS_3):
        body, content_type = render_metrics(analytics, accept)
        assert content_type == OPENMETRICS_CONTENT_TYPE
        assert samples(body, openmetrics=True)
    body, content_type = render_metrics(analytics, "text/plain")
    assert content_type == TEXT_CONTENT_TYPE
    assert samples(body)
