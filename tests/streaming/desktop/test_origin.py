"""The desktop WebSocket answers only the portal's own pages: scheme, host and port must match.

The session cookie rides along whatever page opens the socket; a page on ``http://`` (a
network attacker can inject one) or on another port of the same name must not get a tunnel.
"""

from __future__ import annotations

import pytest
from channels.db import database_sync_to_async

from streaming.desktop.models import StreamSession
from tests.conftest import sign_in
from tests.streaming.desktop.conftest import Browser, communicator, open_page

pytestmark = [pytest.mark.django_db(transaction=True), pytest.mark.timeout(60)]


@pytest.fixture
def signed_in(client, employee):
    sign_in(client, employee)
    return client


@pytest.mark.parametrize(("origin", "host", "scheme"), [
    ("http://localhost", "localhost", "wss"),  # the right host on plain HTTP
    ("https://localhost:8443", "localhost", "wss"),  # the right host on another port
    ("https://localhost", "localhost:8443", "wss"),
    ("https://localhost", "localhost", "ws"),  # the portal itself on plain HTTP, the page on HTTPS
    ("https://evil.test", "localhost", "wss"),
    (None, "localhost", "wss"),
])
async def test_a_page_of_another_origin_gets_no_tunnel_and_the_ticket_stays_unused(
        signed_in, vnc_resource, origin, host, scheme):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    comm = communicator(page, origin=origin, host=host, scheme=scheme)
    connected, _ = await comm.connect(timeout=10)
    assert not connected
    stream = await database_sync_to_async(StreamSession.objects.get)(pk=page.session_id)
    assert stream.state == "pending" and stream.ticket_hash


async def test_the_portals_own_page_behind_a_trusted_tls_proxy_gets_its_tunnel(signed_in, vnc_resource,
                                                                                settings):
    from ipaddress import ip_network

    settings.PORTAL_TRUSTED_PROXIES = (ip_network("127.0.0.0/8"),)
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    comm = communicator(page, scheme="ws", origin="https://localhost",
                        extra_headers=((b"x-forwarded-proto", b"https"),))
    connected, _ = await comm.connect(timeout=10)
    assert connected
    browser = Browser(comm)
    await browser.until(lambda op, args: op == "sync")
    await comm.disconnect()


async def test_an_untrusted_peer_cannot_claim_https_with_a_header(signed_in, vnc_resource):
    page = await database_sync_to_async(open_page)(signed_in, vnc_resource.slug)
    comm = communicator(page, scheme="ws", origin="https://localhost",
                        extra_headers=((b"x-forwarded-proto", b"https"),))
    connected, _ = await comm.connect(timeout=10)
    assert not connected
