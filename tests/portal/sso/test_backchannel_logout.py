"""OpenID Back-Channel Logout 1.0: the IdP ends portal sessions; forged and replayed tokens do not."""

from __future__ import annotations

import time

import pytest
from joserfc import jwt
from joserfc.jwk import RSAKey

from portal.audit.models import AuditEvent
from portal.sso.oidc import BACKCHANNEL_EVENT, SsoError, check_logout_token
from tests.conftest import https_client
from tests.fixtures.oidc import CLIENT_ID, OpBrowser
from tests.portal.sso.conftest import sso_sign_in

ISSUER = "https://idp.example"


def post_logout(token: str):
    """The IdP's server-to-server POST (no cookies, no CSRF token: the client enforces CSRF)."""
    return https_client(enforce_csrf_checks=True).post("/sso/corp/backchannel-logout/", {"logout_token": token})


@pytest.mark.django_db
def test_the_idps_back_channel_logout_ends_her_portal_session(client, corp, idp_browser, logout_catcher):
    logout_catcher.tokens.clear()
    sso_sign_in(client, idp_browser, "nina")
    assert client.get("/").status_code == 200

    idp_browser.sign_out(corp.issuer)
    token = logout_catcher.wait()[0]
    response = post_logout(token)

    assert response.status_code == 200
    after = client.get("/")
    assert after.status_code == 302 and after["Location"].startswith("/accounts/login/")
    event = AuditEvent.objects.filter(action="sso.backchannel_logout").latest("seq")
    assert event.outcome == "success" and event.detail["users"] == ["nina"]


@pytest.mark.django_db
def test_a_replayed_logout_token_is_refused(client, corp, idp_browser, logout_catcher):
    logout_catcher.tokens.clear()
    sso_sign_in(client, idp_browser, "nina")
    idp_browser.sign_out(corp.issuer)
    token = logout_catcher.wait()[0]
    assert post_logout(token).status_code == 200

    again = post_logout(token)

    assert again.status_code == 400 and again.json()["error_description"] == "replayed_logout_token"


@pytest.mark.django_db
def test_a_logout_ends_only_the_idp_session_it_names(corp, logout_catcher):
    logout_catcher.tokens.clear()
    laptop, phone = https_client(), https_client()
    laptop_idp, phone_idp = OpBrowser(), OpBrowser()
    sso_sign_in(laptop, laptop_idp, "nina")
    sso_sign_in(phone, phone_idp, "nina")

    laptop_idp.sign_out(corp.issuer)
    assert post_logout(logout_catcher.wait()[0]).status_code == 200

    assert laptop.get("/").status_code == 302
    assert phone.get("/").status_code == 200, "her other sign-in (another IdP session) goes on"


@pytest.mark.django_db
def test_a_logout_token_signed_by_anyone_but_the_idp_is_refused(client, corp, idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    forger = RSAKey.generate_key(2048, parameters={"kid": "forged"})
    claims = {"iss": corp.issuer, "aud": CLIENT_ID, "iat": int(time.time()), "jti": "forged-1",
              "sub": "nina", "events": {BACKCHANNEL_EVENT: {}}}
    token = jwt.encode({"alg": "RS256", "kid": "forged", "typ": "logout+jwt"}, claims, forger)

    response = post_logout(token)

    assert response.status_code == 400 and response.json()["error_description"] == "bad_signature"
    assert client.get("/").status_code == 200


@pytest.mark.django_db
def test_an_unsigned_logout_token_is_refused(client, corp, idp_browser):
    sso_sign_in(client, idp_browser, "nina")
    import base64
    import json

    def part(value: dict) -> str:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=").decode()

    token = (part({"alg": "none"}) + "." + part({"iss": corp.issuer, "aud": CLIENT_ID, "iat": int(time.time()),
                                                 "jti": "none-1", "sub": "nina",
                                                 "events": {BACKCHANNEL_EVENT: {}}}) + ".")
    assert post_logout(token).status_code == 400
    assert client.get("/").status_code == 200


KEY = RSAKey.generate_key(2048, parameters={"kid": "k1"})


def signed(claims: dict, header: dict | None = None):
    raw = jwt.encode({"alg": "RS256", "kid": "k1", "typ": "logout+jwt", **(header or {})}, claims, KEY)
    return jwt.decode(raw, KEY)


def good(**changes: object) -> dict:
    claims = {"iss": ISSUER, "aud": "portal", "iat": int(time.time()), "exp": int(time.time()) + 120,
              "jti": "j-1", "sid": "s-1", "sub": "nina", "events": {BACKCHANNEL_EVENT: {}}}
    claims.update(changes)
    return {k: v for k, v in claims.items() if v is not None}


def test_a_well_formed_logout_token_names_its_session_and_person():
    claims = check_logout_token(signed(good()), issuer=ISSUER, client_id="portal")

    assert (claims.sid, claims.sub, claims.jti) == ("s-1", "nina", "j-1")


@pytest.mark.parametrize(("what", "claims", "header"), [
    ("for another client", good(aud="someone-else"), None),
    ("from another issuer", good(iss="https://evil.example"), None),
    ("an ID token (it has a nonce)", good(nonce="n"), None),
    ("without the logout event", good(events={"other": {}}), None),
    ("with the event not an object", good(events={BACKCHANNEL_EVENT: "yes"}), None),
    ("naming neither session nor person", good(sid=None, sub=None), None),
    ("without a jti (cannot be used once)", good(jti=None), None),
    ("issued long ago", good(iat=int(time.time()) - 3600, exp=int(time.time()) + 60), None),
    ("expired", good(exp=int(time.time()) - 600), None),
    ("typed as something else", good(), {"typ": "JWT"}),
])
def test_a_logout_token_is_refused_when_it_is(what, claims, header):
    with pytest.raises(SsoError) as refused:
        check_logout_token(signed(claims, header), issuer=ISSUER, client_id="portal")
    assert refused.value.reason == "bad_logout_token", what
