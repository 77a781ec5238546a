"""How every human-facing channel words a notification, so Slack, Teams and email agree."""

from __future__ import annotations

from queuelens.alerting.notify import Notification, labels_text

#: at most this many alerts of a group are listed one by one; the rest are counted
MAX_LISTED_ALERTS = 10


def number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:g}"


def facts(notification: Notification) -> list[tuple[str, str]]:
    """(title, value) pairs shown under the summary; empty values are left out."""
    rows = [
        ("Status", notification.status.value),
        ("Severity", notification.severity),
        ("Value", number(notification.value) if notification.value is not None else ""),
        ("Threshold", number(notification.threshold) if notification.threshold is not None else ""),
        ("Started", notification.starts_at.isoformat() if notification.starts_at else ""),
        ("Ended", notification.ends_at.isoformat() if notification.ends_at else ""),
        ("Labels", labels_text(notification.labels)),
    ]
    return [(title, value) for title, value in rows if value]


def alert_lines(notification: Notification) -> list[str]:
    """One line per alert of a group (none for a single alert), capped at MAX_LISTED_ALERTS."""
    if len(notification.alerts) <= 1:
        return []
    lines = [
        f"{alert.name} [{alert.status.value}] {labels_text(alert.labels)}".rstrip()
        for alert in notification.alerts[:MAX_LISTED_ALERTS]
    ]
    hidden = len(notification.alerts) - MAX_LISTED_ALERTS
    if hidden > 0:
        lines.append(f"… and {hidden} more")
    return lines
