"""HTTP channels against a real HTTP server on localhost standing in for Slack, Teams, …"""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from queuelens.alerting.channels import (
    AppriseNotifier,
    PagerDutyNotifier,
    SlackNotifier,
    TeamsNotifier,
    WebhookNotifier,
    verify_signature,
)
from queuelens.alerting.notify import (
    Alert,
    Delivery,
    Notification,
    NotificationStatus,
    Notifier,
    Secret,
    send_all,
    send_test,
)

STARTED = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
NOTIFICATION = Notification(
    status=NotificationStatus.firing,
    alert_name="HighFailureRate",
    severity="critical",
    fingerprint="fp-1234",
    group_key="alertname=HighFailureRate",
    labels={"app": "shop", "queue": "emails"},
    annotations={"summary": "Failure rate 12% on emails", "description": "Above 5% for 5m"},
    starts_at=STARTED,
    value=0.12,
    threshold=0.05,
    dashboard_url="http://localhost:8000/queues/emails",
)


@dataclass
class Received:
    path: str
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class Receiver:
    """A real HTTP endpoint: records every POST and answers from a script of statuses."""

    server: ThreadingHTTPServer
    requests: list[Received] = field(default_factory=list)
    #: statuses to answer, in order; 200 once they run out
    statuses: list[int] = field(default_factory=list)
    delay_s: float = 0.0
    #: answer errors with the request path, as some SaaS do, to check it is redacted
    echo_path: bool = False

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook/T0KEN-IN-PATH"


@pytest.fixture
def make_receiver() -> Iterator[Callable[[], Receiver]]:
    servers: list[ThreadingHTTPServer] = []

    def make() -> Receiver:
        receiver = _start_receiver()
        servers.append(receiver.server)
        return receiver

    yield make
    for server in servers:
        server.shutdown()
        server.server_close()


@pytest.fixture
def receiver(make_receiver: Callable[[], Receiver]) -> Receiver:
    return make_receiver()


def _start_receiver() -> Receiver:
    state: list[Receiver] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            me = state[0]
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            me.requests.append(Received(self.path, dict(self.headers.items()), body))
            time.sleep(me.delay_s)
            status = me.statuses.pop(0) if me.statuses else 200
            reply = b"ok" if status < 400 else b"bad request"
            if status >= 400 and me.echo_path:
                reply = f"no such hook {self.path}".encode()
            self.send_response(status)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            self.wfile.write(reply)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    server.daemon_threads = True
    state.append(Receiver(server))
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return state[0]


@pytest.fixture
def closed_port_url() -> str:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/hook"


def test_slack_posts_block_kit_with_fallback_text(receiver: Receiver) -> None:
    delivery = SlackNotifier(name="ops", url=Secret(receiver.url)).send(NOTIFICATION)

    assert delivery.ok, delivery
    assert (delivery.receiver, delivery.attempts, delivery.status_code) == ("ops", 1, 200)
    [request] = receiver.requests
    assert request.path == "/hook/T0KEN-IN-PATH"
    assert request.headers["Content-Type"] == "application/json"
    assert request.json() == {
        "text": "[FIRING] HighFailureRate (critical): Failure rate 12% on emails",
        "blocks": [
            {
                "type": "header",
                "text": {
                    "type": "plain_text",
                    "text": ":red_circle: [FIRING] HighFailureRate (critical)",
                    "emoji": True,
                },
            },
            {
                "type": "section",
                "text": {"type": "mrkdwn", "text": "*Failure rate 12% on emails*\nAbove 5% for 5m"},
            },
            {
                "type": "section",
                "fields": [
                    {"type": "mrkdwn", "text": "*Status*\nfiring"},
                    {"type": "mrkdwn", "text": "*Severity*\ncritical"},
                    {"type": "mrkdwn", "text": "*Value*\n0.12"},
                    {"type": "mrkdwn", "text": "*Threshold*\n0.05"},
                    {"type": "mrkdwn", "text": "*Started*\n2026-01-02T03:04:05+00:00"},
                    {"type": "mrkdwn", "text": "*Labels*\napp=shop, queue=emails"},
                ],
            },
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open dashboard"},
                        "url": "http://localhost:8000/queues/emails",
                    }
                ],
            },
            {
                "type": "context",
                "elements": [{"type": "mrkdwn", "text": "queuelens · fingerprint `fp-1234`"}],
            },
        ],
    }


