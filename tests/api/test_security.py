"""Tokens and roles, rate limits, security headers, CORS, and no token in any log."""

from __future__ import annotations

import hmac
import logging
from pathlib import Path
from typing import Any

import pytest
from fastapi import FastAPI

from queuelens.api import create_app
from queuelens.api.security import Guard, Role
from queuelens.api.tokens import hash_token, main, new_token_entry
from queuelens.config import load_settings
from queuelens.storage import Storage
from tests.api.conftest import Client, make_settings, settings_file

TOKENS = {role: new_token_entry(role) for role in ("viewer", "operator", "admin")}


def bearer(role: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKENS[role][0]}"}


def secured(storage: Storage, tmp_path: Path, **overrides: Any) -> FastAPI:
    settings = make_settings(
        tmp_path,
        api_tokens=[entry for _, entry in TOKENS.values()],
        **{"rate_limit_ip_per_min": 0, "rate_limit_token_per_min": 0, **overrides},
    )
    return create_app(settings, storage=storage, toml_path=settings_file(tmp_path))


@pytest.fixture
def client(storage: Storage, tmp_path: Path) -> Client:
    return Client(secured(storage, tmp_path))


def test_a_missing_token_is_401_with_a_challenge(client: Client) -> None:
    answer = client.get("/api/v1/overview")
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="queuelens"'
    assert answer.json()["detail"] == (
        "this endpoint needs a bearer token: Authorization: Bearer <token>"
    )
    basic = client.get("/api/v1/overview", headers={"Authorization": "Basic dXNlcjpwYXNz"})
    assert basic.status_code == 401


def test_an_unknown_token_is_401(client: Client) -> None:
    answer = client.get("/api/v1/queues", headers={"Authorization": "Bearer not-a-token"})
    assert answer.status_code == 401
    assert answer.headers["WWW-Authenticate"] == 'Bearer realm="queuelens", error="invalid_token"'


def test_roles_are_ordered_viewer_operator_admin(client: Client) -> None:
    assert (
        client.get("/api/v1/overview", headers=bearer("viewer")).json()["totals"]["processed"]
        == 121
    )
    for role in ("viewer", "operator", "admin"):
        assert client.get("/api/v1/workers", headers=bearer(role)).status_code == 200
    export = client.get("/api/v1/export", headers=bearer("viewer"))
    assert export.status_code == 403
    assert export.json()["detail"] == "this endpoint needs the operator role; the token has viewer"
    assert 'error="insufficient_scope"' in export.headers["WWW-Authenticate"]
    assert client.get("/api/v1/export", headers=bearer("operator")).status_code == 200
    assert client.post("/api/v1/prune", headers=bearer("operator")).status_code == 403
    assert client.post("/api/v1/prune", headers=bearer("admin")).json()["total"] == 0


def test_metrics_needs_a_token_unless_public(storage: Storage, tmp_path: Path) -> None:
    client = Client(secured(storage, tmp_path))
    assert client.get("/metrics").status_code == 401
    scrape = client.get("/metrics", headers=bearer("viewer"))
    assert scrape.status_code == 200
    assert scrape.headers["content-type"].startswith("text/plain")
    assert b"queuelens_jobs_total" in scrape.content
    public = Client(secured(storage, tmp_path, metrics_public=True))
    assert public.get("/metrics").status_code == 200
    assert public.get("/api/v1/overview").status_code == 401  # only /metrics is public
    assert "security" not in public.get("/openapi.json").json()["paths"]["/metrics"]["get"]


def test_metrics_use_the_configured_buckets(storage: Storage, tmp_path: Path) -> None:
    client = Client(secured(storage, tmp_path, metrics_public=True, metrics_buckets=[0.125, 3]))
    text = client.get("/metrics").text
    bounds = {
        line.split('le="', 1)[1].split('"', 1)[0]
        for line in text.splitlines()
        if line.startswith("queuelens_job_duration_seconds_bucket")
    }
    assert bounds == {"0.125", "3.0", "+Inf"}


def test_health_and_the_openapi_document_need_no_token(client: Client) -> None:
    assert client.get("/healthz").status_code == 200
    assert client.get("/readyz").json()["storage_reachable"] is True
    spec = client.get("/openapi.json").json()
    assert spec["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "description": (
            "A token from `python -m queuelens.api.tokens <role>`; see docs/security.md."
        ),
    }
    assert spec["paths"]["/api/v1/overview"]["get"]["security"] == [{"bearer": []}]
    assert "security" not in spec["paths"]["/healthz"]["get"]


def test_without_tokens_everyone_is_admin_and_the_spec_says_so(app: FastAPI) -> None:
    client = Client(app)
    assert client.post("/api/v1/prune").status_code == 200
    assert client.get("/api/v1/export").status_code == 200
    spec = client.get("/openapi.json").json()
    assert "securitySchemes" not in spec.get("components", {})


def test_per_address_limit_answers_429_with_retry_after(storage: Storage, tmp_path: Path) -> None:
    app = secured(storage, tmp_path, rate_limit_ip_per_min=1, rate_limit_burst=2)
    one, other = Client(app, client_address="203.0.113.1"), Client(app, client_address="::1")
    assert one.get("/api/v1/workers", headers=bearer("viewer")).status_code == 200
    assert one.get("/api/v1/workers").status_code == 401  # a failed attempt counts too
    limited = one.get("/api/v1/workers", headers=bearer("viewer"))
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 60
    assert limited.json()["detail"].startswith(
        "rate limit exceeded: 1 requests a minute per client address (bursts of 2); retry in"
    )
    assert other.get("/api/v1/workers", headers=bearer("viewer")).status_code == 200
    assert one.get("/healthz").status_code == 200  # probes are never limited


