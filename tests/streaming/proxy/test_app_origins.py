"""Issue 11: every web app on its own origin, and the portal session handed over, never shared.

Driven against the live portal over HTTPS. ``<slug>.apps.localhost`` is sent to 127.0.0.1 as
Chromium does, with the Host header and the cookie jar seeing the real names, so cookies
land host-only exactly as a browser keeps them.
"""

from __future__ import annotations

import asyncio
import re
from urllib.parse import parse_qs, urlsplit

import httpx
import jwt
import pytest

from portal.audit.models import AuditEvent
from streaming.proxy.handoff import APP_COOKIE, STATE_COOKIE
from streaming.proxy.models import AccessRecord
from streaming.proxy.records import access_log
from tests.factories import totp_code
from tests.streaming.proxy.conftest import session_cookie_for

pytestmark = [pytest.mark.host_mode, pytest.mark.django_db(transaction=True)]


class Loopback(httpx.HTTPTransport):
    """Every name resolves to 127.0.0.1, like Chromium's ``*.localhost``."""

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        original = request.url
        request.url = original.copy_with(host="127.0.0.1")
        try:
            return super().handle_request(request)
        finally:
            request.url = original


@pytest.fixture
def portal(settings, portal_url):
    settings.PORTAL_URL = portal_url
    return portal_url


@pytest.fixture
def port(portal) -> int:
    return urlsplit(portal).port


@pytest.fixture
def echo(web_resource, echo_upstream):
    return web_resource("echo", echo_upstream.url)


@pytest.fixture
def browser(portal):
    """An httpx 'browser' with one cookie jar for every origin; signs a user in on the portal."""
    clients: list[httpx.Client] = []

    def make(user=None) -> httpx.Client:
        client = httpx.Client(verify=False, timeout=30, transport=Loopback(verify=False))
        if user is not None:
            client.cookies.set("sessionid", session_cookie_for(user), domain="127.0.0.1")
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()
    access_log.flush()


def app_url(slug: str, port: int, path: str = "/") -> str:
    return f"https://{slug}.apps.localhost:{port}{path}"


def _seen(response: httpx.Response) -> dict:
    assert response.status_code == 200, (response.status_code, response.text[:400])
    report = response.json()
    report["header_map"] = {}
    for name, value in report["headers"]:
        report["header_map"].setdefault(name, []).append(value)
    return report


def _handoff_to_callback(client: httpx.Client, slug: str, port: int, path: str = "/") -> str:
    """Walk the hand-off by hand; return the callback URL the portal sends the browser to."""
    first = client.get(app_url(slug, port, path))
    assert first.status_code == 302, first.text[:300]
    assert client.cookies.get(STATE_COOKIE, domain=f"{slug}.apps.localhost")
    to_portal = first.headers["location"]
    assert to_portal.startswith(f"https://127.0.0.1:{port}/handoff/{slug}/?")
    back = client.get(to_portal)
    assert back.status_code == 302, back.text[:300]
    return back.headers["location"]


def test_an_app_link_on_the_portal_origin_moves_to_the_apps_own_origin(browser, worker, echo, portal, port):
    response = browser(worker).get(f"{portal}/apps/echo/reports/q1?year=2025")
    assert response.status_code == 302
    assert response.headers["location"] == app_url("echo", port, "/reports/q1?year=2025")


def test_the_portal_origin_never_serves_an_apps_bytes(browser, worker, echo, portal, echo_upstream):
    client = browser(worker)
    hits = httpx.get(f"{echo_upstream.url}hits").json()["count"]
    for method in ("GET", "POST", "PUT"):
        response = client.request(method, f"{portal}/apps/echo/x", headers={"Origin": portal})
        assert response.status_code in (302, 308)
        assert "echo.apps.localhost" in response.headers["location"]
    assert httpx.get(f"{echo_upstream.url}hits").json()["count"] == hits


