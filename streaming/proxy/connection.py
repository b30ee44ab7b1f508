"""One keep-alive HTTP/1.1 connection to an upstream, and the answer read from it.

The framing half of the proxy's upstream client (docs/decisions/0014;
:mod:`streaming.proxy.upstream` pools these per origin). Responses are parsed by
``httptools`` (llhttp); requests are written exactly as the pool made them. Reading pauses
while more than ``_HIGH_WATER`` response bytes wait for the browser, and the read timeout
counts from the last progress.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import socket
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

import httptools

if TYPE_CHECKING:
    from streaming.proxy.upstream import _Pool

__all__ = ["MAX_RESPONSE_FIELD", "MAX_RESPONSE_HEAD", "Body", "UpstreamBroken", "UpstreamResponse"]

MAX_RESPONSE_FIELD = 64 * 1024  # one response header line (large Set-Cookie values)
MAX_RESPONSE_HEAD = 256 * 1024  # all of a response's header lines together
_HIGH_WATER = 256 * 1024  # response bytes waiting for the browser before reading pauses


class UpstreamBroken(ConnectionError):
    """The upstream refused, reset or closed the exchange, or answered with broken HTTP."""


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
