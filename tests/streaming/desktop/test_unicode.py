"""An emoji in a clipboard text or a file name passes the real tunnel and the session goes on.

guacamole-common-js 1.5.0 counts lengths in UTF-16 code units (an emoji is 2), guacd in code
points (an emoji is 1): the relay reads the browser's counting and hands guacd its own.
"""

from __future__ import annotations

import asyncio
import base64
import time

import pytest
from channels.db import database_sync_to_async

from portal.audit.models import AuditEvent
from streaming.desktop.guacamole.protocol import encode_utf16
from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import open_live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


@pytest.fixture
def open_tier(stream_tier):
    stream_tier.clipboard_in = "allow"
    stream_tier.file_transfer = "allow"
    stream_tier.save()
    return stream_tier


def _b64(text: str) -> str:
    return base64.b64encode(text.encode()).decode()


async def _until(browser, predicate, *, since: int = 0, timeout: float = 10) -> tuple:
    """Like ``Browser.until`` from instruction ``since``, answering guacd's ``sync`` as a
    browser does (guacd waits for it before it sends more)."""
    deadline = time.monotonic() + timeout
    seen = since
    while True:
        for opcode, args in browser.instructions[seen:]:
            if predicate(opcode, args):
                return opcode, args
            if opcode == "sync":
                await browser.send(encode_utf16("sync", args[0]))
        seen = len(browser.instructions)
        assert time.monotonic() < deadline, "not seen in time"
        await browser.send("0.,4.ping,1.0;")
        await browser.until(lambda op, args: op == "" and args == ("ping", "0"))
        await asyncio.sleep(0.1)


async def test_an_emoji_in_a_pasted_text_and_an_uploaded_file_name_reaches_the_target(
        signed_in, open_tier, ssh_resource, ssh_target):
    browser, page = await open_live(signed_in, ssh_resource)
    name = "report 😀 ü.txt"
    target_file = ssh_target.home / name
    target_file.unlink(missing_ok=True)

    # What guacamole-common-js sends (its own UTF-16 counting, as encode_utf16 writes it).
    await browser.send(encode_utf16("clipboard", 0, "text/plain"))
    await browser.send(encode_utf16("blob", 0, _b64("héllo 😀 wörld")) + encode_utf16("end", 0))
    await _until(browser, lambda op, args: op == "filesystem")  # guacd's SFTP is ready
    await browser.send(encode_utf16("file", 1, "text/plain", name))
    _op, args = await _until(browser, lambda op, args: op == "ack" and args[0] == "1")
    assert args[2] == "0", args  # guacd opened the file over SFTP: it read the name whole
    acks = len(browser.instructions)
    await browser.send(encode_utf16("blob", 1, _b64("contents 🙂\n")))
    await _until(browser, lambda op, args: op == "ack" and args[0] == "1", since=acks)
    await browser.send(encode_utf16("end", 1))
    await browser.send("0.,4.ping,1.2;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "2"))

    for _ in range(50):
        if target_file.exists() and target_file.read_text(encoding="utf-8") == "contents 🙂\n":
            break
        await browser.send("0.,4.ping,1.3;")
        await browser.until(lambda op, args: op == "" and args == ("ping", "3"))
    assert target_file.read_text(encoding="utf-8") == "contents 🙂\n"
    target_file.unlink()

    assert not browser.closed
    row = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert row.state == "live" and not row.end_reason
    audited = await database_sync_to_async(
        lambda: {e.action: e.detail for e in AuditEvent.objects.filter(action__startswith="desktop.")})()
    assert audited["desktop.file.transfer"]["name"] == name
    assert audited["desktop.clipboard.in"]["size"] == len("héllo 😀 wörld".encode())
    await browser.comm.disconnect()
