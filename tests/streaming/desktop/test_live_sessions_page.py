"""The admins' Live sessions page: after Kill it says so, and the session is no longer offered."""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group
from django.utils import timezone

from streaming.desktop import broker
from streaming.desktop.models import EndReason, StreamSession
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tiers.models import Resource

pytestmark = pytest.mark.django_db


@pytest.fixture
def live(stream_tier, employee) -> StreamSession:
    desktop = Resource.objects.create(slug="ops-desktop", name="Ops desktop", kind="vnc",
                                      upstream="127.0.0.1:5999", tier=stream_tier)
    desktop.allowed_groups.add(Group.objects.get(name="employee"))
    return StreamSession.objects.create(user=employee, resource=desktop, tier_name="high", state="live",
                                        started_at=timezone.now(), guacd_connection_id="$abc")


@pytest.fixture
def admin_client():
    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    client = https_client()
    sign_in(client, admin)
    return client


def test_after_kill_the_page_confirms_it_and_the_session_is_shown_ending_without_kill(admin_client, live):
    before = admin_client.get("/desktop/-/live/").content.decode()
    assert f'action="/desktop/-/sessions/{live.pk}/kill/"' in before

    response = admin_client.post(f"/desktop/-/sessions/{live.pk}/kill/", follow=True)
    page = response.content.decode()
    assert "The session of erin on Ops desktop was killed" in page
    assert "Ending: killed by ada" in page
    assert f'action="/desktop/-/sessions/{live.pk}/kill/"' not in page
    assert f"/desktop/-/sessions/{live.pk}/watch/" not in page


def test_once_the_killed_session_has_ended_it_is_no_longer_listed(admin_client, live):
    admin_client.post(f"/desktop/-/sessions/{live.pk}/kill/")
    broker.end_session(live.pk, EndReason.KILLED, "An administrator (ada) ended this session.", ended_by="ada")
    page = admin_client.get("/desktop/-/live/").content.decode()
    assert str(live.pk) not in page and "No live sessions" in page


def test_start_times_use_the_date_format_of_the_other_pages(admin_client, live):
    page = admin_client.get("/desktop/-/live/").content.decode()
    assert live.started_at.strftime("%Y-%m-%d %H:%M:%S") in page
