"""The tunnel against real guacd, x11vnc and sshd, through the whole ASGI stack.

What a browser sees: the tunnel uuid first, then guacd's first frames in whole
instructions; never the handshake and never the target's password. What an attacker
sees: no tunnel without the session cookie and a fresh, unused ticket, and a closed
session for anything outside the protocol.
"""

from __future__ import annotations

import asyncio
import re

import pytest
from channels.db import database_sync_to_async

from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import Browser, communicator, open_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


async def _connect(page, **kwargs) -> Browser:
    comm = communicator(page, **kwargs)
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected and subprotocol == "guacamole"
    return Browser(comm)


@pytest.fixture(params=["vnc", "ssh"])
def any_target(request):
    """Each kind of target, with the password the vault holds for it."""
    resource = request.getfixturevalue(f"{request.param}_resource")
    return resource, request.getfixturevalue(f"{request.param}_target").password


async def test_tunnel_opens_with_uuid_then_the_targets_first_frames(signed_in, any_target):
    resource, secret_password = any_target
    page = await database_sync_to_async(open_page)(signed_in, resource.slug)
    browser = await _connect(page)

    first = await browser.receive()
    assert first == f"0.,36.{page.session_id};"
    await browser.until(lambda op, args: op == "size" and args[0] == "0")
    await browser.until(lambda op, args: op in ("img", "png"))
    await browser.until(lambda op, args: op == "sync")

    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.state == "live" and stream.guacd_connection_id.startswith("$")
    assert all(op not in ("args", "ready", "select", "connect") for op, _ in browser.instructions)
    assert secret_password not in "".join(browser.received) + page.html

    await browser.send("0.,4.ping,13.1700000000000;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "1700000000000"))
    await browser.comm.disconnect()


async def test_a_ticket_works_once(signed_in, vnc_resource):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    browser = await _connect(page)
    await browser.until(lambda op, args: op == "sync")

    replay = await _connect(page)
    await replay.receive()
    _op, args = await replay.until(lambda op, args: op == "error")
    assert "expired or was already used" in args[0]
    await replay.until_closed()
    await browser.comm.disconnect()


async def test_an_expired_ticket_is_refused(signed_in, vnc_resource):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    await database_sync_to_async(
        lambda: StreamSession.objects.filter(pk=page.session_id).update(ticket_expires_at="2000-01-01T00:00Z"))()
    browser = await _connect(page)
    await browser.receive()
    _op, args = await browser.until(lambda op, args: op == "error")
    assert "expired" in args[0]


async def test_no_session_cookie_no_tunnel(signed_in, vnc_resource):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    comm = communicator(page, cookie="")
    connected, _ = await comm.connect(timeout=10)
    assert not connected


async def test_someone_elses_session_cannot_use_the_ticket(signed_in, vnc_resource, client_factory):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    other = await database_sync_to_async(client_factory)("mallory")
    browser = await _connect(page, cookie=other.cookies["sessionid"].value)
    await browser.receive()
    _op, args = await browser.until(lambda op, args: op == "error")
    assert "expired or was already used" in args[0]
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.state == "pending"  # the rightful owner can still use it


@pytest.mark.parametrize("bad", [
    "6.select,3.vnc;",  # the handshake is the relay's, never the browser's
    "7.connect,9.127.0.0.1;",
    "3.key,5.65307;",  # wrong arity
    "3.key,5.65307,1.1",  # a message ending inside an instruction
    "5.mouse,3.abc,1.1,1.0;",
    "0.,5.shell,2.ls;",
    "99999999.x;",
])
async def test_a_malformed_or_forbidden_browser_instruction_ends_the_session(signed_in, vnc_resource, bad):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    browser = await _connect(page)
    await browser.until(lambda op, args: op == "sync")
    await browser.send(bad)
    _op, args = await browser.until(lambda op, args: op == "error")
    assert "not allowed" in args[0]
    await browser.until_closed()
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert (stream.state, stream.end_reason, stream.ended_by) == ("ended", "protocol_error", "portal")
    assert await database_sync_to_async(
        AuditEvent.objects.filter(action="desktop.end", outcome="protocol_error").exists)()


async def test_bytes_each_way_and_the_end_are_recorded(signed_in, vnc_resource):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    browser = await _connect(page)
    await browser.until(lambda op, args: op == "sync")
    await browser.send("5.mouse,2.10,2.10,1.0;")
    await browser.send("10.disconnect;")
    await browser.until_closed()
    await asyncio.sleep(0)
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.end_reason == "closed" and stream.ended_by == "erin"
    assert stream.bytes_to_browser > 1000 and stream.bytes_from_browser > 0
    assert stream.ended_at is not None and stream.started_at is not None


def test_the_page_carries_no_inline_script_and_a_nonce_free_csp(signed_in, vnc_resource):
    page = open_page(signed_in, vnc_resource.slug)
    assert not re.search(r"<script(?![^>]*\bsrc=)", page.html)
    response = signed_in.get(f"/desktop/{vnc_resource.slug}/")
    assert "script-src 'self'" in response["Content-Security-Policy"]
    assert response["Cache-Control"].startswith("max-age=0")
