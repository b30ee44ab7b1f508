"""A live desktop's in-session step-up with a passkey, and codes where the tier accepts passkeys only.

The endpoint is the one the page's dialog posts to (``<desktop>/sessions/<id>/step-up/``); the
passkey's challenge is derived from this session and the action the tunnel asked about, so an
assertion made in one desktop confirms nothing in another. (Chromium end to end, with a real
tunnel and a virtual authenticator: test_passkey_step_up_chromium.py.)
"""

from __future__ import annotations

import pytest
from django.contrib.auth.models import Group

from portal.accounts.mfa import AMR_KEY
from portal.audit.models import AuditEvent
from streaming.desktop import broker
from streaming.desktop.models import StreamSession
from tests.factories import totp_code
from tests.portal.passkeys.authenticator import SoftAuthenticator
from tests.portal.passkeys.conftest import enrol, post_json
from tiers.models import Resource, Tier

pytestmark = pytest.mark.django_db


@pytest.fixture
def pushed(monkeypatch) -> list[tuple[str, dict]]:
    """What the endpoint tells live tunnels (the tunnel itself is not running here)."""
    sent: list[tuple[str, dict]] = []
    monkeypatch.setattr(broker, "push", lambda group, event: sent.append((group, event)))
    return sent


def live_desktop(user, slug: str, accepted: dict[str, list[str]]) -> StreamSession:
    tier = Tier.objects.create(name=f"tier-{slug}", rank=30, access_mode="stream", mfa_read=600,
                               mfa_write=0, mfa_sensitive=0, accepted_factors=accepted)
    resource = Resource.objects.create(slug=slug, name=slug.title(), kind="vnc", upstream="127.0.0.1:5999",
                                       tier=tier)
    resource.allowed_groups.add(Group.objects.get(name="employee"))
    return StreamSession.objects.create(user=user, resource=resource, tier_name=tier.name, state="live")


def step_up_url(stream: StreamSession) -> str:
    return f"/desktop/{stream.resource.slug}/sessions/{stream.pk}/step-up/"


@pytest.fixture
def authenticator() -> SoftAuthenticator:
    return SoftAuthenticator()


@pytest.fixture
def with_passkey(client, signed_in_employee, authenticator):
    assert enrol(client, authenticator).status_code == 200
    return signed_in_employee


def test_where_only_passkeys_count_a_code_is_refused_with_a_sentence_naming_them(
        client, signed_in_employee, pushed):
    stream = live_desktop(signed_in_employee, "vault", {"read": ["passkey"]})
    code = totp_code(signed_in_employee.totp, offset_steps=1)

    response = client.post(step_up_url(stream), {"otp_token": code, "action": "desktop.continue"})

    assert response.status_code == 403
    assert response.json() == {"ok": False, "error": "An authenticator app code does not count here. "
                                                      "Accepted here: a passkey."}
    assert pushed == []  # the held input stays held
    event = AuditEvent.objects.filter(action="mfa.step_up").latest("seq")
    assert event.outcome == "refused" and event.detail["factor"] == "totp"
    # The code was not spent: where codes do count it still works.
    other = live_desktop(signed_in_employee, "ops", {})
    assert client.post(step_up_url(other), {"otp_token": code}).json() == {"ok": True}


def test_the_sentence_follows_the_action_the_tunnel_asked_about(client, signed_in_employee, pushed):
    stream = live_desktop(signed_in_employee, "vault", {"sensitive": ["passkey"]})
    code = totp_code(signed_in_employee.totp, offset_steps=1)

    paste = client.post(step_up_url(stream), {"otp_token": code, "action": "clipboard.in"})
    going_on = client.post(step_up_url(stream), {"otp_token": code, "action": "desktop.continue"})

    assert paste.status_code == 403 and "Accepted here: a passkey." in paste.json()["error"]
    assert going_on.json() == {"ok": True}


def test_a_passkey_confirms_the_live_session_and_the_tunnel_is_told(client, with_passkey, authenticator,
                                                                    pushed):
    stream = live_desktop(with_passkey, "vault", {"read": ["passkey"], "sensitive": ["passkey"]})
    options = post_json(client, step_up_url(stream), {"step": "options", "action": "desktop.continue"})
    assert options.status_code == 200, options.content

    answer = post_json(client, step_up_url(stream), {"action": "desktop.continue",
                                                     "credential": authenticator.get(options.json())})

    assert answer.json() == {"ok": True}
    assert client.session[AMR_KEY] == ["pwd", "hwk", "user"]  # the decision reads "passkey" from it
    [(_group, event)] = pushed
    assert event["type"] == "desktop.stepped_up" and event["session_key"] == client.session.session_key
    audited = AuditEvent.objects.filter(action="mfa.step_up", outcome="success").latest("seq")
    assert audited.resource == "vault" and audited.detail["factor"] == "passkey"
    assert audited.detail["session"] == str(stream.pk) and len(audited.detail["action_digest"]) == 64


def test_an_assertion_made_in_one_desktop_does_not_confirm_another(client, with_passkey, authenticator,
                                                                   pushed):
    signed_for = live_desktop(with_passkey, "vault", {"read": ["passkey"]})
    sent_to = live_desktop(with_passkey, "ledger", {"read": ["passkey"]})
    options = post_json(client, step_up_url(signed_for), {"step": "options", "action": "desktop.continue"})

    answer = post_json(client, step_up_url(sent_to), {"action": "desktop.continue",
                                                      "credential": authenticator.get(options.json())})

    assert answer.status_code == 401
    assert "made for another action" in answer.json()["error"]
    assert pushed == []
    event = AuditEvent.objects.filter(action="mfa.step_up").latest("seq")
    assert event.outcome == "failure" and event.reasons[0]["rule"] == "action_mismatch"


def test_an_assertion_for_going_on_does_not_confirm_a_paste(client, with_passkey, authenticator, pushed):
    stream = live_desktop(with_passkey, "vault", {"sensitive": ["passkey"]})
    options = post_json(client, step_up_url(stream), {"step": "options", "action": "desktop.continue"})

    answer = post_json(client, step_up_url(stream), {"action": "clipboard.in",
                                                     "credential": authenticator.get(options.json())})

    assert answer.status_code == 401 and pushed == []


def test_someone_elses_desktop_session_has_no_step_up(client, with_passkey, pushed):
    from tests.factories import UserFactory

    stranger = UserFactory(username="sam", role="employee")
    stream = live_desktop(stranger, "vault", {"read": ["passkey"]})

    response = post_json(client, step_up_url(stream), {"step": "options"})

    assert response.status_code == 404 and pushed == []


def test_without_a_passkey_the_page_is_told_to_add_one(client, signed_in_employee, pushed):
    stream = live_desktop(signed_in_employee, "vault", {"read": ["passkey"]})

    response = post_json(client, step_up_url(stream), {"step": "options", "action": "desktop.continue"})

    assert response.status_code == 400 and "add one under Security" in response.json()["error"]


def test_the_desktop_page_offers_the_passkey_alone_where_codes_do_not_count(client, with_passkey):
    stream = live_desktop(with_passkey, "vault", {"read": ["passkey"]})
    stream.resource.tier.mfa_sensitive = 3600
    stream.resource.tier.save()

    html = client.get("/desktop/vault/").content.decode()

    assert 'data-has-passkey="true"' in html
    assert ('data-refuse-codes-read="An authenticator app code does not count here. '
            'Accepted here: a passkey."') in html
    assert 'data-refuse-codes-sensitive=""' in html
    assert 'id="use-passkey"' in html
