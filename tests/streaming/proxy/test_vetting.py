"""Vetting, table-tested without a server: HTTP and WebSocket are judged by one function.

Each row is one request as a browser (or an attacker) sends it, and what the proxy makes of
it before anyone is asked about the session; the WebSocket column is the same request as a
handshake.
"""

from __future__ import annotations

import ipaddress

import pytest

from streaming.proxy.conf import ProxyConf, proxy_conf
from streaming.proxy.vetting import Arrival, Turn, vet

PORTAL = "portal.example"
APP = "notes.apps.example"


@pytest.fixture
def conf(settings) -> ProxyConf:
    settings.ALLOWED_HOSTS = [PORTAL]
    settings.DEBUG = False
    settings.PORTAL_APPS_DOMAIN = "apps.example"
    settings.PORTAL_URL = None
    settings.PORTAL_ASSERTION_ISSUER = None
    settings.SECURE_SSL_REDIRECT = True
    settings.PORTAL_TRUSTED_PROXIES = [ipaddress.ip_network("10.0.0.0/8")]
    return proxy_conf()


_NAMES = {"origin": b"origin", "fetch_site": b"sec-fetch-site", "forwarded_for": b"x-forwarded-for",
          "forwarded_proto": b"x-forwarded-proto"}


def _arrival(path: str, *, method: str = "GET", host: str = APP, websocket: bool = False,
             scheme: str = "https", peer: str = "192.0.2.7", **headers: str | None) -> Arrival:
    app_slug = host.split(".", 1)[0] if host.endswith(".apps.example") else None
    raw, _, query = path.partition("?")
    sent = [(b"host", host.encode())] + [(_NAMES[k], v.encode()) for k, v in headers.items() if v is not None]
    return Arrival(method=method, raw_path=raw, query=query, headers=sent, table=dict(sent), scheme=scheme,
                   peer=peer, app_slug=app_slug, websocket=websocket)


def test_a_plain_request_to_an_app_origin_goes_on_to_the_admission_with_its_issuer(conf):
    vetting = vet(_arrival("/notes?x=1"), conf)
    assert vetting.turn is None
    assert (vetting.target.slug, vetting.target.path, vetting.record_path) == ("notes", "/notes", "/notes?x=1")
    assert vetting.portal_origin == vetting.issuer == f"https://{PORTAL}"


@pytest.mark.parametrize(("path", "request_turn", "socket_turn"), [
    ("/a/../admin", Turn.BAD_REQUEST, Turn.BAD_REQUEST),
    ("/a/%2e%2e/admin", Turn.BAD_REQUEST, Turn.BAD_REQUEST),
    ("/a//b", Turn.BAD_REQUEST, Turn.BAD_REQUEST),
    ("/.portal/callback?code=x", Turn.RESERVED, Turn.BAD_REQUEST),
    ("/.portal/replay/abc", None, Turn.BAD_REQUEST),
])
def test_a_path_trick_is_refused_alike_by_http_and_websocket(conf, path, request_turn, socket_turn):
    assert vet(_arrival(path), conf).turn is request_turn
    assert vet(_arrival(path, websocket=True), conf).turn is socket_turn


def test_a_replay_link_names_its_token_and_only_opens_with_get(conf):
    assert vet(_arrival("/.portal/replay/abc"), conf).replay_token == "abc"
    posted = vet(_arrival("/.portal/replay/abc", method="POST", origin=f"https://{APP}"), conf)
    assert (posted.turn, posted.status) == (Turn.REPLAY_METHOD, 405)


@pytest.mark.parametrize(("method", "websocket", "origin", "fetch_site", "refused"), [
    ("GET", False, "https://evil.example", "cross-site", False),  # a link from elsewhere is fine
    ("POST", False, "https://evil.example", None, True),
    ("POST", False, None, "cross-site", True),
    ("POST", False, f"https://{APP}", "same-origin", False),
    ("GET", True, "https://evil.example", None, True),  # cross-site WebSocket hijacking
    ("GET", True, f"https://{APP}", "cross-site", True),
    ("GET", True, "https://apps.example", None, True),  # a sibling is another origin
    ("GET", True, f"https://{APP}", "same-origin", False),
])
def test_another_sites_unsafe_request_or_handshake_is_refused(conf, method, websocket, origin,
                                                              fetch_site, refused):
    vetting = vet(_arrival("/notes", method=method, websocket=websocket, origin=origin,
                           fetch_site=fetch_site), conf)
    assert (vetting.turn is Turn.CROSS_SITE) is refused


def test_the_portals_own_origin_sends_requests_to_the_apps_origin_and_refuses_sockets(conf):
    moved = vet(_arrival("/apps/notes/x?y=1", host=PORTAL), conf)
    assert (moved.turn, moved.status, moved.location) == (Turn.TO_APP_ORIGIN, 302, f"https://{APP}/x?y=1")
    assert vet(_arrival("/apps/notes/x", host=PORTAL, method="POST"), conf).status == 308
    assert vet(_arrival("/apps/notes/x", host=PORTAL, websocket=True), conf).turn is Turn.NOT_FOUND


def test_plain_http_is_redirected_for_a_request_and_refused_for_a_socket(conf):
    request = vet(_arrival("/x?y=1", scheme="http"), conf)
    assert (request.turn, request.status, request.location) == (Turn.INSECURE, 301, f"https://{APP}/x?y=1")
    assert vet(_arrival("/x", scheme="http", websocket=True), conf).status == 403


def test_forwarded_headers_count_only_from_a_trusted_proxy(conf):
    forged = vet(_arrival("/x", scheme="http", forwarded_proto="https", forwarded_for="203.0.113.9"), conf)
    assert forged.turn is Turn.INSECURE and forged.client_address == "192.0.2.7"
    trusted = vet(_arrival("/x", scheme="http", peer="10.1.2.3", forwarded_proto="https",
                           forwarded_for="203.0.113.9"), conf)
    assert trusted.turn is None and trusted.client_address == "203.0.113.9" and trusted.scheme == "https"


def test_an_unknown_host_is_refused_on_the_portals_origin(conf, settings):
    settings.PORTAL_APPS_DOMAIN = ""
    conf = proxy_conf()
    for websocket in (False, True):
        vetting = vet(_arrival("/apps/notes/x", host="evil.example", websocket=websocket), conf)
        assert (vetting.turn, vetting.problem) == (Turn.BAD_REQUEST, "unknown host")
    assert vet(_arrival("/apps/notes", host=PORTAL), conf).turn is Turn.ADD_SLASH
