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
import socket
import ssl
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httptools
from django.conf import settings

__all__ = ["Upstream", "UpstreamBroken", "UpstreamClients", "UpstreamError", "UpstreamResponse",
           "upstream_for", "upstream_tls"]

MAX_RESPONSE_FIELD = 64 * 1024  # one response header line (large Set-Cookie values)
MAX_RESPONSE_HEAD = 256 * 1024  # all of a response's header lines together
_HIGH_WATER = 256 * 1024  # response bytes waiting for the browser before reading pauses
_KEEPALIVE_SECONDS = 30.0  # an idle connection older than this is not reused
_BODYLESS_METHODS = frozenset({"GET", "HEAD", "OPTIONS", "TRACE"})  # no Content-Length: 0 added
_IDEMPOTENT = frozenset({"GET", "HEAD", "OPTIONS", "TRACE", "PUT", "DELETE"})  # RFC 9110 9.2.2


class UpstreamError(ValueError):
    """A catalogued upstream URL the proxy refuses to use."""


class UpstreamBroken(ConnectionError):
    """The upstream refused, reset or closed the exchange, or answered with broken HTTP."""


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


Body = bytes | AsyncIterator[bytes] | None


class UpstreamResponse:
    """An upstream's answer: status and headers at once, the body as it arrives."""

    def __init__(self, connection: _Connection, status: int, raw_headers: list[tuple[bytes, bytes]],
                 *, head_only: bool) -> None:
        self._connection = connection
        self.status = status
        self.raw_headers = raw_headers
        self.content_length: int | None = None
        chunked = False
        for name, value in raw_headers:
            lowered = name.lower()
            if lowered == b"content-length" and value.strip().isdigit():
                self.content_length = int(value)
            elif lowered == b"transfer-encoding":
                chunked = True
        # Without either, the body runs until the upstream closes (HTTP/1.0 style).
        self._ends_at_close = self.content_length is None and not chunked
        self._head_only = head_only  # a HEAD's answer has no body, whatever it announces
        self._chunks: collections.deque[bytes] = collections.deque()
        self._buffered = 0
        self._done = self._head_only
        self._error: BaseException | None = None
        self._waiter: asyncio.Future[None] | None = None
        self._released = False

    # --- fed by the connection --------------------------------------------------------

    def _feed(self, data: bytes) -> None:
        if self._head_only:
            return
        self._chunks.append(data)
        self._buffered += len(data)
        if self._buffered > _HIGH_WATER:
            self._connection.pause_reading()
        self._wake()

    def _finish(self) -> None:
        self._done = True
        self._wake()

    def _fail(self, error: BaseException) -> None:
        if not self._done:
            self._error = error
        self._wake()

    def _closed(self, error: BaseException | None) -> None:
        if not self._done:
            if error is None and self._ends_at_close:
                self._done = True
            else:
                self._error = UpstreamBroken("the upstream closed the connection mid-response")
                if error is not None:
                    self._error.__cause__ = error
        self._wake()

    def _wake(self) -> None:
        waiter = self._waiter
        if waiter is not None and not waiter.done():
            waiter.set_result(None)

    # --- read by the proxy ------------------------------------------------------------

    async def iter_chunks(self, size: int) -> AsyncIterator[bytes]:
        """The body in pieces of at most ``size`` bytes, as the upstream sends it."""
        while True:
            if self._chunks:
                piece = self._chunks.popleft()
                if len(piece) > size:
                    self._chunks.appendleft(piece[size:])
                    piece = piece[:size]
                else:
                    while self._chunks and len(piece) + len(self._chunks[0]) <= size:
                        piece += self._chunks.popleft()
                self._buffered -= len(piece)
                if self._buffered <= _HIGH_WATER // 2:
                    self._connection.resume_reading()
                yield piece
            elif self._error is not None:
                raise self._error
            elif self._done:
                return
            else:
                self._waiter = self._connection.loop.create_future()
                try:
                    await self._connection.wait_for_upstream(self._waiter)
                finally:
                    self._waiter = None

    def release(self) -> None:
        """Give the connection back (reused only if this exchange ended cleanly)."""
        if self._released:
            return
        self._released = True
        self._connection.finish_exchange(
            reusable=self._done and self._error is None and not self._head_only)