def test_the_first_visit_hands_the_session_over_and_the_app_sees_the_user(
        browser, worker, echo, portal, port):
    client = browser(worker)
    callback = _handoff_to_callback(client, "echo", port, "/reports?year=2025")
    assert callback.startswith(app_url("echo", port, "/.portal/callback?code="))
    landed = client.get(callback)
    assert landed.status_code == 303
    assert landed.headers["location"] == "/reports?year=2025"
    assert client.cookies.get(APP_COOKIE, domain="echo.apps.localhost")
    assert "HttpOnly" in landed.headers["set-cookie"] and "Secure" in landed.headers["set-cookie"]

    seen = _seen(client.get(app_url("echo", port, "/reports?year=2025")))
    assert seen["raw_path"] == "/reports" and seen["query"] == "year=2025"
    [token] = seen["header_map"]["x-portal-assertion"]
    jwks = httpx.get(f"{portal}/.well-known/jwks.json", verify=False).json()
    [jwk] = [k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]]
    claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="echo", issuer=portal)
    assert claims["sub"] == str(worker.pk)
    assert seen["header_map"]["x-forwarded-host"] == [f"echo.apps.localhost:{port}"]
    assert "x-forwarded-prefix" not in seen["header_map"]
    # Neither the portal's session nor the app-origin cookies ever reach the app.
    cookies = " ".join(seen["header_map"].get("cookie", []))
    assert "sessionid" not in cookies and APP_COOKIE not in cookies and STATE_COOKIE not in cookies


def test_the_app_origin_cookie_jar_never_holds_the_portal_session(browser, worker, echo, port):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    for cookie in client.cookies.jar:
        if cookie.name == "sessionid":
            assert cookie.domain == "127.0.0.1"
        if cookie.name == APP_COOKIE:
            assert cookie.domain == "echo.apps.localhost" and cookie.path == "/" and cookie.secure


def test_a_code_works_once(browser, worker, echo, port):
    client = browser(worker)
    callback = _handoff_to_callback(client, "echo", port)
    assert client.get(callback).status_code == 303
    again = client.get(callback)
    assert again.status_code == 400
    assert "already used" in again.text


def test_a_code_lured_into_another_browser_is_useless(browser, worker, echo, port):
    victim_side = browser(worker)
    callback = _handoff_to_callback(victim_side, "echo", port)
    other = browser()  # has no state cookie of that hand-off
    refused = other.get(callback)
    assert refused.status_code == 400
    assert not other.cookies.get(APP_COOKIE, domain="echo.apps.localhost")


def test_a_code_for_one_app_does_not_open_another(browser, worker, echo, web_resource, echo_upstream, port):
    web_resource("wiki", echo_upstream.url)
    client = browser(worker)
    callback = _handoff_to_callback(client, "echo", port)
    query = urlsplit(callback).query
    # Same browser, state cookie copied over: the code is still for echo only.
    client.cookies.set(STATE_COOKIE, client.cookies.get(STATE_COOKIE, domain="echo.apps.localhost"),
                       domain="wiki.apps.localhost")
    refused = client.get(app_url("wiki", port, f"/.portal/callback?{query}"))
    assert refused.status_code == 400


def test_an_app_cookie_opens_only_its_own_app(browser, worker, echo, web_resource, echo_upstream, port):
    web_resource("wiki", echo_upstream.url)
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    token = client.cookies.get(APP_COOKIE, domain="echo.apps.localhost")
    stranger = browser()
    stranger.cookies.set(APP_COOKIE, token, domain="wiki.apps.localhost")
    response = stranger.get(app_url("wiki", port, "/"))
    assert response.status_code == 302 and "/handoff/wiki/" in response.headers["location"]


def test_signing_out_of_the_portal_ends_the_app_session_at_the_next_request(
        browser, worker, echo, portal, port):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    assert client.get(app_url("echo", port, "/x")).status_code == 200
    page = client.get(f"{portal}/")
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    out = client.post(f"{portal}/accounts/logout/", data={"csrfmiddlewaretoken": csrf},
                      headers={"Referer": f"{portal}/", "Origin": portal})
    assert out.status_code in (200, 302)
    after = client.get(app_url("echo", port, "/x"))
    assert after.status_code == 302 and "/handoff/echo/" in after.headers["location"]
    to_login = client.get(after.headers["location"])
    assert to_login.status_code == 302 and "/accounts/login/" in to_login.headers["location"]


