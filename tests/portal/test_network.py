"""Only trusted proxies may tell the portal who the client is."""

from __future__ import annotations

import ipaddress

import pytest

from portal.audit.models import AuditEvent
from portal.network import resolve_client_address
from tests.factories import PASSWORD

LB = (ipaddress.ip_network("10.1.0.0/24"),)


@pytest.mark.parametrize(("peer", "xff", "expected"), [
    ("203.0.113.9", "1.2.3.4", "203.0.113.9"),  # untrusted peer: header ignored
    ("10.1.0.5", None, "10.1.0.5"),
    ("10.1.0.5", "198.51.100.7", "198.51.100.7"),
    ("10.1.0.5", "6.6.6.6, 198.51.100.7", "198.51.100.7"),  # client-written left part ignored
    ("10.1.0.5", "198.51.100.7, 10.1.0.9", "198.51.100.7"),  # chained trusted proxies skipped
    ("10.1.0.5", "garbage", "10.1.0.5"),
])
def test_client_address_resolution(peer, xff, expected):
    assert resolve_client_address(peer, xff, LB) == expected


@pytest.mark.django_db
def test_an_untrusted_peer_cannot_spoof_its_address_or_scheme(client, employee, settings):
    settings.PORTAL_TRUSTED_PROXIES = ()
    client.post("/accounts/login/", {"username": employee.username, "password": "wrong-password"},
                headers={"X-Forwarded-For": "8.8.8.8"})
    event = AuditEvent.objects.get(action="login.password")
    assert event.client_address == "127.0.0.1"


@pytest.mark.django_db
def test_a_trusted_balancer_sets_the_client_address(client, employee, settings):
    settings.PORTAL_TRUSTED_PROXIES = (ipaddress.ip_network("127.0.0.0/8"),)
    client.post("/accounts/login/", {"username": employee.username, "password": PASSWORD},
                headers={"X-Forwarded-For": "198.51.100.23"})
    assert AuditEvent.objects.get(action="login.password").client_address == "198.51.100.23"


@pytest.mark.django_db
def test_x_forwarded_proto_from_an_untrusted_peer_does_not_make_http_look_secure(settings):
    from django.test import Client

    settings.PORTAL_TRUSTED_PROXIES = ()
    response = Client().get("/accounts/login/", headers={"X-Forwarded-Proto": "https"})
    assert response.status_code == 301
    assert response["Location"].startswith("https://")
