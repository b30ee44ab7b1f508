"""A step-up anywhere rotates the portal session key; live desktops follow the sign-in.

Before, a desktop bound to the key it opened under read the rotation as a sign-out and closed
one re-check later. Sign-out, a lock and a deleted session must still end it.
"""

from __future__ import annotations

from importlib import import_module

import pytest
from channels.db import database_sync_to_async
from django.conf import settings

from streaming.desktop import broker, groups
from streaming.desktop.models import PortalSignIn, StreamSession
from streaming.desktop.signins import SIGN_IN_KEY, current_session
from tests.conftest import sign_in
from tests.factories import UserFactory, totp_code
from tests.streaming.desktop.conftest import open_live

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


def _step_up_in_the_portal(client, employee) -> str:
    """The portal's own step-up page (e.g. for a write action in a web app): a new session key."""
    old = client.cookies["sessionid"].value
    response = client.post("/accounts/step-up/?next=/", {"otp_token": totp_code(employee.totp, offset_steps=1)})
    assert response.status_code == 302, response.content[:300]
    new = client.cookies["sessionid"].value
    assert new != old
    return new


async def _recheck_now(browser, employee, n: str) -> None:
    await database_sync_to_async(broker.push)(groups.for_user(employee.pk), {"type": "desktop.recheck"})
    await browser.send(f"0.,4.ping,1.{n};")
    await browser.until(lambda op, args: op == "" and args == ("ping", n))


async def _row(session_id: str) -> StreamSession:
    return await database_sync_to_async(StreamSession.objects.get)(pk=session_id)


async def test_a_step_up_elsewhere_keeps_the_live_desktop_and_sign_out_still_ends_it(signed_in, vnc_resource,
                                                                                     employee):
    browser, page = await open_live(signed_in, vnc_resource)
    await database_sync_to_async(_step_up_in_the_portal)(signed_in, employee)
    for n in "123":  # several re-checks, each under the new key
        await _recheck_now(browser, employee, n)
    assert not browser.closed and not browser.portal_notices("ended")
    assert (await _row(page.session_id)).state == "live"

    await database_sync_to_async(lambda: signed_in.post("/accounts/logout/"))()
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    assert "signed out" in args[0]
    await browser.until_closed()
    assert (await _row(page.session_id)).end_reason == "signed_out"


async def test_the_session_deleted_after_a_step_up_ends_the_desktop(signed_in, vnc_resource, employee):
    browser, page = await open_live(signed_in, vnc_resource)
    new_key = await database_sync_to_async(_step_up_in_the_portal)(signed_in, employee)
    await _recheck_now(browser, employee, "1")
    await database_sync_to_async(
        lambda: import_module(settings.SESSION_ENGINE).SessionStore(new_key).delete(new_key))()
    await database_sync_to_async(broker.push)(groups.for_user(employee.pk), {"type": "desktop.recheck"})
    await browser.until(lambda op, args: op == "error", timeout=2)
    await browser.until_closed()
    assert (await _row(page.session_id)).end_reason == "signed_out"


def test_a_sign_in_pointed_at_someone_elses_session_is_not_followed(signed_in, client_factory, employee):
    store = import_module(settings.SESSION_ENGINE).SessionStore
    mine = store(signed_in.cookies["sessionid"].value)
    mine[SIGN_IN_KEY] = "sign-in-1"
    mine.save()
    PortalSignIn.objects.create(pk="sign-in-1", user=employee, session_key=mine.session_key)
    other = client_factory("mallory")
    theirs = store(other.cookies["sessionid"].value)
    theirs[SIGN_IN_KEY] = "sign-in-1"  # even carrying the same id, it is mallory's session
    theirs.save()
    PortalSignIn.objects.filter(pk="sign-in-1").update(session_key=theirs.session_key)

    key, session = current_session(employee, "gone-key", "sign-in-1")
    assert key == "gone-key" and not session.exists(key)
    mallory = UserFactory._meta.model.objects.get(username="mallory")
    assert current_session(mallory, "gone-key", "sign-in-1")[0] == "gone-key"  # not theirs in the table
