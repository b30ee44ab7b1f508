"""Signing in through a real OpenID Provider (oidc-provider on Node), driven through its pages."""

from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.audit.models import AuditEvent
from portal.sso.models import SsoLink
from tests.conftest import https_client
from tests.factories import UserFactory
from tests.fixtures.oidc import OpBrowser
from tests.portal.sso.conftest import CALLBACK, sso_sign_in

pytestmark = pytest.mark.django_db

User = get_user_model()


def groups_of(user) -> set[str]:
    return set(user.groups.values_list("name", flat=True))


def test_a_new_employee_signs_in_through_the_idp_and_gets_the_groups_it_sent(client, corp, idp_browser):
    response = sso_sign_in(client, idp_browser, "nina")

    assert response.status_code == 302 and response["Location"] == "/"
    link = SsoLink.objects.get(issuer=corp.issuer, subject="nina")
    assert link.user.username == "nina" and link.user.email == "nina@corp.example"
    assert not link.user.has_usable_password(), "an SSO account has no portal password to phish"
    assert groups_of(link.user) == {"employee", "eng"}
    home = client.get("/")
    assert home.status_code == 200 and b"My apps" in home.content
    assert AuditEvent.objects.filter(action="login.sso", outcome="success", actor="nina").exists()


def test_the_idp_said_mfa_so_the_session_is_second_factor_verified_with_fed_in_its_amr(client, corp,
                                                                                         idp_browser):
    sso_sign_in(client, idp_browser, "nina")

    assert client.session[AMR_KEY] == ["fed", "pwd", "mfa"]
    assert client.session[MFA_TIME_KEY] > 0
    assert client.session.get("otp_device_id"), "django-otp sees a verified device"


def test_an_acr_the_admin_trusts_also_counts_as_idp_mfa(client, corp, idp_browser):
    response = sso_sign_in(client, idp_browser, "ada")

    assert response["Location"] == "/"
    assert client.get("/").status_code == 200


def test_without_mfa_at_the_idp_the_portal_asks_for_its_own_second_factor(client, corp, idp_browser):
    response = sso_sign_in(client, idp_browser, "paul")

    assert response["Location"] == "/accounts/mfa/", "no TOTP yet: enrol first"
    assert client.session[AMR_KEY] == ["fed", "pwd"]
    home = client.get("/")
    assert home.status_code == 302 and home["Location"].startswith("/accounts/mfa/verify/")


def test_the_authorization_request_carries_pkce_s256_state_and_nonce(client, corp):
    start = client.get("/sso/corp/login/")

    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["code_challenge_method"] == ["S256"] and len(query["code_challenge"][0]) == 43
    assert len(query["state"][0]) >= 32 and len(query["nonce"][0]) >= 32
    assert query["redirect_uri"] == [CALLBACK] and query["response_type"] == ["code"]


def test_an_answer_for_a_sign_in_started_in_another_browser_signs_nobody_in(client, corp, idp_browser):
    start = client.get("/sso/corp/login/")
    callback = idp_browser.sign_in(start["Location"], "nina", until=CALLBACK)

    attacker = https_client()
    response = attacker.get(callback.removeprefix("https://testserver"))

    assert response.status_code == 400
    assert b"not started here" in response.content
    assert attacker.get("/").status_code == 302
    assert not SsoLink.objects.exists()


def test_the_same_answer_used_twice_signs_in_only_once(client, corp, idp_browser):
    start = client.get("/sso/corp/login/")
    callback = idp_browser.sign_in(start["Location"], "nina", until=CALLBACK).removeprefix("https://testserver")
    assert client.get(callback).status_code == 302

    again = https_client()
    again.cookies = client.cookies
    assert again.get(callback).status_code == 400


