"""Production-safe by default: headers, cookies, deploy checks, and failing closed."""

from __future__ import annotations

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.django_db


def test_pages_carry_the_security_headers(client):
    response = client.get("/accounts/login/")
    assert response["Strict-Transport-Security"].startswith("max-age=31536000")
    assert response["X-Frame-Options"] == "DENY"
    assert response["X-Content-Type-Options"] == "nosniff"
    assert response["Referrer-Policy"] == "strict-origin-when-cross-origin"
    csp = response["Content-Security-Policy"]
    assert "default-src 'self'" in csp and "frame-ancestors 'none'" in csp and "object-src 'none'" in csp


def test_session_and_csrf_cookies_are_secure_and_http_only(client, employee):
    from tests.factories import PASSWORD

    client.get("/accounts/login/")
    response = client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    session = response.cookies["sessionid"]
    assert session["secure"] and session["httponly"] and session["samesite"] == "Lax"


def test_plain_http_is_redirected_to_https():
    from django.test import Client

    response = Client().get("/accounts/login/")
    assert response.status_code == 301
    assert response["Location"] == "https://testserver/accounts/login/"


def test_health_probe_answers_over_plain_http_for_load_balancers():
    from django.test import Client

    response = Client().get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}


def test_deploy_check_is_clean(settings):
    settings.DEBUG = False
    call_command("check", deploy=True, fail_level="WARNING")


def test_readyz_reports_ok_when_everything_is_reachable(client):
    from portal.health import DEPENDENCY_CHECKS

    response = client.get("/readyz")
    body = response.json()
    assert body["checks"]["database"] == "ok"
    failing_optional = set(body["failing"]) - set(DEPENDENCY_CHECKS)
    assert not failing_optional, body


def test_readyz_names_the_dependency_that_is_down(client, settings, monkeypatch):
    import socket

    from portal import health

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        closed_port = s.getsockname()[1]
    settings.GUACD_HOST, settings.GUACD_PORT = "127.0.0.1", closed_port
    from streaming.desktop.broker import check_guacd

    monkeypatch.setitem(health.DEPENDENCY_CHECKS, "guacd", check_guacd)
    response = client.get("/readyz")
    assert response.status_code == 503
    assert response.json()["failing"] == ["guacd"]
    assert "unavailable" in response.json()["checks"]["guacd"]


def test_metrics_are_served_to_the_monitoring_network_only(client, settings, employee):
    import ipaddress

    from tests.factories import PASSWORD

    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD})
    response = client.get("/metrics")
    assert response.status_code == 200
    assert 'portal_sign_in_steps_total{outcome="success",step="login.password"}' in response.content.decode()

    settings.PORTAL_METRICS_NETWORKS = (ipaddress.ip_network("10.9.0.0/16"),)
    assert client.get("/metrics").status_code == 404
