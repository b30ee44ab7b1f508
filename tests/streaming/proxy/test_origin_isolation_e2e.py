"""Issue 11 acceptance, in Chromium: a low-tier app's script cannot act as the portal.

The probe that opened the issue: an admin opened a low-tier app whose page fetched
``/manage/people/``, read the CSRF token and posted the lock form, so the admin locked a user
without knowing it. Here the portal and the apps share a registrable domain
(``portal.test.localhost`` and ``*.apps.test.localhost``, as ``portal.example.com`` and
``*.apps.example.com`` would in production), the hardest case: the two are same-site.
"""

from __future__ import annotations

from urllib.parse import urlencode, urlsplit

import pytest

from portal.audit.models import AuditEvent
from tests.factories import UserFactory, enrol_totp
from tests.streaming.desktop.test_e2e_chromium import sign_in_with_browser

pytestmark = [pytest.mark.e2e, pytest.mark.host_mode, pytest.mark.django_db(transaction=True)]

APPS = "apps.test.localhost"


@pytest.fixture
def site(settings, portal_url, web_resource, echo_upstream):
    port = urlsplit(portal_url).port
    portal = f"https://portal.test.localhost:{port}"
    settings.PORTAL_APPS_DOMAIN = APPS
    settings.PORTAL_URL = portal
    settings.ALLOWED_HOSTS = [*settings.ALLOWED_HOSTS, "portal.test.localhost"]
    web_resource("board", echo_upstream.url, groups=("employee", "admin"))
    return portal, f"https://board.{APPS}:{port}"


@pytest.fixture
def people(transactional_db):
    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    victim = UserFactory(username="vic", role="employee")
    return admin, victim


def test_a_low_tier_apps_script_cannot_read_or_drive_the_portal(site, people, chromium):
    portal, app = site
    admin, victim = people
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    sign_in_with_browser(page, portal, admin)
    assert "/accounts/" not in page.url

    # The admin merely opens the app; its page runs its script.
    page.goto(f"{app}/hostile?" + urlencode({"portal": portal, "victim": victim.pk}))
    page.wait_for_function("document.title === 'done'", timeout=15000)
    probe = page.evaluate("window.__probe")

    # Same-origin /manage/people/ is the app's own path: the portal's page is not there.
    assert '"raw_path": "/manage/people/"' in probe["same_origin_read"]
    # The portal's origin answers no cross-origin read (no CORS), with or without cookies.
    assert probe["cross_read"].startswith("error:")
    # Nothing of the portal's is in the app's cookie jar, nor readable by its script.
    assert "sessionid" not in probe["cookies"] and "csrftoken" not in probe["cookies"]
    assert {c["name"] for c in context.cookies(app)}.isdisjoint({"sessionid", "csrftoken"})

    # A form posted at the portal from the app's page (top-level, as a plain HTML form would).
    with page.expect_navigation():
        page.evaluate("""([portal, victim]) => {
            const form = document.createElement("form");
            form.method = "POST";
            form.action = portal + "/manage/people/" + victim + "/lock/";
            const reason = document.createElement("input");
            reason.name = "reason"; reason.value = "pwned";
            form.appendChild(reason);
            document.body.appendChild(form);
            form.submit();
        }""", [portal, victim.pk])
    assert "/manage/people/" not in page.url or "CSRF" in page.content() or "403" in page.content()

    victim.refresh_from_db()
    assert victim.is_active, "the app's script locked a user"
    assert not AuditEvent.objects.filter(action__contains="lock", resource="").filter(
        detail__reason="pwned").exists()
    context.close()


@pytest.fixture
def path_mode_site(settings, portal_url, web_resource, echo_upstream):
    settings.PORTAL_APPS_DOMAIN = ""  # a deployment without wildcard DNS
    web_resource("board", echo_upstream.url, groups=("employee", "admin"))
    return portal_url


def test_in_path_mode_the_apps_script_runs_in_an_opaque_origin(path_mode_site, people, chromium):
    portal = path_mode_site
    admin, victim = people
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    sign_in_with_browser(page, portal, admin)

    response = page.goto(f"{portal}/apps/board/hostile?" + urlencode({"portal": portal, "victim": victim.pk}))
    assert "sandbox" in response.headers["content-security-policy"]
    page.wait_for_function("document.title === 'done'", timeout=15000)
    probe = page.evaluate("window.__probe")
    # Same host, but not the same origin: nothing of the portal can be read or posted with
    # the admin's session, and its cookies are out of reach.
    assert probe["same_origin_read"].startswith("error:")
    assert probe["cross_read"].startswith("error:")
    assert probe["cookies"].startswith("error:")
    victim.refresh_from_db()
    assert victim.is_active
    context.close()
