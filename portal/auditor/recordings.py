"""Serving a desktop session's recording to auditors: where it is, and which bytes were asked for.

The file's path comes from the session's id alone (a UUID, rendered by :mod:`uuid`), inside
``PORTAL_RECORDINGS_DIR`` where guacd writes it (``recording-name`` = the session id, see
:mod:`streaming.desktop.parameters`): nothing a browser sends reaches the file system.
Byte ranges (RFC 9110 §14) are parsed by a pure function, so the player can load a long
recording in pieces and show progress; one ``bytes=`` range per request, which is all the
player asks for.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from asgiref.sync import sync_to_async
from django.conf import settings
from django.http import FileResponse

__all__ = [
    "ByteRange", "RangeNotSatisfiable", "RecordingResponse", "parse_range", "recording_path",
    "recording_response",
]

_CHUNK = 256 * 1024
_MAX_DIGITS = 18  # beyond any file size; keeps a hostile header from costing anything


class RangeNotSatisfiable(ValueError):
    """The ``Range`` header asks for bytes the file does not have, or cannot be read."""


@dataclass(frozen=True)
class ByteRange:
    """Bytes ``start`` to ``end`` inclusive (as in ``Content-Range``)."""

    start: int
    end: int

    @property
    def length(self) -> int:
        return self.end - self.start + 1

    def content_range(self, size: int) -> str:
        return f"bytes {self.start}-{self.end}/{size}"


def _number(text: str) -> int:
    text = text.strip()
    if not text.isdigit() or not text.isascii() or len(text) > _MAX_DIGITS:
        raise RangeNotSatisfiable(f"not a byte position: {text[:20]!r}")
    return int(text)


def parse_range(header: str, size: int) -> ByteRange | None:
    """The one range ``header`` asks for in a file of ``size`` bytes; None = send it all.

    A unit other than ``bytes`` is ignored (the whole file), as RFC 9110 allows. A malformed
    ``bytes`` range, several ranges, or one that starts past the end raise
    :class:`RangeNotSatisfiable` (answered 416).
    """
    header = header.strip()
    if not header:
        return None
    unit, sep, spec = header.partition("=")
    if unit.strip().lower() != "bytes":
        return None
    if not sep or "," in spec:
        raise RangeNotSatisfiable("one byte range, please")
    first, dash, last = spec.partition("-")
    if not dash:
        raise RangeNotSatisfiable("a range needs a dash")
    if not first.strip():  # suffix: the last N bytes
        count = _number(last)
        if count == 0 or size == 0:
            raise RangeNotSatisfiable("an empty suffix range")
        return ByteRange(max(0, size - count), size - 1)
    start = _number(first)
    end = _number(last) if last.strip() else size - 1
    if end < start or start >= size:
        raise RangeNotSatisfiable(f"bytes {start}-{end} are not in a file of {size} bytes")
    return ByteRange(start, min(end, size - 1))


def recording_path(session_id: uuid.UUID | str) -> Path | None:
    """The recording guacd wrote for session ``session_id``, if it is there (a regular file)."""
    directory = Path(settings.PORTAL_RECORDINGS_DIR).resolve()
    path = directory / str(uuid.UUID(str(session_id)))
    if path.parent != directory or path.is_symlink() or not path.is_file():
        return None
    return path


class _Window:
    """``length`` bytes of an open file from ``start``: what FileResponse reads from."""

    def __init__(self, handle: BinaryIO, start: int, length: int) -> None:
        handle.seek(start)
        self._handle = handle
        self._left = length

    def read(self, size: int = -1) -> bytes:
        if self._left <= 0:
            return b""
        block = self._handle.read(self._left if size < 0 else min(size, self._left))
        self._left -= len(block)
        return block

    def close(self) -> None:
        self._handle.close()


class RecordingResponse(FileResponse):
    """A FileResponse that, under ASGI, reads one block at a time off the event loop.

    Django's own ASGI path would read a synchronous file response into memory whole before
    sending the first byte; a recording can be hundreds of megabytes.
    """

    block_size = _CHUNK

    async def __aiter__(self) -> AsyncIterator[bytes]:  # type: ignore[override]
        blocks = iter(self.streaming_content)
        step = sync_to_async(next, thread_sensitive=False)
        while (block := await step(blocks, b"")) != b"":
            yield block


def recording_response(path: Path, range_header: str, *, etag: str = "",
                       if_range: str = "") -> RecordingResponse:
    """200 with the whole file, 206 with the asked range, or 416 (``Content-Range: */size``).

    ``If-Range`` that does not match ``etag`` turns a range request into a whole-file one.
    """
    size = path.stat().st_size
    if if_range and if_range.strip() != etag:
        range_header = ""
    try:
        wanted = parse_range(range_header, size)
    except RangeNotSatisfiable:
        response = RecordingResponse(iter(()), status=416, content_type="application/octet-stream")
        response["Content-Range"] = f"bytes */{size}"
        response["Accept-Ranges"] = "bytes"
        return response
    handle = path.open("rb")
    window = wanted or ByteRange(0, size - 1)
    response = RecordingResponse(_Window(handle, window.start, window.length),
                                 status=206 if wanted else 200, content_type="application/octet-stream")
    response["Content-Length"] = str(window.length if size else 0)
    if wanted:
        response["Content-Range"] = wanted.content_range(size)
    response["Accept-Ranges"] = "bytes"
    if etag:
        response["ETag"] = etag
    response["X-Content-Type-Options"] = "nosniff"
    return response
