"""The IdP's MFA is its own factor (``idp``): a tier says whether it counts, and a step-up can
be made at the IdP (prompt=login, max_age=0) where it does. Against the real OpenID Provider."""

from __future__ import annotations

import hashlib
import time
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core.cache import cache

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.audit.models import AuditEvent
from portal.sso.models import IdpActionProof, SsoLink
from streaming.proxy import pending
from tests.factories import enrol_totp, totp_code
from tests.portal.sso.conftest import CALLBACK, sso_sign_in
from tests.tiers.factories import ResourceFactory, TierFactory
from tiers.enforcement import authorize, step_up_url
from tiers.models import ActionChallenge
from tiers.types import Action, ActionClass, Outcome

pytestmark = pytest.mark.django_db


def write(path: str = "/edit") -> Action:
    return Action("http", ActionClass.WRITE, "POST", path)


def nina_of(corp):
    return SsoLink.objects.get(issuer=corp.issuer, subject="nina").user


@pytest.fixture
def ledger(db):
    """Counts the portal's own factors only, not the company sign-in's MFA."""
    tier = TierFactory(name="portal-factors", mfa_write=3600, accepted_factors={"write": ["passkey", "totp"]})
    return ResourceFactory(slug="ledger", tier=tier, groups=["employee"])


@pytest.fixture
def wiki(db):
    tier = TierFactory(name="idp-counts", mfa_write=3600, accepted_factors={"write": ["idp", "totp"]})
    return ResourceFactory(slug="wiki", tier=tier, groups=["employee"])


@pytest.fixture
def payroll(db):
    """A one-time (freshness 0) confirmation per write; the IdP's MFA counts."""
    tier = TierFactory(name="idp-once", mfa_write=0, accepted_factors={"write": ["idp"]})
    return ResourceFactory(slug="payroll", tier=tier, groups=["employee"])


def stale_mfa(client, seconds: int = 7200) -> None:
    session = client.session
    session[MFA_TIME_KEY] = int(time.time()) - seconds
    session.save()


def confirm_at_idp(client, idp_browser, login: str, *, next_url: str, challenge: str = ""):
    """The step-up page's "Confirm at Corp SSO": to the OP, sign in as ``login``, come back."""
    start = client.post("/accounts/step-up/idp/corp/", {"next": next_url, "challenge": challenge})
    assert start.status_code == 302, start.content[:500]
    query = parse_qs(urlsplit(start["Location"]).query)
    assert query["prompt"] == ["login"] and query["max_age"] == ["0"]
    assert query["code_challenge_method"] == ["S256"]
    assert "challenge" not in query and "next" not in query, "what is confirmed stays server-side"
    callback = idp_browser.sign_in(start["Location"], login, until=CALLBACK)
    forwarded = client.get(callback.removeprefix("https://testserver"))
    assert forwarded.status_code == 302 and forwarded["Location"].startswith("/accounts/step-up/idp/corp/done/")
    return client.get(forwarded["Location"])


def hold(client, user, resource, body: bytes, path: str) -> dict[str, str]:
    """A form post held by the proxy for a one-time step-up: the step-up link's query."""
    decision = authorize(user, client.session, "127.0.0.1", resource, write(path))
    assert decision.outcome is Outcome.STEP_UP
    held = pending.HeldRequest("POST", path, path, "", (), body)
    token = pending.hold(held, user_id=user.pk, slug=resource.slug)
    url = step_up_url(user, client.session, resource, write(path), decision,
                      f"/apps/{resource.slug}{pending.REPLAY_PREFIX}{token}")
    return {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()} | {"url": url}


def test_a_tier_without_idp_makes_an_sso_mfa_session_step_up_with_a_portal_factor_and_says_why(
        client, corp, idp_browser, ledger):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)

    decision = authorize(nina, client.session, "127.0.0.1", ledger, write())
    assert decision.outcome is Outcome.STEP_UP
    assert decision.reasons[0].rule == "mfa_factor_not_accepted"
    assert decision.reasons[0].values["used_factor"] == "idp"
    assert "Accepted here: a passkey or an authenticator app code." in decision.reasons[0].message
    page = client.get(step_up_url(nina, client.session, ledger, write(), decision, "/apps/ledger/")).content.decode()
    assert "Your company sign-in's MFA does not count for this action" in page
    assert "Confirm at Corp SSO" not in page
    assert 'id="no-portal-factor"' in page and 'href="/accounts/mfa/"' in page, "she is told how to enrol"

    device = enrol_totp(nina)
    response = client.post("/accounts/step-up/", {"otp_token": totp_code(device), "next": "/apps/ledger/"})
    assert response.status_code == 302
    assert client.session[AMR_KEY] == ["otp", "fed", "pwd", "mfa"], "the IdP's methods stay for the assertion"
    assert authorize(nina, client.session, "127.0.0.1", ledger, write()).allowed


def test_a_tier_that_counts_idp_lets_the_sso_mfa_session_through(client, corp, idp_browser, wiki):
    sso_sign_in(client, idp_browser, "nina")

    decision = authorize(nina_of(corp), client.session, "127.0.0.1", wiki, write())
    assert decision.allowed
    assert decision.reasons[-1].rule == "mfa_fresh" and decision.reasons[-1].values["factor"] == "idp"


