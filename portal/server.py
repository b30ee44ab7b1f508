"""How uvicorn speaks HTTP for the portal: its httptools protocol, with writes coalesced.

uvicorn writes a response's head and its body with two separate ``transport.write`` calls,
so every small response costs two ``send`` system calls and leaves as two TCP segments. For
the identity-aware proxy that is a tenth of a worker's time (docs/decisions/0015).
:class:`PortalHttpProtocol` hands uvicorn a transport that gathers what is written during
one turn of the event loop and sends it in one call at the start of the next turn — the
same bytes, in the same order, microseconds later. WebSockets upgraded from such a
connection (the desktop tunnel, proxied sockets) keep the same transport and gain the same.

Run the portal with it: ``uvicorn portal.asgi:application --http portal.server:PortalHttpProtocol``
(``make demo``, the Dockerfile, the benchmarks and the tests all do).
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

__all__ = ["HTTP_PROTOCOL", "CoalescingTransport", "PortalHttpProtocol"]

HTTP_PROTOCOL = "portal.server:PortalHttpProtocol"  # uvicorn's --http value


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
    """uvicorn's httptools protocol on a :class:`CoalescingTransport`."""

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(CoalescingTransport(transport, self.loop))  # type: ignore[arg-type]
