"""Talking to catalogued upstreams: one pooled, keep-alive httpx client per origin.

Redirects are never followed (the browser gets them, rewritten), the environment's proxy
settings are ignored (``trust_env=False``: nobody reroutes us through HTTP_PROXY), and the
URL is built from the catalogued scheme, host and port plus a path that
:mod:`streaming.proxy.paths` already vetted, so no request can reach anything else.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import httpx
from django.conf import settings

__all__ = ["Upstream", "UpstreamClients", "UpstreamError"]


class UpstreamError(ValueError):
    """A catalogued upstream URL the proxy refuses to use."""


@dataclass(frozen=True)
class Upstream:
    """A catalogued upstream URL taken apart."""

    scheme: str
    host: str
    port: int
    base_path: str  # always ends in "/"

    @classmethod
    def parse(cls, url: str) -> Upstream:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise UpstreamError(f"{url!r} is not an http(s) URL")
        if parts.username or parts.password or parts.query or parts.fragment:
            raise UpstreamError(f"{url!r} carries credentials, a query or a fragment")
        port = parts.port or (443 if parts.scheme == "https" else 80)
        base = parts.path or "/"
        return cls(parts.scheme, parts.hostname, port, base if base.endswith("/") else base + "/")

    @property
    def origin(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{self.scheme}://{host}:{self.port}"

    def url(self, upstream_path: str, query: str) -> httpx.URL:
        """The URL for ``/apps/<slug><upstream_path>``: the catalogued base plus the vetted path."""
        raw = self.base_path + upstream_path.lstrip("/")
        if query:
            raw += "?" + query
        return httpx.URL(scheme=self.scheme, host=self.host, port=self.port, raw_path=raw.encode("ascii"))


class UpstreamClients:
    """Keep-alive pools per upstream origin, rebuilt if the event loop changes."""

    def __init__(self) -> None:
        self._clients: dict[str, httpx.AsyncClient] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def for_upstream(self, upstream: Upstream) -> httpx.AsyncClient:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients, self._loop = {}, loop
        client = self._clients.get(upstream.origin)
        if client is None:
            client = httpx.AsyncClient(
                follow_redirects=False, trust_env=False, http1=True,
                timeout=httpx.Timeout(connect=settings.PORTAL_PROXY_CONNECT_TIMEOUT,
                                      read=settings.PORTAL_PROXY_READ_TIMEOUT,
                                      write=settings.PORTAL_PROXY_READ_TIMEOUT,
                                      pool=settings.PORTAL_PROXY_CONNECT_TIMEOUT),
                limits=httpx.Limits(max_connections=settings.PORTAL_PROXY_MAX_CONNECTIONS,
                                    max_keepalive_connections=settings.PORTAL_PROXY_MAX_CONNECTIONS,
                                    keepalive_expiry=30),
            )
            self._clients[upstream.origin] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.aclose()
