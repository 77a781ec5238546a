"""The HTTP surface: REST API, live stream, ``/metrics`` and health, in one ASGI app.

    from queuelens.api import create_app, serve
    app = create_app(load_settings())           # mount it, or run it with any ASGI server
    serve(load_settings(), port=8000)           # what `queuelens serve` runs

Needs the ``server`` extra (``pip install 'queuelens[server]'``). Importing this package
imports no web framework until ``create_app`` or ``serve`` is used, so
:mod:`queuelens.api.tokens` works without one.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from queuelens.api.app import create_app
    from queuelens.api.server import serve

__all__ = ["create_app", "serve"]


def __getattr__(name: str) -> Any:
    if name == "create_app":
        from queuelens.api.app import create_app

        return create_app
    if name == "serve":
        from queuelens.api.server import serve

        return serve
    raise AttributeError(f"module 'queuelens.api' has no attribute {name!r}")
