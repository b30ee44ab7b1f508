"""In Chromium: a new employee signs in through the OpenID Provider; the IdP's logout ends her.

The portal is served over HTTPS (tests.fixtures.portal_server); the OP delivers its
back-channel logout to it over that TLS, trusting the test CA.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator

import pytest
from django.contrib.auth.models import Group

from tests.fixtures.oidc import RunningOP, client_config, run_op
from tiers.models import Resource, Tier

pytestmark = pytest.mark.e2e

NEW_EMPLOYEE = {"nora": {"email": "nora@corp.example", "groups": ["engineering"], "amr": ["pwd", "mfa"]}}


@pytest.fixture
def op_for_live_portal(live_portal, settings) -> Iterator[RunningOP]:
    # The OP trusts this portal's own CA only: every test portal's CA has the same name, and a
    # TLS client given several may try the wrong one.
    with run_op([client_config(live_portal.url)], NEW_EMPLOYEE, ca_file=live_portal.ca_file) as op:
        settings.PORTAL_OIDC_PROVIDERS = (op.provider(groups={"engineering": ("employee", "eng")}),)
        yield op


@pytest.fixture
def page(chromium):
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.set_default_timeout(15_000)
    yield page
    context.close()


def test_a_new_employee_signs_in_through_the_idp_and_its_logout_ends_her_session(live_portal, op_for_live_portal,
                                                                                   page):
    tier = Tier.objects.create(name="low-sso", rank=1)
    wiki = Resource.objects.create(slug="eng-wiki", name="Engineering wiki", kind="web",
                                   upstream="http://127.0.0.1:9/", tier=tier)
    wiki.allowed_groups.add(Group.objects.get_or_create(name="eng")[0])

    page.goto(f"{live_portal.url}/")
    assert "/accounts/login/" in page.url
    page.click("text=Sign in with Corp SSO")
    page.fill("input[name=login]", "nora")
    page.fill("input[name=password]", "whatever-the-idp-checks")
    page.click("button[type=submit]")
    page.click("button[type=submit]")  # the OP's consent page: Continue
    page.wait_for_url(f"{live_portal.url}/")
    assert page.locator("h1").inner_text() == "My apps"
    assert page.locator("text=Engineering wiki").count() >= 1, "the group the IdP sent opens the wiki"

    page.goto(f"{op_for_live_portal.issuer}/session/end")
    page.click("text=Yes, sign me out")
    signed_out_at = time.monotonic()
    page.wait_for_load_state()

    deadline = signed_out_at + 2.0
    while True:
        page.goto(f"{live_portal.url}/")
        if re.search(r"/accounts/login/", page.url) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert "/accounts/login/" in page.url, ("her portal session outlived the IdP's logout; the OP said:\n"
                                            + "\n".join(op_for_live_portal.output[-15:]))
    assert time.monotonic() - signed_out_at <= 2.0