def test_slack_lists_grouped_alerts_and_escapes_mrkdwn(receiver: Receiver) -> None:
    alerts = tuple(
        Alert(f"Backlog<{i}>", NotificationStatus.firing, "warning", f"fp{i}", {"queue": f"q{i}"})
        for i in range(12)
    )
    grouped = Notification(
        NotificationStatus.firing, "Backlog<0>", "warning", "fp0", "g", alerts=alerts
    )

    assert SlackNotifier(name="ops", url=Secret(receiver.url)).send(grouped).ok

    blocks = receiver.requests[0].json()["blocks"]
    assert blocks[0]["text"]["text"] == ":red_circle: [FIRING:12] Backlog<0> (warning)"
    assert blocks[1]["text"]["text"] == "*Backlog&lt;0&gt;*"
    listed = blocks[3]["text"]["text"].split("\n")
    assert listed[0] == "• Backlog&lt;0&gt; [firing] queue=q0"
    assert listed[-1] == "• … and 2 more"
    assert len(listed) == 11


def test_teams_posts_an_adaptive_card(receiver: Receiver) -> None:
    resolved = Notification(
        NotificationStatus.resolved,
        "HighFailureRate",
        "critical",
        "fp-1234",
        "g",
        labels={"queue": "emails"},
        annotations={"summary": "Failure rate back to 1%"},
        ends_at=STARTED,
    )

    assert TeamsNotifier(name="teams", url=Secret(receiver.url)).send(resolved).ok

    assert receiver.requests[0].json() == {
        "type": "message",
        "attachments": [
            {
                "contentType": "application/vnd.microsoft.card.adaptive",
                "content": {
                    "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
                    "type": "AdaptiveCard",
                    "version": "1.4",
                    "body": [
                        {
                            "type": "TextBlock",
                            "text": "[RESOLVED] HighFailureRate (critical)",
                            "weight": "Bolder",
                            "size": "Medium",
                            "color": "Good",
                            "wrap": True,
                        },
                        {"type": "TextBlock", "text": "Failure rate back to 1%", "wrap": True},
                        {
                            "type": "FactSet",
                            "facts": [
                                {"title": "Status", "value": "resolved"},
                                {"title": "Severity", "value": "critical"},
                                {"title": "Ended", "value": "2026-01-02T03:04:05+00:00"},
                                {"title": "Labels", "value": "queue=emails"},
                            ],
                        },
                    ],
                },
            }
        ],
    }


def test_pagerduty_triggers_acknowledges_and_resolves_one_dedup_key(receiver: Receiver) -> None:
    notifier = PagerDutyNotifier(
        name="oncall", routing_key=Secret("R0UTINGKEY"), url=receiver.url, source="prod-eu"
    )
    receiver.statuses = [202, 202, 202]
    for status in ("firing", "acknowledged", "resolved"):
        step = Notification(**{**NOTIFICATION.__dict__, "status": NotificationStatus(status)})
        delivery = notifier.send(step)
        assert delivery.ok, delivery
        assert delivery.status_code == 202

    trigger, acknowledge, resolve = (r.json() for r in receiver.requests)
    assert trigger == {
        "routing_key": "R0UTINGKEY",
        "event_action": "trigger",
        "dedup_key": "fp-1234",
        "payload": {
            "summary": "[FIRING] HighFailureRate (critical): Failure rate 12% on emails",
            "source": "prod-eu",
            "severity": "critical",
            "timestamp": "2026-01-02T03:04:05+00:00",
            "component": "emails",
            "group": "shop",
            "class": "HighFailureRate",
            "custom_details": {
                "description": "Above 5% for 5m",
                "value": 0.12,
                "threshold": 0.05,
                "labels": {"app": "shop", "queue": "emails"},
                "group_key": "alertname=HighFailureRate",
                "alerts": 1,
            },
        },
        "client": "queuelens",
        "client_url": "http://localhost:8000/queues/emails",
        "links": [{"href": "http://localhost:8000/queues/emails", "text": "queuelens dashboard"}],
    }
    assert acknowledge == {
        "routing_key": "R0UTINGKEY",
        "event_action": "acknowledge",
        "dedup_key": "fp-1234",
    }
    assert resolve == {
        "routing_key": "R0UTINGKEY",
        "event_action": "resolve",
        "dedup_key": "fp-1234",
    }


