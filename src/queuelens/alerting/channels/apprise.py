"""apprise, for its 90+ services (Discord, Telegram, ntfy, Opsgenie, …); an optional extra.

    AppriseNotifier(name="chat", urls=(Secret("tgram://bottoken/ChatID"),))

apprise is imported only when a notification is sent (and checked when receivers load),
so queuelens runs without it. Its URLs embed credentials and are treated as secrets.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass
from typing import ClassVar

from pydantic import ConfigDict

from queuelens.alerting.channels._text import alert_lines, facts
from queuelens.alerting.notify import (
    AttemptOutcome,
    Delivery,
    Notification,
    NotificationStatus,
    Secret,
    deliver,
)

INSTALL_HINT = "pip install 'queuelens[notify]' (or pip install apprise)"
_NOTIFY_TYPES = {
    NotificationStatus.firing: "FAILURE",
    NotificationStatus.resolved: "SUCCESS",
    NotificationStatus.acknowledged: "WARNING",
}


def apprise_installed() -> bool:
    return importlib.util.find_spec("apprise") is not None


@dataclass(frozen=True)
class AppriseNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    urls: tuple[Secret, ...]

    def send(self, notification: Notification) -> Delivery:
        return deliver(self.name, self.urls, lambda: self._send(notification))

    def _send(self, notification: Notification) -> AttemptOutcome:
        try:
            apprise = importlib.import_module("apprise")
        except ImportError:
            return False, None, f"apprise is not installed: {INSTALL_HINT}", 0
        client = apprise.Apprise()
        for index, url in enumerate(self.urls):
            if not client.add(url.reveal()):
                return False, None, f"apprise did not accept urls[{index}]", 0
        body = [notification.summary]
        if notification.description:
            body.append(notification.description)
        body += [f"{title}: {value}" for title, value in facts(notification)]
        body += alert_lines(notification)
        if notification.dashboard_url:
            body.append(notification.dashboard_url)
        notify_type = getattr(apprise.NotifyType, _NOTIFY_TYPES[notification.status])
        ok = bool(
            client.notify(body="\n".join(body), title=notification.title, notify_type=notify_type)
        )
        return ok, None, None if ok else "apprise reported that a service failed", 1