def test_a_step_up_at_the_idp_counts_with_a_fresh_sign_in_of_the_same_person(client, corp, idp_browser, wiki):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)
    stale_mfa(client)
    stale = authorize(nina, client.session, "127.0.0.1", wiki, write())
    assert stale.outcome is Outcome.STEP_UP and stale.reasons[0].rule == "mfa_stale"
    page = client.get(step_up_url(nina, client.session, wiki, write(), stale, "/apps/wiki/")).content.decode()
    assert "Confirm at Corp SSO" in page
    before = int(time.time())

    response = confirm_at_idp(client, idp_browser, "nina", next_url="/apps/wiki/")

    assert response.status_code == 302 and response["Location"] == "/apps/wiki/"
    assert client.session[MFA_TIME_KEY] >= before and client.session[AMR_KEY] == ["fed", "pwd", "mfa"]
    assert authorize(nina, client.session, "127.0.0.1", wiki, write()).allowed
    event = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert event.detail["factor"] == "idp" and event.detail["provider"] == "corp"


def test_another_idp_account_at_the_step_up_is_refused(client, corp, idp_browser, wiki):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)
    stale_mfa(client)
    mfa_time = client.session[MFA_TIME_KEY]

    response = confirm_at_idp(client, idp_browser, "boss", next_url="/apps/wiki/")

    assert response.status_code == 403
    assert "another account at Corp SSO" in response.content.decode()
    assert client.session[MFA_TIME_KEY] == mfa_time
    assert authorize(nina, client.session, "127.0.0.1", wiki, write()).outcome is Outcome.STEP_UP
    refused = AuditEvent.objects.filter(action="mfa.step_up", outcome="refused").latest("seq")
    assert refused.reasons[0]["rule"] == "other_subject" and refused.detail["subject"] == "boss"


def test_the_idp_answer_cannot_be_used_twice(client, corp, idp_browser, wiki):
    sso_sign_in(client, idp_browser, "nina")
    stale_mfa(client)
    start = client.post("/accounts/step-up/idp/corp/", {"next": "/apps/wiki/"})
    callback = idp_browser.sign_in(start["Location"], "nina", until=CALLBACK)
    done = client.get(client.get(callback.removeprefix("https://testserver"))["Location"])
    assert done.status_code == 302
    again = client.get(f"/accounts/step-up/idp/corp/done/?{urlsplit(callback).query}")
    assert again.status_code == 400


def test_a_session_that_did_not_sign_in_through_the_idp_cannot_confirm_there(
        client, corp, signed_in_employee, wiki):
    response = client.post("/accounts/step-up/idp/corp/", {"next": "/apps/wiki/"})
    assert response.status_code == 403
    page = client.get("/accounts/step-up/?next=/apps/wiki/").content.decode()
    assert "Confirm at" not in page


def test_a_step_up_at_the_idp_for_one_held_action_does_not_release_another(client, corp, idp_browser, payroll):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)
    mine = hold(client, nina, payroll, b"amount=10&to=alice", "/pay/1")
    other = hold(client, nina, payroll, b"amount=99999&to=mallory", "/pay/2")
    page = client.get(mine["url"]).content.decode()
    assert "Confirm at Corp SSO" in page and f'name="challenge" value="{mine["challenge"]}"' in page

    response = confirm_at_idp(client, idp_browser, "nina", next_url=mine["next"], challenge=mine["challenge"])

    assert response.status_code == 302 and response["Location"] == mine["next"]
    proof = IdpActionProof.objects.get()
    assert proof.challenge_id == int(mine["challenge"])
    event = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert event.detail["one_time_grant"] is True and event.detail["action_digest"] == proof.action_digest
    assert event.detail["body_sha256"] == hashlib.sha256(b"amount=10&to=alice").hexdigest()
    assert authorize(nina, client.session, "127.0.0.1", payroll, write("/pay/2")).outcome is Outcome.STEP_UP
    assert not ActionChallenge.objects.get(pk=int(other["challenge"])).verified_at
    granted = authorize(nina, client.session, "127.0.0.1", payroll, write("/pay/1"))
    assert granted.allowed and granted.consumed_one_time_mfa


def test_a_held_post_swapped_while_at_the_idp_is_not_released(client, corp, idp_browser, payroll):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)
    mine = hold(client, nina, payroll, b"amount=10&to=alice", "/pay/1")
    start = client.post("/accounts/step-up/idp/corp/", {"next": mine["next"], "challenge": mine["challenge"]})
    token = mine["next"].rsplit("/", 1)[1]
    swapped = pending.HeldRequest("POST", "/pay/1", "/pay/1", "", (), b"amount=99999&to=mallory")
    sealed = cache.get(pending._cache_key(pending.hold(swapped, user_id=nina.pk, slug="payroll")))
    cache.set(pending._cache_key(token), sealed, 300)  # another body under the same token

    callback = idp_browser.sign_in(start["Location"], "nina", until=CALLBACK)
    response = client.get(client.get(callback.removeprefix("https://testserver"))["Location"])

    assert response.status_code == 403
    assert not IdpActionProof.objects.exists()
    assert authorize(nina, client.session, "127.0.0.1", payroll, write("/pay/1")).outcome is Outcome.STEP_UP
    refused = AuditEvent.objects.filter(action="mfa.step_up", outcome="refused").latest("seq")
    assert refused.reasons[0]["rule"] == "action_mismatch"


def test_a_one_time_confirmation_at_the_idp_does_not_count_where_the_tier_does_not_count_idp(
        client, corp, idp_browser, payroll):
    sso_sign_in(client, idp_browser, "nina")
    nina = nina_of(corp)
    mine = hold(client, nina, payroll, b"amount=10&to=alice", "/pay/1")
    payroll.tier.accepted_factors = {"write": ["passkey"]}
    payroll.tier.save()
    confirm_at_idp(client, idp_browser, "nina", next_url=mine["next"], challenge=mine["challenge"])

    refused = authorize(nina, client.session, "127.0.0.1", payroll, write("/pay/1"))
    assert refused.outcome is Outcome.STEP_UP and "Accepted here: a passkey." in refused.reasons[0].message
