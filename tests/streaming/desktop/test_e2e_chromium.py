"""In headless Chromium, through the real portal, guacd and targets: what an employee sees.

The page renders the desktop (non-blank canvas pixels), typing reaches the SSH target, an
admin's kill and a lock end the session within two seconds with a message, and the target's
password never appears in anything the browser received.
"""

from __future__ import annotations

import secrets
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession
from tests.factories import PASSWORD, totp_code

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# Counts canvas pixels that differ from the first one, across the display's layers.
NON_BLANK_PIXELS = """() => {
  let count = 0;
  for (const canvas of document.querySelectorAll('#screen canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 4; i < data.length; i += 4 * 7)
      if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) count++;
  }
  return count;
}"""


@pytest.fixture
def browser_page(live_portal, chromium):
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.received = []  # every WebSocket frame and HTTP body the browser got
    page.csp_violations = []
    page.on("console", lambda m: page.csp_violations.append(m.text)
            if "Content Security Policy" in m.text else None)
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: page.received.append(
        payload if isinstance(payload, str) else payload.decode("latin-1"))))
    page.on("response", lambda response: keep_body(page, response))
    yield page
    context.close()


def keep_body(page, response) -> None:
    kind = response.headers.get("content-type", "")
    if 200 <= response.status < 300 and ("text" in kind or "json" in kind or "javascript" in kind):
        page.received.append(response.text())


def wait_until(page, expression: str, timeout: float = 20) -> None:
    """Poll ``expression`` with ``page.evaluate``: the portal's CSP (rightly) forbids the
    string evaluation Playwright's ``wait_for_function`` relies on."""
    deadline = time.monotonic() + timeout
    while not page.evaluate(expression):
        assert time.monotonic() < deadline, f"never true: {expression[:80]}"
        page.wait_for_timeout(100)


def in_thread(fn):
    """Run ``fn`` in a thread of its own, as a request elsewhere would (Playwright owns this one)."""
    with ThreadPoolExecutor(1) as pool:
        return pool.submit(fn).result()


def sign_in_with_browser(page, base_url, user, *, lands_on: str = "/") -> None:
    """Password and code through the real forms, then wait for the page the role lands on."""
    page.goto(f"{base_url}/accounts/login/")
    page.fill("input[name=username]", user.username)
    page.fill("input[name=password]", PASSWORD)
    page.click("button[type=submit]")
    page.wait_for_url("**/accounts/mfa/verify/**")
    page.fill("input[name=otp_token]", totp_code(user.totp))
    page.click("button[type=submit]")
    page.wait_for_url(f"{base_url}{lands_on}")


def open_desktop(page, base_url, slug) -> None:
    page.goto(f"{base_url}/desktop/{slug}/")
    wait_until(page, "document.body.dataset.clientState === '3'")


def test_employee_sees_the_vnc_desktop_and_never_its_password(employee, vnc_resource, vnc_target,
                                                              browser_page, live_portal):
    page = browser_page
    sign_in_with_browser(page, live_portal.url, employee)
    open_desktop(page, live_portal.url, vnc_resource.slug)
    wait_until(page, f"({NON_BLANK_PIXELS})() > 500")
    assert page.locator("#state").inner_text() == "Connected"
    assert "Demo VNC" in page.locator(".statusbar").inner_text()
    assert vnc_target.password not in "".join(page.received)
    assert page.csp_violations == []


def test_typing_in_the_browser_reaches_the_ssh_target(employee, ssh_resource, ssh_target, browser_page,
                                                      live_portal):
    page = browser_page
    marker = ssh_target.home / f"e2e-{secrets.token_hex(4)}"
    sign_in_with_browser(page, live_portal.url, employee)
    open_desktop(page, live_portal.url, ssh_resource.slug)
    wait_until(page, f"({NON_BLANK_PIXELS})() > 50")  # the shell prompt
    page.keyboard.type(f"touch {marker}\n", delay=20)
    deadline = time.monotonic() + 15
    while not marker.exists():
        assert time.monotonic() < deadline, "the command typed in the browser never ran on the target"
        time.sleep(0.1)
    marker.unlink()
    assert ssh_target.password not in "".join(page.received)


