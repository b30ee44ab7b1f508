"""Step-up with a passkey: bound to the exact held action; tiers that accept only passkeys."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

import pytest

from portal.audit.models import AuditEvent
from portal.passkeys.models import ActionProof
from streaming.proxy import pending
from tests.factories import totp_code
from tests.portal.passkeys.conftest import enrol, post_json
from tests.tiers.factories import ResourceFactory, TierFactory
from tiers.enforcement import authorize, step_up_url
from tiers.models import ActionChallenge
from tiers.types import Action, ActionClass, Outcome

pytestmark = pytest.mark.django_db


def pay(path: str = "/pay") -> Action:
    return Action("http", ActionClass.WRITE, "POST", path)


@pytest.fixture
def payroll(db):
    tier = TierFactory(name="critical-web", mfa_write=0, accepted_factors={"write": ["passkey"]})
    return ResourceFactory(slug="payroll", tier=tier)


@pytest.fixture
def with_passkey(client, signed_in_employee, authenticator):
    enrol(client, authenticator)
    return signed_in_employee


def hold(client, user, resource, body: bytes, path: str = "/pay") -> tuple[str, dict[str, str]]:
    """A form post held by the proxy for a step-up, as ``hold_for_step_up`` does: the step-up
    URL (with the challenge and the replay path) and its query."""
    decision = authorize(user, client.session, "127.0.0.1", resource, pay(path))
    assert decision.outcome is Outcome.STEP_UP
    held = pending.HeldRequest("POST", path, path, "", (("content-type", "application/x-www-form-urlencoded"),),
                               body)
    token = pending.hold(held, user_id=user.pk, slug=resource.slug)
    url = step_up_url(user, client.session, resource, pay(path), decision,
                      f"/apps/{resource.slug}{pending.REPLAY_PREFIX}{token}")
    return url, {k: v[0] for k, v in parse_qs(urlsplit(url).query).items()}


def passkey_step_up(client, authenticator, signed_for: dict[str, str], sent_for: dict[str, str]):
    """Options for ``signed_for``'s action, the assertion posted as confirming ``sent_for``'s."""
    options = post_json(client, "/accounts/step-up/passkey/options/",
                        {"challenge": signed_for["challenge"], "next": signed_for["next"]})
    assert options.status_code == 200, options.content
    answer = authenticator.get(options.json())
    return post_json(client, "/accounts/step-up/passkey/",
                     {"challenge": sent_for["challenge"], "next": sent_for["next"], "credential": answer})


def test_a_passkey_step_up_releases_the_held_post_it_signed_and_audits_its_digest(
        client, with_passkey, authenticator, payroll):
    _, held = hold(client, with_passkey, payroll, b"amount=10&to=alice")
    response = passkey_step_up(client, authenticator, held, held)
    assert response.status_code == 200 and response.json() == {"location": held["next"]}
    proof = ActionProof.objects.get()
    event = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert event.detail["one_time_grant"] is True and event.detail["factor"] == "passkey"
    assert event.detail["action_digest"] == proof.action_digest
    assert event.detail["body_sha256"] == hashlib.sha256(b"amount=10&to=alice").hexdigest()
    granted = authorize(with_passkey, client.session, "127.0.0.1", payroll, pay())
    assert granted.allowed and granted.consumed_one_time_mfa


def test_an_assertion_made_for_one_held_form_post_does_not_release_another(
        client, with_passkey, authenticator, payroll):
    _, mine = hold(client, with_passkey, payroll, b"amount=10&to=alice")
    _, other = hold(client, with_passkey, payroll, b"amount=99999&to=mallory")
    response = passkey_step_up(client, authenticator, signed_for=mine, sent_for=other)
    assert response.status_code == 401
    assert not ActionChallenge.objects.filter(verified_at__isnull=False).exists()
    assert not ActionProof.objects.exists()
    refused = AuditEvent.objects.filter(action="mfa.step_up", outcome="failure").latest("seq")
    assert refused.reasons[0]["rule"] == "action_mismatch" and refused.detail["action_digest"]
    still = authorize(with_passkey, client.session, "127.0.0.1", payroll, pay())
    assert still.outcome is Outcome.STEP_UP


def test_a_held_post_whose_body_changed_after_signing_is_not_released(
        client, with_passkey, authenticator, payroll):
    _, held = hold(client, with_passkey, payroll, b"amount=10&to=alice")
    options = post_json(client, "/accounts/step-up/passkey/options/",
                        {"challenge": held["challenge"], "next": held["next"]}).json()
    token = held["next"].rsplit("/", 1)[1]
    swapped = pending.HeldRequest("POST", "/pay", "/pay", "", (), b"amount=99999&to=mallory")
    from django.core.cache import cache

    sealed = cache.get(pending._cache_key(pending.hold(swapped, user_id=with_passkey.pk, slug="payroll")))
    cache.set(pending._cache_key(token), sealed, 300)  # the store now holds another body under A's token
    response = post_json(client, "/accounts/step-up/passkey/",
                         {"challenge": held["challenge"], "next": held["next"],
                          "credential": authenticator.get(options)})
    assert response.status_code == 401
    assert authorize(with_passkey, client.session, "127.0.0.1", payroll, pay()).outcome is Outcome.STEP_UP


def test_where_only_passkeys_count_a_totp_code_is_refused_with_a_sentence_naming_them(
        client, with_passkey, payroll):
    url, held = hold(client, with_passkey, payroll, b"amount=10&to=alice")
    page = client.get(url).content.decode()
    assert "Accepted here: a passkey." in page and "Confirm with a passkey" in page
    assert "does not count for this action" in page
    response = client.post(url, {"otp_token": totp_code(with_passkey.totp, offset_steps=1),
                                 "challenge": held["challenge"], "next": held["next"]})
    assert response.status_code == 403
    assert "An authenticator app code does not count here. This write action needs a fresh " \
           "confirmation for this action alone. Accepted here: a passkey." in response.content.decode()
    assert not ActionChallenge.objects.filter(verified_at__isnull=False).exists()


def test_a_totp_code_sent_without_the_reason_still_does_not_count_where_only_passkeys_do(
        client, with_passkey, payroll):
    _, held = hold(client, with_passkey, payroll, b"amount=10&to=alice")
    bare = f"/accounts/step-up/?challenge={held['challenge']}&next={held['next']}"
    response = client.post(bare, {"otp_token": totp_code(with_passkey.totp, offset_steps=1)})
    assert response.status_code == 302  # the code was right, and arms the challenge ...
    decision = authorize(with_passkey, client.session, "127.0.0.1", payroll, pay())
    assert decision.outcome is Outcome.STEP_UP  # ... but the decision does not count it
    assert decision.reasons[0].values["accepted_factors"] == ["passkey"]


def test_a_user_without_a_passkey_is_told_how_to_add_one(client, signed_in_employee, payroll):
    url, _ = hold(client, signed_in_employee, payroll, b"x=1")
    page = client.get(url).content.decode()
    assert "You have no passkey yet." in page and 'href="/accounts/mfa/"' in page


def test_a_fresh_passkey_step_up_counts_where_a_fresh_code_does_not(client, with_passkey, authenticator, db):
    tier = TierFactory(name="high-web", mfa_write=300, accepted_factors={"write": ["passkey"]})
    wiki = ResourceFactory(slug="wiki", tier=tier)
    after_code = authorize(with_passkey, client.session, "127.0.0.1", wiki, pay())
    assert after_code.outcome is Outcome.STEP_UP
    assert after_code.reasons[0].rule == "mfa_factor_not_accepted"
    options = post_json(client, "/accounts/step-up/passkey/options/", {"next": "/apps/wiki/"}).json()
    response = post_json(client, "/accounts/step-up/passkey/",
                         {"next": "/apps/wiki/", "credential": authenticator.get(options)})
    assert response.status_code == 200
    assert client.session["amr"] == ["pwd", "hwk", "user"]
    assert authorize(with_passkey, client.session, "127.0.0.1", wiki, pay()).allowed
