"""In headless Chromium, through the real portal, guacd and x11vnc: an auditor replays a session.

An employee opens a recorded desktop and disconnects; the recording is digested (Celery runs
eagerly here); the auditor finds the session in the log, plays its recording (the player's
canvas shows the desktop) and exports the session's events as CSV.
"""

from __future__ import annotations

import csv
import hashlib
import io
import time
from pathlib import Path

import pytest
from django.conf import settings
from django.conf import settings as django_settings

from portal.audit.models import AuditEvent
from streaming.desktop.models import StreamSession
from streaming.desktop.vault import TargetSecret
from tests.factories import UserFactory, enrol_totp
from tests.streaming.desktop.conftest import make_resource
from tests.streaming.desktop.test_e2e_chromium import sign_in_with_browser, wait_until
from tiers.models import Tier


def sign_in_auditor(page, base_url, user) -> None:
    """An auditor lands on her workspace, not My apps."""
    sign_in_with_browser(page, base_url, user, lands_on="/audit/")


pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(180)]

# Canvas pixels that differ from the first one, across the layers of a Guacamole display.
NON_BLANK = """(selector) => {
  let count = 0;
  for (const canvas of document.querySelectorAll(selector + ' canvas')) {
    if (!canvas.width || !canvas.height) continue;
    const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
    for (let i = 4; i < data.length; i += 4 * 7)
      if (data[i] !== data[0] || data[i + 1] !== data[1] || data[i + 2] !== data[2]) count++;
  }
  return count;
}"""


@pytest.fixture
def recorded_desktop(settings, guacd, vnc_target, tmp_path):
    settings.GUACD_HOST = guacd.host
    settings.GUACD_PORT = guacd.port
    settings.PORTAL_RECORDINGS_DIR = tmp_path / "recordings"
    tier = Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_read=900, mfa_write=900,
                               mfa_sensitive=300, recording=True, reauth_interval_seconds=30)
    return make_resource("ops-desktop", "vnc", vnc_target.upstream, tier, TargetSecret(password=vnc_target.password))


def new_page(browser, violations: list[str]):
    context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 900},
                                  accept_downloads=True)
    page = context.new_page()
    page.set_default_timeout(20_000)
    page.on("console", lambda m: violations.append(m.text) if "Content Security Policy" in m.text else None)
    return page


def wait_for(condition, what: str, timeout: float = 20):
    deadline = time.monotonic() + timeout
    while not (value := condition()):
        assert time.monotonic() < deadline, f"never happened: {what}"
        time.sleep(0.2)
    return value


def test_auditor_finds_plays_and_exports_an_employees_recorded_desktop_session(
        employee, recorded_desktop, chromium, live_portal):
    base = live_portal.url
    violations: list[str] = []

    # The employee works on the desktop for a moment, then disconnects.
    page = new_page(chromium, violations)
    sign_in_with_browser(page, base, employee)
    page.goto(f"{base}/desktop/{recorded_desktop.slug}/")
    wait_until(page, "document.body.dataset.clientState === '3'")
    wait_until(page, f"({NON_BLANK})('#screen') > 500")
    page.wait_for_timeout(1500)  # a little recorded time
    page.click("#disconnect")
    page.wait_for_selector("#ended:not([hidden])")
    page.context.close()

    ended = wait_for(lambda: StreamSession.objects.filter(user=employee, state="ended").first(),
                     "the session ended")
    if not django_settings.CELERY_TASK_ALWAYS_EAGER:
        # With Redis the digest is queued for a worker (none runs in this test): run the
        # same task here, the way a worker would, retries included.
        from streaming.desktop.tasks import digest_recording

        wait_for(lambda: digest_recording.apply(args=[str(ended.pk)]).get() == "stored",
                 "the recording digested by the task")
    stream = wait_for(lambda: StreamSession.objects.filter(pk=ended.pk)
                      .exclude(recording_sha256="").first(), "the recording digested")
    assert stream.recording_size and stream.recording_size > 1000
    recording_file = Path(settings.PORTAL_RECORDINGS_DIR) / str(stream.pk)

    # The auditor finds the session, opens it and plays the recording.
    auditor = UserFactory(username="audrey", role="auditor")
    auditor.totp = enrol_totp(auditor)
    page = new_page(chromium, violations)
    sign_in_auditor(page, base, auditor)
    page.click("text=Sessions")
    page.fill("input[name=user]", employee.username)
    page.click("button:has-text('Show')")
    page.click(f"a[aria-label^='Desktop session of {employee.username} on {recorded_desktop.slug}']")
    page.wait_for_url(f"**/audit/sessions/desktop/{stream.pk}/")
    assert "desktop.start" in page.locator(".timeline").inner_text()
    assert "desktop.end" in page.locator(".timeline").inner_text()

    page.click("#play-recording")
    page.wait_for_url(f"**/audit/recordings/{stream.pk}/")
    wait_for(lambda: page.evaluate("document.getElementById('player').dataset.state") in ("ready", "error"),
             "the player loaded", timeout=30)
    assert page.evaluate("document.getElementById('player').dataset.state") == "ready", \
        page.locator("#player-status").inner_text()
    page.select_option("#speed", "4")
    play, speed = page.locator("#play").bounding_box(), page.locator("#speed").bounding_box()
    assert abs(play["y"] - speed["y"]) < play["height"] and speed["width"] < 120, "Speed sits inline"
    page.click("#play")
    status = page.locator("#player-status").inner_text()
    assert status.startswith("Playing at 4\u00d7") and "Ready" not in status, status
    wait_until(page, f"({NON_BLANK})('#display') > 500", timeout=30)
    wait_until(page, "Number(document.getElementById('player').dataset.position) > 0")
    # The page checks the file against the digest stored at the end of the session. With
    # eager Celery the digest is taken the instant the session ends, possibly before guacd
    # has flushed the file's last bytes: the page must then say so, not claim a match.
    wait_until(page, "document.getElementById('player').dataset.integrity !== undefined")
    on_disk = hashlib.sha256(recording_file.read_bytes()).hexdigest()
    expected = "ok" if on_disk == stream.recording_sha256 else "mismatch"
    assert page.evaluate("document.getElementById('player').dataset.integrity") == expected, \
        (stream.recording_size, recording_file.stat().st_size)
    playbacks = AuditEvent.objects.filter(action="audit.playback", actor="audrey")
    assert [e.detail["recording"] for e in playbacks] == [str(stream.pk)]  # once, not per range request

    # ...and exports the session's events as CSV.
    page.goto(f"{base}/audit/sessions/desktop/{stream.pk}/")
    with page.expect_download() as download:
        page.click("a.export-csv")
    with open(download.value.path(), encoding="utf-8") as exported:
        rows = list(csv.DictReader(io.StringIO(exported.read())))
    actions = [r["portal.action"] for r in rows]
    assert "desktop.start" in actions and "desktop.end" in actions and "desktop.recording" in actions
    assert all(f'"session":"{stream.pk}"' in r["detail"].replace(" ", "") for r in rows)
    assert violations == []
