"""``serve``: run the app with uvicorn, as ``queuelens serve`` does.

    serve(load_settings())                          # http://127.0.0.1:8000
    serve(settings, host="0.0.0.0", port=9000)      # needs api_tokens in the settings

With no ``api_tokens`` configured the API is anonymous, so ``serve`` binds to a loopback
address only: another host is refused with a :class:`ConfigError` that says how to add a
token. The retention pruner runs for the server's lifetime. Client addresses (for the
per-address rate limit) come from ``X-Forwarded-For`` only when the proxy is one of
uvicorn's ``FORWARDED_ALLOW_IPS`` (127.0.0.1 by default).
"""

from __future__ import annotations

import ipaddress
import logging
from pathlib import Path

import uvicorn

from queuelens.api.app import create_app
from queuelens.config import ConfigError, Settings

__all__ = ["DEFAULT_HOST", "build_server", "is_loopback", "serve"]

log = logging.getLogger("queuelens.api")

DEFAULT_HOST = "127.0.0.1"


def is_loopback(host: str) -> bool:
    """True for ``localhost`` and loopback addresses (127.0.0.0/8, ::1)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def build_server(
    settings: Settings,
    *,
    host: str | None = None,
    port: int = 8000,
    toml_path: str | Path | None = None,
) -> uvicorn.Server:
    """A uvicorn server for the app, checked but not started (``serve`` runs it)."""
    host = host or DEFAULT_HOST
    if not settings.api_tokens and not is_loopback(host):
        raise ConfigError(
            f"refusing to serve on {host!r}: no api_tokens are configured, so anyone who can "
            "reach the port could read every figure; bind to 127.0.0.1, or add a token "
            "(python -m queuelens.api.tokens viewer) to QUEUELENS_API_TOKENS"
        )
    if not 0 <= port <= 65535:
        raise ConfigError(f"port {port} is not a TCP port; expected e.g. 8000")
    app = create_app(settings, toml_path=toml_path, run_pruner=True)
    config = uvicorn.Config(app, host=host, port=port, proxy_headers=True, log_level="info")
    return uvicorn.Server(config)


def serve(
    settings: Settings,
    *,
    host: str | None = None,
    port: int = 8000,
    toml_path: str | Path | None = None,
) -> None:
    """Serve until interrupted; ConfigError before binding if the settings forbid it."""
    server = build_server(settings, host=host, port=port, toml_path=toml_path)
    bound = server.config.host
    if settings.api_tokens:
        log.warning("queuelens: serving on http://%s:%d with bearer tokens", bound, port)
    else:
        log.warning(
            "queuelens: serving on http://%s:%d to this machine only: no api_tokens are "
            "configured, so the API is anonymous and bound to loopback",
            bound,
            port,
        )
    server.run()
