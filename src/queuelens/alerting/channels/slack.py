"""Slack incoming webhooks: Block Kit blocks, with ``text`` as the notification fallback.

SlackNotifier(name="ops", url=Secret("https://hooks.slack.com/services/T0/B0/xyz"))
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

from pydantic import ConfigDict

from queuelens.alerting.channels._http import RetryPolicy, json_body, post
from queuelens.alerting.channels._text import alert_lines, facts
from queuelens.alerting.notify import Delivery, Notification, NotificationStatus, Secret, deliver

_STATUS_EMOJI = {
    NotificationStatus.firing: ":red_circle:",
    NotificationStatus.resolved: ":large_green_circle:",
    NotificationStatus.acknowledged: ":large_yellow_circle:",
}
# Block Kit limits: a header holds 150 characters, a section's text 3000.
_HEADER_CHARS = 150
_SECTION_CHARS = 3000


@dataclass(frozen=True)
class SlackNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    url: Secret
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 0.5

    def send(self, notification: Notification) -> Delivery:
        retry = RetryPolicy(self.max_attempts, self.backoff_s)
        body = json_body(slack_payload(notification))
        return deliver(
            self.name, [self.url], lambda: post(self.url.reveal(), body, self.timeout_s, retry)
        )


def slack_payload(notification: Notification) -> dict[str, Any]:
    """The JSON posted to the webhook."""
    emoji = _STATUS_EMOJI[notification.status]
    text = f"*{_escape(notification.summary)}*"
    if notification.description:
        text += f"\n{_escape(notification.description)}"
    blocks: list[dict[str, Any]] = [
        {
            "type": "header",
            "text": {
                "type": "plain_text",
                "text": f"{emoji} {notification.title}"[:_HEADER_CHARS],
                "emoji": True,
            },
        },
        {"type": "section", "text": {"type": "mrkdwn", "text": text[:_SECTION_CHARS]}},
        {
            "type": "section",
            "fields": [
                {"type": "mrkdwn", "text": f"*{title}*\n{_escape(value)}"[:2000]}
                for title, value in facts(notification)[:10]  # Slack allows ten fields
            ],
        },
    ]
    lines = alert_lines(notification)
    if lines:
        listed = "\n".join(f"• {_escape(line)}" for line in lines)
        blocks.append({"type": "section", "text": {"type": "mrkdwn", "text": listed[:3000]}})
    if notification.dashboard_url:
        blocks.append(
            {
                "type": "actions",
                "elements": [
                    {
                        "type": "button",
                        "text": {"type": "plain_text", "text": "Open dashboard"},
                        "url": notification.dashboard_url,
                    }
                ],
            }
        )
    blocks.append(
        {
            "type": "context",
            "elements": [
                {"type": "mrkdwn", "text": f"queuelens · fingerprint `{notification.fingerprint}`"}
            ],
        }
    )
    return {"text": f"{notification.title}: {notification.summary}", "blocks": blocks}


def _escape(text: str) -> str:
    # The three characters Slack's mrkdwn reserves for links and mentions.
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
