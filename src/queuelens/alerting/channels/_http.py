"""POST a JSON body with bounded retries: what every HTTP channel (Slack, Teams, …) shares.

The standard library is enough for one POST at a time, so the core needs no HTTP client.
"""

from __future__ import annotations

import http.client
import json
import random
import time
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from queuelens import __version__
from queuelens.alerting.notify import AttemptOutcome

USER_AGENT = f"queuelens/{__version__}"
#: statuses worth another try: the receiver is overloaded or briefly broken, not refusing us
RETRYABLE_STATUSES = frozenset({408, 425, 429})
_ERROR_BODY_CHARS = 200


@dataclass(frozen=True)
class RetryPolicy:
    """Exponential backoff with jitter: retry n waits up to ``backoff_s * 2**(n-1)``."""

    max_attempts: int = 3
    backoff_s: float = 0.5
    max_backoff_s: float = 10.0

    def delay_s(self, failed_attempts: int) -> float:
        ceiling = min(self.max_backoff_s, self.backoff_s * 2 ** (failed_attempts - 1))
        # "Equal jitter": never zero, so a burst of retries still spreads out.
        return float(ceiling / 2 + random.uniform(0, ceiling / 2))


def json_body(document: Mapping[str, Any]) -> bytes:
    return json.dumps(document, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def post(
    url: str,
    body: bytes,
    timeout_s: float,
    retry: RetryPolicy,
    headers: Mapping[str, str] | None = None,
) -> AttemptOutcome:
    """POST ``body`` (JSON) until a 2xx, a non-retryable answer, or ``retry.max_attempts``.

    Retries on 5xx, 408/425/429 and connection errors; a 4xx means the payload or the
    credentials are wrong, and sending it again would not help.
    """
    if urlsplit(url).scheme not in ("http", "https"):
        return False, None, "the URL must start with http:// or https://", 0
    attempts = 0
    while True:
        attempts += 1
        status, error, retryable = _post_once(url, body, timeout_s, headers or {})
        if error is None:
            return True, status, None, attempts
        if not retryable or attempts >= retry.max_attempts:
            return False, status, error, attempts
        time.sleep(retry.delay_s(attempts))


def _post_once(
    url: str, body: bytes, timeout_s: float, headers: Mapping[str, str]
) -> tuple[int | None, str | None, bool]:
    request = urllib.request.Request(
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": USER_AGENT, **headers},
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout_s) as response:
            response.read()
            return int(response.status), None, False
    except urllib.error.HTTPError as exc:
        detail = exc.read(_ERROR_BODY_CHARS).decode("utf-8", "replace").strip()
        exc.close()
        retryable = exc.code >= 500 or exc.code in RETRYABLE_STATUSES
        return exc.code, f"HTTP {exc.code}" + (f": {detail}" if detail else ""), retryable
    except urllib.error.URLError as exc:
        return None, f"connection failed: {exc.reason}", True
    except (OSError, http.client.HTTPException) as exc:  # timeouts, resets mid-response
        return None, f"connection failed: {type(exc).__name__}: {exc}", True
