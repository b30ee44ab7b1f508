"""Which IdP answers confirm a step-up: the same account, signed in again after the request,
with MFA by the IdP's rules (pure: claims in, refusal code out)."""

from __future__ import annotations

from portal.sso.providers import IdentityProvider
from portal.sso.reauth import CLOCK_SKEW_SECONDS, reauth_refusal

CORP = IdentityProvider(name="corp", label="Corp SSO", issuer="https://idp.example", client_id="portal",
                        client_secret="s", mfa_acr=("urn:example:mfa",))
PENDING = {"sub": "nina", "started": 1_000_000}


def claims(**overrides: object) -> dict[str, object]:
    return {"sub": "nina", "auth_time": 1_000_005, "amr": ["pwd", "mfa"]} | overrides


def test_a_fresh_sign_in_with_mfa_by_the_same_account_confirms():
    assert reauth_refusal(CORP, PENDING, claims()) == ""
    assert reauth_refusal(CORP, PENDING, claims(auth_time=1_000_000)) == "", "the same second still counts"


def test_an_idp_whose_clock_runs_a_few_seconds_behind_still_confirms():
    assert reauth_refusal(CORP, PENDING, claims(auth_time=1_000_000 - CLOCK_SKEW_SECONDS)) == ""


def test_an_idp_that_answered_from_its_earlier_session_does_not_confirm():
    assert reauth_refusal(CORP, PENDING, claims(auth_time=1_000_000 - CLOCK_SKEW_SECONDS - 1)) == "stale_auth_time"
    assert reauth_refusal(CORP, PENDING, claims(auth_time=None)) == "stale_auth_time"
    assert reauth_refusal(CORP, PENDING, claims(auth_time="1000005")) == "stale_auth_time"


def test_another_account_at_the_idp_does_not_confirm():
    assert reauth_refusal(CORP, PENDING, claims(sub="boss")) == "other_subject"
    assert reauth_refusal(CORP, {"started": 1_000_000, "sub": ""}, claims(sub="")) == "other_subject"


def test_a_sign_in_without_mfa_at_the_idp_does_not_confirm_unless_its_acr_is_trusted():
    assert reauth_refusal(CORP, PENDING, claims(amr=["pwd"])) == "no_idp_mfa"
    assert reauth_refusal(CORP, PENDING, claims(amr=["pwd"], acr="urn:example:mfa")) == ""
