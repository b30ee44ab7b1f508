"""People shows each person's SSO links; an admin revokes one: that IdP account no longer signs
in as her, the sessions it started end, and the audit trail says who did it."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from portal.sso.models import SsoLink
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tests.portal.sso.conftest import sso_sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    admin = UserFactory(username="adam", role="admin")
    admin.totp = enrol_totp(admin)
    client = https_client()
    sign_in(client, admin)
    return client


def test_people_lists_the_link_and_revoking_it_ends_the_sessions_it_started(admin_client, client, corp,
                                                                              idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    assert client.get("/").status_code == 200
    link = SsoLink.objects.get(subject="nina")
    page = admin_client.get("/manage/people/?q=nina").content.decode()
    assert "Signs in through <strong>corp</strong> as <code>nina</code>" in page
    assert f"/sso/links/{link.pk}/revoke/" in page

    response = admin_client.post(f"/sso/links/{link.pk}/revoke/")

    assert response.status_code == 302 and response["Location"] == "/manage/people/"
    assert not SsoLink.objects.filter(pk=link.pk).exists()
    assert client.get("/")["Location"].startswith("/accounts/login/")
    event = AuditEvent.objects.get(action="sso.link_revoke")
    assert event.actor == "adam" and event.detail["user"] == "nina" and event.detail["subject"] == "nina"
    assert event.detail["sessions_ended_for"] == ["nina"]


def test_only_admins_revoke_a_link(client, signed_in_employee):
    link = SsoLink.objects.create(user=signed_in_employee, provider="corp", issuer="https://idp.example",
                                  subject="erin-at-idp")

    assert client.post(f"/sso/links/{link.pk}/revoke/").status_code == 403
    assert SsoLink.objects.filter(pk=link.pk).exists()
    assert not AuditEvent.objects.filter(action="sso.link_revoke").exists()


def test_the_people_page_reads_every_link_in_one_query_however_many_people_have_one(admin_client):
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    def linked(count: int) -> int:
        for n in range(count):
            person = UserFactory(username=f"linked-{count}-{n}")
            SsoLink.objects.create(user=person, provider="corp", issuer="https://idp.example",
                                   subject=f"s-{count}-{n}")
        with CaptureQueriesContext(connection) as queries:
            page = admin_client.get("/manage/people/").content.decode()
        assert f"<code>s-{count}-{count - 1}</code>" in page
        return len(queries)

    assert linked(2) == linked(6)
