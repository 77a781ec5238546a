"""The built-in notification channels, one module each; every one implements ``Notifier``."""

from __future__ import annotations

from queuelens.alerting.channels.apprise import AppriseNotifier
from queuelens.alerting.channels.pagerduty import PagerDutyNotifier
from queuelens.alerting.channels.slack import SlackNotifier
from queuelens.alerting.channels.smtp import EmailNotifier
from queuelens.alerting.channels.teams import TeamsNotifier
from queuelens.alerting.channels.webhook import WebhookNotifier, verify_signature

__all__ = [
    "AppriseNotifier",
    "EmailNotifier",
    "PagerDutyNotifier",
    "SlackNotifier",
    "TeamsNotifier",
    "WebhookNotifier",
    "verify_signature",
]