class _Connection(asyncio.Protocol):
    """One keep-alive connection to an upstream: one exchange at a time."""

    def __init__(self, pool: _Pool) -> None:
        self.pool = pool
        self.loop = pool.loop
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.closed = False
        self.exchanges = 0  # started on this connection
        self.idle_since = 0.0
        self.received = False  # any byte of the current exchange's response
        self.sent = False  # any byte of the current exchange's request
        self._head_waiter: asyncio.Future[UpstreamResponse] | None = None
        self._head_only = False
        self._response: UpstreamResponse | None = None
        self._headers: list[tuple[bytes, bytes]] = []
        self._head_bytes = 0
        self._interim = False
        self._keep_alive = False
        self._body_task: asyncio.Task[None] | None = None
        self._body_sent = False
        self._write_paused = False
        self._drain_waiter: asyncio.Future[None] | None = None
        self._reading_paused = False
        # The read timeout: one timer per connection, re-armed lazily (progress only
        # moves a timestamp), watching only while the proxy waits for the upstream.
        self._watched: asyncio.Future[Any] | None = None
        self._progress_at = 0.0
        self._timer: asyncio.TimerHandle | None = None

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        sock = transport.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def data_received(self, data: bytes) -> None:
        self.received = True
        self._progress_at = self.loop.time()
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._break(UpstreamBroken(f"the upstream's response is not valid HTTP ({exc})"))

    def eof_received(self) -> bool | None:
        return None  # close our side too

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        error = UpstreamBroken("the upstream closed the connection")
        if exc is not None:
            error.__cause__ = exc
        if self._head_waiter is not None and not self._head_waiter.done():
            self._head_waiter.set_exception(error)
        if self._response is not None:
            self._response._closed(exc)
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_exception(error)

    def pause_writing(self) -> None:
        self._write_paused = True

    def resume_writing(self) -> None:
        self._write_paused = False
        if self._drain_waiter is not None and not self._drain_waiter.done():
            self._drain_waiter.set_result(None)

    # --- httptools callbacks ------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self._head_waiter is None and self._response is None:
            raise UpstreamBroken("the upstream sent a response nobody asked for")
        self._headers, self._head_bytes = [], 0

    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name) + len(value)
        self._head_bytes += size
        if size > MAX_RESPONSE_FIELD or self._head_bytes > MAX_RESPONSE_HEAD:
            raise UpstreamBroken("the upstream's response headers are too large")
        self._headers.append((name, value))

    def on_headers_complete(self) -> None:
        status = self.parser.get_status_code()
        if 100 <= status < 200:
            if status == 101:
                raise UpstreamBroken("the upstream switched protocols on a plain request")
            self._interim = True  # 100 Continue and friends: the real answer follows
            return
        waiter = self._head_waiter
        if waiter is None or waiter.done():
            raise UpstreamBroken("the upstream sent a response nobody asked for")
        self._response = UpstreamResponse(self, status, self._headers, head_only=self._head_only)
        self._head_waiter = None
        waiter.set_result(self._response)

    def on_body(self, body: bytes) -> None:
        if self._response is not None:
            self._response._feed(body)

    def on_message_complete(self) -> None:
        if self._interim:
            self._interim = False
            return
        self._keep_alive = self.parser.should_keep_alive()
        if self._response is not None:
            self._response._finish()

    # --- flow control and the read timeout ------------------------------------------------

    def pause_reading(self) -> None:
        if not self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self._reading_paused and self.transport is not None and not self.closed:
            self._reading_paused = False
            self.transport.resume_reading()

    async def wait_for_upstream(self, waiter: asyncio.Future[Any]) -> Any:
        """Await ``waiter``, which the upstream's next progress resolves: TimeoutError when the
        upstream makes no progress for the read timeout."""
        self._watched = waiter
        self._progress_at = self.loop.time()
        if self._timer is None:
            self._timer = self.loop.call_at(self._progress_at + self.pool.read_timeout, self._check_stall)
        try:
            return await waiter
        finally:
            self._watched = None

    def _check_stall(self) -> None:
        self._timer = None
        if self.closed:
            return
        due = self._progress_at + self.pool.read_timeout
        if self._watched is None or self.loop.time() < due:
            if self._watched is not None:
                self._timer = self.loop.call_at(due, self._check_stall)
            return
        waiter, self._watched = self._watched, None
        if not waiter.done():
            waiter.set_exception(TimeoutError("the upstream did not answer in time"))
        self._break(None)

    # --- one exchange ---------------------------------------------------------------------

    async def exchange(self, head: bytes, body: Body, *, head_only: bool,
                       chunked: bool) -> UpstreamResponse:
        """Send one request and return its response once the head has arrived."""
        assert self.transport is not None
        self.sent = self.received = False
        if self.closed:  # the upstream hung up between our check and this write
            raise UpstreamBroken("the upstream closed the connection")
        self.exchanges += 1
        self.sent = True
        self._head_only, self._keep_alive, self._response = head_only, False, None
        self._head_waiter = waiter = self.loop.create_future()
        if body is None or isinstance(body, bytes):
            self.transport.write(head + body if body else head)
            self._body_sent = True
        else:
            self._body_sent = False
            self.transport.write(head)
            self._body_task = self.loop.create_task(self._send_body(body, waiter, chunked))
        return await self.wait_for_upstream(waiter)

    async def _send_body(self, body: AsyncIterator[bytes], waiter: asyncio.Future[Any],
                         chunked: bool) -> None:
        try:
            async for chunk in body:
                if self.closed:
                    raise UpstreamBroken("the upstream closed the connection during the upload")
                if chunked:
                    self.transport.write(b"%x\r\n" % len(chunk))  # type: ignore[union-attr]
                    self.transport.write(chunk)  # type: ignore[union-attr]
                    self.transport.write(b"\r\n")  # type: ignore[union-attr]
                else:
                    self.transport.write(chunk)  # type: ignore[union-attr]
                self._progress_at = self.loop.time()
                if self._write_paused:
                    self._drain_waiter = self.loop.create_future()
                    try:
                        await self._drain_waiter
                    finally:
                        self._drain_waiter = None
                    self._progress_at = self.loop.time()
            if chunked:
                self.transport.write(b"0\r\n\r\n")  # type: ignore[union-attr]
            self._body_sent = True
        except asyncio.CancelledError:
            raise
        except BaseException as exc:
            # The browser left mid-upload, or the upstream went away: end the exchange and say
            # why (the proxy tells the two apart through the cause).
            if not waiter.done():
                error = UpstreamBroken("the request body could not be sent")
                error.__cause__ = exc
                waiter.set_exception(error)
            self._break(None)

    def finish_exchange(self, *, reusable: bool) -> None:
        task, self._body_task = self._body_task, None
        if task is not None and not task.done():
            task.cancel()
            reusable = False
        reusable = reusable and self._keep_alive and self._body_sent and not self.closed
        self._response = None
        self._head_waiter = None
        if reusable:
            self.resume_reading()
        else:
            self._break(None)
        self.pool.give_back(self, reusable)

    def _break(self, error: BaseException | None) -> None:
        if error is not None:
            if self._head_waiter is not None and not self._head_waiter.done():
                self._head_waiter.set_exception(error)
            if self._response is not None:
                self._response._fail(error)
        if self.transport is not None and not self.closed:
            self.closed = True
            self.transport.close()


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