def test_a_tampered_code_is_refused_by_the_idp_and_nobody_is_signed_in(client, corp, idp_browser):
    start = client.get("/sso/corp/login/")
    callback = idp_browser.sign_in(start["Location"], "nina", until=CALLBACK).removeprefix("https://testserver")
    parts = urlsplit(callback)
    query = {k: v[0] for k, v in parse_qs(parts.query).items()}
    query["code"] = query["code"][:-4] + "AAAA"

    response = client.get(parts.path, query)

    assert response.status_code == 400 and b"could not be trusted" in response.content
    event = AuditEvent.objects.filter(action="login.sso", outcome="failure").latest("seq")
    assert event.detail["reason"] == "token_exchange_failed"


def test_a_second_sign_in_finds_the_same_account_by_the_idps_subject(client, corp, idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    first = SsoLink.objects.get(subject="nina").user

    other = https_client()
    sso_sign_in(other, OpBrowser(), "nina")

    assert SsoLink.objects.get(subject="nina").user == first
    assert User.objects.filter(username__startswith="nina").count() == 1


def test_a_local_account_with_the_same_username_is_not_taken_over(client, corp, idp_browser):
    local = UserFactory(username="nina", role="admin")

    sso_sign_in(client, idp_browser, "nina")

    link = SsoLink.objects.get(subject="nina")
    assert link.user != local and link.user.username == "nina-2"
    assert "admin" not in groups_of(link.user)


def test_an_email_match_needs_the_admins_consent_and_a_verified_address(client, corp, idp_browser, settings):
    boss = UserFactory(username="b.oss", email="boss@corp.example", role="employee")

    sso_sign_in(client, idp_browser, "boss")
    assert SsoLink.objects.get(subject="boss").user != boss, "not allowed for this IdP: a new account"

    SsoLink.objects.get(subject="boss").user.delete()
    settings.PORTAL_OIDC_PROVIDERS = (corp.__class__(**{**corp.__dict__, "link_by_email": True}),)
    sso_sign_in(https_client(), OpBrowser(), "mallory")
    assert SsoLink.objects.get(subject="mallory").user != boss, "an unverified address matches nobody"

    sso_sign_in(https_client(), OpBrowser(), "boss")
    assert SsoLink.objects.get(subject="boss").user == boss


def test_an_email_match_never_reaches_a_staff_account(client, corp, idp_browser, settings):
    admin = UserFactory(username="root", email="boss@corp.example", role="admin")
    settings.PORTAL_OIDC_PROVIDERS = (corp.__class__(**{**corp.__dict__, "link_by_email": True}),)

    sso_sign_in(client, idp_browser, "boss")

    assert SsoLink.objects.get(subject="boss").user != admin


def test_groups_the_idp_stops_sending_are_taken_away_and_local_groups_stay(client, corp, idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    user = SsoLink.objects.get(subject="nina").user
    Group.objects.get_or_create(name="hand-picked")
    user.groups.add(Group.objects.get(name="hand-picked"))

    from portal.sso.signin import apply_groups, mapped_groups

    apply_groups(user, corp, mapped_groups(corp, {"groups": ["sales"]}))

    assert groups_of(user) == {"employee", "hand-picked"}


def test_a_locked_person_cannot_come_back_through_the_idp(client, corp, idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    User.objects.filter(username="nina").update(is_active=False)

    other = https_client()
    response = sso_sign_in(other, OpBrowser(), "nina")

    assert response.status_code == 403 and b"locked" in response.content
    assert other.get("/").status_code == 302


def test_the_sign_in_page_offers_the_idp(client, corp):
    page = client.get("/accounts/login/?next=/apps/")

    assert b"Sign in with Corp SSO" in page.content
    assert b"/sso/corp/login/?next=/apps/" in page.content


def test_an_unknown_idp_name_is_not_found(client, corp):
    assert client.get("/sso/nobody/login/").status_code == 404


def test_an_admin_can_see_a_persons_sso_links_in_the_people_include(client, corp, idp_browser):
    from django.template.loader import render_to_string

    sso_sign_in(client, idp_browser, "nina")
    person = SsoLink.objects.get(subject="nina").user

    html = render_to_string("sso/people_links.html", {"person": person})

    assert "Signs in through <strong>corp</strong> as <code>nina</code> (nina@corp.example)" in html
    assert render_to_string("sso/people_links.html", {"person": UserFactory(username="local")}).strip() == ""