def test_webhook_body_is_the_notification_and_its_signature_verifies(receiver: Receiver) -> None:
    secret = "whsec-5up3r"
    before = int(time.time())
    delivery = WebhookNotifier(name="hook", url=Secret(receiver.url), secret=Secret(secret)).send(
        NOTIFICATION
    )
    assert delivery.ok, delivery

    [request] = receiver.requests
    assert request.json() == {
        "version": "1",
        "status": "firing",
        "alert_name": "HighFailureRate",
        "severity": "critical",
        "fingerprint": "fp-1234",
        "group_key": "alertname=HighFailureRate",
        "labels": {"app": "shop", "queue": "emails"},
        "annotations": {"summary": "Failure rate 12% on emails", "description": "Above 5% for 5m"},
        "starts_at": "2026-01-02T03:04:05+00:00",
        "ends_at": None,
        "value": 0.12,
        "threshold": 0.05,
        "dashboard_url": "http://localhost:8000/queues/emails",
        "alerts": [],
    }
    timestamp = request.headers["X-Queuelens-Timestamp"]
    signature = request.headers["X-Queuelens-Signature"]
    assert before <= int(timestamp) <= time.time()
    # The documented procedure, by hand: HMAC-SHA256(secret, timestamp + "." + raw body).
    expected = hmac.new(secret.encode(), timestamp.encode() + b"." + request.body, hashlib.sha256)
    assert signature == "sha256=" + expected.hexdigest()
    assert verify_signature(secret, request.body, timestamp, signature)
    assert not verify_signature(secret, request.body + b" ", timestamp, signature)
    assert not verify_signature("other-secret", request.body, timestamp, signature)
    # A replay ten minutes later is refused although the signature itself is right.
    assert not verify_signature(secret, request.body, timestamp, signature, now_s=before + 600)
    assert request.headers["X-Queuelens-Delivery"]


def test_webhook_without_secret_is_unsigned_and_sends_extra_headers(receiver: Receiver) -> None:
    notifier = WebhookNotifier(
        name="hook", url=Secret(receiver.url), headers={"Authorization": Secret("Bearer t0k")}
    )
    assert notifier.send(NOTIFICATION).ok
    headers = receiver.requests[0].headers
    assert headers["Authorization"] == "Bearer t0k"
    assert "X-Queuelens-Signature" not in headers


def test_webhook_retries_5xx_and_succeeds_on_the_third_attempt(receiver: Receiver) -> None:
    receiver.statuses = [500, 503]
    notifier = WebhookNotifier(
        name="hook", url=Secret(receiver.url), secret=Secret("s"), backoff_s=0.01
    )

    delivery = notifier.send(NOTIFICATION)

    assert (delivery.ok, delivery.attempts, delivery.status_code) == (True, 3, 200)
    assert delivery.error is None
    # Every retry is the same signed delivery, so the receiver can deduplicate.
    assert len({r.body for r in receiver.requests}) == 1
    assert len({r.headers["X-Queuelens-Delivery"] for r in receiver.requests}) == 1


def test_retries_are_bounded_and_4xx_is_not_retried(receiver: Receiver) -> None:
    receiver.statuses = [500] * 10
    notifier = WebhookNotifier(
        name="hook", url=Secret(receiver.url), max_attempts=4, backoff_s=0.01
    )
    failed = notifier.send(NOTIFICATION)
    assert (failed.ok, failed.attempts, failed.status_code) == (False, 4, 500)

    receiver.statuses = [400]
    rejected = SlackNotifier(name="ops", url=Secret(receiver.url), backoff_s=0.01).send(
        NOTIFICATION
    )
    assert (rejected.ok, rejected.attempts, rejected.status_code) == (False, 1, 400)
    assert rejected.error == "HTTP 400: bad request"


def test_a_receiver_that_is_down_is_retried_then_recorded_as_failed(closed_port_url: str) -> None:
    notifier = WebhookNotifier(
        name="down", url=Secret(closed_port_url), max_attempts=3, backoff_s=0.01
    )

    delivery = notifier.send(NOTIFICATION)

    assert (delivery.ok, delivery.attempts, delivery.status_code) == (False, 3, None)
    assert delivery.error is not None
    assert delivery.error.startswith("connection failed:")


