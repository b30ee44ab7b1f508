"""How uvicorn speaks HTTP for the portal: its httptools protocol, with writes coalesced.

uvicorn writes a response's head and its body with two separate ``transport.write`` calls,
so every small response costs two ``send`` system calls and leaves as two TCP segments. For
the identity-aware proxy that is a tenth of a worker's time (docs/decisions/0015).
:class:`PortalHttpProtocol` hands uvicorn a transport that gathers what is written during
one turn of the event loop and sends it in one call at the start of the next turn — the
same bytes, in the same order, microseconds later. WebSockets upgraded from such a
connection (the desktop tunnel, proxied sockets) keep the same transport and gain the same.

The same protocol bounds what a client may make the server hold before a request reaches
the application (docs/decisions/0016): a request head (request line and header fields) is
counted as its bytes arrive and answered ``431`` the moment it crosses
``PORTAL_MAX_REQUEST_HEAD_BYTES`` or ``MAX_HEADER_FIELDS``, before httptools (which joins a
header value's pieces one by one) has seen more than the limit; a second ``Host`` header, a
``CONNECT``/authority-form target, or an absolute-form target naming another host than
``Host`` is answered ``400``. Either way the connection is closed.

Run the portal with it: ``uvicorn portal.asgi:application --http portal.server:PortalHttpProtocol``
(``make demo``, the Dockerfile, the benchmarks and the tests all do).
"""

from __future__ import annotations

import asyncio
import functools
import http
from typing import Any

import httptools
from uvicorn.protocols.http.httptools_impl import STATUS_LINE, HttpToolsProtocol

__all__ = ["DEFAULT_MAX_HEAD_BYTES", "HTTP_PROTOCOL", "MAX_HEADER_FIELDS", "CoalescingTransport",
           "PortalHttpProtocol", "RequestRefused", "check_request_target", "head_end",
           "max_head_bytes"]

HTTP_PROTOCOL = "portal.server:PortalHttpProtocol"  # uvicorn's --http value
DEFAULT_MAX_HEAD_BYTES = 64 * 1024
MAX_HEADER_FIELDS = 100

_HEAD_END = b"\r\n\r\n"  # llhttp insists on CRLF, so this blank line is where every head ends
_DEFAULT_PORTS = {b"http": 80, b"https": 443}


class RequestRefused(Exception):
    """A request the server answers itself, then closes: its status and why, for the client."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(f"{status}: {reason}")
        self.status = status
        self.reason = reason


@functools.cache
def max_head_bytes() -> int:
    """``PORTAL_MAX_REQUEST_HEAD_BYTES``, read once per process (the default outside Django)."""
    try:
        from django.conf import settings

        return int(getattr(settings, "PORTAL_MAX_REQUEST_HEAD_BYTES", DEFAULT_MAX_HEAD_BYTES))
    except ImportError:  # pragma: no cover - the portal always has Django
        return DEFAULT_MAX_HEAD_BYTES


def head_end(tail: bytes, data: bytes, start: int, stop: int) -> int:
    """Where the head's blank line ends within ``data[start:stop]``, or -1.

    ``tail`` holds the head's last bytes received before ``data[start]``, so a blank line
    split between two reads is found too.
    """
    if tail:
        joined = tail[-3:] + data[start:min(start + 3, stop)]
        found = joined.find(_HEAD_END)
        if found != -1:
            return start + found + len(_HEAD_END) - len(tail[-3:])
    found = data.find(_HEAD_END, start, stop)
    return -1 if found == -1 else found + len(_HEAD_END)


def _authority(host: bytes, port: int | None, scheme: bytes) -> tuple[bytes, int]:
    return host.lower(), port or _DEFAULT_PORTS[scheme]


def _host_authority(value: bytes, scheme: bytes) -> tuple[bytes, int] | None:
    """A ``Host`` header as (host, port), the scheme's port if none is given; None if malformed."""
    value = value.strip()
    if value.startswith(b"["):
        close = value.find(b"]")
        if close == -1:
            return None
        host, rest = value[1:close], value[close + 1:]
    else:
        host, colon, port = value.partition(b":")
        rest = colon + port
    if rest and (not rest.startswith(b":") or not (rest[1:].isdigit() or rest == b":")):
        return None
    return _authority(host, int(rest[1:]) if rest[1:] else None, scheme)


