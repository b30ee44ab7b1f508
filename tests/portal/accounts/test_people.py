"""Admins lock and unlock people; the lock ends web sessions at once and is audited."""

from __future__ import annotations

import pytest

from portal.audit.models import AuditEvent
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client():
    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    client = https_client()
    sign_in(client, admin)
    return client


@pytest.mark.parametrize(("role", "status"), [("employee", 403), ("auditor", 403)])
def test_only_admins_see_the_people_page(client, role, status):
    user = UserFactory(username=f"x-{role}", role=role)
    user.totp = enrol_totp(user)
    sign_in(client, user)
    assert client.get("/manage/people/").status_code == status


def test_locking_ends_the_persons_web_session_and_says_who_and_why(admin_client, client, signed_in_employee):
    assert client.get("/").status_code == 200
    page = admin_client.get("/manage/people/")
    assert signed_in_employee.username.encode() in page.content
    response = admin_client.post(f"/manage/people/{signed_in_employee.pk}/lock/", {"reason": "left the company"})
    assert response.status_code == 302
    assert client.get("/")["Location"].startswith("/accounts/login/")
    event = AuditEvent.objects.get(action="account.lock")
    assert event.actor == "ada" and event.reasons[0]["message"] == "left the company"
    assert event.detail == {"user": signed_in_employee.username, "web_sessions_ended": 1}


def test_a_lock_needs_a_reason_and_nobody_locks_themselves(admin_client, employee):
    admin_client.post(f"/manage/people/{employee.pk}/lock/", {"reason": " "})
    employee.refresh_from_db()
    assert employee.is_active
    from django.contrib.auth import get_user_model

    ada = get_user_model().objects.get(username="ada")
    admin_client.post(f"/manage/people/{ada.pk}/lock/", {"reason": "oops"})
    ada.refresh_from_db()
    assert ada.is_active


def test_unlock_lets_the_person_sign_in_again(admin_client, employee):
    admin_client.post(f"/manage/people/{employee.pk}/lock/", {"reason": "investigation"})
    admin_client.post(f"/manage/people/{employee.pk}/unlock/")
    employee.refresh_from_db()
    assert employee.is_active
    assert AuditEvent.objects.filter(action="account.unlock", actor="ada").exists()


def test_the_last_sign_in_is_shown_in_the_date_format_of_the_other_pages(admin_client, signed_in_employee):
    signed_in_employee.refresh_from_db()
    page = admin_client.get("/manage/people/").content.decode()
    assert signed_in_employee.last_login.strftime("%Y-%m-%d %H:%M:%S") in page
    assert 'role="search"' in page and '<div class="field"><label for="q">Find</label>' in page
