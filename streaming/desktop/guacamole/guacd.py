"""A connection to guacd: guapy's handshake over our own bounded reader, then raw relay.

guapy performs the handshake (``select`` -> ``args`` -> size/audio/video/image/timezone ->
``connect`` -> ``ready``) and settles the protocol version guacd offers first in ``args``;
we cap it at VERSION_1_3_0, the version guacd 1.3 speaks. After ``ready`` the relay wants
whole instructions as text, not objects, so this class is the transport guapy talks to and
also hands out raw frames from the same buffer: nothing guacd sent right after ``ready`` is
lost or parsed twice. Connection parameters (which carry target credentials) are never
logged here.

Browser input is queued (:meth:`GuacdConnection.queue_text`) and written by :meth:`flush`,
so the instructions of a burst leave in one ``write()``; the queue is bounded: past
:data:`WRITE_HIGH_WATER` bytes (queued plus unsent in the socket) the caller awaits
:meth:`drain`, and a slow guacd slows the browser down instead of growing memory.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import guapy
from guapy.protocol.version import VERSION_1_3_0

from streaming.desktop.guacamole.protocol import (
    GUACD_LIMITS,
    Instruction,
    InstructionReader,
    ProtocolError,
)

__all__ = ["PROTOCOL_VERSION", "GuacdConnection", "GuacdError", "Screen", "open_guacd", "tls_context"]

PROTOCOL_VERSION = VERSION_1_3_0
READ_SIZE = 64 * 1024
WRITE_HIGH_WATER = 64 * 1024
CLOSE_TIMEOUT = 1.0
DISCONNECT = b"10.disconnect;"


class GuacdError(RuntimeError):
    """guacd could not be reached, or refused or broke the handshake."""


@dataclass(frozen=True)
class Screen:
    """The browser's display as the handshake reports it."""

    width: int = 1024
    height: int = 768
    dpi: int = 96


class GuacdConnection:
    """One TCP connection to guacd (implements guapy's ``GuacamoleTransport``)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._reader = reader
        self._writer = writer
        self._stream = InstructionReader(GUACD_LIMITS)
        self.connection_id = ""
        self.bytes_in = 0  # from guacd
        self.bytes_out = 0  # to guacd
        self.writes = 0  # write() calls to guacd's socket (one per flush)
        self._queued: list[bytes] = []
        self._queued_bytes = 0
        self._closed = False

    # guapy transport port, used during the handshake only --------------------------------

    async def send(self, instruction: guapy.Instruction) -> None:
        await self.write_text(instruction.encode())

    async def receive(self) -> guapy.Instruction | None:
        while True:
            parsed = self._stream.pop()
            if parsed is not None:
                return guapy.Instruction(parsed.opcode, parsed.args)
            if not await self._read():
                return None

    async def close(self) -> None:
        """Send what is queued and ``disconnect``, then close (without waiting on a stuck guacd).

        guacd 1.3 does not notice that its peer closed the socket until its 15 s user
        timeout, and keeps the connection, its process and its recording going meanwhile;
        ``disconnect`` ends them at once.
        """
        if self._closed:
            return
        if self.connection_id and not self._writer.is_closing():
            self._queued.append(DISCONNECT)
            self._queued_bytes += len(DISCONNECT)
            with contextlib.suppress(ConnectionError, OSError, RuntimeError):
                self.flush()
        self._closed = True
        self._writer.close()
        try:
            await asyncio.wait_for(self._writer.wait_closed(), CLOSE_TIMEOUT)
        except TimeoutError:
            self._writer.transport.abort()  # guacd takes nothing: drop the socket, not the session's end
        except (ConnectionError, OSError):
            pass

    # relay ------------------------------------------------------------------------------

    async def read_frames(self) -> str | None:
        """The next run of whole instructions from guacd as text; None once guacd closed."""
        while True:
            text = self._stream.take_text()
            if text:
                return text
            if not await self._read():
                return None

    async def write_text(self, text: str) -> None:
        """Send whole instructions to guacd now; waits while guacd's socket is full."""
        self.queue_text(text)
        await self.drain()

    def queue_text(self, text: str) -> bool:
        """Queue whole instructions for the next :meth:`flush`; True once the caller must
        await :meth:`drain` (the queue and the socket's buffer hold WRITE_HIGH_WATER bytes)."""
        data = text.encode()
        self.bytes_out += len(data)
        self._queued.append(data)
        self._queued_bytes += len(data)
        return self.buffered >= WRITE_HIGH_WATER

    @property
    def buffered(self) -> int:
        """Bytes taken from the browser and not yet sent to guacd."""
        return self._queued_bytes + self._writer.transport.get_write_buffer_size()

    def flush(self) -> None:
        """Hand everything queued to the socket in one write (never blocks)."""
        if not self._queued or self._closed:
            return
        data = self._queued[0] if len(self._queued) == 1 else b"".join(self._queued)
        self._queued.clear()
        self._queued_bytes = 0
        self.writes += 1
        self._writer.write(data)

    async def drain(self) -> None:
        """Flush, then wait until guacd has taken enough of it (TCP backpressure)."""
        self.flush()
        await self._writer.drain()

    async def _read(self) -> bool:
        data = await self._reader.read(READ_SIZE)
        if not data:
            self._stream.finish()
            return False
        self.bytes_in += len(data)
        self._stream.feed(data)
        return True


