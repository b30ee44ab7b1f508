"""Browser input to guacd: a burst leaves in one write, at once, and a slow guacd bounds the queue.

The flush rule and the bound are tested without Channels (an asyncio queue stands for the
ASGI ``receive``, a socket that reads nothing for a stalled guacd); the burst through the
whole stack against the real guacd.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket

import pytest
from channels.db import database_sync_to_async

from streaming.desktop.guacamole.guacd import WRITE_HIGH_WATER, GuacdConnection
from streaming.desktop.models import StreamSession
from streaming.desktop.relay import FlushBeforeWaiting
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import open_live

# -- the flush rule ---------------------------------------------------------------------------


async def test_queued_messages_are_taken_without_a_flush_and_the_flush_comes_before_the_wait():
    messages: asyncio.Queue[str] = asyncio.Queue()
    flushes: list[int] = []
    for text in ("a", "b", "c"):
        messages.put_nowait(text)

    async def receive() -> str:
        return await FlushBeforeWaiting(messages.get(), lambda: flushes.append(messages.qsize()))

    assert [await receive() for _ in range(3)] == ["a", "b", "c"]
    assert flushes == []  # a burst in progress: nothing written yet
    waiting = asyncio.create_task(receive())
    await asyncio.sleep(0)
    assert flushes == [0] and not waiting.done()  # flushed as soon as the next message is not there
    messages.put_nowait("d")
    assert await waiting == "d"
    assert flushes == [0]


async def test_a_receive_cancelled_while_waiting_is_cancelled_and_loses_no_message():
    messages: asyncio.Queue[str] = asyncio.Queue()
    waiting = asyncio.create_task(_receive(messages))
    await asyncio.sleep(0)
    waiting.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiting
    messages.put_nowait("next")
    assert await _receive(messages) == "next"


async def _receive(messages: asyncio.Queue[str]) -> str:
    return await FlushBeforeWaiting(messages.get(), lambda: None)


# -- the bound ------------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _stalled_guacd():
    """A peer that accepts and reads nothing until told to; yields (connection, start_reading)."""
    accepted: asyncio.Future = asyncio.get_running_loop().create_future()

    async def on_connect(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        accepted.set_result((reader, writer))

    server = await asyncio.start_server(on_connect, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16 * 1024)
    peer_reader, peer_writer = await accepted
    peer_writer.transport.pause_reading()
    received = bytearray()

    async def start_reading() -> bytes:
        peer_writer.transport.resume_reading()
        while chunk := await asyncio.wait_for(peer_reader.read(1 << 20), 5):
            received.extend(chunk)
            if received.endswith(b"3.end;"):
                break
        return bytes(received)

    connection = GuacdConnection(reader, writer)
    try:
        yield connection, start_reading
    finally:
        writer.close()
        peer_writer.close()
        server.close()


async def test_a_burst_of_input_leaves_in_one_write():
    async with _stalled_guacd() as (guacd, start_reading):
        for _ in range(50):
            assert guacd.queue_text("5.mouse,2.10,2.20,1.0;") is False
        guacd.queue_text("3.end;")
        assert guacd.writes == 0
        guacd.flush()
        assert guacd.writes == 1
        assert await start_reading() == b"5.mouse,2.10,2.20,1.0;" * 50 + b"3.end;"


async def test_a_guacd_that_reads_nothing_holds_the_browser_back_and_the_buffer_stays_bounded():
    key = "3.key,5.65507,1.1;" * 1000  # ~18 KB, one browser message's worth of typing
    async with _stalled_guacd() as (guacd, start_reading):
        messages = 0
        while True:  # what the relay does with each browser message
            messages += 1
            assert messages < 2000, "guacd's socket never filled up"
            if guacd.queue_text(key):
                drained = asyncio.create_task(guacd.drain())
                await asyncio.sleep(0.2)
                if not drained.done():
                    break  # the relay waits here, so it reads no more from the browser
        assert guacd.buffered < 2 * WRITE_HIGH_WATER + len(key)
        guacd.queue_text("3.end;")
        received = asyncio.create_task(start_reading())
        await asyncio.wait_for(drained, 5)
        guacd.flush()
        assert len(await received) == messages * len(key) + len("3.end;")  # nothing dropped


# -- through the tunnel ------------------------------------------------------------------------


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


@pytest.mark.django_db(transaction=True)
@pytest.mark.timeout(60)
async def test_a_burst_of_browser_messages_reaches_guacd_in_one_write(signed_in, vnc_resource, monkeypatch):
    flushed: list[int] = []
    real_flush = GuacdConnection.flush

    def counting_flush(self: GuacdConnection) -> None:
        if self._queued:
            flushed.append(len(self._queued))
        real_flush(self)

    monkeypatch.setattr(GuacdConnection, "flush", counting_flush)
    browser, page = await open_live(signed_in, vnc_resource)
    flushed.clear()
    burst = [f"5.mouse,3.{100 + i},3.100,1.0;" for i in range(20)]
    for text in burst:  # all queued before the consumer runs again: one burst, as from one read
        await browser.send(text)
    await browser.send("0.,4.ping,1.7;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "7"))
    await asyncio.sleep(0.1)
    assert flushed == [20]  # twenty messages, one write
    await browser.send("10.disconnect;")
    await browser.until_closed()
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.bytes_from_browser >= sum(len(t) for t in burst)
