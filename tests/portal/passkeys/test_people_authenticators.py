"""People: each person's authenticators (app, backup codes, passkeys), revoked by an admin, audited."""

from __future__ import annotations

import pytest

from portal.accounts import mfa
from portal.audit.models import AuditEvent
from portal.passkeys.models import PasskeyDevice
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tests.portal.passkeys.conftest import enrol, passkey_sign_in

pytestmark = pytest.mark.django_db


@pytest.fixture
def admin_client(db):
    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    client = https_client()
    sign_in(client, admin)
    return client


def test_people_lists_each_persons_app_backup_codes_and_named_passkeys(admin_client, client,
                                                                        signed_in_employee, authenticator):
    enrol(client, authenticator, "Erin's laptop")
    mfa.issue_backup_codes(signed_in_employee)
    page = admin_client.get("/manage/people/").content.decode()
    assert "Authenticator app" in page and "Backup codes (10 left)" in page
    assert "Passkey “Erin&#x27;s laptop”" in page


def test_an_admin_revokes_a_lost_passkey_and_the_session_confirmed_with_it_must_confirm_again(
        admin_client, client, signed_in_employee, authenticator):
    enrol(client, authenticator, "Lost phone")
    thief = https_client()
    assert passkey_sign_in(thief, authenticator).status_code == 200
    device = PasskeyDevice.objects.get()
    response = admin_client.post(
        f"/manage/people/{signed_in_employee.pk}/authenticators/passkey/{device.pk}/revoke/")
    assert response.status_code == 302 and not PasskeyDevice.objects.exists()
    assert thief.get("/").status_code == 302, "the passkey's sign-in is no longer verified"
    assert client.get("/").status_code == 200, "the app-confirmed session goes on"
    event = AuditEvent.objects.get(action="authenticator.revoke")
    assert event.actor == "ada"
    assert event.detail == {"user": signed_in_employee.username, "kind": "passkey",
                            "device": "Passkey “Lost phone”", "remaining": 1}


def test_revoking_the_app_leaves_a_person_with_passkeys_asked_for_a_passkey(admin_client, client,
                                                                            signed_in_employee, authenticator):
    enrol(client, authenticator)
    admin_client.post(f"/manage/people/{signed_in_employee.pk}/authenticators/totp/"
                      f"{signed_in_employee.totp.pk}/revoke/")
    assert client.get("/")["Location"].startswith("/accounts/mfa/verify/")
    assert AuditEvent.objects.filter(action="authenticator.revoke", detail__kind="totp").exists()


@pytest.mark.parametrize("role", ["employee", "auditor"])
def test_only_admins_revoke_authenticators(client, signed_in_employee, role):
    other = UserFactory(username=f"x-{role}", role=role)
    other.totp = enrol_totp(other)
    someone = https_client()
    sign_in(someone, other)
    response = someone.post(f"/manage/people/{signed_in_employee.pk}/authenticators/totp/"
                            f"{signed_in_employee.totp.pk}/revoke/")
    assert response.status_code == 403
    assert not AuditEvent.objects.filter(action="authenticator.revoke").exists()


def test_a_device_of_another_person_cannot_be_revoked_through_someone_elses_row(admin_client, signed_in_employee):
    other = UserFactory(username="olga", role="employee")
    other_totp = enrol_totp(other)
    admin_client.post(f"/manage/people/{signed_in_employee.pk}/authenticators/totp/{other_totp.pk}/revoke/")
    assert other.totpdevice_set.exists()
