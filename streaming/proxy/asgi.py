"""Mounting the proxy in the portal's one ASGI application.

A request to an app's own origin (``<slug>.<PORTAL_APPS_DOMAIN>``, whatever its path) and
``/apps/...`` on the portal's origin go to :class:`streaming.proxy.app.ProxyApp` (streaming
bodies, one thread hop per decision); everything else goes to Django, which therefore never
answers on an app's origin. The lifespan closes the upstream pools and
writes the last access records on a normal shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streaming.proxy.admission_cache import admission_cache
from streaming.proxy.app import ProxyApp
from streaming.proxy.records import access_log
from streaming.proxy.scope import APP_SLUG, Receive, Scope, Send
from streaming.proxy.vetting import app_slug_of

__all__ = ["ProxyDispatch", "WebSocketDispatch"]


class ProxyDispatch:
    """HTTP for ``/apps/`` to the proxy, the rest to ``django_app``; plus the lifespan."""

    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app
        self.proxy = ProxyApp()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
            return
        slug = app_slug_of(scope)
        if slug is not None:
            scope[APP_SLUG] = slug
            await self.proxy(scope, receive, send)
            return
        raw = scope.get("raw_path") or b""
        path = scope.get("path", "")
        # Either spelling counts, so an encoded "/apps%2f" cannot slip past to Django.
        if raw.startswith(b"/apps/") or raw == b"/apps" or path.startswith("/apps/") or path == "/apps":
            await self.proxy(scope, receive, send)
            return
        await self.django_app(scope, receive, send)

    async def lifespan(self, scope: Scope, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                admission_cache.ensure_listening()  # hear policy changes before the first request
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.proxy.aclose()
                await asyncio.to_thread(access_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return


class WebSocketDispatch:
    """A WebSocket to an app's own origin to the proxy; the rest to ``portal_app``."""

    def __init__(self, portal_app: Any) -> None:
        from streaming.proxy.websocket import WebSocketProxy

        self.portal_app = portal_app
        self.proxy = WebSocketProxy()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        slug = app_slug_of(scope)
        if slug is not None:
            scope[APP_SLUG] = slug
            await self.proxy(scope, receive, send)
            return
        await self.portal_app(scope, receive, send)
