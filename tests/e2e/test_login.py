"""A new employee signs in for the first time in a real browser."""

from __future__ import annotations

import re

import pytest
from django_otp.oath import TOTP

from tests.factories import PASSWORD, UserFactory

pytestmark = pytest.mark.e2e


def code_for(secret_b32: str, offset_steps: int = 0) -> str:
    import base64

    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    totp = TOTP(key)
    totp.time = totp.time + offset_steps * 30
    return f"{totp.token():06d}"


def test_new_user_enrols_totp_and_lands_on_my_apps(portal_url, page):
    UserFactory(username="nina", role="employee")
    page.goto(f"{portal_url}/")
    assert "/accounts/login/" in page.url
    page.fill("input[name=username]", "nina")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")

    page.wait_for_url(re.compile(r"/accounts/mfa/$"))
    assert page.locator(".qr svg").is_visible()
    secret = page.locator("#totp-secret").inner_text().strip()

    wrong = code_for(secret, offset_steps=10)
    page.fill("input[name=otp_token]", wrong)
    page.click("button[type=submit]")
    assert page.locator(".error").inner_text().startswith("That code is not right")
    page.goto(f"{portal_url}/")
    assert "/accounts/mfa" in page.url, "a wrong code must not sign anybody in"

    page.goto(f"{portal_url}/accounts/mfa/")
    page.wait_for_timeout(1500)  # one wrong code costs a one-second wait (throttling)
    page.fill("input[name=otp_token]", code_for(secret))
    page.click("button[type=submit]")
    assert page.locator("#backup-codes li").count() == 10
    page.click("text=I have saved them, continue")
    page.wait_for_url(f"{portal_url}/")
    assert page.locator("h1").inner_text() == "My apps"


def test_returning_user_with_a_wrong_code_stays_out(portal_url, page):
    from tests.factories import enrol_totp, totp_code

    user = UserFactory(username="omar", role="employee")
    device = enrol_totp(user)
    page.goto(f"{portal_url}/accounts/login/")
    page.fill("input[name=username]", "omar")
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/mfa/verify/"))
    page.fill("input[name=otp_token]", totp_code(device, offset_steps=20))
    page.click("button[type=submit]")
    assert "not right" in page.locator(".error").inner_text()
    page.goto(f"{portal_url}/")
    assert "/accounts/mfa/verify/" in page.url
    page.wait_for_timeout(1500)  # one wrong code costs a one-second wait (throttling)
    page.fill("input[name=otp_token]", totp_code(device))
    page.click("button[type=submit]")
    page.wait_for_url(f"{portal_url}/")
