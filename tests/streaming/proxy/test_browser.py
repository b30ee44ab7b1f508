"""End to end in Chromium: open Datasette from My apps on its own origin, write behind a step-up,
get locked out."""

from __future__ import annotations

import httpx
import pytest

from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code

pytestmark = [pytest.mark.e2e, pytest.mark.host_mode, pytest.mark.django_db(transaction=True)]


def _sign_in(page, base: str, user, *, step: int = 0) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("main button[type=submit]")
    page.wait_for_url("**/accounts/mfa/verify/**")
    page.fill("input[name=otp_token]", totp_code(user.totp, offset_steps=step))
    page.click("main button[type=submit]")
    page.wait_for_url(f"{base}/")


def _notes(datasette_upstream) -> list[str]:
    response = httpx.get(f"{datasette_upstream.url}notes.json",
                         params={"sql": "select body from notes", "_shape": "array"})
    return [row["body"] for row in response.json()]


@pytest.fixture
def admin(transactional_db):
    user = UserFactory(username="adele", role="admin")
    user.is_superuser = True
    user.save()
    user.totp = enrol_totp(user)
    return user


# The database work happens in fixtures listed before ``chromium``: once Playwright's loop
# runs on this thread, signal handlers that push to the channel layer cannot.
@pytest.fixture
def notes(settings, portal_url, web_resource, datasette_root_upstream):
    settings.PORTAL_URL = portal_url
    return web_resource("notes", datasette_root_upstream.url, mfa_write=0)


def test_employee_writes_through_step_up_and_is_locked_out(portal_url, notes, datasette_root_upstream,
                                                            worker, admin, chromium):
    datasette_upstream = datasette_root_upstream
    app = portal_url.replace("https://127.0.0.1", "https://notes.apps.localhost")
    context = chromium.new_context(ignore_https_errors=True)
    page = context.new_page()
    _sign_in(page, portal_url, worker)

    # My apps -> open the app: Datasette on its own origin, in a tab of its own (My apps stays
    # open as the way back), the session handed over once.
    portal_tab = page
    with context.expect_page() as opened:
        portal_tab.click("li.app[data-slug=notes] a.button")
    page = opened.value
    page.wait_for_url(f"{app}/")
    assert portal_tab.url == f"{portal_url}/"
    assert "Team notes" in page.content()
    page.goto(f"{app}/notes/notes")
    assert page.locator("text=Seed note 1").count() >= 1

    # A write: the form post is held while the portal asks for a fresh code.
    page.goto(f"{app}/notes/add_note")
    page.fill("textarea[name=body], input[name=body]", "Written from Chromium")
    page.click("form.sql input[type=submit], form.sql button[type=submit]")
    page.wait_for_url("**/accounts/step-up/**")
    assert "Written from Chromium" not in _notes(datasette_upstream)
    page.fill("input[name=otp_token]", totp_code(worker.totp, offset_steps=1))
    page.click("main button[type=submit]")
    page.wait_for_url(f"{app}/**")
    assert page.locator("text=Note saved").count() >= 1
    assert _notes(datasette_upstream).count("Written from Chromium") == 1
    page.reload()
    assert _notes(datasette_upstream).count("Written from Chromium") == 1

    # The admin locks the employee in the admin site; the employee's very next request is denied.
    admin_page = chromium.new_context(ignore_https_errors=True).new_page()
    _sign_in(admin_page, portal_url, admin, step=0)
    admin_page.goto(f"{portal_url}/admin/auth/user/{worker.pk}/change/")
    admin_page.uncheck("#id_is_active")
    admin_page.click("input[name=_save]")
    admin_page.wait_for_url(f"{portal_url}/admin/auth/user/")

    response = page.goto(f"{app}/notes/notes")
    assert response.status == 403
    assert "Your account is locked" in page.content()
    context.close()
