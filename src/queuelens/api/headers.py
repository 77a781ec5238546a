"""Security headers on every answer, as pure ASGI middleware (it never buffers a stream).

    app.add_middleware(SecurityHeaders)

- ``X-Content-Type-Options: nosniff``: a browser takes JSON and CSV for what they say;
- ``X-Frame-Options: DENY`` and CSP ``frame-ancestors 'none'``: no page may frame ours;
- CSP ``default-src 'none'`` on everything but HTML: an answer cannot load or run anything
  (the interactive docs at ``/docs`` are HTML and keep their scripts);
- ``Referrer-Policy: no-referrer``: URLs, with their queue names, stay here;
- ``Cache-Control: no-store`` unless a route set its own: figures and errors are never kept
  by a browser or proxy.

HSTS is for the TLS terminator in front of the server to set; this server speaks plain HTTP.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["SecurityHeaders"]

_ALWAYS = (
    (b"x-content-type-options", b"nosniff"),
    (b"x-frame-options", b"DENY"),
    (b"referrer-policy", b"no-referrer"),
)
_CSP_HTML = b"frame-ancestors 'none'"
_CSP_OTHER = b"default-src 'none'; frame-ancestors 'none'"


class SecurityHeaders:
    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers: list[tuple[bytes, bytes]] = list(message.get("headers", []))
                present = {name.lower() for name, _ in headers}
                content_type = next((v for n, v in headers if n.lower() == b"content-type"), b"")
                csp = _CSP_HTML if content_type.startswith(b"text/html") else _CSP_OTHER
                extra = [*_ALWAYS, (b"content-security-policy", csp)]
                extra.append((b"cache-control", b"no-store"))
                headers += [(name, value) for name, value in extra if name not in present]
                message = {**message, "headers": headers}
            await send(message)

        await self.app(scope, receive, send_with_headers)