def _declared_length(headers: list[tuple[bytes, bytes]]) -> int | None:
    """The body's length if one Content-Length gives it and nothing else frames the body."""
    lengths = {value.strip() for name, value in headers if name == b"content-length"}
    if len(lengths) != 1 or any(name == b"transfer-encoding" for name, _ in headers):
        return None
    value = lengths.pop()
    return int(value) if value.isdigit() else None


def check_request_target(method: bytes, target: bytes, hosts: list[bytes]) -> None:
    """Refuse (400) a head whose target or ``Host`` could make the portal and a proxy behind
    or before it disagree on which host was asked for; return if it is unambiguous."""
    if len(hosts) > 1:
        raise RequestRefused(400, "more than one Host header")
    if method == b"CONNECT":
        raise RequestRefused(400, "CONNECT is not served here")
    if target.startswith(b"/") or (target == b"*" and method == b"OPTIONS"):
        return
    try:
        url = httptools.parse_url(target)
    except httptools.HttpParserInvalidURLError:
        raise RequestRefused(400, "the request target is not a path or an http(s) URL") from None
    scheme = (url.schema or b"").lower()
    if scheme not in _DEFAULT_PORTS or not url.host or url.userinfo:
        raise RequestRefused(400, "the request target is not a path or an http(s) URL")
    named = _authority(url.host, url.port, scheme)
    if not hosts or _host_authority(hosts[0], scheme) != named:
        raise RequestRefused(400, "the request target names another host than the Host header")


