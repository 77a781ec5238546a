"""Generic webhooks: the notification as JSON, signed with HMAC-SHA256, retried with backoff.

    WebhookNotifier(name="hooks", url=Secret("https://example.com/queuelens"), secret=Secret("s3"))

Each request carries::

    X-Queuelens-Timestamp: 1764340000                     (Unix seconds, when it was signed)
    X-Queuelens-Signature: sha256=<hex HMAC-SHA256(secret, timestamp + "." + raw body)>
    X-Queuelens-Delivery:  <uuid, the same on every retry of one notification>

To verify (see :func:`verify_signature`, or do the same in any language): take the raw body
bytes before any JSON parsing, compute ``HMAC-SHA256(secret, f"{timestamp}.".encode() + body)``,
compare its hex digest with the header after ``sha256=`` in constant time, and reject a
timestamp more than five minutes from your clock so a captured request cannot be replayed.
Deduplicate on ``X-Queuelens-Delivery`` if retries must not act twice.
"""

from __future__ import annotations

import hashlib
import hmac
import time
import uuid
from dataclasses import dataclass, field
from typing import ClassVar

from pydantic import ConfigDict

from queuelens.alerting.channels._http import RetryPolicy, json_body, post
from queuelens.alerting.notify import Delivery, Notification, Secret, deliver

SIGNATURE_HEADER = "X-Queuelens-Signature"
TIMESTAMP_HEADER = "X-Queuelens-Timestamp"
DELIVERY_HEADER = "X-Queuelens-Delivery"
#: how far a signed timestamp may be from the verifier's clock
DEFAULT_TOLERANCE_S = 300.0


@dataclass(frozen=True)
class WebhookNotifier:
    __pydantic_config__: ClassVar[ConfigDict] = ConfigDict(extra="forbid")

    name: str
    url: Secret
    #: HMAC key; without it requests are sent unsigned
    secret: Secret | None = None
    #: extra request headers, e.g. Authorization; values are treated as secrets
    headers: dict[str, Secret] = field(default_factory=dict)
    timeout_s: float = 10.0
    max_attempts: int = 5
    backoff_s: float = 0.5
    max_backoff_s: float = 30.0

    def send(self, notification: Notification) -> Delivery:
        body = json_body(notification.to_dict())
        headers = {key: value.reveal() for key, value in self.headers.items()}
        headers[DELIVERY_HEADER] = str(uuid.uuid4())
        if self.secret:
            timestamp = str(int(time.time()))
            headers[TIMESTAMP_HEADER] = timestamp
            headers[SIGNATURE_HEADER] = sign(self.secret.reveal(), timestamp, body)
        retry = RetryPolicy(self.max_attempts, self.backoff_s, self.max_backoff_s)
        secrets = [self.url, self.secret, *self.headers.values()]
        return deliver(
            self.name,
            secrets,
            lambda: post(self.url.reveal(), body, self.timeout_s, retry, headers),
        )


def sign(secret: str, timestamp: str, body: bytes) -> str:
    """The ``X-Queuelens-Signature`` value for ``body`` sent at ``timestamp``."""
    digest = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"sha256={digest.hexdigest()}"


def verify_signature(
    secret: str,
    body: bytes,
    timestamp: str,
    signature: str,
    tolerance_s: float = DEFAULT_TOLERANCE_S,
    now_s: float | None = None,
) -> bool:
    """True when ``signature`` signs ``body`` and ``timestamp`` is within ``tolerance_s`` of now."""
    try:
        signed_at = int(timestamp)
    except ValueError:
        return False
    now = time.time() if now_s is None else now_s
    if abs(now - signed_at) > tolerance_s:
        return False
    return hmac.compare_digest(sign(secret, timestamp, body), signature)
