"""The IdP's back-channel logout ends a live desktop too (real guacd and x11vnc behind the tunnel)."""

from __future__ import annotations

import time

import pytest
from channels.db import database_sync_to_async

from tests.conftest import https_client
from tests.portal.sso.conftest import sso_sign_in
from tests.streaming.desktop.conftest import (  # noqa: F401 (fixtures used by name)
    _no_digest_outlives_its_test,
    desktop_settings,
    open_live,
    stream_tier,
    vnc_resource,
)

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


async def test_the_idps_back_channel_logout_ends_her_live_desktop_within_two_seconds(
        client, corp, idp_browser, logout_catcher, vnc_resource):  # noqa: F811
    logout_catcher.tokens.clear()
    await database_sync_to_async(sso_sign_in)(client, idp_browser, "nina")
    browser, _page = await open_live(client, vnc_resource)
    await database_sync_to_async(idp_browser.sign_out)(corp.issuer)
    token = (await database_sync_to_async(logout_catcher.wait)())[0]

    started = time.monotonic()
    response = await database_sync_to_async(
        lambda: https_client(enforce_csrf_checks=True).post("/sso/corp/backchannel-logout/",
                                                            {"logout_token": token}))()
    assert response.status_code == 200
    _op, args = await browser.until(lambda op, args: op == "error", timeout=2)
    await browser.until_closed(timeout=2)

    assert time.monotonic() - started < 2
    assert "signed out" in args[0]
