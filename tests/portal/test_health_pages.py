"""What an outage looks like from outside: /readyz and the 503 page name the dependency, not its address.

Anonymous callers learn which dependency is down and nothing about where it lives (a driver's
error carries host, port and database name); the monitoring networks that may read /metrics
get the details. The 503 page says which dependency is down, in words, and what to do.
"""

from __future__ import annotations

import http.cookiejar
import ipaddress
import socket
import sqlite3
import ssl
import urllib.error
import urllib.request

import psycopg
import pytest
import redis
from django.template.loader import render_to_string

from portal import health
from portal.health import failed_dependency, unavailable_context
from tests.server import TLS_DIR, free_port, run_portal

pytestmark = pytest.mark.django_db


def closed_port() -> int:
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture
def guacd_down(settings, monkeypatch) -> int:
    from streaming.desktop.broker import check_guacd

    port = closed_port()
    settings.GUACD_HOST, settings.GUACD_PORT = "127.0.0.1", port
    monkeypatch.setitem(health.DEPENDENCY_CHECKS, "guacd", check_guacd)
    return port


def test_anonymous_readyz_shows_dependency_names_and_states_only(client, settings, guacd_down):
    settings.PORTAL_METRICS_NETWORKS = (ipaddress.ip_network("10.9.0.0/16"),)
    response = client.get("/readyz")
    body = response.json()
    assert response.status_code == 503
    assert body["failing"] == ["guacd"]
    assert set(body["checks"].values()) <= {"ok", "unavailable"}
    assert body["checks"]["guacd"] == "unavailable" and body["checks"]["database"] == "ok"
    assert "details" not in body
    assert str(guacd_down) not in response.content.decode()
    assert "Error" not in response.content.decode()


def test_the_monitoring_network_also_gets_the_error_behind_a_failing_dependency(client, guacd_down):
    body = client.get("/readyz").json()  # the test client comes from 127.0.0.1, a monitoring address
    assert body["checks"]["guacd"] == "unavailable"
    assert "ConnectionRefusedError" in body["details"]["guacd"]


def test_the_outage_page_names_each_dependency_in_words():
    for name, words in (("database", "the database"), ("redis", "Redis"), ("guacd", "guacd")):
        page = render_to_string("errors/503.html", {"dependency": name,
                                                    "dependency_label": health.DEPENDENCY_LABELS[name]})
        assert f"cannot reach <strong>{words}" in page
        assert "try again in a minute" in page and "/readyz" in page


def test_the_outage_page_without_a_dependency_name_still_says_what_to_do():
    page = render_to_string("errors/503.html", {"request_id": "r-1"})  # as the proxy renders it
    assert "allows nothing rather than guess" in page
    assert "cannot reach <strong>" not in page
    assert "try again in a minute" in page and "/readyz" in page and "r-1" in page


def _raised(action) -> BaseException:
    try:
        action()
    except Exception as exc:  # whatever the driver raises
        return exc
    raise AssertionError("expected the dependency to be unreachable")


def _wrapped(cause: BaseException) -> BaseException:
    try:
        raise RuntimeError("while deciding") from cause
    except RuntimeError as exc:
        return exc


def test_driver_errors_are_named_after_the_dependency_that_raised_them(tmp_path):
    port = closed_port()
    redis_error = _raised(lambda: redis.Redis(port=port, socket_connect_timeout=1).ping())
    postgres_error = _raised(lambda: psycopg.connect(f"host=127.0.0.1 port={port} connect_timeout=1"))
    sqlite_error = _raised(lambda: sqlite3.connect(tmp_path / "missing" / "db.sqlite3"))
    socket_error = _raised(lambda: socket.create_connection(("127.0.0.1", port), timeout=1))
    assert failed_dependency(redis_error) == "redis"
    assert failed_dependency(postgres_error) == "database"
    assert failed_dependency(sqlite_error) == "database"
    assert failed_dependency(_wrapped(redis_error)) == "redis"
    assert failed_dependency(socket_error) is None
    assert unavailable_context(socket_error) == {}
    assert unavailable_context(redis_error)["dependency"] == "redis"


def _fetch(opener: urllib.request.OpenerDirector, url: str, data: bytes | None = None,
           headers: dict[str, str] | None = None) -> tuple[int, str]:
    try:
        with opener.open(urllib.request.Request(url, data=data, headers=headers or {}), timeout=15) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as err:
        return err.code, err.read().decode()


def _opener() -> urllib.request.OpenerDirector:
    context = ssl.create_default_context(cafile=str(TLS_DIR / "ca.pem"))
    return urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()),
                                       urllib.request.HTTPSHandler(context=context))


@pytest.mark.django_db(transaction=True)
def test_with_postgresql_down_the_page_says_the_database_and_readyz_hides_its_address():
    port = free_port()
    dead = f"postgres://postgres@127.0.0.1:{port}/nowhere"
    with run_portal({"DATABASE_URL": dead, "PORTAL_METRICS_NETWORKS": "10.9.0.0/16"}) as base:
        opener = _opener()
        status, page = _fetch(opener, base + "/", headers={"Cookie": "sessionid=forged-or-stale-session"})
        assert status == 503
        assert "cannot reach <strong>the database" in page and "try again in a minute" in page
        status, ready = _fetch(opener, base + "/readyz")
        assert status == 503
        assert '"database": "unavailable"' in ready
        assert str(port) not in ready and "nowhere" not in ready and "127.0.0.1" not in ready


@pytest.mark.django_db(transaction=True)
def test_with_redis_down_a_sign_in_attempt_is_told_redis_is_unreachable():
    with run_portal({"REDIS_URL": f"redis://127.0.0.1:{free_port()}/11"}) as base:
        opener = _opener()
        _, form = _fetch(opener, base + "/accounts/login/")
        token = form.split('name="csrfmiddlewaretoken" value="')[1].split('"')[0]
        status, page = _fetch(opener, base + "/accounts/login/",
                              data=f"csrfmiddlewaretoken={token}&username=alice&password=x-y-z".encode(),
                              headers={"Referer": base + "/accounts/login/"})
        assert status == 503
        assert "cannot reach <strong>Redis" in page


def test_portal_pages_name_a_favicon_the_portal_serves(client):
    page = client.get("/accounts/login/").content.decode()
    href = page.split('<link rel="icon" href="')[1].split('"')[0]
    response = client.get(href)
    assert response.status_code == 200
    assert b"<svg" in b"".join(response.streaming_content if response.streaming else [response.content])