def tls_context(ca_file: Path | None) -> ssl.SSLContext:
    """A client context for guacd started with ``-C``/``-K``: certificate and host name are
    verified (against ``ca_file``, else the system's trust store), TLS 1.2 at least."""
    context = ssl.create_default_context(cafile=str(ca_file) if ca_file else None)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    return context


async def open_guacd(
    host: str, port: int, *, protocol: str | None = None, join: str | None = None,
    parameters: Mapping[str, str], screen: Screen, timezone: str | None = "UTC",
    timeout: float = 10.0, tls: ssl.SSLContext | None = None,
) -> GuacdConnection:
    """Connect to guacd (over TLS when ``tls`` is given) and complete the handshake for a new
    ``protocol`` session, or to ``join`` a running connection by id (the admin's live view)."""
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=tls, server_hostname=host if tls else None), timeout)
    except ssl.SSLError as exc:
        why = getattr(exc, "verify_message", None) or exc.reason or type(exc).__name__
        raise GuacdError(f"guacd at {host}:{port} failed the TLS handshake ({why})") from exc
    except (OSError, TimeoutError) as exc:
        raise GuacdError(f"guacd at {host}:{port} cannot be reached ({type(exc).__name__})") from exc
    connection = GuacdConnection(reader, writer)
    handshake = guapy.GuacamoleHandshake(
        guapy.GuacamoleConfiguration(protocol=protocol, connection_id=join, parameters=parameters),
        guapy.ClientCapabilities(
            screen=guapy.ScreenSize(screen.width, screen.height, screen.dpi),
            audio_mimetypes=(), video_mimetypes=(),
            image_mimetypes=("image/png", "image/jpeg", "image/webp"), timezone=timezone,
        ),
        latest_supported_version=PROTOCOL_VERSION,
    )
    try:
        result = await asyncio.wait_for(handshake.perform(connection), timeout)
    except (guapy.GuapyError, ProtocolError, OSError, TimeoutError) as exc:
        await connection.close()
        # guapy's messages name the step that failed, never the parameters' values.
        raise GuacdError(f"guacd handshake failed: {type(exc).__name__}: {exc}") from exc
    if result.protocol_version != PROTOCOL_VERSION:
        await connection.close()
        raise GuacdError(f"guacd offered {result.protocol_version}, not {PROTOCOL_VERSION}")
    connection.connection_id = result.connection_id
    return connection


def error_instruction(message: str, status: int) -> str:
    """The ``error`` instruction the browser client shows as the reason the session ended."""
    return Instruction("error", (message, str(status))).encode()
