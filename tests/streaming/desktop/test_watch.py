"""An admin's read-only view of a live session, against real guacd and x11vnc.

The view joins the running guacd connection by its id with ``read-only`` set; the relay
drops whatever input the watcher's browser sends, with an audit, and the watched user
goes on working. Only admins who manage sessions get a watch ticket, bound to them.
"""

from __future__ import annotations

import re

import pytest
from channels.db import database_sync_to_async

from portal.asgi import application
from portal.audit.models import AuditEvent
from streaming.desktop import broker
from streaming.desktop.models import StreamSession, StreamWatch
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tests.streaming.desktop.conftest import Browser, open_live
from tests.streaming.desktop.wsclient import WebsocketCommunicator

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


def _admin_client(username: str = "ada", role: str = "admin"):
    user = UserFactory(username=username, role=role)
    user.totp = enrol_totp(user)
    client = https_client()
    sign_in(client, user)
    return client


def _watch_page(admin, session_id: str) -> tuple[str, str, str]:
    response = admin.get(f"/desktop/-/sessions/{session_id}/watch/")
    assert response.status_code == 200, response.content[:300]
    html = response.content.decode()
    return (re.search(r'data-tunnel="([^"]+)"', html)[1], re.search(r'data-ticket="([^"]+)"', html)[1], html)


def _watcher(tunnel: str, ticket: str, cookie: str) -> WebsocketCommunicator:
    return WebsocketCommunicator(
        application, f"{tunnel}?ticket={ticket}&width=800&height=600&dpi=96", subprotocols=["guacamole"],
        headers=[(b"cookie", f"sessionid={cookie}".encode()), (b"origin", b"https://localhost"),
                 (b"host", b"localhost")],
    )


async def _events(action: str) -> list[AuditEvent]:
    return await database_sync_to_async(lambda: list(AuditEvent.objects.filter(action=action).order_by("seq")))()


async def test_an_admin_watches_a_live_session_read_only_and_the_user_keeps_working(signed_in, vnc_resource,
                                                                                   vnc_target):
    target, page = await open_live(signed_in, vnc_resource)
    admin = await database_sync_to_async(_admin_client)()
    live = await database_sync_to_async(lambda: admin.get("/desktop/-/live/").content.decode())()
    assert f"/desktop/-/sessions/{page.session_id}/watch/" in live
    tunnel, ticket, html = await database_sync_to_async(_watch_page)(admin, page.session_id)
    assert "read-only" in html and "data-watching=\"erin\"" in html

    comm = _watcher(tunnel, ticket, admin.cookies["sessionid"].value)
    connected, subprotocol = await comm.connect(timeout=10)
    assert connected and subprotocol == "guacamole"
    watcher = Browser(comm)
    await watcher.until(lambda op, args: op in ("img", "png"))
    await watcher.until(lambda op, args: op == "sync")
    assert all(op not in ("args", "ready", "select", "connect") for op, _ in watcher.instructions)

    # Input from the watcher is dropped by the relay (and guacd would ignore it too).
    await watcher.send("3.key,5.65307,1.1;3.key,5.65307,1.0;")
    await watcher.send("5.mouse,2.10,2.10,1.1;")
    await watcher.send("9.clipboard,1.0,10.text/plain;")
    _op, args = await watcher.until(lambda op, args: op == "ack" and args[0] == "0", timeout=3)
    assert args[2] == str(0x0303) and "read-only" in args[1]
    await watcher.send("0.,4.ping,1.7;")
    await watcher.until(lambda op, args: op == "" and args == ("ping", "7"))
    assert not watcher.closed

    # The watched user is unaffected: still live, input accepted, frames still arrive.
    await target.send("5.mouse,3.120,3.120,1.0;")
    await target.send("0.,4.ping,1.3;")
    await target.until(lambda op, args: op == "" and args == ("ping", "3"))
    await target.until(lambda op, args: op == "sync")
    assert not target.closed
    row = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert row.state == "live" and not row.end_reason

    await comm.disconnect()
    assert not target.closed
    assert (await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)).state == "live"
    refused = await _events("desktop.watch.input")
    assert {e.detail["opcode"] for e in refused} == {"key", "mouse", "clipboard"}
    assert all(e.actor == "ada" and e.outcome == "refused" for e in refused)
    watch_events = await _events("desktop.watch")
    assert [(e.outcome, e.actor) for e in watch_events] == [("start", "ada"), ("end", "ada")]
    assert watch_events[0].detail["session"] == page.session_id and watch_events[0].detail["user"] == "erin"
    assert watch_events[1].detail["refused_input"] == 4
    assert vnc_target.password not in "".join(watcher.received) + html

    await target.send("0.,4.ping,1.4;")
    await target.until(lambda op, args: op == "" and args == ("ping", "4"))
    await target.comm.disconnect()


