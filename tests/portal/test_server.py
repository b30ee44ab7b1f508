"""The portal's HTTP protocol: what is written in one loop turn leaves in one write."""

from __future__ import annotations

import asyncio

from portal.server import CoalescingTransport


class _Recorder:
    """Stands in for the socket transport underneath, to count the writes that reach it."""

    def __init__(self) -> None:
        self.writes: list[bytes] = []
        self.closed = False
        self.aborted = False

    def write(self, data: bytes) -> None:
        self.writes.append(data)

    def is_closing(self) -> bool:
        return self.closed or self.aborted

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True

    def get_write_buffer_size(self) -> int:
        return 0

    def get_extra_info(self, name: str, default: object = None) -> object:
        return {"peername": ("127.0.0.1", 1)}.get(name, default)


async def test_a_head_and_body_written_in_one_turn_leave_as_one_write_in_order():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\n")
    transport.write(bytearray(b"hel"))
    transport.write(memoryview(b"lo"))
    assert below.writes == [] and transport.get_write_buffer_size() == 43
    await asyncio.sleep(0)
    assert below.writes == [b"HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"]
    transport.write(b"next turn")
    await asyncio.sleep(0)
    assert below.writes[1:] == [b"next turn"]


async def test_closing_sends_what_is_pending_first_and_aborting_drops_it():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"last words")
    transport.close()
    assert below.writes == [b"last words"] and below.closed

    other = _Recorder()
    transport = CoalescingTransport(other, asyncio.get_running_loop())  # type: ignore[arg-type]
    transport.write(b"never sent")
    transport.abort()
    await asyncio.sleep(0)
    assert other.writes == [] and other.aborted


async def test_everything_else_is_the_transport_underneath():
    below = _Recorder()
    transport = CoalescingTransport(below, asyncio.get_running_loop())  # type: ignore[arg-type]
    assert transport.get_extra_info("peername") == ("127.0.0.1", 1)


async def test_a_real_connection_receives_every_byte_in_order():
    received = bytearray()
    done = asyncio.Event()

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        received.extend(await reader.read())  # until the client closes
        done.set()
        writer.close()

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    loop = asyncio.get_running_loop()
    real, _ = await loop.create_connection(asyncio.Protocol, "127.0.0.1", port)
    transport = CoalescingTransport(real, loop)  # type: ignore[arg-type]
    expected = b"".join(bytes([i % 256]) * 1000 for i in range(300))
    for i in range(300):
        transport.write(bytes([i % 256]) * 1000)
        if i % 7 == 0:
            await asyncio.sleep(0)  # some writes in later turns
    transport.close()
    await asyncio.wait_for(done.wait(), 5)
    server.close()
    assert bytes(received) == expected
