"""Take the README's screenshots from the real, running demo portal (``make demo`` first).

    .venv/bin/python scripts/screenshots.py [https://localhost:8443]
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

from playwright.sync_api import sync_playwright

ROOT = Path(__file__).resolve().parent.parent
OUT = ROOT / "docs" / "screenshots"
ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


def manage(*args: str) -> str:
    return subprocess.run([str(ROOT / ".venv/bin/python"), "manage.py", *args], cwd=ROOT, check=True,
                          capture_output=True, text=True).stdout.strip()


_used_codes: dict[str, str] = {}


def fresh_code(username: str) -> str:
    """A TOTP code this script has not used yet: the portal refuses a code twice, so a second
    sign-in of the same user waits for the authenticator's next 30-second window."""
    while (code := manage("demo_totp", username)) == _used_codes.get(username):
        time.sleep(1)
    _used_codes[username] = code
    return code


def sign_in(page, base: str, user: dict) -> None:
    page.goto(f"{base}/accounts/login/")
    page.fill("input[name=username]", user["username"])
    page.fill("input[name=password]", user["password"])
    page.click("button[type=submit]")
    page.fill("input[name=otp_token]", fresh_code(user["username"]))
    page.click("button[type=submit]")
    page.wait_for_load_state()


def main(base: str) -> None:
    OUT.mkdir(parents=True, exist_ok=True)
    users = {u["role"]: u for u in json.loads(manage("seed_demo", "--json"))["users"]}
    shots: list[tuple[str, str, str | None]] = [
        ("login", "/accounts/login/", None),
        ("my-apps", "/", "employee"),
        ("security", "/accounts/mfa/", "employee"),
        ("wiki", "/apps/wiki/", "employee"),
        ("manage-resources", "/manage/resources/", "admin"),
        ("simulator", "/manage/simulator/", "admin"),
        ("audit", "/audit/", "auditor"),
    ]
    extra = [a.split("=", 1) for a in sys.argv[2:]]
    shots += [(name, spec.split(":", 1)[1], spec.split(":", 1)[0]) for name, spec in extra]
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=ARGS)
        for name, path, role in shots:
            context = browser.new_context(ignore_https_errors=True, viewport={"width": 1200, "height": 720})
            page = context.new_page()
            if role:
                sign_in(page, base, users[role])
            page.goto(base + path)
            page.wait_for_load_state("networkidle")
            page.screenshot(path=str(OUT / f"{name}.png"))
            print(OUT / f"{name}.png")
            context.close()
        browser.close()


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "https://localhost:8443")
