"""PagerDuty Events API v2: trigger, acknowledge and resolve one incident per fingerprint.

    PagerDutyNotifier(name="oncall", routing_key=Secret("R0UT1NGKEY…"))

``dedup_key`` is the alert fingerprint, so the resolve and acknowledge that follow a
trigger land on the incident it opened.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict

from queuelens.alerting.channels._http import RetryPolicy, json_body, post
from queuelens.alerting.notify import Delivery, Notification, NotificationStatus, Secret, deliver

EVENTS_URL = "https://events.pagerduty.com/v2/enqueue"
_ACTIONS = {
    NotificationStatus.firing: "trigger",
    NotificationStatus.acknowledged: "acknowledge",
    NotificationStatus.resolved: "resolve",
}
#: our severities → the four PagerDuty accepts; anything else is "warning"
SEVERITIES = {
    "critical": "critical",
    "page": "critical",
    "error": "error",
    "high": "error",
    "warning": "warning",
    "warn": "warning",
    "info": "info",
    "low": "info",
}
_SUMMARY_CHARS = 1024


@dataclass(frozen=True)
class PagerDutyNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    routing_key: Secret
    #: the Events API endpoint; EU accounts use https://events.eu.pagerduty.com/v2/enqueue
    url: str = EVENTS_URL
    #: ``payload.source``: where the problem is, e.g. the cluster name
    source: str = "queuelens"
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 0.5

    def send(self, notification: Notification) -> Delivery:
        document = pagerduty_event(notification, self.routing_key.reveal(), self.source)
        body = json_body(document)
        retry = RetryPolicy(self.max_attempts, self.backoff_s)
        return deliver(
            self.name, [self.routing_key], lambda: post(self.url, body, self.timeout_s, retry)
        )


def pagerduty_event(
    notification: Notification, routing_key: str, source: str = "queuelens"
) -> dict[str, Any]:
    """The Events API v2 document; acknowledge and resolve carry only what PagerDuty reads."""
    event: dict[str, Any] = {
        "routing_key": routing_key,
        "event_action": _ACTIONS[notification.status],
        "dedup_key": notification.fingerprint,
    }
    if notification.status is not NotificationStatus.firing:
        return event
    labels = notification.labels
    event["payload"] = {
        "summary": f"{notification.title}: {notification.summary}"[:_SUMMARY_CHARS],
        "source": source,
        "severity": SEVERITIES.get(notification.severity.lower(), "warning"),
        "timestamp": notification.starts_at.isoformat() if notification.starts_at else None,
        "component": labels.get("queue") or labels.get("app"),
        "group": labels.get("app"),
        "class": notification.alert_name,
        "custom_details": {
            "description": notification.description,
            "value": notification.value,
            "threshold": notification.threshold,
            "labels": dict(labels),
            "group_key": notification.group_key,
            "alerts": len(notification.alerts) or 1,
        },
    }
    event["payload"] = {k: v for k, v in event["payload"].items() if v is not None}
    event["client"] = "queuelens"
    if notification.dashboard_url:
        event["client_url"] = notification.dashboard_url
        event["links"] = [{"href": notification.dashboard_url, "text": "queuelens dashboard"}]
    return event
