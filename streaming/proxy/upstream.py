"""Talking to catalogued upstreams: keep-alive HTTP/1.1 connections pooled per origin.

The client is small on purpose (docs/decisions/0014): a proxy sends each request it has
already vetted exactly as it stands and relays the answer as it comes, so all it needs from
an HTTP client is framing. Responses are parsed by ``httptools`` (llhttp, the parser
uvicorn serves the portal with); requests are written as they are: the vetted path byte for
byte, the headers :mod:`streaming.proxy.headers` produced, ``Host`` of the catalogued
upstream, and the body either whole (``Content-Length``) or streamed (the client's
``Content-Length``, else chunked). Nothing is added, decompressed or followed: no redirects,
no cookie jar, no environment proxies, no default ``User-Agent``/``Accept``.

Guarantees the proxy relies on:

- only the catalogued scheme, host and port are ever connected to;
- memory per request is bounded: reading from the upstream pauses while more than
  ``_HIGH_WATER`` bytes wait for the browser, and uploads wait for the socket to drain;
- a connection is reused only after a complete, keep-alive response to a fully sent
  request; anything else (a HEAD, a browser that left mid-download, an early answer to an
  upload, a broken response) closes it;
- the connect timeout bounds connecting, the read timeout bounds every wait for the
  upstream (for the response head, for the next piece of the body, for an upload to drain),
  measured from the last progress: :class:`TimeoutError` (504). A refused, reset or
  garbled exchange is :class:`UpstreamBroken` (502).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import functools
import ssl
from dataclasses import dataclass
from urllib.parse import urlsplit

from django.conf import settings

from streaming.proxy.connection import Body, UpstreamBroken, UpstreamResponse, _Connection

__all__ = ["Upstream", "UpstreamBroken", "UpstreamClients", "UpstreamError", "UpstreamResponse",
           "upstream_for", "upstream_tls"]

_KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is not reused
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no Content-Length: 0 added
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2


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

    @property
    def host_header(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        default = 443 if self.scheme == "https" else 80
        return host if self.port == default else f"{host}:{self.port}"

    def target(self, upstream_path: str, query: str) -> str:
        """The request target for ``/apps/<slug><upstream_path>``: the catalogued base plus the
        vetted path, sent exactly as it is (no re-quoting)."""
        raw = self.base_path + upstream_path.lstrip("/")
        return raw + (f"?{query}" if query else "")


def upstream_tls() -> ssl.SSLContext:
    """How HTTPS (and WSS) upstreams are verified: certificate and host name, against
    ``PORTAL_PROXY_CA_FILE`` (an internal CA) when set, else the system's trust store."""
    return _tls_context(str(settings.PORTAL_PROXY_CA_FILE or ""))