def test_locking_the_employee_ends_the_live_session_within_two_seconds(employee, vnc_resource, browser_page,
                                                                       live_portal):
    page = browser_page
    sign_in_with_browser(page, live_portal.url, employee)
    open_desktop(page, live_portal.url, vnc_resource.slug)
    employee.is_active = False
    started = time.monotonic()
    in_thread(lambda: employee.save(update_fields=["is_active"]))  # as an admin's request would
    page.wait_for_selector("#ended:not([hidden])", timeout=2000)
    assert time.monotonic() - started < 2
    assert "account is locked" in page.locator("#ended-message").inner_text()
    assert_status_bar_shows_the_end(page, "Ended")
    session = StreamSession.objects.get(user=employee, state="ended")
    assert session.end_reason == "revoked"
    event = AuditEvent.objects.filter(action="desktop.end").latest("seq")
    assert event.outcome == "revoked" and "locked" in event.reasons[0]["message"]


def assert_status_bar_shows_the_end(page, state: str) -> None:
    """Once a session ends the bar offers nothing live: no Disconnect, no countdown that runs on."""
    assert page.locator("#state").inner_text() == state
    assert not page.locator("#disconnect").is_visible()
    assert page.locator("#time-left").inner_text() == ""
    page.wait_for_timeout(1200)  # longer than the countdown's tick
    assert page.locator("#time-left").inner_text() == ""


def test_disconnect_says_you_disconnected_and_the_status_bar_stops_counting(employee, vnc_resource,
                                                                            browser_page, live_portal):
    page = browser_page
    sign_in_with_browser(page, live_portal.url, employee)
    open_desktop(page, live_portal.url, vnc_resource.slug)
    wait_until(page, "document.getElementById('time-left').textContent.endsWith('left')")
    page.click("#disconnect")
    page.wait_for_selector("#ended:not([hidden])", timeout=2000)
    assert page.locator("#ended-title").inner_text() == "You disconnected"
    assert "You disconnected" in page.locator("#ended-message").inner_text()
    assert_status_bar_shows_the_end(page, "You disconnected")
    deadline = time.monotonic() + 5
    while not StreamSession.objects.filter(user=employee, state="ended").exists():
        assert time.monotonic() < deadline, "the portal never ended the disconnected session"
        time.sleep(0.1)
    assert StreamSession.objects.get(user=employee).end_reason == "closed"


def test_an_admin_watches_the_live_desktop_read_only_in_the_browser(employee, vnc_resource, browser_page,
                                                                    live_portal):
    from tests.factories import UserFactory, enrol_totp

    admin = UserFactory(username="ada", role="admin")
    admin.totp = enrol_totp(admin)
    page = browser_page
    sign_in_with_browser(page, live_portal.url, employee)
    open_desktop(page, live_portal.url, vnc_resource.slug)

    watcher_context = page.context.browser.new_context(ignore_https_errors=True,
                                                       viewport={"width": 1100, "height": 800})
    watcher = watcher_context.new_page()
    sent: list[str] = []
    watcher.on("websocket", lambda ws: ws.on("framesent", lambda payload: sent.append(
        payload if isinstance(payload, str) else payload.decode("latin-1"))))
    csp_violations: list[str] = []
    watcher.on("console", lambda m: csp_violations.append(m.text)
               if "Content Security Policy" in m.text else None)
    sign_in_with_browser(watcher, live_portal.url, admin)
    watcher.goto(f"{live_portal.url}/desktop/-/live/")
    watcher.click("text=Watch")
    wait_until(watcher, "document.body.dataset.clientState === '3'")
    wait_until(watcher, f"({NON_BLANK_PIXELS})() > 500")
    assert "read-only" in watcher.locator(".statusbar").inner_text()

    watcher.mouse.click(300, 300)
    watcher.keyboard.type("rm -rf /\n", delay=10)
    watcher.wait_for_timeout(1000)
    # The watch page sends no input at all (the tunnel would refuse and audit it anyway:
    # test_watch.py drives that path at the protocol level).
    assert not [f for f in sent if ".key," in f or ".mouse," in f or ".clipboard," in f]
    assert AuditEvent.objects.filter(action="desktop.watch", outcome="start", actor="ada").exists()
    assert StreamSession.objects.get(user=employee, state="live")  # the watched session goes on
    assert page.locator("#state").inner_text() == "Connected"
    assert csp_violations == []
    watcher_context.close()
