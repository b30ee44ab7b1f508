"""Every page of every role renders cleanly in Chromium: the pages scripts/screenshots.py photographs.

One browser, one sign-in per role, pages in sequence. A page fails on a console error or
uncaught exception, on any 404 among the files it loads (stylesheets, scripts, icons), on a
status other than the one it should answer, and on horizontal scrolling on a 390-px phone
(or at desktop width).
"""

from __future__ import annotations

import importlib.util
import json
import sys
from io import StringIO
from pathlib import Path
from typing import Any

import pytest
from django.core.management import call_command

pytestmark = pytest.mark.e2e

_SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "screenshots.py"
_spec = importlib.util.spec_from_file_location("screenshots", _SCRIPT)
screenshots = importlib.util.module_from_spec(_spec)
sys.modules["screenshots"] = screenshots  # dataclasses look their module up there
_spec.loader.exec_module(screenshots)  # type: ignore[union-attr]

SIDEWAYS = "document.documentElement.scrollWidth > document.documentElement.clientWidth"


class PageWatch:
    """Everything wrong seen while the pages load, in words, page by page."""

    def __init__(self) -> None:
        self.problems: list[str] = []
        self.current = "sign-in"
        self.document_status = 200

    def prepare(self, page: Any) -> None:
        page.on("console", self._console)
        page.on("pageerror", lambda error: self.problems.append(f"{self.current}: uncaught {error}"))
        page.on("response", self._response)

    def _console(self, message: Any) -> None:
        if message.type != "error":
            return
        # Chromium reports the document's own deliberate 403/404 as a failed resource.
        if self.document_status != 200 and "Failed to load resource" in message.text and \
                f"status of {self.document_status}" in message.text:
            return
        self.problems.append(f"{self.current}: console error {message.text!r}")

    def _response(self, response: Any) -> None:
        if response.status == 404 and not response.request.is_navigation_request():
            self.problems.append(f"{self.current}: 404 for {response.url}")

    def before(self, spec: Any) -> None:
        self.current, self.document_status = spec.name, spec.status

    def visit(self, page: Any, spec: Any, response: Any) -> None:
        if response is None or response.status != spec.status:
            self.problems.append(f"{spec.name}: answered {response and response.status}, not {spec.status}")
        path = page.url.split("://", 1)[1].split("/", 1)[1]
        if not ("/" + path).startswith(spec.lands_on or spec.path.split("?")[0]):
            self.problems.append(f"{spec.name}: ended at {page.url}")
        if page.evaluate(SIDEWAYS):
            self.problems.append(f"{spec.name}: scrolls sideways at desktop width")
        page.set_viewport_size(screenshots.PHONE)
        if page.evaluate(SIDEWAYS):
            width = page.evaluate("document.documentElement.scrollWidth")
            self.problems.append(f"{spec.name}: scrolls sideways on a 390-px phone ({width} px wide)")
        page.set_viewport_size(screenshots.DESKTOP)


def test_every_page_of_every_role_renders_without_errors_missing_files_or_sideways_scrolling(
        portal_url, chromium):
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    users = {u["role"]: u for u in json.loads(out.getvalue())["users"]}
    watch = PageWatch()
    pages = [spec for spec in screenshots.PAGES if not spec.needs_services]
    assert {spec.role for spec in pages} == {None, "employee", "admin", "auditor"}

    def visit(page: Any, spec: Any, response: Any) -> None:
        watch.visit(page, spec, response)
        index = pages.index(spec)
        if index + 1 < len(pages):
            watch.before(pages[index + 1])

    watch.before(pages[0])
    screenshots.walk(chromium, portal_url, users, visit, pages=pages, prepare=watch.prepare)
    assert watch.problems == []


def test_in_the_simulator_an_ssh_resource_defaults_to_opening_a_desktop_session(portal_url, chromium):
    out = StringIO()
    call_command("seed_demo", "--json", stdout=out)
    admin = next(u for u in json.loads(out.getvalue())["users"] if u["role"] == "admin")
    context = chromium.new_context(ignore_https_errors=True, viewport=screenshots.DESKTOP)
    page = context.new_page()
    try:
        screenshots.sign_in(page, portal_url, admin)
        page.goto(f"{portal_url}/manage/simulator/")
        assert page.locator("#id_action_kind").input_value() == "http"
        page.select_option("#id_user", "alice")
        page.select_option("#id_resource", "db-shell")  # kind ssh
        assert page.locator("#id_action_kind").input_value() == "desktop.open"
        assert page.locator("#id_action_class").input_value() == "sensitive"
        page.click("button[type=submit].primary")
        page.wait_for_selector("[data-outcome]")
        assert "pathway_not_allowed" not in page.content()
        page.select_option("#id_resource", "wiki")  # back to a web app
        assert page.locator("#id_action_kind").input_value() == "http"
    finally:
        context.close()
