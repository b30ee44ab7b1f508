"""The desktop pages: who may open what, what a refusal says, the admin's live sessions, /readyz."""

from __future__ import annotations

import time

import pytest
from django.contrib.auth.models import Group

from streaming.desktop.models import StreamSession
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tiers.models import NetworkZone, Resource

pytestmark = pytest.mark.django_db


@pytest.fixture
def desktop(stream_tier, settings, tmp_path) -> Resource:
    """A desktop in the catalog (no target needed: these tests stop before the tunnel)."""
    resource = Resource.objects.create(slug="ops-desktop", name="Ops desktop", kind="vnc",
                                       upstream="127.0.0.1:5999", tier=stream_tier)
    resource.allowed_groups.add(Group.objects.get(name="employee"))
    return resource


def signed_in_as(username: str, role: str):
    user = UserFactory(username=username, role=role)
    user.totp = enrol_totp(user)
    client = https_client()
    sign_in(client, user)
    return client, user


def test_opening_a_desktop_issues_a_pending_session_with_a_short_lived_ticket(client, employee, desktop):
    sign_in(client, employee)
    response = client.get("/desktop/ops-desktop/")
    assert response.status_code == 200
    session = StreamSession.objects.get(user=employee)
    assert session.state == "pending" and session.obligations["record"] is True
    assert 0 < (session.ticket_expires_at.timestamp() - time.time()) <= 60
    assert session.ticket_hash not in response.content.decode()  # only the ticket, never its hash


def test_an_unknown_or_unshared_desktop_is_a_404(client, employee, desktop):
    sign_in(client, employee)
    assert client.get("/desktop/nope/").status_code == 404
    desktop.allowed_groups.clear()
    assert client.get("/desktop/ops-desktop/").status_code == 404
    assert not StreamSession.objects.exists()


def test_stale_mfa_sends_the_employee_to_step_up_and_back(client, employee, desktop):
    sign_in(client, employee)
    session = client.session
    session["mfa_time"] = int(time.time()) - 3600
    session.save()
    response = client.get("/desktop/ops-desktop/")
    assert response.status_code == 302
    assert response["Location"].startswith("/accounts/step-up/?next=%2Fdesktop%2Fops-desktop%2F")
    assert not StreamSession.objects.exists()


def test_a_refusal_says_why_in_words(client, employee, desktop, stream_tier):
    zone = NetworkZone.objects.create(name="office", cidrs="10.0.0.0/8")
    stream_tier.allowed_zones.add(zone)
    sign_in(client, employee)
    response = client.get("/desktop/ops-desktop/")
    assert response.status_code == 403
    assert b"cannot be used from the network you are on" in response.content
    assert b"Connect from an allowed network" in response.content


@pytest.mark.parametrize("role, status", [("admin", 200), ("employee", 403), ("auditor", 403)])
def test_live_sessions_page_is_for_admins_only(role, status):
    client, _ = signed_in_as(f"u-{role}", role)
    assert client.get("/desktop/-/live/").status_code == status


@pytest.mark.parametrize("role, status", [("admin", 302), ("employee", 403)])
def test_only_admins_can_kill(role, status, desktop, employee):
    live = StreamSession.objects.create(user=employee, resource=desktop, tier_name="high", state="live")
    client, _ = signed_in_as(f"k-{role}", role)
    assert client.post(f"/desktop/-/sessions/{live.pk}/kill/").status_code == status


def test_readyz_names_guacd_when_it_is_down(client, settings):
    settings.GUACD_HOST, settings.GUACD_PORT = "127.0.0.1", 1  # nothing listens there
    response = client.get("/readyz")
    assert response.status_code == 503
    assert "guacd" in response.json()["failing"]


def test_readyz_is_ready_with_a_running_guacd(client, settings, guacd):
    settings.GUACD_HOST, settings.GUACD_PORT = guacd.host, guacd.port
    assert client.get("/readyz").json()["checks"]["guacd"] == "ok"


@pytest.mark.parametrize("role, status", [("admin", 200), ("employee", 403), ("auditor", 403)])
def test_only_admins_get_a_watch_ticket_for_a_live_session(role, status, desktop, employee):
    live = StreamSession.objects.create(user=employee, resource=desktop, tier_name="high", state="live",
                                        guacd_connection_id="$abc")
    client, _ = signed_in_as(f"w-{role}", role)
    response = client.get(f"/desktop/-/sessions/{live.pk}/watch/")
    assert response.status_code == status
    assert live.watches.exists() == (status == 200)


def test_an_ended_or_unconnected_session_cannot_be_watched(desktop, employee):
    ended = StreamSession.objects.create(user=employee, resource=desktop, tier_name="high", state="ended",
                                         guacd_connection_id="$abc")
    unconnected = StreamSession.objects.create(user=employee, resource=desktop, tier_name="high", state="live")
    client, _ = signed_in_as("w-admin", "admin")
    assert client.get(f"/desktop/-/sessions/{ended.pk}/watch/").status_code == 404
    assert client.get(f"/desktop/-/sessions/{unconnected.pk}/watch/").status_code == 404
