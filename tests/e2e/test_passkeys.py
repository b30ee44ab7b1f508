"""In Chromium with a virtual authenticator (CDP WebAuthn domain): enrol a passkey, sign out,
sign in with it alone, open a critical desktop whose tier accepts only passkeys; the same
user's TOTP code is refused there with a sentence naming the accepted method."""

from __future__ import annotations

import re

import pytest
from django.contrib.auth.models import Group

from portal.audit.models import AuditEvent
from portal.passkeys.models import PasskeyDevice
from tests.conftest import page_with_passkeys
from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code
from tiers.models import Resource, Tier

pytestmark = pytest.mark.e2e


@pytest.fixture
def page(chromium):
    with page_with_passkeys(chromium) as page:
        yield page


def test_a_passkey_enrolled_in_chromium_signs_in_and_confirms_a_critical_desktop(live_portal, page):
    url = live_portal.url  # https://localhost:PORT: a secure context, RP ID "localhost"
    user = UserFactory(username="pia", role="employee")
    device = enrol_totp(user)
    tier = Tier.objects.create(name="critical-pk", rank=30, access_mode="stream", mfa_read=0,
                               mfa_write=0, mfa_sensitive=0, accepted_factors={"sensitive": ["passkey"]})
    vault = Resource.objects.create(slug="vault-desk", name="Vault desktop", kind="vnc",
                                    upstream="127.0.0.1:5999", tier=tier)
    vault.allowed_groups.add(Group.objects.get(name="employee"))

    page.goto(f"{url}/accounts/login/")
    page.fill("input[name=username]", "pia")
    page.fill("input[name=password]", PASSWORD)
    page.click("form button[type=submit]")
    page.wait_for_url(re.compile(r"/accounts/mfa/verify/"))
    page.fill("input[name=otp_token]", totp_code(device))
    page.click("form button[type=submit]")
    page.wait_for_url(f"{url}/")

    page.goto(f"{url}/accounts/mfa/")
    page.fill("input[name=passkey_name]", "Chromium laptop")
    page.click("text=Add a passkey")
    page.wait_for_selector("#passkeys >> text=Chromium laptop")
    assert PasskeyDevice.objects.get(user=user).name == "Chromium laptop"

    # Signed out, the sign-in page asks for passkeys through autofill (conditional mediation);
    # the virtual authenticator picks the one passkey as a person would from the list.
    page.click(".signout button")
    page.wait_for_url(f"{url}/")
    assert page.locator("h1").inner_text() == "My apps"
    assert AuditEvent.objects.filter(action="login.passkey", outcome="success", actor="pia").count() == 1

    # A browser without autofill for passkeys: the button does the same.
    page.add_init_script("delete PublicKeyCredential.isConditionalMediationAvailable;")
    page.click(".signout button")
    page.wait_for_url(re.compile(r"/accounts/login/"))
    page.click("text=Sign in with a passkey")
    page.wait_for_url(f"{url}/")
    assert AuditEvent.objects.filter(action="login.passkey", outcome="success", actor="pia").count() == 2

    page.goto(f"{url}/desktop/vault-desk/")
    page.wait_for_url(re.compile(r"/accounts/step-up/"))
    assert "Accepted here: a passkey." in page.locator(".lead").inner_text()
    page.fill("input[name=otp_token]", totp_code(device, offset_steps=1))
    page.click("text=Confirm with the code")
    refusal = page.locator(".field .error").inner_text()
    assert refusal.startswith("An authenticator app code does not count here.")
    assert "Accepted here: a passkey." in refusal

    page.click("text=Confirm with a passkey")
    page.wait_for_url(f"{url}/desktop/vault-desk/")
    assert page.locator(".statusbar .resource").inner_text() == "Vault desktop"
    event = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert event.detail["factor"] == "passkey" and event.detail["one_time_grant"] is True
    assert event.detail["action_digest"]
