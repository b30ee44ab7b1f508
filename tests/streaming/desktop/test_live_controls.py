"""A live session under the tier's control: kill, pushed revocation, step-up, clipboard, recording.

Real guacd and x11vnc behind the tunnel; the pushes go through the channel layer exactly as
an admin's action or a signal sends them.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from importlib import import_module
from pathlib import Path

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from portal.audit.models import AuditEvent
from streaming.desktop import broker, groups
from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.factories import UserFactory, totp_code
from tests.streaming.desktop.conftest import open_live, wait_for_digest

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


async def _ended_row(session_id: str) -> StreamSession:
    return await database_sync_to_async(StreamSession.objects.get)(pk=session_id)


async def test_admin_kill_ends_the_session_within_two_seconds_and_is_audited(signed_in, vnc_resource):
    browser, page = await open_live(signed_in, vnc_resource)
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
    browser, page = await open_live(signed_in, vnc_resource)

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
    browser, _page = await open_live(signed_in, vnc_resource)
    await database_sync_to_async(lambda: signed_in.post("/accounts/logout/"))()
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    assert "signed out" in args[0]


async def test_stale_mfa_holds_input_until_a_fresh_code_then_the_session_goes_on(signed_in, vnc_resource,
                                                                                 employee):
    browser, page = await open_live(signed_in, vnc_resource)

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
    browser, page = await open_live(signed_in, vnc_resource)
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
    browser, page = await open_live(signed_in, vnc_resource)
    await browser.send("5.mouse,3.100,3.100,1.0;")
    await browser.send("10.disconnect;")
    await browser.until_closed()
    path = Path(desktop_settings.PORTAL_RECORDINGS_DIR) / page.session_id
    await wait_for_digest(page.session_id)
    content = path.read_bytes()
    assert b"4.size," in content and b"4.sync," in content
    row = await _ended_row(page.session_id)
    assert row.recording_size == len(content) and len(row.recording_sha256) == 64
    event = await database_sync_to_async(
        lambda: AuditEvent.objects.filter(action="desktop.recording", outcome="stored").latest("seq"))()
    assert event.detail["sha256"] == row.recording_sha256


async def test_an_admin_locking_the_user_ends_the_session_naming_who_and_why(signed_in, vnc_resource, employee):
    from portal.accounts.lockout import lock_user

    browser, page = await open_live(signed_in, vnc_resource)
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


async def _tighten(tier, **fields) -> None:
    def save() -> None:
        for name, value in fields.items():
            setattr(tier, name, value)
        tier.save()
    await database_sync_to_async(save)()


async def test_an_idle_session_is_warned_then_ended_with_its_message(signed_in, vnc_resource, stream_tier,
                                                                     settings):
    settings.PORTAL_DESKTOP_WARN_SECONDS = 2
    await _tighten(stream_tier, idle_seconds=3)
    browser, page = await open_live(signed_in, vnc_resource)
    _op, args = await browser.until(lambda op, args: op == "portal" and args[0] == "warning", timeout=5)
    assert "No input for a while" in json.loads(args[1])["message"]
    _op, args = await browser.until(lambda op, args: op == "error", timeout=5)
    assert args == ("The session was idle for too long and was closed.", str(0x020A))
    await browser.until_closed()
    row = await _ended_row(page.session_id)
    assert (row.state, row.end_reason, row.ended_by) == ("ended", "idle", "portal")
    assert row.end_message == args[0]
    event = await database_sync_to_async(AuditEvent.objects.filter(action="desktop.end").get)()
    assert event.outcome == "idle" and event.reasons[0]["message"] == args[0]


async def test_input_keeps_an_idle_limited_session_open(signed_in, vnc_resource, stream_tier, settings):
    settings.PORTAL_DESKTOP_WARN_SECONDS = 1
    await _tighten(stream_tier, idle_seconds=3)
    browser, page = await open_live(signed_in, vnc_resource)
    for step in range(6):  # 3 s of input, more than the idle limit
        await browser.send(f"5.mouse,2.{10 + step},2.10,1.0;")
        await asyncio.sleep(0.5)
    await browser.send("0.,4.ping,1.9;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "9"))
    assert (await _ended_row(page.session_id)).state == "live"
    await browser.comm.disconnect()


async def test_the_maximum_duration_ends_the_session_after_a_warning(signed_in, vnc_resource, stream_tier,
                                                                     settings):
    settings.PORTAL_DESKTOP_WARN_SECONDS = 2
    await _tighten(stream_tier, session_max_seconds=3)
    browser, page = await open_live(signed_in, vnc_resource)
    status = json.loads(browser.portal_notices("status")[0])
    assert status["ends_in"] == 3
    _op, args = await browser.until(lambda op, args: op == "portal" and args[0] == "warning", timeout=5)
    assert "maximum duration" in json.loads(args[1])["message"]
    await browser.send("5.mouse,2.10,2.10,1.0;")  # input does not extend a maximum
    _op, args = await browser.until(lambda op, args: op == "error", timeout=5)
    assert "longest time this tier allows" in args[0] and args[1] == str(0x020A)
    await browser.until_closed()
    row = await _ended_row(page.session_id)
    assert (row.end_reason, row.ended_by) == ("max_duration", "portal")


async def test_the_watermark_obligation_reaches_the_page_with_user_and_time(signed_in, vnc_resource,
                                                                            stream_tier):
    await _tighten(stream_tier, watermark=True)
    browser, page = await open_live(signed_in, vnc_resource)
    mark = re.search(r'<div id="watermark"[^>]*>([^<]*)</div>', page.html)
    assert mark is not None and re.fullmatch(r"erin · \d{4}-\d\d-\d\d \d\d:\d\d UTC", mark[1]), mark
    status = json.loads(browser.portal_notices("status")[0])
    assert status["watermark"].startswith("erin · ")
    await browser.comm.disconnect()

    await _tighten(stream_tier, watermark=False)
    plain, page = await open_live(signed_in, vnc_resource)
    assert 'id="watermark"' not in page.html and json.loads(plain.portal_notices("status")[0])["watermark"] == ""
    await plain.comm.disconnect()


async def test_copy_out_of_a_tier_tightened_to_deny_is_refused_and_audited(signed_in, ssh_resource, stream_tier):
    await _tighten(stream_tier, clipboard_out="allow")  # guacd sends copies; the relay is the check
    browser, page = await open_live(signed_in, ssh_resource)
    await browser.until(lambda op, args: op == "blob", timeout=10)  # the prompt is drawn
    await _tighten(stream_tier, clipboard_out="deny")  # pushed: applies to the live session at once
    await asyncio.sleep(1.5)
    # Select text in the terminal with the mouse: guacd copies the selection to the clipboard.
    await browser.send("5.mouse,1.2,1.6,1.1;5.mouse,3.300,2.20,1.1;5.mouse,3.300,2.20,1.0;")
    await browser.send("0.,4.ping,1.5;")
    await browser.until(lambda op, args: op == "" and args == ("ping", "5"))
    deadline = time.monotonic() + 5
    while not await database_sync_to_async(AuditEvent.objects.filter(action="desktop.clipboard.out").exists)():
        assert time.monotonic() < deadline, "no clipboard.out audit"
        await browser.send("0.,4.ping,1.6;")
        await browser.until(lambda op, args: op == "" and args == ("ping", "6"))
    event = await database_sync_to_async(AuditEvent.objects.filter(action="desktop.clipboard.out").get)()
    assert event.outcome == "denied" and event.detail["direction"] == "out" and event.actor == "erin"
    assert all(op != "clipboard" for op, _ in browser.instructions)
    assert (await _ended_row(page.session_id)).state == "live"
    await browser.comm.disconnect()
