"""Pathways (principle 4): only the catalogued upstream, no path or framing tricks."""

from __future__ import annotations

import socket
import ssl
from urllib.parse import urlsplit

import pytest

pytestmark = pytest.mark.django_db(transaction=True)


def raw_request(portal_url: str, request: bytes) -> tuple[int, bytes]:
    """Send bytes exactly as written (no client-side normalisation); return status and reply."""
    parts = urlsplit(portal_url)
    context = ssl.create_default_context()
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((parts.hostname, parts.port), timeout=10) as sock, \
            context.wrap_socket(sock, server_hostname=parts.hostname) as tls:
        tls.sendall(request)
        reply = b""
        while b"\r\n\r\n" not in reply:
            chunk = tls.recv(65536)
            if not chunk:
                break
            reply += chunk
    status = int(reply.split(b" ", 2)[1]) if reply.startswith(b"HTTP/1.1 ") else 0
    return status, reply


@pytest.fixture
def catalog(web_resource, echo_upstream):
    web_resource("echo", echo_upstream.url, rules=(("*", "/admin/*", "sensitive"),), mfa_sensitive=0)
    web_resource("vault", echo_upstream.url + "vault/", groups=("finance",))


def _hits(browser_for, echo_upstream) -> int:
    return browser_for().get(f"{echo_upstream.url}hits").json()["count"]


@pytest.mark.parametrize("path", [
    "/apps/echo/../vault/secrets",
    "/apps/echo/%2e%2e/vault/secrets",
    "/apps/echo/.%2E/vault/secrets",
    "/apps/echo/x/..%2f..%2fvault/secrets",
    "/apps/echo/x%2f..%2f..%2fvault",
    "/apps/echo/%252e%252e/vault",
    "/apps/echo//admin/users",
    "/apps/echo/x/%2e%2e/admin/users",
    "/apps/echo/x/..;/admin/users",
    "/apps/echo/x\\..\\admin\\users",
    "/apps/echo/x%5c..%5cadmin",
    "/apps/echo/%c0%ae%c0%ae/admin",
    "/apps/echo/%ef%bc%8e%ef%bc%8e/admin",
    "/apps/echo/a%00b",
    "/apps/ECHO/",
    "/apps/echo%2fadmin/",
])
def test_path_tricks_are_refused_before_any_decision(catalog, browser_for, worker, portal_url,
                                                     echo_upstream, path):
    cookie = f"sessionid={browser_for(worker).cookies['sessionid']}"
    before = _hits(browser_for, echo_upstream)
    status, _ = raw_request(portal_url, f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                                        f"Cookie: {cookie}\r\nConnection: close\r\n\r\n".encode())
    assert status == 400, path
    assert _hits(browser_for, echo_upstream) == before


def test_a_resource_not_shared_with_you_is_denied_with_reasons(catalog, browser_for, worker):
    response = browser_for(worker).get("/apps/vault/secrets")
    assert response.status_code == 403
    assert "not shared with you" in response.text


def test_an_unknown_resource_is_not_found(catalog, browser_for, worker):
    assert browser_for(worker).get("/apps/nope/").status_code == 404


def test_the_sensitive_path_cannot_be_reached_by_a_milder_spelling(catalog, browser_for, worker,
                                                                     echo_upstream):
    client = browser_for(worker)
    before = _hits(browser_for, echo_upstream)
    direct = client.get("/apps/echo/admin/users")
    assert direct.status_code == 302 and direct.headers["location"].startswith("/accounts/step-up/")
    assert _hits(browser_for, echo_upstream) == before
    assert client.get("/apps/echo/notes").status_code == 200


@pytest.mark.parametrize("headers", [
    b"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n",
    b"Content-Length: 5\r\nContent-Length: 6\r\n",
    b"Content-Length: 5, 6\r\n",
    b"Transfer-Encoding: gzip, chunked\r\n",
    b"Connection: close, X-Forwarded-For\r\n",
    b"Connection: Cookie\r\n",
    b"Connection: X-Portal-Assertion\r\n",
    b"X-Big: " + b"a" * 9000 + b"\r\n",
    b"".join(b"X-Many-%d: 1\r\n" % i for i in range(120)),
])
def test_ambiguous_framing_and_hop_by_hop_abuse_get_400(catalog, browser_for, worker, portal_url,
                                                        echo_upstream, headers):
    cookie = f"sessionid={browser_for(worker).cookies['sessionid']}".encode()
    before = _hits(browser_for, echo_upstream)
    status, _ = raw_request(portal_url, b"POST /apps/echo/notes HTTP/1.1\r\nHost: 127.0.0.1\r\n"
                            b"Cookie: " + cookie + b"\r\n" + headers + b"\r\n0\r\n\r\n")
    # 120 fields are over the server's field limit: 431 before the proxy reads them.
    assert status == (431 if headers.count(b"\r\n") > 100 else 400)
    assert _hits(browser_for, echo_upstream) == before


def test_upstream_redirects_are_rewritten_into_the_prefix_and_never_followed(
        catalog, browser_for, worker, echo_upstream):
    client = browser_for(worker)
    cases = {
        f"{echo_upstream.url}login?next=/x": "/apps/echo/login?next=/x",
        "/settings/profile": "/apps/echo/settings/profile",
        "https://elsewhere.example/": "https://elsewhere.example/",
    }
    for target, expected in cases.items():
        before = _hits(browser_for, echo_upstream)
        response = client.get("/apps/echo/redirect", params={"to": target})
        assert response.status_code == 302
        assert response.headers["location"] == expected
        assert _hits(browser_for, echo_upstream) == before + 1  # the redirect itself only


def test_upstream_cookies_are_scoped_to_the_prefix_and_cannot_touch_the_portals(
        catalog, browser_for, worker):
    response = browser_for(worker).get("/apps/echo/cookie")
    cookies = response.headers.get_list("set-cookie")
    assert "app_pref=dark; Path=/apps/echo/settings; HttpOnly" in cookies
    assert "app_session=s3cr3t; Path=/apps/echo/; Secure; SameSite=Lax" in cookies
    assert not any(c.startswith(("sessionid=", "__Host-")) for c in cookies)
    assert "clear-site-data" not in response.headers


def test_a_cross_site_form_post_is_refused(catalog, browser_for, worker, echo_upstream):
    before = _hits(browser_for, echo_upstream)
    response = browser_for(worker).post("/apps/echo/notes", data={"a": "1"},
                                        headers={"Origin": "https://evil.example"})
    assert response.status_code == 403
    assert _hits(browser_for, echo_upstream) == before