def test_send_all_is_not_delayed_by_a_down_or_slow_receiver(
    make_receiver: Callable[[], Receiver], closed_port_url: str
) -> None:
    slow, fine = make_receiver(), make_receiver()
    slow.delay_s = 3.0
    notifiers: list[Notifier] = [
        WebhookNotifier(name="down", url=Secret(closed_port_url), max_attempts=3, backoff_s=0.2),
        WebhookNotifier(name="slow", url=Secret(slow.url), timeout_s=10.0),
        SlackNotifier(name="fine", url=Secret(fine.url)),
    ]
    started = time.monotonic()
    deliveries = send_all(notifiers, NOTIFICATION, timeout_s=1.0)
    elapsed_s = time.monotonic() - started

    assert [d.receiver for d in deliveries] == ["down", "slow", "fine"]
    down, slow_delivery, fine_delivery = deliveries
    assert (fine_delivery.ok, fine_delivery.status_code) == (True, 200)
    assert len(fine.requests) == 1
    assert not down.ok
    assert down.error is not None
    assert down.error.startswith("connection failed")
    assert (slow_delivery.ok, slow_delivery.error) == (False, "timed out after 1s")
    # Concurrent: about the one timeout, not down's backoff plus slow's 3 s plus fine's.
    assert 0.9 <= elapsed_s < 1.8


def test_send_all_records_a_plugin_that_raises() -> None:
    class Broken:
        name = "broken"

        def send(self, notification: Notification) -> Delivery:
            raise RuntimeError("boom")

    [delivery] = send_all([Broken()], NOTIFICATION, timeout_s=1.0)
    assert (delivery.receiver, delivery.ok, delivery.error) == (
        "broken",
        False,
        "RuntimeError raised by send()",
    )


def test_send_test_delivers_a_harmless_test_notification(receiver: Receiver) -> None:
    delivery = send_test(WebhookNotifier(name="hook", url=Secret(receiver.url)))

    assert delivery.ok
    sent = receiver.requests[0].json()
    assert sent["alert_name"] == "QueuelensTestNotification"
    assert sent["severity"] == "info"
    assert sent["labels"] == {"alertname": "QueuelensTestNotification", "receiver": "hook"}


def test_secrets_stay_out_of_reprs_errors_and_logs(
    receiver: Receiver, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    # The receiver echoes the token back in its error body; it must still not surface.
    receiver.echo_path = True
    receiver.statuses = [404, 403]
    secrets = ["T0KEN-IN-PATH", "whsec-5up3r", "R0UTINGKEY", "Bearer t0k"]
    webhook = WebhookNotifier(
        name="hook",
        url=Secret(receiver.url),
        secret=Secret("whsec-5up3r"),
        headers={"Authorization": Secret("Bearer t0k")},
    )
    pd_url = receiver.url.replace("T0KEN-IN-PATH", "v2/enqueue")
    pagerduty = PagerDutyNotifier(name="pd", routing_key=Secret("R0UTINGKEY"), url=pd_url)

    deliveries = [webhook.send(NOTIFICATION), pagerduty.send(NOTIFICATION)]

    assert [d.ok for d in deliveries] == [False, False]
    assert deliveries[0].error == "HTTP 404: no such hook ***"
    assert deliveries[1].error == "HTTP 403: no such hook /hook/v2/enqueue"
    shown = caplog.text + repr(webhook) + repr(pagerduty) + repr(deliveries) + str(webhook)
    assert "failed after 1 attempt" in caplog.text
    for secret in secrets:
        assert secret not in shown
    assert repr(Secret("x")) == str(Secret("x")) == "***"


# apprise (1.9, 2.x) still imports the deprecated imghdr module.
@pytest.mark.filterwarnings("ignore:'imghdr' is deprecated:DeprecationWarning")
def test_apprise_notifies_through_its_json_service(receiver: Receiver) -> None:
    pytest.importorskip("apprise")
    url = receiver.url.replace("http://", "json://")

    delivery = AppriseNotifier(name="chat", urls=(Secret(url),)).send(NOTIFICATION)

    assert delivery.ok, delivery
    sent = receiver.requests[0].json()
    assert sent["title"] == "[FIRING] HighFailureRate (critical)"
    assert sent["message"].startswith("Failure rate 12% on emails\nAbove 5% for 5m\n")
