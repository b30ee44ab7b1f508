"""Passkeys: enrol several from Security, sign in with or without a password, counters and
user verification checked, a cloned authenticator refused and audited."""

from __future__ import annotations

import pytest
from django_otp.plugins.otp_static.models import StaticDevice

from portal.accounts import mfa
from portal.audit.models import AuditEvent
from portal.passkeys.models import PasskeyDevice
from tests.conftest import https_client, sign_in
from tests.factories import PASSWORD
from tests.portal.passkeys.authenticator import SoftAuthenticator
from tests.portal.passkeys.conftest import enrol, passkey_sign_in, post_json

pytestmark = pytest.mark.django_db


def test_a_user_enrols_two_named_passkeys_and_sees_both_on_security(client, signed_in_employee,
                                                                     authenticator):
    assert enrol(client, authenticator, "Work laptop").json() == {"location": "/accounts/mfa/"}
    assert enrol(client, SoftAuthenticator(), "Security key").status_code == 200
    page = client.get("/accounts/mfa/").content.decode()
    assert "Work laptop" in page and "Security key" in page
    devices = PasskeyDevice.objects.filter(user=signed_in_employee)
    assert devices.count() == 2
    assert len({d.user_handle for d in devices}) == 1, "one WebAuthn user id per person"
    assert AuditEvent.objects.filter(action="mfa.passkey_enrol", outcome="success").count() == 2


def test_a_password_alone_cannot_add_a_passkey(client, employee, authenticator):
    sign_in(client, employee, with_mfa=False)
    response = post_json(client, "/accounts/mfa/passkeys/new/options/")
    assert response.status_code == 403
    assert not PasskeyDevice.objects.exists()


def test_an_old_confirmation_is_not_enough_to_add_a_passkey(client, signed_in_employee, authenticator):
    session = client.session
    session[mfa.MFA_TIME_KEY] -= 3600
    session.save()
    response = post_json(client, "/accounts/mfa/passkeys/new/options/")
    assert response.status_code == 403 and "/accounts/step-up/" in response.json()["location"]


