"""What the alert engine sends, the ``Notifier`` protocol every channel implements, and fan-out.

    notifiers = load_receivers(load_table("receivers"))      # queuelens.alerting.receivers
    deliveries = send_all(notifiers.values(), notification, timeout_s=10)
    failed = [d for d in deliveries if not d.ok]

A channel never raises from ``send``: every outcome, good or bad, is a :class:`Delivery`, and
secrets (webhook URLs, routing keys, passwords) only ever travel inside :class:`Secret`.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Protocol
from urllib.parse import urlsplit

from pydantic import GetCoreSchemaHandler
from pydantic_core import core_schema

__all__ = [
    "Alert",
    "Delivery",
    "Notification",
    "NotificationStatus",
    "Notifier",
    "Secret",
    "build_test_notification",
    "deliver",
    "send_all",
    "send_test",
]

logger = logging.getLogger("queuelens.alerting.notify")

REDACTED = "***"
# Shorter URL parts ("/", "/hook") carry no secret, and hiding them would garble messages.
_MIN_REDACTED_CHARS = 6


class Secret:
    """A string that never shows itself: ``repr`` and ``str`` are ``***``; ``reveal()`` to use it.

    secret = Secret("https://hooks.slack.com/services/T0/B0/xyz")
    f"{secret}"        # '***'
    secret.reveal()    # the URL, only where it is sent
    """

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return REDACTED

    __str__ = __repr__

    def __bool__(self) -> bool:
        return bool(self._value)

    @classmethod
    def __get_pydantic_core_schema__(
        cls, source: Any, handler: GetCoreSchemaHandler
    ) -> core_schema.CoreSchema:
        # Lets receiver configs declare ``url: Secret`` and get a plain string validated.
        return core_schema.no_info_after_validator_function(
            cls, core_schema.str_schema(min_length=1)
        )


def redact(text: str, secrets: Iterable[Secret | None]) -> str:
    """``text`` with every secret replaced by ***, and for a URL its token-bearing parts too.

    A receiver may echo part of a webhook URL back (``no such hook /services/T0/B0/xyz``),
    so the path, its last segment, the query and any password are hidden on their own.
    """
    for secret in secrets:
        if not secret:
            continue
        value = secret.reveal()
        parts = [value]
        url = urlsplit(value)
        if url.scheme and url.netloc:
            last_segment = url.path.rstrip("/").rpartition("/")[2]
            parts += [url.path, url.query, url.password or "", last_segment]
        for part in sorted(parts, key=len, reverse=True):
            if len(part) >= _MIN_REDACTED_CHARS:
                text = text.replace(part, REDACTED)
    return text


class NotificationStatus(StrEnum):
    #: the alert (or at least one alert of the group) is firing
    firing = "firing"
    #: every alert of the group has recovered
    resolved = "resolved"
    #: someone acknowledged the alert; it still fires but escalation stops
    acknowledged = "acknowledged"


@dataclass(frozen=True)
class Alert:
    """One alert of a grouped notification."""

    name: str
    status: NotificationStatus
    severity: str
    fingerprint: str
    labels: Mapping[str, str] = field(default_factory=dict)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    value: float | None = None
    threshold: float | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "status": self.status.value,
            "severity": self.severity,
            "fingerprint": self.fingerprint,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "value": self.value,
            "threshold": self.threshold,
        }


@dataclass(frozen=True)
class Notification:
    """What the engine hands every receiver of a route: one alert, or a group in ``alerts``.

    The top-level fields describe the group's leading alert, so channels that show one
    thing (PagerDuty, a Slack header) need not look into ``alerts``.
    """

    status: NotificationStatus
    alert_name: str
    severity: str
    fingerprint: str
    group_key: str
    labels: Mapping[str, str] = field(default_factory=dict)
    #: ``summary`` and ``description`` (and any others the rule sets, e.g. ``runbook_url``)
    annotations: Mapping[str, str] = field(default_factory=dict)
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    value: float | None = None
    threshold: float | None = None
    dashboard_url: str | None = None
    alerts: tuple[Alert, ...] = ()

    @property
    def summary(self) -> str:
        return self.annotations.get("summary") or self.alert_name

    @property
    def description(self) -> str:
        return self.annotations.get("description", "")

    @property
    def title(self) -> str:
        """``[FIRING] HighFailureRate (critical)``; ``[FIRING:3] …`` for a group of three."""
        count = f":{len(self.alerts)}" if len(self.alerts) > 1 else ""
        return f"[{self.status.value.upper()}{count}] {self.alert_name} ({self.severity})"

    def to_dict(self) -> dict[str, Any]:
        """The JSON document generic webhooks receive (``version`` changes only on breaks)."""
        return {
            "version": "1",
            "status": self.status.value,
            "alert_name": self.alert_name,
            "severity": self.severity,
            "fingerprint": self.fingerprint,
            "group_key": self.group_key,
            "labels": dict(self.labels),
            "annotations": dict(self.annotations),
            "starts_at": _iso(self.starts_at),
            "ends_at": _iso(self.ends_at),
            "value": self.value,
            "threshold": self.threshold,
            "dashboard_url": self.dashboard_url,
            "alerts": [alert.to_dict() for alert in self.alerts],
        }


def _iso(moment: datetime | None) -> str | None:
    return None if moment is None else moment.isoformat()


@dataclass(frozen=True)
class Delivery:
    """The outcome of one ``send``: never an exception, always one of these."""

    receiver: str
    ok: bool
    attempts: int
    status_code: int | None = None
    #: what went wrong, with secrets already redacted; None when ok
    error: str | None = None
    duration_s: float = 0.0


class Notifier(Protocol):
    """A notification channel configured as one receiver. ``send`` must not raise."""

    @property
    def name(self) -> str:
        """The receiver name, ``ops`` for ``[receivers.ops]``."""
        ...

    def send(self, notification: Notification) -> Delivery: ...


#: what a channel's attempt reports: (ok, status code, error, attempts)
AttemptOutcome = tuple[bool, int | None, str | None, int]


def deliver(
    receiver: str, secrets: Iterable[Secret | None], attempt: Callable[[], AttemptOutcome]
) -> Delivery:
    """Run a channel's ``attempt`` and turn whatever happens into a redacted :class:`Delivery`.

    Channels build their ``send`` on this so none of them can raise or leak a secret.
    """
    started = time.monotonic()
    try:
        ok, status_code, error, attempts = attempt()
    except Exception as exc:  # a channel bug must not take the engine down
        ok, status_code, error, attempts = False, None, f"{type(exc).__name__}: {exc}", 1
    duration_s = time.monotonic() - started
    if error is not None:
        error = redact(error, list(secrets))
    if ok:
        logger.debug("delivered to receiver %r in %.3fs", receiver, duration_s)
    else:
        logger.warning(
            "delivery to receiver %r failed after %d attempt(s): %s", receiver, attempts, error
        )
    return Delivery(receiver, ok, attempts, status_code, error, duration_s)


def send_all(
    notifiers: Iterable[Notifier], notification: Notification, timeout_s: float
) -> list[Delivery]:
    """Send to every notifier at once, each in its own thread, and wait at most ``timeout_s``.

    Returns one Delivery per notifier, in order. A channel still running at the deadline
    is recorded as failed and left to finish on its daemon thread, so a slow or dead
    receiver delays the others by nothing and the caller by at most ``timeout_s``.
    """
    targets = list(notifiers)
    results: list[Delivery | None] = [None] * len(targets)

    def run(index: int, notifier: Notifier) -> None:
        started = time.monotonic()
        try:
            results[index] = notifier.send(notification)
        except Exception as exc:  # a plugin that breaks the never-raise contract
            results[index] = Delivery(
                notifier.name,
                False,
                1,
                None,
                f"{type(exc).__name__} raised by send()",
                time.monotonic() - started,
            )

    threads = [
        threading.Thread(target=run, args=(i, n), name=f"queuelens-notify-{n.name}", daemon=True)
        for i, n in enumerate(targets)
    ]
    started = time.monotonic()
    for thread in threads:
        thread.start()
    deadline = started + timeout_s
    for thread in threads:
        thread.join(max(0.0, deadline - time.monotonic()))
    deliveries = []
    for notifier, delivery in zip(targets, results, strict=True):
        if delivery is None:
            delivery = Delivery(
                notifier.name, False, 0, None, f"timed out after {timeout_s:g}s", timeout_s
            )
            logger.warning("delivery to receiver %r timed out after %gs", notifier.name, timeout_s)
        deliveries.append(delivery)
    return deliveries


def build_test_notification(receiver: str, dashboard_url: str | None = None) -> Notification:
    """The notification ``queuelens alerts test <receiver>`` sends: clearly a test, never paged."""
    now = datetime.now(UTC)
    return Notification(
        status=NotificationStatus.firing,
        alert_name="QueuelensTestNotification",
        severity="info",
        fingerprint=f"queuelens-test-{receiver}",
        group_key=f"queuelens-test-{receiver}",
        labels={"alertname": "QueuelensTestNotification", "receiver": receiver},
        annotations={
            "summary": f"Test notification for receiver {receiver!r}",
            "description": "Sent by `queuelens alerts test`; no alert is firing.",
        },
        starts_at=now,
        dashboard_url=dashboard_url,
    )


def send_test(
    receiver: Notifier, timeout_s: float = 30.0, dashboard_url: str | None = None
) -> Delivery:
    """Send :func:`build_test_notification` to one receiver; the CLI prints the Delivery."""
    return send_all([receiver], build_test_notification(receiver.name, dashboard_url), timeout_s)[0]


def labels_text(labels: Mapping[str, str]) -> str:
    """``queue=emails, app=shop``: labels the way every text channel shows them."""
    return ", ".join(f"{key}={value}" for key, value in sorted(labels.items()))
