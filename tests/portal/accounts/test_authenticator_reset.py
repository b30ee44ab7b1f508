"""Lost-device reset on People: one admin asks, a different admin approves; then every
authenticator of the person is gone and her sessions end. Both steps are audited."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.contrib.auth import get_user_model
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.accounts import mfa
from portal.accounts.models import AuthenticatorReset
from portal.audit.models import AuditEvent
from portal.passkeys.models import PasskeyDevice
from tests.conftest import https_client, sign_in
from tests.factories import UserFactory, enrol_totp
from tests.portal.passkeys.authenticator import SoftAuthenticator
from tests.portal.passkeys.conftest import enrol

pytestmark = pytest.mark.django_db


def admin_client(username: str):
    admin = UserFactory(username=username, role="admin")
    admin.totp = enrol_totp(admin)
    client = https_client()
    sign_in(client, admin)
    return client


@pytest.fixture
def ada():
    return admin_client("ada")


@pytest.fixture
def bob():
    return admin_client("bob")


@pytest.fixture
def erin_with_everything(client, signed_in_employee):
    """Erin signed in, with an authenticator app, backup codes and a passkey."""
    assert enrol(client, SoftAuthenticator()).status_code == 200
    mfa.issue_backup_codes(signed_in_employee)
    return signed_in_employee


def devices_of(user) -> int:
    return sum(model.objects.filter(user=user).count() for model in (TOTPDevice, StaticDevice, PasskeyDevice))


def ask(admin, person, reason: str = "phone lost") -> AuthenticatorReset:
    response = admin.post(f"/manage/people/{person.pk}/reset/", {"reason": reason})
    assert response.status_code == 302
    return AuthenticatorReset.objects.get(person=person, state="pending")


def test_asking_changes_nothing_and_the_requester_cannot_approve(ada, client, erin_with_everything):
    reset = ask(ada, erin_with_everything)

    response = ada.post(f"/manage/people/resets/{reset.pk}/approve/", follow=True)

    assert "another admin must approve it" in response.content.decode()
    assert devices_of(erin_with_everything) == 3
    assert client.get("/").status_code == 200, "her session goes on"
    reset.refresh_from_db()
    assert reset.state == "pending"
    assert AuditEvent.objects.filter(action="authenticator.reset_approved", outcome="refused",
                                     actor="ada").exists()


def test_a_second_admin_approves_then_every_device_is_gone_and_her_sessions_ended(
        ada, bob, client, erin_with_everything):
    reset = ask(ada, erin_with_everything)
    people = bob.get("/manage/people/").content.decode()
    assert "Reset of all authenticators requested" in people and "phone lost" in people

    response = bob.post(f"/manage/people/resets/{reset.pk}/approve/")

    assert response.status_code == 302
    assert devices_of(erin_with_everything) == 0
    assert client.get("/")["Location"].startswith("/accounts/login/")
    asked, approved = AuditEvent.objects.filter(action__startswith="authenticator.reset").order_by("seq")
    assert (asked.action, asked.actor, asked.outcome) == ("authenticator.reset_requested", "ada", "pending")
    assert (approved.action, approved.actor, approved.outcome) == ("authenticator.reset_approved", "bob",
                                                                   "success")
    assert approved.detail["requested_by"] == "ada" and approved.detail["user"] == "erin"
    assert approved.detail["removed"] == {"totp": 1, "backup": 1, "passkey": 1}
    assert approved.detail["web_sessions_ended"] == 1
    reset.refresh_from_db()
    assert reset.state == "applied" and reset.decided_by.username == "bob"


def test_a_request_approved_after_a_day_has_lapsed(ada, bob, erin_with_everything):
    reset = ask(ada, erin_with_everything)
    AuthenticatorReset.objects.filter(pk=reset.pk).update(expires_at=timezone.now() - timedelta(seconds=1))

    bob.post(f"/manage/people/resets/{reset.pk}/approve/")

    assert devices_of(erin_with_everything) == 3
    reset.refresh_from_db()
    assert reset.state == "expired"


def test_nobody_approves_a_reset_of_their_own_authenticators(ada, bob):
    bob_user = get_user_model().objects.get(username="bob")
    reset = ask(ada, bob_user)

    bob.post(f"/manage/people/resets/{reset.pk}/approve/")

    assert devices_of(bob_user) == 1
    reset.refresh_from_db()
    assert reset.state == "pending"


def test_a_request_needs_a_reason_and_one_waits_at_a_time(ada, bob, erin_with_everything):
    ada.post(f"/manage/people/{erin_with_everything.pk}/reset/", {"reason": "  "})
    assert not AuthenticatorReset.objects.exists()
    ask(ada, erin_with_everything)
    bob.post(f"/manage/people/{erin_with_everything.pk}/reset/", {"reason": "again"})
    assert AuthenticatorReset.objects.count() == 1


def test_a_cancelled_request_cannot_be_approved(ada, bob, erin_with_everything):
    reset = ask(ada, erin_with_everything)
    ada.post(f"/manage/people/resets/{reset.pk}/cancel/")

    bob.post(f"/manage/people/resets/{reset.pk}/approve/")

    assert devices_of(erin_with_everything) == 3
    assert AuditEvent.objects.filter(action="authenticator.reset_cancelled", actor="ada").exists()


@pytest.mark.parametrize("role", ["employee", "auditor"])
def test_only_admins_ask_or_approve(ada, erin_with_everything, role):
    reset = ask(ada, erin_with_everything)
    other = UserFactory(username=f"x-{role}", role=role)
    other.totp = enrol_totp(other)
    outsider = https_client()
    sign_in(outsider, other)

    assert outsider.post(f"/manage/people/{erin_with_everything.pk}/reset/", {"reason": "x"}).status_code == 403
    assert outsider.post(f"/manage/people/resets/{reset.pk}/approve/").status_code == 403
    assert outsider.post(f"/manage/people/resets/{reset.pk}/cancel/").status_code == 403
    assert devices_of(erin_with_everything) == 3