def test_a_discoverable_passkey_signs_in_without_a_password(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    fresh = https_client()
    response = passkey_sign_in(fresh, authenticator, next_url="/manage/")
    assert response.status_code == 200, response.content
    assert response.json() == {"location": "/manage/"}
    assert fresh.get("/").status_code == 200
    assert fresh.session[mfa.AMR_KEY] == ["hwk", "user"]
    event = AuditEvent.objects.filter(action="login.passkey").latest("seq")
    assert event.outcome == "success" and event.actor == signed_in_employee.username


def test_password_then_passkey_signs_in_with_amr_pwd_hwk_user(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    fresh = https_client()
    sign_in(fresh, signed_in_employee, with_mfa=False)
    page = fresh.get("/accounts/mfa/verify/").content.decode()
    assert "Use a passkey" in page
    options = post_json(fresh, "/accounts/mfa/passkey/options/").json()
    assert [c["id"] for c in options["allowCredentials"]] == [PasskeyDevice.objects.get().credential_id]
    response = post_json(fresh, "/accounts/mfa/passkey/", {"credential": authenticator.get(options)})
    assert response.status_code == 200 and response.json() == {"location": "/"}
    assert fresh.get("/").status_code == 200
    assert fresh.session[mfa.AMR_KEY] == ["pwd", "hwk", "user"]


def test_a_passkey_of_someone_else_is_no_second_factor(client, signed_in_employee, authenticator):
    from tests.factories import UserFactory, enrol_totp

    enrol(client, authenticator)
    other = UserFactory(username="mallory", role="employee")
    other.totp = enrol_totp(other)
    fresh = https_client()
    sign_in(fresh, other, with_mfa=False)
    options = post_json(fresh, "/accounts/mfa/passkey/options/").json()
    answer = authenticator.get(options, authenticator.credentials[0])
    assert post_json(fresh, "/accounts/mfa/passkey/", {"credential": answer}).status_code == 401
    assert "/accounts/mfa/verify/" in fresh.get("/")["Location"]


def test_a_cloned_passkey_whose_counter_goes_back_is_refused_and_audited(client, signed_in_employee,
                                                                          authenticator):
    enrol(client, authenticator)
    assert passkey_sign_in(https_client(), authenticator).status_code == 200  # counter 1
    assert passkey_sign_in(https_client(), authenticator).status_code == 200  # counter 2
    authenticator.credentials[0].sign_count = 0  # the copy was taken before those two uses
    thief = https_client()
    response = passkey_sign_in(thief, authenticator)  # presents counter 1
    assert response.status_code == 401
    assert "counter went backwards" in response.json()["error"]
    assert thief.get("/")["Location"].startswith("/accounts/login/")
    event = AuditEvent.objects.get(action="passkey.clone_suspected")
    assert event.actor == signed_in_employee.username and event.outcome == "refused"
    assert event.detail["stored_count"] == 2 and event.detail["presented_count"] == 1
    assert PasskeyDevice.objects.get().sign_count == 2


def test_a_passkey_without_user_verification_is_refused(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    authenticator.user_verified = False
    response = passkey_sign_in(https_client(), authenticator)
    assert response.status_code == 401
    assert AuditEvent.objects.filter(action="login.passkey", outcome="failure").exists()


def test_an_assertion_signed_for_another_site_is_refused(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    authenticator.origin = "https://portal.evil.example"  # a phishing page relaying the challenge
    assert passkey_sign_in(https_client(), authenticator).status_code == 401


def test_an_assertion_is_used_once(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    fresh = https_client()
    options = post_json(fresh, "/accounts/login/passkey/options/").json()
    answer = authenticator.get(options)
    assert post_json(fresh, "/accounts/login/passkey/", {"credential": answer}).status_code == 200
    again = https_client()
    again.cookies = fresh.cookies
    assert post_json(again, "/accounts/login/passkey/", {"credential": answer}).status_code == 401


def test_a_locked_user_cannot_sign_in_with_a_passkey(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    signed_in_employee.is_active = False
    signed_in_employee.save()
    fresh = https_client()
    assert passkey_sign_in(fresh, authenticator).status_code == 403
    assert fresh.get("/")["Location"].startswith("/accounts/login/")


def test_backup_codes_keep_working_next_to_passkeys(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    codes = mfa.issue_backup_codes(signed_in_employee)
    fresh = https_client()
    sign_in(fresh, signed_in_employee, with_mfa=False)
    response = fresh.post("/accounts/mfa/verify/", {"otp_token": codes[0]})
    assert response.status_code == 302 and fresh.get("/").status_code == 200
    assert StaticDevice.objects.get(user=signed_in_employee).token_set.count() == len(codes) - 1


def test_with_passkeys_and_no_app_the_password_leads_to_a_passkey_not_a_new_app(
        client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    signed_in_employee.totp.delete()
    fresh = https_client()
    response = fresh.post("/accounts/login/", {"username": signed_in_employee.username, "password": PASSWORD})
    assert response["Location"] == "/accounts/mfa/verify/"
    assert fresh.get("/accounts/mfa/")["Location"] == "/accounts/mfa/verify/", \
        "the password alone must not enrol a new authenticator app"


def test_removing_a_passkey_signs_out_the_sessions_verified_with_it(client, signed_in_employee,
                                                                    authenticator):
    enrol(client, authenticator, "Old phone")
    other = https_client()
    passkey_sign_in(other, authenticator)
    device = PasskeyDevice.objects.get()
    response = client.post(f"/accounts/mfa/passkeys/{device.pk}/remove/")
    assert response.status_code == 302 and not PasskeyDevice.objects.exists()
    assert other.get("/").status_code == 302
    assert AuditEvent.objects.filter(action="mfa.passkey_remove", detail__device="Old phone").exists()


def test_the_sign_in_page_offers_passkey_autofill(client, db):
    page = client.get("/accounts/login/").content.decode()
    assert 'autocomplete="username webauthn"' in page
    assert 'data-passkey="signin"' in page and "passkeys/passkeys.js" in page
