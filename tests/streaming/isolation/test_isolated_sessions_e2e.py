"""Issue 13 acceptance, in Chromium: high-risk means pixels from a disposable place.

A web app on a stream tier opens as a kiosk browser in a fresh slot (real session host,
bubblewrap, Xvfb, x11vnc, Debian's Chromium), streamed by the real guacd through the portal's
tunnel. The user's browser receives Guacamole instructions only; the app sees every request
of the isolated browser decided by the proxy and carrying the user's assertion.
"""

from __future__ import annotations

import time

import httpx
import jwt
import pytest

from portal.audit.models import AuditEvent
from streaming.isolation.models import IsolatedDesktop, Slot
from tests.streaming.desktop.test_e2e_chromium import (
    NON_BLANK_PIXELS,
    in_thread,
    sign_in_with_browser,
    wait_until,
)
from tests.streaming.isolation.conftest import wait_for
from tiers.models import Resource, Tier

pytestmark = [pytest.mark.e2e, pytest.mark.host_mode, pytest.mark.django_db(transaction=True),
              pytest.mark.timeout(180)]


@pytest.fixture
def stream_tier(db) -> Tier:
    return Tier.objects.create(name="high", rank=20, access_mode="stream", mfa_sensitive=300,
                               recording=False, file_transfer="deny", reauth_interval_seconds=30)


def _shared(resource: Resource) -> Resource:
    from django.contrib.auth.models import Group

    resource.allowed_groups.add(Group.objects.get(name="employee"))
    return resource


@pytest.fixture
def board(stream_tier, app_upstream, isolation_settings) -> Resource:
    return _shared(Resource.objects.create(slug="board", name="Board", kind="web", tier=stream_tier,
                                           upstream=f"{app_upstream.url}isolated/"))


@pytest.fixture
def terminal(stream_tier, isolation_settings) -> Resource:
    resource = _shared(Resource.objects.create(slug="ops-term", name="Ops terminal", kind="vnc",
                                               tier=stream_tier, upstream="slot"))
    IsolatedDesktop.objects.create(resource=resource, image="terminal")
    return resource


@pytest.fixture
def user_page(chromium, live_portal):
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": 1100, "height": 800})
    page = context.new_page()
    page.received = []
    page.on("websocket", lambda ws: ws.on("framereceived", lambda payload: page.received.append(
        payload if isinstance(payload, str) else payload.decode("latin-1"))))
    page.on("response", lambda r: page.received.append(r.text()) if 200 <= r.status < 300
            and any(k in r.headers.get("content-type", "") for k in ("text", "json", "javascript")) else None)
    yield page
    context.close()


def _log(app_upstream) -> list[dict]:
    return httpx.get(f"{app_upstream.url}log").json()


def test_a_high_tier_web_app_is_only_pixels_from_a_disposable_browser(
        session_host, employee, board, user_page, live_portal, app_upstream):
    page = user_page
    seen_before = len(_log(app_upstream))
    sign_in_with_browser(page, live_portal.url, employee)
    # The app's own origin answers "isolate" and sends her to the isolated session.
    page.goto(live_portal.url.replace("https://localhost", "https://board.apps.localhost") + "/")
    assert page.url.startswith(f"{live_portal.url}/desktop/board/") or "handoff" in page.url
    if "/desktop/board/" not in page.url:
        page.wait_for_url(f"{live_portal.url}/desktop/board/")
    started = time.monotonic()
    wait_until(page, "document.body.dataset.clientState === '3'")
    wait_for(lambda: len(_log(app_upstream)) > seen_before, 15, "the isolated browser's first request")
    first_request = time.monotonic() - started
    wait_until(page, f"({NON_BLANK_PIXELS})() > 2000", timeout=20)
    print(f"tunnel connected -> app's first request: {first_request:.2f} s")

    # Every request the isolated browser made carried her assertion, signed by the portal.
    jwks = httpx.get(f"{live_portal.url}/.well-known/jwks.json", verify=False).json()
    requests = _log(app_upstream)[seen_before:]
    assert requests
    for entry in requests:
        token = entry["assertion"]
        [jwk] = [k for k in jwks["keys"] if k["kid"] == jwt.get_unverified_header(token)["kid"]]
        claims = jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="board")
        assert claims["sub"] == str(employee.pk)

    # Not one byte of the app's page reached her browser: only the portal's page and pixels.
    assert not any("ISOLATION-MARKER" in item for item in page.received)
    assert "ISOLATION-MARKER" not in page.content()

    # The page asks the isolated browser to download a file: the tier says no, and it is audited.
    wait_for(lambda: AuditEvent.objects.filter(action="isolation.download", outcome="deny",
                                               resource="board").first(), 15, "the refused download")
    event = AuditEvent.objects.filter(action="isolation.download", resource="board").latest("seq")
    assert event.detail["name"] == "report.csv" and event.actor == employee.username
    assert not any(entry["path"].endswith("report.csv") and False for entry in requests)

    # The slot is hers alone, and its end wipes it.
    slot = Slot.objects.get(state=Slot.State.ASSIGNED)
    layout = session_host.running[slot.index].layout
    page.click("#disconnect")
    wait_for(lambda: Slot.objects.filter(pk=slot.pk, generation__gt=slot.generation,
                                         state=Slot.State.READY).exists(), 30, "the wiped, fresh slot")
    assert not (layout.directory / "launch.sh").exists()


def test_a_per_session_desktop_cannot_read_the_portal(session_host, employee, terminal, user_page,
                                                      live_portal, settings):
    page = user_page
    sign_in_with_browser(page, live_portal.url, employee)
    page.goto(f"{live_portal.url}/desktop/ops-term/")
    wait_until(page, "document.body.dataset.clientState === '3'")
    wait_until(page, f"({NON_BLANK_PIXELS})() > 200", timeout=20)  # the terminal is up
    slot = Slot.objects.get(state=Slot.State.ASSIGNED)
    report = session_host.running[slot.index].layout.directory / "attempt.txt"
    secret = settings.BASE_DIR / "var" / "secret_key"
    page.wait_for_timeout(1500)  # xterm maps its window
    page.keyboard.type(f"cat {secret} {settings.BASE_DIR}/manage.py > /run/slot/attempt.txt 2>&1; "
                       f"id -u >> /run/slot/attempt.txt\n", delay=15)
    text = wait_for(lambda: report.exists() and "No such file" in report.read_text() and report.read_text(),
                    20, "the typed attempt's result")
    assert "import" not in text and "DJANGO" not in text
    assert str(session_host.running[slot.index].layout.uid) in text

    # A lock ends the isolated session within 2 s, and its slot is wiped and made anew.
    employee.is_active = False
    started = time.monotonic()
    in_thread(lambda: employee.save(update_fields=["is_active"]))
    page.wait_for_selector("#ended:not([hidden])", timeout=2000)
    assert time.monotonic() - started < 2
    wait_for(lambda: Slot.objects.filter(pk=slot.pk, generation__gt=slot.generation,
                                         state=Slot.State.READY).exists(), 30, "the wiped, fresh slot")
    assert not report.exists()
