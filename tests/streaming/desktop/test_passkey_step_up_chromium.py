"""In Chromium with a virtual authenticator, through the real portal, guacd and x11vnc: a critical
desktop whose tier accepts only passkeys asks, in the live session, for a passkey; the dialog
offers the passkey alone, a code is refused with a sentence naming what counts, and the passkey
releases the held input as a code does elsewhere."""

from __future__ import annotations

import time
from importlib import import_module

import pytest
from django.conf import settings

from portal.audit.models import AuditEvent
from streaming.desktop import broker, groups
from tests.conftest import page_with_passkeys
from tests.factories import totp_code
from tests.streaming.desktop.conftest import make_resource
from tests.streaming.desktop.test_e2e_chromium import in_thread, sign_in_with_browser, wait_until
from tiers.models import Tier

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# Posts a code to the dialog's endpoint as its form would, and returns the status and the answer.
POST_A_CODE = """async (code) => {
  const form = new FormData(document.getElementById("step-up-form"));
  form.set("otp_token", code);
  form.set("action", "desktop.continue");
  const response = await fetch(document.body.dataset.stepUp, {method: "POST", body: form,
                                                               credentials: "same-origin"});
  return [response.status, await response.json()];
}"""


@pytest.fixture
def vault_desktop(vnc_target, desktop_settings):
    from streaming.desktop.vault import TargetSecret

    tier = Tier.objects.create(name="critical", rank=30, access_mode="stream", mfa_read=600, mfa_write=0,
                               mfa_sensitive=0, reauth_interval_seconds=30,
                               accepted_factors={"read": ["passkey"], "sensitive": ["passkey"]})
    return make_resource("vault-desk", "vnc", vnc_target.upstream, tier,
                         TargetSecret(password=vnc_target.password))


@pytest.fixture
def page(live_portal, chromium):
    with page_with_passkeys(chromium, width=1100) as page:
        yield page


def age_the_confirmation(page, user) -> None:
    """As if the last confirmation were an hour old; the live session is told to decide again."""
    key = next(c["value"] for c in page.context.cookies() if c["name"] == "sessionid")

    def age() -> None:
        session = import_module(settings.SESSION_ENGINE).SessionStore(key)
        session["mfa_time"] = int(time.time()) - 3600
        session.save()
        broker.push(groups.for_user(user.pk), {"type": "desktop.recheck"})

    in_thread(age)


def test_a_critical_desktop_asks_in_session_for_a_passkey_and_refuses_a_code(
        employee, vault_desktop, page, live_portal):
    url = live_portal.url
    sign_in_with_browser(page, url, employee)
    page.goto(f"{url}/accounts/mfa/")
    page.fill("input[name=passkey_name]", "Chromium laptop")
    page.click("text=Add a passkey")
    page.wait_for_selector("#passkeys >> text=Chromium laptop")

    page.goto(f"{url}/desktop/vault-desk/")  # opening is a sensitive action: a passkey for it
    page.wait_for_url("**/accounts/step-up/**")
    page.click("text=Confirm with a passkey")
    page.wait_for_url(f"{url}/desktop/vault-desk/")
    wait_until(page, "document.body.dataset.clientState === '3'")

    age_the_confirmation(page, employee)
    page.wait_for_selector("#step-up[open]", timeout=5000)
    assert "Accepted here: a passkey." in page.locator("#step-up-reason").inner_text()
    assert page.locator("#codes-do-not-count").inner_text() == (
        "An authenticator app code does not count here. Accepted here: a passkey.")
    assert not page.locator("#otp_token").is_visible()
    assert page.locator("#state").inner_text() == "Paused: passkey needed"

    status, answer = page.evaluate(POST_A_CODE, totp_code(employee.totp, offset_steps=1))
    assert status == 403
    assert answer["error"] == "An authenticator app code does not count here. Accepted here: a passkey."

    page.click("#use-passkey")
    page.wait_for_selector("#step-up:not([open])", state="attached", timeout=5000)
    wait_until(page, "document.getElementById('state').textContent === 'Connected'", timeout=5)
    event = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert event.resource == "vault-desk" and event.detail["factor"] == "passkey"
    assert event.detail["action"] == "desktop.continue" and event.detail["action_digest"]
    assert AuditEvent.objects.filter(action="desktop.hold", outcome="released").exists()
    assert page.locator("body").get_attribute("data-ended") is None
