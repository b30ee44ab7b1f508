"""The isolated browser's one door out: CONNECT to the app's own origin, and nothing else."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

from streaming.isolation.bridges import Egress, serve_egress


async def _upstream() -> tuple[asyncio.base_events.Server, int]:
    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writer.write(b"hello from the portal:" + await reader.read(100))
        await writer.drain()
        writer.close()

    server = await asyncio.start_server(echo, "127.0.0.1", 0)
    return server, server.sockets[0].getsockname()[1]


async def _ask(path: Path, request: bytes) -> bytes:
    reader, writer = await asyncio.open_unix_connection(str(path))
    writer.write(request)
    await writer.drain()
    data = await asyncio.wait_for(reader.read(4096), 5)
    if data.startswith(b"HTTP/1.1 200"):
        writer.write(b"ping")
        await writer.drain()
        data += await asyncio.wait_for(reader.read(4096), 5)
    writer.close()
    return data


def test_only_the_apps_own_origin_can_be_reached(tmp_path):
    async def scenario() -> tuple[list[bytes], Egress]:
        upstream, port = await _upstream()
        egress = Egress("board.apps.localhost:8443", "127.0.0.1", port)
        socket_path = tmp_path / "egress.sock"
        server = await serve_egress(socket_path, egress, os.getuid())
        answers = [
            await _ask(socket_path, b"CONNECT board.apps.localhost:8443 HTTP/1.1\r\nHost: x\r\n\r\n"),
            await _ask(socket_path, b"CONNECT evil.example:443 HTTP/1.1\r\n\r\n"),
            await _ask(socket_path, b"CONNECT 127.0.0.1:5432 HTTP/1.1\r\n\r\n"),
            await _ask(socket_path, b"CONNECT localhost:8443 HTTP/1.1\r\n\r\n"),  # the portal itself
            await _ask(socket_path, b"GET http://board.apps.localhost:8443/ HTTP/1.1\r\n\r\n"),
        ]
        server.close()
        upstream.close()
        return answers, egress

    answers, egress = asyncio.run(scenario())
    assert answers[0].startswith(b"HTTP/1.1 200") and b"hello from the portal:ping" in answers[0]
    assert all(answer.startswith(b"HTTP/1.1 403") for answer in answers[1:])
    assert egress.opened == 1 and len(egress.refused) == 4
    assert oct((tmp_path / "egress.sock").stat().st_mode & 0o777) == "0o600"
