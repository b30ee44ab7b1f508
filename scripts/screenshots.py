"""Screenshots of every page of every role, at desktop width and on a 390-px phone.

Takes them from the real, running demo portal (``make demo`` first) into docs/screenshots/,
as ``<page>.png`` (desktop) and ``<page>-phone.png``:

    .venv/bin/python scripts/screenshots.py [https://localhost:8443] [--no-services]

``--no-services`` leaves out the pages that need the demo's app and desktop services running
(a portal started without ``make demo``'s Datasette, guacd and targets).

The page list (:data:`PAGES`) and the walk through it (:func:`walk`) are shared with
tests/e2e/test_pages.py, which visits the same pages and fails on console errors, missing
static files and horizontal scrolling on the phone: what is photographed is what is tested.
"""

from __future__ import annotations

import base64
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
# The same flags as tests/conftest.py CHROMIUM_ARGS.
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run", "--disable-quic"]
DESKTOP = {"width": 1280, "height": 800}
PHONE = {"width": 390, "height": 844}

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "DESKTOP", "PAGES", "PHONE", "Page", "sign_in", "totp_now", "walk"]


@dataclass(frozen=True)
class Page:
    """One page as a role sees it: ``status`` is what the portal must answer (a 404 page is a page)."""

    name: str
    role: str | None  # None: not signed in
    path: str
    status: int = 200
    lands_on: str = ""  # the path after redirects, when it differs
    needs_services: bool = False  # the demo's app/desktop services must run (not in the e2e test)


PAGES: tuple[Page, ...] = (
    Page("login", None, "/accounts/login/"),
    Page("my-apps", "employee", "/"),
    Page("requests", "employee", "/requests/"),
    Page("request-access", "employee", "/requests/?resource=db-shell"),
    Page("security", "employee", "/accounts/mfa/"),
    Page("desktop-step-up", "employee", "/desktop/ops-desktop/", lands_on="/accounts/step-up/"),
    Page("not-found", "employee", "/no-such-page/", status=404),
    Page("forbidden", "employee", "/audit/", status=403),
    Page("wiki", "employee", "/apps/wiki/", needs_services=True),
    Page("overview", "admin", "/"),
    Page("manage", "admin", "/manage/"),
    Page("manage-resources", "admin", "/manage/resources/"),
    Page("manage-resource", "admin", "/manage/resources/db-shell/"),
    Page("manage-tiers", "admin", "/manage/tiers/"),
    Page("manage-tier", "admin", "/manage/tiers/high/"),
    Page("simulator", "admin", "/manage/simulator/"),
    Page("manage-requests", "admin", "/manage/requests/"),
    Page("people", "admin", "/manage/people/"),
    Page("live-sessions", "admin", "/desktop/-/live/"),
    Page("audit", "auditor", "/", lands_on="/audit/"),
    Page("audit-events", "auditor", "/audit/events/"),
    Page("audit-event", "auditor", "/audit/events/1/"),
    Page("audit-sessions", "auditor", "/audit/sessions/"),
)


def totp_now(secret_b32: str, *, not_this: str = "") -> str:
    """The current TOTP code of a base32 secret; waits for the next window if it equals ``not_this``
    (the portal refuses a code twice, so a second sign-in waits for the authenticator)."""
    from django_otp.oath import TOTP

    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    while True:
        code = f"{TOTP(key).token():06d}"
        if code != not_this:
            return code
        time.sleep(1)


def sign_in(page: Any, base: str, user: dict[str, str]) -> None:
    """Password, then a code from the user's TOTP secret, through the real forms."""
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", user["password"])
    page.click("button[type=submit]")
    page.wait_for_selector("input[name=otp_token]")
    page.fill("input[name=otp_token]", totp_now(user["totp_secret"]))
    page.click("button[type=submit]")
    page.wait_for_load_state()
    if "/accounts/" in page.url:
        raise RuntimeError(f"{user['username']} could not sign in (still at {page.url})")


def walk(browser: Any, base: str, users: dict[str, dict[str, str]],
         visit: Callable[[Any, Page, Any], None], *, pages: Iterable[Page] = PAGES,
         prepare: Callable[[Any], None] | None = None) -> None:
    """Visit ``pages`` role by role (one browser context, one sign-in per role), in order.

    ``prepare(page)`` is called on each new browser page before anything loads (to listen to
    it); ``visit(page, spec, response)`` on each loaded page, at desktop width.
    """
    by_role: dict[str | None, list[Page]] = {}
    for spec in pages:
        by_role.setdefault(spec.role, []).append(spec)
    for role, specs in by_role.items():
        context = browser.new_context(ignore_https_errors=True, viewport=DESKTOP)
        page = context.new_page()
        page.set_default_timeout(15_000)
        if prepare is not None:
            prepare(page)
        try:
            if role is not None:
                sign_in(page, base, users[role])
            for spec in specs:
                response = page.goto(base + spec.path)
                page.wait_for_load_state("networkidle")
                visit(page, spec, response)
        finally:
            context.close()


def seed_users() -> dict[str, dict[str, str]]:
    """The demo users by role (``manage.py seed_demo --json``: refreshes them, prints secrets)."""
    out = subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", "seed_demo", "--json"], cwd=ROOT,
                         check=True, capture_output=True, text=True).stdout
    return {u["role"]: u for u in json.loads(out)["users"]}


def shoot(page: Any, spec: Page, response: Any) -> None:
    """A full-page screenshot at desktop width, then one at phone width."""
    page.screenshot(path=str(OUT / f"{spec.name}.png"), full_page=True)
    page.set_viewport_size(PHONE)
    page.wait_for_timeout(150)
    page.screenshot(path=str(OUT / f"{spec.name}-phone.png"), full_page=True)
    page.set_viewport_size(DESKTOP)
    print(OUT / f"{spec.name}.png", OUT / f"{spec.name}-phone.png")


def main(base: str, *, services: bool = True) -> None:
    from playwright.sync_api import sync_playwright

    OUT.mkdir(parents=True, exist_ok=True)
    users = seed_users()
    pages = [spec for spec in PAGES if services or not spec.needs_services]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            walk(browser, base, users, shoot, pages=pages)
        finally:
            browser.close()


if __name__ == "__main__":
    positional = [a for a in sys.argv[1:] if not a.startswith("--")]
    main(positional[0] if positional else "https://localhost:8443", services="--no-services" not in sys.argv)
