"""With the database or Redis unreachable, the portal allows nothing and says why."""

from __future__ import annotations

import ssl
import urllib.error
import urllib.request

import pytest

from tests.server import TLS_DIR, free_port, run_portal

pytestmark = pytest.mark.django_db(transaction=True)


def fetch(url: str) -> tuple[int, str]:
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
    request = urllib.request.Request(url, headers={"Cookie": "sessionid=forged-or-stale"})
    try:
        with urllib.request.urlopen(request, context=context, timeout=10) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


@pytest.mark.parametrize("path", ["/", "/accounts/login/", "/audit/"])
def test_database_down_answers_503_with_a_clear_page(path):
    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    with run_portal({"DATABASE_URL": dead}) as base:
        status, body = fetch(base + path)
        assert status == 503
        assert "Access is paused" in body
        assert "allows nothing rather than guess" in body
        ready_status, ready = fetch(base + "/readyz")
        assert ready_status == 503 and '"database"' in ready


def test_database_down_an_app_origin_sends_the_browser_to_a_portal_that_allows_nothing():
    import http.client
    from urllib.parse import urlsplit

    dead = f"postgres://postgres@127.0.0.1:{free_port()}/nowhere"
    with run_portal({"DATABASE_URL": dead, "PORTAL_APPS_DOMAIN": "apps.localhost"}) as base:
        port = urlsplit(base).port
        context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
        context.check_hostname = False
        conn = http.client.HTTPSConnection("127.0.0.1", port, context=context, timeout=10)
        conn.request("GET", "/", headers={"Host": f"wiki.apps.localhost:{port}",
                                          "Cookie": "__Host-portal-app=" + "x" * 43})
        response = conn.getresponse()
        assert response.status == 302  # no app session: to the portal, never to the app
        location = response.getheader("location")
        assert location.startswith(f"{base}/handoff/wiki/")
        status, body = fetch(location)
        assert status == 503 and "Access is paused" in body


def test_redis_down_answers_503_on_sign_in():
    dead = f"redis://127.0.0.1:{free_port()}/0"
    with run_portal({"REDIS_URL": dead}) as base:
        status, _ = fetch(base + "/accounts/login/")
        assert status in (200, 503)  # the form itself needs no Redis
        import http.cookiejar

        jar = http.cookiejar.CookieJar()
        context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
        opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(jar),
                                             urllib.request.HTTPSHandler(context=context))
        page = opener.open(base + "/accounts/login/").read().decode()
        token = page.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
        data = f"csrfmiddlewaretoken={token}&username=alice&password=whatever-it-is".encode()
        request = urllib.request.Request(base + "/accounts/login/", data=data,
                                         headers={"Referer": base + "/accounts/login/"})
        try:
            opener.open(request)
            raise AssertionError("a login attempt must not succeed or fail silently without Redis")
        except urllib.error.HTTPError as err:
            assert err.code == 503
            assert "Access is paused" in err.read().decode()
