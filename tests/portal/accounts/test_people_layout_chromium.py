"""The People page in Chromium: a Find field of normal size, a Search button sized like the
rest, placeholders read whole, at desktop width and on a 390-px phone."""

from __future__ import annotations

import pytest

from tests.factories import PASSWORD, UserFactory, enrol_totp, totp_code
from tests.upstreams.launch import portal_in_thread

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True), pytest.mark.timeout(120)]

# Whether an input's placeholder fits inside its text box, measured with its own font.
PLACEHOLDER_FITS = """(el) => {
  const style = getComputedStyle(el);
  const context = document.createElement('canvas').getContext('2d');
  context.font = style.font;
  const room = el.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  return context.measureText(el.placeholder).width <= room;
}"""


@pytest.mark.parametrize("width", [1280, 390])
def test_the_find_field_is_normal_size_and_every_placeholder_reads_whole(chromium, tmp_path_factory, width):
    admin = UserFactory(username="ada", role="admin")
    device = enrol_totp(admin)
    UserFactory(username="erin", role="employee")
    context = chromium.new_context(ignore_https_errors=True, viewport={"width": width, "height": 800})
    page = context.new_page()
    with portal_in_thread(tmp_path_factory.mktemp("tls")) as url:
        page.goto(f"{url}/accounts/login/")
        page.fill("input[name=username]", "ada")
        page.fill("input[name=password]", PASSWORD)
        page.click("button[type=submit]")
        page.wait_for_url("**/accounts/mfa/verify/**")
        page.fill("input[name=otp_token]", totp_code(device))
        page.click("button[type=submit]")
        page.wait_for_url(f"{url}/**")
        page.goto(f"{url}/manage/people/")
        find = page.locator("#q").bounding_box()
        search = page.locator("form[role=search] button").bounding_box()
        lock = page.locator("tr", has_text="erin").locator("button.danger").bounding_box()
        assert find["width"] >= 180, "the Find field is a normal text field"
        assert abs(search["height"] - find["height"]) <= 6, "Search is as tall as the field beside it"
        assert search["width"] <= 160, "Search is not stretched"
        assert abs(search["height"] - lock["height"]) <= 2, "Search is sized like the page's other buttons"
        for selector in ("#q", "input.reason"):
            assert page.locator(selector).first.evaluate(PLACEHOLDER_FITS), selector
        assert not page.evaluate("document.documentElement.scrollWidth > document.documentElement.clientWidth")
    context.close()
