"""The only ways into and out of a slot, run by its session host (asyncio).

- The VNC bridge listens on a TCP port of the host's address and passes each connection to
  the slot's ``vnc.sock``: guacd reaches the slot's display, nobody reaches anything else in
  it (the slot has no network of its own).
- The egress door listens on the slot's ``egress.sock`` and is an HTTP ``CONNECT`` proxy that
  allows exactly one authority, the app's own origin, which it connects to the portal's
  listener. Anything else is refused with 403 and counted: the isolated browser reaches the
  app through the portal's proxy, as the user, and nowhere else.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Egress", "pipe", "serve_egress", "serve_vnc_bridge"]

log = logging.getLogger(__name__)
_CHUNK = 64 * 1024
_MAX_HEAD = 8 * 1024


async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    """Copy until EOF, waiting for the other side to take each piece (backpressure, no drops)."""
    try:
        while chunk := await reader.read(_CHUNK):
            writer.write(chunk)
            await writer.drain()
    except (ConnectionError, OSError):
        pass
    finally:
        with contextlib.suppress(Exception):
            writer.close()


async def _splice(a: tuple[asyncio.StreamReader, asyncio.StreamWriter],
                  b: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
    await asyncio.gather(pipe(a[0], b[1]), pipe(b[0], a[1]))


async def serve_vnc_bridge(address: str, port: int, socket_path: Path) -> asyncio.base_events.Server:
    """``address:port`` -> the slot's VNC socket."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            inner = await asyncio.open_unix_connection(str(socket_path))
        except OSError:
            writer.close()
            return
        await _splice((reader, writer), inner)

    return await asyncio.start_server(handle, address, port, reuse_address=True)


@dataclass
class Egress:
    """One browser slot's door: the authority it may reach and where that really is."""

    allowed: str  # host:port exactly as the browser asks for it, lower case
    connect_host: str
    connect_port: int
    refused: list[str] = field(default_factory=list)  # what the slot asked for in vain
    opened: int = 0


async def _read_head(reader: asyncio.StreamReader) -> bytes:
    head = b""
    while b"\r\n\r\n" not in head:
        piece = await reader.read(1024)
        if not piece:
            return b""
        head += piece
        if len(head) > _MAX_HEAD:
            return b""
    return head


async def serve_egress(socket_path: Path, egress: Egress, uid: int) -> asyncio.base_events.Server:
    """The slot's ``egress.sock``: ``CONNECT <allowed>`` and nothing else."""
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await _read_head(reader)
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split()
        if len(parts) != 3 or parts[0] != "CONNECT" or parts[1].lower() != egress.allowed:
            egress.refused.append(request_line[:200])
            writer.write(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
            with contextlib.suppress(Exception):
                await writer.drain()
                writer.close()
            return
        rest = head.split(b"\r\n\r\n", 1)[1]
        try:
            upstream = await asyncio.open_connection(egress.connect_host, egress.connect_port)
        except OSError:
            writer.write(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            writer.close()
            return
        egress.opened += 1
        writer.write(b"HTTP/1.1 200 Connection established\r\n\r\n")
        if rest:
            upstream[1].write(rest)
        await _splice((reader, writer), upstream)

    with contextlib.suppress(FileNotFoundError):
        socket_path.unlink()
    server = await asyncio.start_unix_server(handle, str(socket_path))
    os.chown(socket_path, uid, uid)
    os.chmod(socket_path, 0o600)
    return server