@functools.lru_cache(maxsize=8)
def _tls_context(ca_file: str) -> ssl.SSLContext:
    context = ssl.create_default_context(cafile=ca_file or None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


@functools.lru_cache(maxsize=1024)
def upstream_for(url: str) -> Upstream:
    """:meth:`Upstream.parse`, remembered: a resource's upstream is read on every request."""
    return Upstream.parse(url)


class _Pool:
    """Keep-alive connections to one upstream origin, at most ``limit`` at a time."""

    def __init__(self, upstream: Upstream, loop: asyncio.AbstractEventLoop) -> None:
        self.upstream = upstream
        self.loop = loop
        self.read_timeout = float(settings.PORTAL_PROXY_READ_TIMEOUT)
        self.connect_timeout = float(settings.PORTAL_PROXY_CONNECT_TIMEOUT)
        self._limit = int(settings.PORTAL_PROXY_MAX_CONNECTIONS)
        self._busy = 0  # connections lent out or being dialled
        self._queue: collections.deque[asyncio.Future[None]] = collections.deque()  # waiting for one
        self._idle: list[_Connection] = []
        self._ssl = upstream_tls() if upstream.scheme == "https" else None
        self._host_line = f"host: {upstream.host_header}\r\n"

    async def request(self, method: str, target: str, headers: list[tuple[str, str]],
                      body: Body) -> UpstreamResponse:
        """Send ``method target`` with ``headers`` and ``body``; the caller must ``release()``."""
        head, chunked = self._head(method, target, headers, body)
        for attempt in (1, 2):
            connection = await self._acquire()
            reused = connection.exchanges > 0
            try:
                return await connection.exchange(head, body, head_only=method == "HEAD",
                                                 chunked=chunked)
            except UpstreamBroken:
                connection.finish_exchange(reusable=False)
                # A kept-alive connection the upstream closed just as we wrote to it: try a
                # fresh one once, if nothing came back and sending again cannot do anything
                # twice — nothing was sent, or the request is idempotent with a body we hold.
                again = not connection.sent or (method in _IDEMPOTENT and not _streamed(body))
                if attempt == 1 and reused and not connection.received and again:
                    continue
                raise
            except BaseException:
                connection.finish_exchange(reusable=False)
                raise
        raise AssertionError("unreachable")

    def _head(self, method: str, target: str, headers: list[tuple[str, str]],
              body: Body) -> tuple[bytes, bool]:
        lines = [f"{method} {target} HTTP/1.1\r\n", self._host_line]
        has_length = False
        for name, value in headers:
            if "\r" in value or "\n" in value or "\r" in name or "\n" in name:
                raise UpstreamError(f"header {name!r} holds a line break")
            if name == "content-length":
                if isinstance(body, bytes):
                    continue  # the held body's own length is sent below
                has_length = True
            lines.append(f"{name}: {value}\r\n")
        chunked = False
        if isinstance(body, bytes):
            lines.append(f"content-length: {len(body)}\r\n")
        elif body is None:
            if method not in _BODYLESS_METHODS and not has_length:
                lines.append("content-length: 0\r\n")
        elif not has_length:
            lines.append("transfer-encoding: chunked\r\n")
            chunked = True
        lines.append("\r\n")
        return "".join(lines).encode("latin-1"), chunked

    async def _take_slot(self) -> None:
        """One of the ``limit`` connection slots (in order of asking when all are busy)."""
        if self._busy < self._limit and not self._queue:
            self._busy += 1
            return
        waiter = self.loop.create_future()
        self._queue.append(waiter)
        try:
            await waiter  # the slot is handed over by _free_slot: _busy already counts it
        except BaseException:
            if waiter.done() and not waiter.cancelled():
                self._free_slot()  # handed over just as we gave up: pass it on
            else:
                with contextlib.suppress(ValueError):  # already skipped by _free_slot
                    self._queue.remove(waiter)
            raise

    def _free_slot(self) -> None:
        while self._queue:
            waiter = self._queue.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self._busy -= 1

    async def _acquire(self) -> _Connection:
        await self._take_slot()
        now = self.loop.time()
        while self._idle:
            connection = self._idle.pop()
            if not connection.closed and now - connection.idle_since < _KEEPALIVE_SECONDS:
                return connection
            connection._break(None)
        try:
            async with asyncio.timeout(self.connect_timeout):
                _transport, connection = await self.loop.create_connection(
                    lambda: _Connection(self), self.upstream.host, self.upstream.port, ssl=self._ssl,
                    server_hostname=self.upstream.host if self._ssl else None)
        except BaseException:
            self._free_slot()
            raise
        return connection

    def give_back(self, connection: _Connection, reusable: bool) -> None:
        if reusable:
            connection.idle_since = self.loop.time()
            self._idle.append(connection)
        self._free_slot()

    def close(self) -> None:
        idle, self._idle = self._idle, []
        for connection in idle:
            connection._break(None)


def _streamed(body: Body) -> bool:
    return body is not None and not isinstance(body, bytes)


class UpstreamClients:
    """One connection pool per upstream origin, rebuilt if the event loop changes."""

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}
        self._loop: asyncio.AbstractEventLoop | None = None

    def for_upstream(self, upstream: Upstream) -> _Pool:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._pools, self._loop = {}, loop
        pool = self._pools.get(upstream.origin)
        if pool is None:
            pool = self._pools[upstream.origin] = _Pool(upstream, loop)
        return pool

    async def aclose(self) -> None:
        pools, self._pools = self._pools, {}
        for pool in pools.values():
            pool.close()