class CoalescingTransport:
    """A transport whose writes within one event-loop turn leave in one ``write``.

    Everything but ``write`` is the wrapped transport's own; closing sends what is pending
    first, aborting drops it (as an abort drops the transport's own buffer).
    """

    __slots__ = ("_loop", "_pending", "_transport")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if not data:
            return
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self._flush)
        else:
            self._pending.append(bytes(data))

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.write(chunk)

    def _flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(pending[0] if len(pending) == 1 else b"".join(pending))

    def get_write_buffer_size(self) -> int:
        return self._transport.get_write_buffer_size() + sum(map(len, self._pending or ()))

    def write_eof(self) -> None:
        self._flush()
        self._transport.write_eof()

    def close(self) -> None:
        self._flush()
        self._transport.close()

    def abort(self) -> None:
        self._pending = None
        self._transport.abort()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class PortalHttpProtocol(HttpToolsProtocol):
    """uvicorn's httptools protocol on a :class:`CoalescingTransport`, with bounded heads.

    Bytes are handed to the parser in slices: while a head is being read, never beyond the
    blank line that ends it nor beyond what the limit leaves, so the count is exact and a
    head over the limit is refused before the parser sees the excess. A body is given up to
    its Content-Length, so the next head starts exactly after it; a chunked body is given
    with the rest of the read, and what follows it there counts against the next head (an
    upper bound: chunked framing is counted too).
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._max_head = max_head_bytes()
        self._in_head = True  # the parser is between messages or inside a head
        self._head_bytes = 0
        self._head_tail = b""
        self._header_fields = 0
        self._body_left: int | None = None  # of the body being read, when Content-Length says
        self._completed_in_feed = False
        self._body_in_feed = 0
        self._refusal: RequestRefused | None = None  # raised inside a parser callback
        self._refusing = False
        self._pending_refusal: RequestRefused | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]

    def data_received(self, data: bytes) -> None:
        self._unset_keepalive_if_required()
        if self._refusing:
            return  # already answered: what the client still sends is dropped, never parsed
        if not isinstance(data, bytes | bytearray):
            data = bytes(data)
        view = memoryview(data)
        position, size = 0, len(data)
        try:
            while position < size:
                if self._in_head:
                    position = self._feed_head(data, view, position)
                else:
                    position = self._feed_body(view, position)
                if self._head_bytes > self._max_head:
                    raise RequestRefused(431, "the request head is too large")
        except RequestRefused as refusal:
            self._refuse(refusal)
        except httptools.HttpParserUpgrade:
            if self._should_upgrade():
                self.handle_websocket_upgrade()
            else:
                self._unsupported_upgrade_warning()
        except httptools.HttpParserError:
            if self._refusal is not None:
                self._refuse(self._refusal)
            else:
                self.logger.warning("Invalid HTTP request received.")
                self._refuse(RequestRefused(400, "Invalid HTTP request received."))

    def _feed_head(self, data: bytes, view: memoryview, position: int) -> int:
        room = self._max_head - self._head_bytes
        stop = min(len(data), position + room)
        end = head_end(self._head_tail, data, position, stop)
        if end == -1:
            if len(data) - position > room:
                raise RequestRefused(431, "the request head is too large")
            end = len(data)
        self._head_bytes += end - position
        self._head_tail = (self._head_tail + data[max(position, end - 3):end])[-3:]
        self.parser.feed_data(view[position:end])
        return end

    def _feed_body(self, view: memoryview, position: int) -> int:
        stop = len(view)
        if self._body_left:
            stop = min(stop, position + self._body_left)
            self._body_left -= stop - position
        else:
            self._body_left = None  # chunked, or the parser disagrees: give it the rest
        self._completed_in_feed, self._body_in_feed = False, 0
        self.parser.feed_data(view[position:stop])
        if self._completed_in_feed and self._in_head:
            self._head_bytes = stop - position - self._body_in_feed
            self._head_tail = bytes(view[stop - min(self._head_bytes, 3):stop])
        return stop

    def _refuse(self, refusal: RequestRefused) -> None:
        """Answer ``refusal`` after the responses already owed on this connection, then close."""
        self._refusing = True
        self.flow.pause_reading()
        if self.cycle is None or (self.cycle.response_complete and not self.pipeline):
            self._send_refusal(refusal)
        else:
            self._pending_refusal = refusal

    def _send_refusal(self, refusal: RequestRefused) -> None:
        phrase = http.HTTPStatus(refusal.status).phrase
        body = f"{refusal.status} {phrase}: {refusal.reason}\n".encode("ascii")
        content = [STATUS_LINE[refusal.status]]
        for name, value in self.server_state.default_headers:
            content.extend([name, b": ", value, b"\r\n"])
        content.extend([b"content-type: text/plain; charset=utf-8\r\n",
                        b"content-length: %d\r\n" % len(body), b"connection: close\r\n\r\n", body])
        self.transport.write(b"".join(content))
        self.transport.close()  # sends the answer (to the kernel: TCP and TLS write at once)
        self.loop.call_soon(self._drop_after_refusal)

    def _drop_after_refusal(self) -> None:
        """Close for good once the answer is out: a TLS close would go on reading (and
        decrypting) whatever the client keeps sending until it says close_notify."""
        if self.transport.get_write_buffer_size() == 0:
            self.transport.abort()

    def on_message_begin(self) -> None:
        super().on_message_begin()
        self._header_fields = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_fields += 1
        if self._header_fields > MAX_HEADER_FIELDS:
            self._refusal = RequestRefused(431, "too many header fields")
            raise self._refusal
        super().on_header(name, value)

    def on_headers_complete(self) -> None:
        self._in_head, self._head_tail = False, b""
        try:
            check_request_target(self.parser.get_method(), self.url,
                                 [value for name, value in self.headers if name == b"host"])
        except RequestRefused as refusal:
            self._refusal = refusal
            raise
        self._body_left = _declared_length(self.headers)
        super().on_headers_complete()

    def on_body(self, body: bytes) -> None:
        self._body_in_feed += len(body)
        super().on_body(body)

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self._in_head, self._head_bytes, self._head_tail = True, 0, b""
        self._completed_in_feed = True

    def on_response_complete(self) -> None:
        if self._pending_refusal is not None and not self.pipeline:
            self.server_state.total_requests += 1
            refusal, self._pending_refusal = self._pending_refusal, None
            self._send_refusal(refusal)
            return
        super().on_response_complete()