def test_a_locked_user_is_denied_on_the_app_origin_at_the_next_request(browser, worker, echo, port):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    assert client.get(app_url("echo", port, "/x")).status_code == 200
    worker.is_active = False
    worker.save()
    denied = client.get(app_url("echo", port, "/x"))
    assert denied.status_code == 403
    assert "locked" in denied.text
    # The denial page is the portal's: its links and styles point at the portal's origin.
    assert f'<base href="https://127.0.0.1:{port}/">' in denied.text


def test_the_portal_paths_on_an_app_origin_are_never_forwarded(browser, worker, echo, port, echo_upstream):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    hits = httpx.get(f"{echo_upstream.url}hits").json()["count"]
    assert client.get(app_url("echo", port, "/.portal/anything")).status_code == 404
    assert client.get(app_url("echo", port, "/.portal/callback")).status_code == 400
    assert httpx.get(f"{echo_upstream.url}hits").json()["count"] == hits
    # The app's own /manage/ is the app's, not the portal's.
    assert _seen(client.get(app_url("echo", port, "/manage/people/")))["raw_path"] == "/manage/people/"


def test_a_write_on_the_app_origin_is_held_for_a_step_up_and_replayed_once(
        browser, worker, web_resource, echo_upstream, portal, port):
    web_resource("ledger", echo_upstream.url, mfa_write=0)
    client = browser(worker)
    client.get(_handoff_to_callback(client, "ledger", port))
    origin = app_url("ledger", port, "").rstrip("/")
    held = client.post(app_url("ledger", port, "/entries"), content=b"amount=5",
                       headers={"Origin": origin, "Content-Type": "application/x-www-form-urlencoded"})
    assert held.status_code == 303
    step_up = held.headers["location"]
    assert step_up.startswith(f"{portal}/accounts/step-up/?next=%2Fapps%2Fledger%2F.portal%2Freplay%2F")
    page = client.get(step_up)
    csrf = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', page.text).group(1)
    query = parse_qs(urlsplit(step_up).query)
    stepped = client.post(step_up, data={
        "otp_token": totp_code(worker.totp, offset_steps=1), "next": query["next"][0],
        "csrfmiddlewaretoken": csrf, "challenge": query.get("challenge", [""])[0]},
        headers={"Referer": step_up})
    assert stepped.status_code == 302, stepped.text[:300]
    # Back through the portal's /apps/ link to the app's origin, where the held post is sent.
    landed = client.get(f"{portal}{stepped.headers['location']}", follow_redirects=True)
    seen = _seen(landed)
    assert seen["method"] == "POST" and seen["raw_path"] == "/entries" and seen["body_length"] == 8
    assert AuditEvent.objects.filter(action="proxy.replay", resource="ledger").count() == 1


def test_a_write_from_another_origin_is_refused(browser, worker, echo, portal, port, echo_upstream):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    hits = httpx.get(f"{echo_upstream.url}hits").json()["count"]
    for origin in (portal, app_url("evil", port, "").rstrip("/"), f"http://echo.apps.localhost:{port}"):
        refused = client.post(app_url("echo", port, "/x"), content=b"a", headers={"Origin": origin})
        assert refused.status_code == 403, origin
    assert httpx.get(f"{echo_upstream.url}hits").json()["count"] == hits


def test_redirects_and_cookies_are_rewritten_for_the_apps_own_origin(browser, worker, echo, port, echo_upstream):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    moved = client.get(app_url("echo", port, "/redirect"), params={"to": f"{echo_upstream.url}done"})
    assert moved.headers["location"] == "/done"
    cookies = client.get(app_url("echo", port, "/cookie")).headers.get_list("set-cookie")
    assert any(c.startswith("app_session=s3cr3t") and "Path=/" in c for c in cookies)
    assert any(c.startswith("app_pref=dark") and "Path=/settings" in c and "Domain" not in c for c in cookies)
    assert not any(c.startswith(("sessionid=", "__Host-")) for c in cookies)


