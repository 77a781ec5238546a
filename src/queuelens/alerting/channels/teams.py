"""Microsoft Teams incoming webhooks (Workflows or legacy connectors): one Adaptive Card.

TeamsNotifier(name="ops-teams", url=Secret("https://example.webhook.office.com/…"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict

from queuelens.alerting.channels._http import RetryPolicy, json_body, post
from queuelens.alerting.channels._text import alert_lines, facts
from queuelens.alerting.notify import Delivery, Notification, NotificationStatus, Secret, deliver

_STATUS_COLOR = {
    NotificationStatus.firing: "Attention",
    NotificationStatus.resolved: "Good",
    NotificationStatus.acknowledged: "Warning",
}


@dataclass(frozen=True)
class TeamsNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    url: Secret
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 0.5

    def send(self, notification: Notification) -> Delivery:
        retry = RetryPolicy(self.max_attempts, self.backoff_s)
        body = json_body(teams_payload(notification))
        return deliver(
            self.name, [self.url], lambda: post(self.url.reveal(), body, self.timeout_s, retry)
        )


def teams_payload(notification: Notification) -> dict[str, Any]:
    """A ``message`` with one Adaptive Card 1.4 attachment, which both webhook kinds accept."""
    body: list[dict[str, Any]] = [
        {
            "type": "TextBlock",
            "text": notification.title,
            "weight": "Bolder",
            "size": "Medium",
            "color": _STATUS_COLOR[notification.status],
            "wrap": True,
        },
        {"type": "TextBlock", "text": notification.summary, "wrap": True},
    ]
    if notification.description:
        body.append(
            {"type": "TextBlock", "text": notification.description, "wrap": True, "isSubtle": True}
        )
    body.append(
        {
            "type": "FactSet",
            "facts": [{"title": title, "value": value} for title, value in facts(notification)],
        }
    )
    body.extend(
        {"type": "TextBlock", "text": f"- {line}", "wrap": True, "spacing": "None"}
        for line in alert_lines(notification)
    )
    card: dict[str, Any] = {
        "$schema": "http://adaptivecards.io/schemas/adaptive-card.json",
        "type": "AdaptiveCard",
        "version": "1.4",
        "body": body,
    }
    if notification.dashboard_url:
        card["actions"] = [
            {"type": "Action.OpenUrl", "title": "Open dashboard", "url": notification.dashboard_url}
        ]
    return {
        "type": "message",
        "attachments": [
            {"contentType": "application/vnd.microsoft.card.adaptive", "content": card}
        ],
    }