def test_per_token_limit(storage: Storage, tmp_path: Path) -> None:
    app = secured(storage, tmp_path, rate_limit_token_per_min=2, rate_limit_burst=1)
    first, second = Client(app, client_address="10.0.0.1"), Client(app, client_address="10.0.0.2")
    assert first.get("/api/v1/servers", headers=bearer("viewer")).status_code == 200
    limited = second.get("/api/v1/servers", headers=bearer("viewer"))  # same token, new address
    assert limited.status_code == 429
    assert 1 <= int(limited.headers["Retry-After"]) <= 30
    assert "per token" in limited.json()["detail"]
    assert second.get("/api/v1/servers", headers=bearer("admin")).status_code == 200


def test_tokens_never_reach_a_log(
    storage: Storage, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    app = secured(storage, tmp_path, rate_limit_token_per_min=1, rate_limit_burst=1)
    client = Client(app)
    wrong = "ql_wrong-token-that-must-not-be-logged"
    client.get("/api/v1/overview", headers=bearer("viewer"))
    client.get("/api/v1/overview", headers=bearer("viewer"))  # 429
    client.get("/api/v1/export", headers=bearer("viewer"))  # 403
    client.get("/api/v1/overview", headers={"Authorization": f"Bearer {wrong}"})  # 401
    client.post("/api/v1/prune", headers=bearer("admin"))
    assert "rejected an unknown bearer token" in caplog.text  # the logs were captured
    assert "needs role operator" in caplog.text
    for secret in [wrong, *(token for token, _ in TOKENS.values())]:
        assert secret not in caplog.text
        assert secret[3:] not in caplog.text


def test_security_headers_on_every_answer(client: Client) -> None:
    for answer in (
        client.get("/api/v1/overview", headers=bearer("viewer")),
        client.get("/api/v1/overview"),  # 401
        client.get("/api/v1/overview", params={"window": "x"}, headers=bearer("viewer")),
        client.get("/nowhere"),
        client.get("/healthz"),
    ):
        assert answer.headers["X-Content-Type-Options"] == "nosniff"
        assert answer.headers["X-Frame-Options"] == "DENY"
        assert answer.headers["Referrer-Policy"] == "no-referrer"
        assert answer.headers["Cache-Control"] == "no-store"
        assert (
            answer.headers["Content-Security-Policy"]
            == "default-src 'none'; frame-ancestors 'none'"
        )
    docs = client.get("/docs")
    assert docs.headers["Content-Security-Policy"] == "frame-ancestors 'none'"


def test_no_cors_unless_configured(storage: Storage, tmp_path: Path) -> None:
    preflight = {
        "Origin": "https://evil.example",
        "Access-Control-Request-Method": "GET",
        "Access-Control-Request-Headers": "authorization",
    }
    closed = Client(secured(storage, tmp_path))
    answer = closed.request("OPTIONS", "/api/v1/overview", headers=preflight)
    assert "access-control-allow-origin" not in answer.headers
    simple = closed.get("/api/v1/overview", headers={**bearer("viewer"), "Origin": "https://x.y"})
    assert "access-control-allow-origin" not in simple.headers

    opened = Client(secured(storage, tmp_path, cors_origins=["https://ops.example.com"]))
    allowed = opened.request(
        "OPTIONS", "/api/v1/overview", headers={**preflight, "Origin": "https://ops.example.com"}
    )
    assert allowed.status_code == 200
    assert allowed.headers["access-control-allow-origin"] == "https://ops.example.com"
    assert "authorization" in allowed.headers["access-control-allow-headers"].lower()
    denied = opened.request("OPTIONS", "/api/v1/overview", headers=preflight)
    assert denied.status_code == 400
    assert "access-control-allow-origin" not in denied.headers


def test_identify_compares_with_every_digest(monkeypatch: pytest.MonkeyPatch) -> None:
    guard = Guard([entry for _, entry in TOKENS.values()])
    calls: list[bytes] = []
    real = hmac.compare_digest

    def counting(a: bytes, b: bytes) -> bool:
        calls.append(b)
        return real(a, b)

    monkeypatch.setattr(hmac, "compare_digest", counting)
    principal = guard.identify(TOKENS["viewer"][0])
    assert principal is not None
    assert principal.role is Role.viewer
    assert principal.name == f"viewer#{TOKENS['viewer'][1].split(':')[2][:8]}"
    assert len(calls) == 3  # no early exit on the first (matching) digest
    assert guard.identify("nope") is None


def test_token_helpers_and_their_settings_entry(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert hash_token("abc") == (
        "sha256:ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    )
    token, entry = new_token_entry("operator")
    assert token.startswith("ql_")
    assert len(token) > 40
    assert entry == f"operator:{hash_token(token)}"
    loaded = load_settings(settings_file(tmp_path), env={"QUEUELENS_API_TOKENS": entry})
    assert loaded.api_tokens == (entry,)
    with pytest.raises(ValueError, match="role 'boss' is not one of viewer, operator, admin"):
        new_token_entry("boss")
    assert main(["admin"]) == 0
    printed = capsys.readouterr().out
    assert "api_tokens entry" in printed
    assert "admin:sha256:" in printed
    assert main([]) == 2
