"""A target that refuses the stored credentials is named as such, not as a network fault."""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from portal.audit.models import AuditEvent
from streaming.desktop.gate import describe_guacd_error
from streaming.desktop.models import EndReason, StreamSession
from streaming.desktop.vault import TargetSecret
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import Browser, communicator, make_resource, open_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


async def _ended(client, resource) -> tuple[tuple[str, ...], StreamSession]:
    page = await database_sync_to_async(open_page)(client, resource.slug)
    comm = communicator(page)
    assert (await comm.connect(timeout=10))[0]
    browser = Browser(comm)
    _op, args = await browser.until(lambda op, args: op == "error", timeout=30)
    await browser.until_closed(timeout=10)
    return args, await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)


async def test_a_failed_ssh_sign_in_is_named_a_refusal_not_the_target_ending(signed_in, stream_tier, ssh_target,
                                                                             desktop_settings):
    ssh = await database_sync_to_async(make_resource)(
        "bad-ssh", "ssh", ssh_target.upstream, stream_tier,
        TargetSecret(username=ssh_target.username, password="not-the-password"))
    args, row = await _ended(signed_in, ssh)
    assert "refused the sign-in the portal keeps" in args[0] and args[1] == str(0x0301)
    assert (row.end_reason, row.ended_by, row.end_message) == ("target_refused", "target", args[0])
    event = await database_sync_to_async(AuditEvent.objects.filter(action="desktop.end").get)()
    assert event.outcome == "target_refused"


async def test_a_wrong_vnc_password_is_not_called_a_network_fault(signed_in, stream_tier, vnc_target,
                                                                 desktop_settings):
    vnc = await database_sync_to_async(make_resource)(
        "bad-vnc", "vnc", vnc_target.upstream, stream_tier, TargetSecret(password="not-the-password"))
    args, row = await _ended(signed_in, vnc)
    assert "could not be found on the network" not in args[0]
    assert "refused the sign-in the portal keeps for it" in args[0]
    assert row.end_reason == "target_unavailable"


@pytest.mark.parametrize(("status", "reason", "words"), [
    (0x0301, EndReason.TARGET_REFUSED, "refused the sign-in"),
    (0x0303, EndReason.TARGET_REFUSED, "refused the sign-in"),
    (0x0207, EndReason.TARGET_UNAVAILABLE, "could not be reached, or it refused"),
    (0x0208, EndReason.TARGET_UNAVAILABLE, "could not be reached, or it refused"),
    (0x0202, EndReason.TARGET_UNAVAILABLE, "did not answer in time"),
    (0x0201, EndReason.GUACD_ERROR, "busy"),
    (0x0200, EndReason.GUACD_ERROR, "desktop service failed"),
    (0x0203, EndReason.TARGET_CLOSED, "ended the connection with an error"),
    (0x020B, EndReason.TARGET_CLOSED, "closed the session"),
    (0x7777, EndReason.TARGET_CLOSED, "reported an error"),
])
def test_each_guacd_status_gets_an_honest_reason_and_sentence(status, reason, words):
    got_reason, sentence = describe_guacd_error(("Aborted. See logs.", str(status)))
    assert got_reason == reason and words in sentence
