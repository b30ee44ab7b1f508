"""A live session under the tier's control: kill, pushed revocation, step-up, clipboard, recording.

Real guacd and x11vnc behind the tunnel; the pushes go through the channel layer exactly as
an admin's action or a signal sends them.
"""

from __future__ import annotations

import json
import time
from importlib import import_module
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from portal.audit.models import AuditEvent
from streaming.desktop import broker, groups
from streaming.desktop.models import StreamSession
from streaming.desktop.recordings import store_digest
from tests.conftest import sign_in
from tests.factories import UserFactory, totp_code
from tests.streaming.desktop.conftest import Browser, communicator, open_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


async def _live(client, resource) -> tuple[Browser, object]:
    page = await database_sync_to_async(open_page)(client, resource.slug)
    comm = communicator(page)
    connected, _ = await comm.connect(timeout=10)
    assert connected
    browser = Browser(comm)
    await browser.until(lambda op, args: op == "sync")
    return browser, page


async def _ended_row(session_id: str) -> StreamSession:
    return await database_sync_to_async(StreamSession.objects.get)(pk=session_id)


async def test_admin_kill_ends_the_session_within_two_seconds_and_is_audited(signed_in, vnc_resource):
    browser, page = await _live(signed_in, vnc_resource)
    admin = await database_sync_to_async(UserFactory)(username="ada", role="admin")
    stream = await database_sync_to_async(StreamSession.objects.select_related("user", "resource").get)(
        pk=page.session_id)
    started = time.monotonic()
    await database_sync_to_async(broker.kill_session)(stream, admin)
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    await browser.until_closed(timeout=2)
    assert time.monotonic() - started < 2
    assert "administrator (ada) ended this session" in args[0]
    row = await _ended_row(page.session_id)
    assert (row.state, row.end_reason, row.ended_by) == ("ended", "killed", "ada")
    actions = await database_sync_to_async(
        lambda: list(AuditEvent.objects.filter(action__in=["desktop.kill", "desktop.end"])
                     .values_list("action", "actor", "outcome")))()
    assert ("desktop.kill", "ada", "success") in actions and ("desktop.end", "ada", "killed") in actions


async def test_a_revoked_grant_of_the_resource_ends_the_session_at_once(signed_in, vnc_resource):
    browser, page = await _live(signed_in, vnc_resource)

    def unshare() -> None:
        vnc_resource.allowed_groups.clear()  # the m2m signal pushes a re-check

    started = time.monotonic()
    await database_sync_to_async(unshare)()
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    assert time.monotonic() - started < 2
    assert "not shared with you" in args[0]
    await browser.until_closed()
    row = await _ended_row(page.session_id)
    assert row.end_reason == "revoked"


async def test_signing_out_elsewhere_ends_the_session(signed_in, vnc_resource, employee):
    browser, _page = await _live(signed_in, vnc_resource)
    await database_sync_to_async(lambda: signed_in.post("/accounts/logout/"))()
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    assert "signed out" in args[0]


async def test_stale_mfa_holds_input_until_a_fresh_code_then_the_session_goes_on(signed_in, vnc_resource,
                                                                                 employee):
    browser, page = await _live(signed_in, vnc_resource)

    def age_mfa() -> None:
        session = import_module(settings.SESSION_ENGINE).SessionStore(page.cookie)
        session["mfa_time"] = int(time.time()) - 3600  # older than the tier's 900 s
        session.save()
        broker.push(groups.for_user(employee.pk), {"type": "desktop.recheck"})

    await database_sync_to_async(age_mfa)()
    _op, args = await browser.until(lambda op, args: op == "portal" and args[0] == "step_up", timeout=3)
    assert "needs a code confirmed in the last 15 min" in json.loads(args[1])["message"]

    def step_up() -> int:
        response = signed_in.post(f"/desktop/{vnc_resource.slug}/sessions/{page.session_id}/step-up/",
                                  {"otp_token": totp_code(employee.totp, offset_steps=1)})
        return response.status_code

    assert await database_sync_to_async(step_up)() == 200
    await browser.until(lambda op, args: op == "portal" and args[0] == "resumed", timeout=3)
    row = await _ended_row(page.session_id)
    assert row.state == "live"
    await browser.comm.disconnect()


async def test_paste_into_a_deny_tier_is_refused_and_audited_without_ending_the_session(signed_in,
                                                                                        vnc_resource):
    browser, page = await _live(signed_in, vnc_resource)
    await browser.send("9.clipboard,1.0,10.text/plain;")
    _op, args = await browser.until(lambda op, args: op == "ack" and args[0] == "0", timeout=3)
    assert args[2] == str(0x0303) and "not allowed" in args[1]
    await browser.send("4.blob,1.0,8.aGVsbG8=;")
    await browser.send("3.end,1.0;")
    await browser.send("0.,4.ping,1.1;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "1"))
    assert (await _ended_row(page.session_id)).state == "live"
    event = await database_sync_to_async(AuditEvent.objects.filter(action="desktop.clipboard.in").get)()
    assert event.outcome == "denied" and event.detail["direction"] == "in"
    await browser.comm.disconnect()


async def test_a_recording_tier_leaves_a_recording_with_its_digest_in_the_chain(signed_in, vnc_resource,
                                                                               desktop_settings):
    browser, page = await _live(signed_in, vnc_resource)
    await browser.send("5.mouse,3.100,3.100,1.0;")
    await browser.send("10.disconnect;")
    await browser.until_closed()
    path = Path(desktop_settings.PORTAL_RECORDINGS_DIR) / page.session_id
    deadline = time.monotonic() + 10
    while True:  # guacd closes the file a moment after the session
        state = await database_sync_to_async(store_digest)(page.session_id, settle_seconds=0.5)
        if state == "stored":
            break
        assert time.monotonic() < deadline, state
        time.sleep(0.2)
    content = path.read_bytes()
    assert b"4.size," in content and b"4.sync," in content
    row = await _ended_row(page.session_id)
    assert row.recording_size == len(content) and len(row.recording_sha256) == 64
    event = await database_sync_to_async(
        lambda: AuditEvent.objects.filter(action="desktop.recording", outcome="stored").latest("seq"))()
    assert event.detail["sha256"] == row.recording_sha256


async def test_an_admin_locking_the_user_ends_the_session_naming_who_and_why(signed_in, vnc_resource, employee):
    from portal.accounts.lockout import lock_user

    browser, page = await _live(signed_in, vnc_resource)
    started = time.monotonic()
    await database_sync_to_async(lock_user)(employee, by="ada", reason="laptop reported stolen")
    await browser.until(lambda op, args: op == "error", timeout=2)
    await browser.until_closed(timeout=2)
    assert time.monotonic() - started < 2
    row = await _ended_row(page.session_id)
    assert row.state == "ended" and row.end_reason == "revoked" and row.ended_by == "ada"
    events = await database_sync_to_async(
        lambda: list(AuditEvent.objects.filter(action__in=["account.lock", "desktop.end"])
                     .order_by("seq").values_list("action", "actor", "reasons")))()
    assert events[0][:2] == ("account.lock", "ada") and events[0][2][0]["message"] == "laptop reported stolen"
    assert events[-1][:2] == ("desktop.end", "ada")