async def test_an_employee_cannot_watch_or_use_an_admins_watch_ticket(signed_in, vnc_resource):
    target, page = await open_live(signed_in, vnc_resource)
    response = await database_sync_to_async(lambda: signed_in.get(f"/desktop/-/sessions/{page.session_id}/watch/"))()
    assert response.status_code == 403
    admin = await database_sync_to_async(_admin_client)()
    tunnel, ticket, _html = await database_sync_to_async(_watch_page)(admin, page.session_id)

    comm = _watcher(tunnel, ticket, page.cookie)  # the employee's cookie, the admin's ticket
    connected, _ = await comm.connect(timeout=10)
    assert connected
    intruder = Browser(comm)
    _op, args = await intruder.until(lambda op, args: op == "error", timeout=5)
    assert args[1] == str(0x0301)
    await intruder.until_closed()
    assert not await _events("desktop.watch")
    assert not target.closed
    await target.comm.disconnect()


async def test_killing_the_watched_session_ends_the_view_too(signed_in, vnc_resource):
    target, page = await open_live(signed_in, vnc_resource)
    admin = await database_sync_to_async(_admin_client)()
    tunnel, ticket, _html = await database_sync_to_async(_watch_page)(admin, page.session_id)
    comm = _watcher(tunnel, ticket, admin.cookies["sessionid"].value)
    assert (await comm.connect(timeout=10))[0]
    watcher = Browser(comm)
    await watcher.until(lambda op, args: op == "sync")

    stream = await database_sync_to_async(StreamSession.objects.select_related("user", "resource").get)(
        pk=page.session_id)
    ada = await database_sync_to_async(UserFactory)(username="ada")
    await database_sync_to_async(broker.kill_session)(stream, ada)
    await target.until_closed(timeout=3)
    await watcher.until_closed(timeout=3)
    row = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert row.end_reason == "killed"
    watch = await database_sync_to_async(StreamWatch.objects.get)(stream_id=page.session_id)
    assert watch.ended_at is not None


async def test_locking_the_watched_user_ends_the_admins_view_within_two_seconds(signed_in, vnc_resource,
                                                                               employee):
    import time

    from portal.accounts.lockout import lock_user

    target, page = await open_live(signed_in, vnc_resource)
    admin = await database_sync_to_async(_admin_client)()
    tunnel, ticket, _html = await database_sync_to_async(_watch_page)(admin, page.session_id)
    comm = _watcher(tunnel, ticket, admin.cookies["sessionid"].value)
    assert (await comm.connect(timeout=10))[0]
    watcher = Browser(comm)
    await watcher.until(lambda op, args: op == "sync")

    started = time.monotonic()
    await database_sync_to_async(lock_user)(employee, by="ada", reason="laptop reported stolen")
    await target.until_closed(timeout=3)
    _op, args = await watcher.until(lambda op, args: op == "error", timeout=2)
    await watcher.until_closed(timeout=2)
    assert time.monotonic() - started < 2
    assert args[0].startswith("The session you were watching ended: Access ended")
    watch = await database_sync_to_async(StreamWatch.objects.get)(stream_id=page.session_id)
    assert watch.ended_at is not None and watch.end_message == args[0]
    assert [e.outcome for e in await _events("desktop.watch")] == ["start", "end"]


def test_the_periodic_check_ends_a_view_of_a_session_that_is_no_longer_live(vnc_resource, employee):
    from django.utils import timezone

    from streaming.desktop.reauth import reauthorize_watcher

    ada = UserFactory(username="ada", role="admin")
    stream = StreamSession.objects.create(user=employee, resource=vnc_resource, tier_name="high",
                                          state="ended", ended_at=timezone.now())
    verdict = reauthorize_watcher(ada.pk, "no-such-session", stream.pk)
    assert verdict.outcome == "end" and "watching has ended" in verdict.message
