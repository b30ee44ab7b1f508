"""Talking to catalogued upstreams: one pooled, keep-alive aiohttp session per origin.

Redirects are never followed (the browser gets them, rewritten), the environment's proxy
settings are ignored (``trust_env=False``: nobody reroutes us through HTTP_PROXY), nothing is
decompressed or added (no default ``User-Agent``/``Accept*`` headers: the app sees what the
browser sent), and the URL is built from the catalogued scheme, host and port plus a path
that :mod:`streaming.proxy.paths` already vetted, taken as already encoded, so no request can
reach anything else. Why aiohttp and not httpx: docs/decisions/0012.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from urllib.parse import urlsplit

import aiohttp
from django.conf import settings
from yarl import URL

__all__ = ["Upstream", "UpstreamClients", "UpstreamError"]

# aiohttp adds these unless told not to; the proxy forwards only what the browser sent.
SKIP_AUTO_HEADERS = frozenset({"User-Agent", "Accept", "Accept-Encoding", "Content-Type"})
_MAX_RESPONSE_FIELD = 64 * 1024  # one response header line (large Set-Cookie values)


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

    def url(self, upstream_path: str, query: str) -> URL:
        """The URL for ``/apps/<slug><upstream_path>``: the catalogued base plus the vetted path,
        sent exactly as it is (no re-quoting)."""
        raw = self.base_path + upstream_path.lstrip("/")
        return URL.build(scheme=self.scheme, host=self.host, port=self.port, path=raw,
                         query_string=query, encoded=True)


class UpstreamClients:
    """Keep-alive pools per upstream origin, rebuilt if the event loop changes."""

    def __init__(self) -> None:
        self._clients: dict[str, aiohttp.ClientSession] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def for_upstream(self, upstream: Upstream) -> aiohttp.ClientSession:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._clients, self._loop = {}, loop
        client = self._clients.get(upstream.origin)
        if client is None or client.closed:
            client = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(
                    limit=settings.PORTAL_PROXY_MAX_CONNECTIONS, keepalive_timeout=30,
                    use_dns_cache=True, enable_cleanup_closed=False),
                timeout=aiohttp.ClientTimeout(
                    total=None, connect=settings.PORTAL_PROXY_CONNECT_TIMEOUT,
                    sock_read=settings.PORTAL_PROXY_READ_TIMEOUT),
                auto_decompress=False, trust_env=False, skip_auto_headers=SKIP_AUTO_HEADERS,
                cookie_jar=aiohttp.DummyCookieJar(), max_field_size=_MAX_RESPONSE_FIELD,
                max_line_size=_MAX_RESPONSE_FIELD,
            )
            self._clients[upstream.origin] = client
        return client

    async def aclose(self) -> None:
        clients, self._clients = self._clients, {}
        for client in clients.values():
            await client.close()