def test_bodies_stream_and_each_request_leaves_an_access_record(browser, worker, echo, port):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    big = client.get(app_url("echo", port, "/bytes"), params={"n": 3_000_000})
    assert big.status_code == 200 and len(big.content) == 3_000_000
    access_log.flush()
    record = AccessRecord.objects.filter(resource="echo", path__startswith="/bytes").get()
    assert record.actor == worker.username and record.bytes_out == 3_000_000 and record.status == 200


def _socket(port: int, slug: str, path: str, *, token: str | None, origin: str):
    import socket
    import ssl

    from websockets.asyncio.client import connect

    tls = ssl.create_default_context()
    tls.check_hostname = False
    tls.verify_mode = ssl.CERT_NONE
    headers = [("Cookie", f"{APP_COOKIE}={token}")] if token else []
    return connect(app_url(slug, port, path).replace("https://", "wss://"), ssl=tls, proxy=None,
                   sock=socket.create_connection(("127.0.0.1", port)),
                   server_hostname=f"{slug}.apps.localhost", origin=origin,
                   additional_headers=headers, open_timeout=10)


def _app_token(client: httpx.Client, slug: str, port: int) -> str:
    client.get(_handoff_to_callback(client, slug, port))
    return client.cookies.get(APP_COOKIE, domain=f"{slug}.apps.localhost")


def test_a_websocket_on_the_app_origin_is_admitted_and_relayed(browser, worker, echo, port):
    import json

    token = _app_token(browser(worker), "echo", port)
    origin = app_url("echo", port, "").rstrip("/")

    async def talk() -> dict:
        async with _socket(port, "echo", "/live?x=1", token=token, origin=origin) as ws:
            await ws.send("report")
            return json.loads(await ws.recv())

    seen = asyncio.run(talk())
    headers = {name: value for name, value in seen["headers"]}
    assert seen["raw_path"] == "/live"
    assert jwt.decode(headers["x-portal-assertion"], options={"verify_signature": False})["aud"] == "echo"
    assert APP_COOKIE not in headers.get("cookie", "")


@pytest.mark.parametrize("origin", ["https://127.0.0.1:{port}", "https://evil.apps.localhost:{port}",
                                    "http://echo.apps.localhost:{port}", "https://echo.apps.localhost:1"])
def test_a_websocket_from_any_other_origin_is_refused(browser, worker, echo, port, origin):
    from websockets.exceptions import InvalidStatus

    token = _app_token(browser(worker), "echo", port)

    async def talk() -> None:
        async with _socket(port, "echo", "/live", token=token, origin=origin.format(port=port)):
            pass

    with pytest.raises(InvalidStatus) as refused:
        asyncio.run(talk())
    assert refused.value.response.status_code == 403


def test_a_websocket_without_an_app_session_is_closed_unopened(browser, echo, port):
    from websockets.exceptions import ConnectionClosed

    origin = app_url("echo", port, "").rstrip("/")

    async def talk() -> int | None:
        async with _socket(port, "echo", "/live", token=None, origin=origin) as ws:
            with pytest.raises(ConnectionClosed):
                await ws.recv()
            return ws.close_code

    assert asyncio.run(talk()) == 4401


def test_the_portals_own_socket_paths_on_an_app_origin_are_the_apps(browser, worker, echo, port):
    token = _app_token(browser(worker), "echo", port)
    origin = app_url("echo", port, "").rstrip("/")

    async def talk() -> str:
        # /ws/desktop/... on an app's origin is the app's path, never the portal's desktop tunnel.
        async with _socket(port, "echo", "/ws/desktop/ops/", token=token, origin=origin) as ws:
            await ws.send("report")
            return await ws.recv()

    assert '"raw_path": "/ws/desktop/ops/"' in asyncio.run(talk())


def test_underscore_spellings_of_identity_headers_never_reach_the_app(browser, worker, echo, port):
    client = browser(worker)
    client.get(_handoff_to_callback(client, "echo", port))
    seen = _seen(client.get(app_url("echo", port, "/x"), headers={
        "X-Remote_User": "admin", "X_Forwarded_User": "admin", "X-Portal_Assertion": "forged",
        "Some_Header": "x", "X-Fine": "kept"}))
    names = set(seen["header_map"])
    assert not any("_" in name for name in names)
    assert seen["header_map"]["x-fine"] == ["kept"]
