"""Reading an ASGI scope the way the proxy does: headers once per request, cookies by Django.

HTTP (:mod:`streaming.proxy.app`) and WebSocket (:mod:`streaming.proxy.websocket`) read the
same headers the same way, so they can never disagree on what a request said.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from django.http.cookie import parse_cookie

__all__ = ["APP_SLUG", "Receive", "Scope", "Send", "cookie", "header", "header_table", "wants_json"]

Scope = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]

APP_SLUG = "portal.app_slug"  # scope key: the app whose own origin the request came to
_HEADER_TABLE = "portal.headers"  # scope key of the request's header table (see header)


def header_table(scope: Scope) -> dict[bytes, bytes]:
    """The first value of each header (names in lower case), built once per request."""
    table = scope.get(_HEADER_TABLE)
    if table is None:
        table = {}
        for key, value in scope["headers"]:
            table.setdefault(key.lower(), value)
        scope[_HEADER_TABLE] = table
    return table


def header(scope: Scope, name: bytes) -> str | None:
    """The first value of header ``name`` (lower case)."""
    value = header_table(scope).get(name)
    return None if value is None else value.decode("latin-1")


def cookie(scope: Scope, name: str) -> str | None:
    """One cookie of the request (None when absent or empty)."""
    raw = header(scope, b"cookie")
    if not raw:
        return None
    # Django's own parser, so the proxy and the portal's pages agree on which cookie counts.
    return parse_cookie(raw).get(name) or None


def wants_json(scope: Scope) -> bool:
    """Whether the caller is a script that reads JSON rather than a page that follows redirects."""
    accept = header(scope, b"accept") or ""
    return accept.startswith("application/json") or header(scope, b"x-requested-with") is not None
