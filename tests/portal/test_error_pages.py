"""Error pages a person meets: a typo keeps the navigation, bad input is a 400 that says so."""

from __future__ import annotations

import httpx
import pytest
from django.db import connection

from portal.audit.models import AuditEvent
from tests.conftest import https_client, sign_in
from tests.tiers.factories import ResourceFactory, TierFactory, client_for, person
from tests.upstreams.launch import portal_in_thread
from tiers.models import Resource

NAV = b'<nav aria-label="Main">'


@pytest.fixture
def catalog(db):
    TierFactory(name="low", rank=10)
    TierFactory(name="high", rank=20, access_mode="stream")
    ResourceFactory(slug="wiki", name="Wiki", tier__name="low")


# --- a typo in a slug ------------------------------------------------------------------------------

@pytest.mark.django_db
def test_a_typo_in_a_desktop_slug_shows_the_404_page_with_the_navigation(catalog):
    response = client_for(person("erin")).get("/desktop/wikki/")
    assert response.status_code == 404
    assert NAV in response.content and b"Sign out" in response.content


@pytest.mark.django_db(transaction=True)
def test_a_typo_in_an_app_slug_answered_by_the_proxy_still_offers_the_navigation(catalog,
                                                                                tmp_path_factory):
    cookie = https_client()
    sign_in(cookie, person("erin"))
    with portal_in_thread(tmp_path_factory.mktemp("tls")) as url, \
            httpx.Client(base_url=url, verify=False, timeout=30) as browser:
        browser.cookies.set("sessionid", cookie.cookies["sessionid"].value, domain="127.0.0.1")
        response = browser.get("/apps/wikki/")
    assert response.status_code == 404
    assert "Nothing here" in response.text
    assert NAV.decode() in response.text and 'href="/requests/"' in response.text


@pytest.mark.django_db
def test_the_404_page_offers_no_navigation_to_someone_not_signed_in(client, catalog):
    response = client.get("/accounts/nope/")
    assert response.status_code == 404
    assert NAV not in response.content


# --- input no database can store -------------------------------------------------------------------

@pytest.mark.django_db
def test_a_nul_byte_in_a_manage_form_field_is_a_400_that_says_the_input_was_invalid(catalog):
    client = client_for(person("ada", "admin"))
    response = client.post("/manage/resources/", {"resources": ["wiki"], "tier": "high\x00"})
    assert response.status_code == 400
    assert b"invalid input" in response.content and b"unreachable" not in response.content
    assert NAV in response.content
    assert Resource.objects.get(slug="wiki").tier.name == "low", "nothing was changed"
    event = AuditEvent.objects.filter(action="request.invalid_input").latest("seq")
    assert (event.actor, event.detail["fields"], event.detail["path"]) == ("ada", ["tier"], "/manage/resources/")


@pytest.mark.django_db
@pytest.mark.parametrize("path", ["/manage/resources/?q=%00", "/manage/people/?q=a%00b", "/requests/?resource=%00",
                                  "/audit/events/?q=%00"])
def test_a_nul_byte_in_a_search_field_is_a_400_on_every_page(catalog, path):
    role = "auditor" if path.startswith("/audit/") else "admin"
    response = client_for(person("someone", role)).get(path)
    assert response.status_code == 400, path
    assert b"invalid input" in response.content


@pytest.mark.django_db
def test_a_session_cookie_the_database_cannot_read_is_a_400_not_an_outage():
    """On PostgreSQL a NUL reaches the session lookup before any view: the error page decides."""
    if connection.vendor != "postgresql":
        pytest.skip("only PostgreSQL refuses a NUL in text (SQLite stores it)")
    client = https_client(raise_request_exception=False)
    client.cookies["sessionid"] = "abcdefgh\x00ijklmnop"
    response = client.get("/desktop/-/live/")
    assert response.status_code == 400
    assert b"The input was invalid" in response.content and b"unreachable" not in response.content
