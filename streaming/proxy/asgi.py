"""Mounting the proxy in the portal's one ASGI application.

``/apps/...`` goes to :class:`streaming.proxy.app.ProxyApp` (streaming bodies, one thread hop
per decision); everything else goes to Django. The lifespan closes the upstream pools and
writes the last access records on a normal shutdown.
"""

from __future__ import annotations

import asyncio
from typing import Any

from streaming.proxy.app import ProxyApp, Receive, Scope, Send
from streaming.proxy.records import access_log

__all__ = ["ProxyDispatch"]


class ProxyDispatch:
    """HTTP for ``/apps/`` to the proxy, the rest to ``django_app``; plus the lifespan."""

    def __init__(self, django_app: Any) -> None:
        self.django_app = django_app
        self.proxy = ProxyApp()

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self.lifespan(scope, receive, send)
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
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.proxy.aclose()
                await asyncio.to_thread(access_log.close)
                await send({"type": "lifespan.shutdown.complete"})
                return
