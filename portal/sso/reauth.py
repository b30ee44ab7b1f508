"""Step-up at the IdP: the person confirms again at the company sign-in (docs/decisions/0028).

Where a tier counts the IdP's MFA (factor ``idp``) and the session came through SSO, a fresh
confirmation can come from the IdP rather than a portal factor: an authorization request with
``prompt=login`` and ``max_age=0`` (so the IdP must authenticate again, not answer from its
own session), with state, nonce and PKCE as at sign-in. Its answer counts only when it is the
same IdP account (``sub``) the session signed in with, the IdP authenticated *after* the
request was made (``auth_time``), and it did MFA by the rules the admin set for that IdP
(``mfa_amr`` / ``mfa_acr``). What the confirmation was for (the next page, and a held
one-time action's challenge and digest) lives in the server-side pending state, never in the
URL. Identity only: arming a tier's one-time grant is :mod:`portal.idp_stepup`'s part.
"""

from __future__ import annotations

import time
from typing import Any

import django_otp
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.sso import oidc, registry
from portal.sso.models import SsoLink
from portal.sso.providers import IdentityProvider
from portal.sso.sessions import FEDERATED_AMR, SSO_SESSION_KEY
from portal.sso.signin import idp_amr, idp_did_mfa, mfa_device

__all__ = ["CLOCK_SKEW_SECONDS", "PURPOSE", "REAUTH_PARAMS", "REFUSALS", "begin_reauth", "idp_amr",
           "linked_account", "mark_reauth", "reauth_refusal", "session_provider"]

PURPOSE = "step_up"
REAUTH_PARAMS = (("prompt", "login"), ("max_age", "0"))

# Why an answer does not count, in words for the page (the code goes to the audit trail).
REFUSALS = {
    "other_subject": "That was another account at %(idp)s, not the one you signed in with.",
    "stale_auth_time": "%(idp)s did not ask you to sign in again, so nothing was confirmed.",
    "no_idp_mfa": "%(idp)s confirmed you without a second factor, which does not count here.",
    "not_linked": "Your account is no longer linked to %(idp)s.",
}


# The IdP's clock may run a little behind ours: a sign-in this much "before" the request still
# counts. Small, because prompt=login means the IdP signed the person in after the request.
CLOCK_SKEW_SECONDS = 10

def session_provider(session: Any) -> IdentityProvider | None:
    """The IdP this session signed in through (still configured, same issuer), or None."""
    info = session.get(SSO_SESSION_KEY) if session is not None else None
    if not isinstance(info, dict):
        return None
    provider = registry.find_provider(str(info.get("provider") or ""))
    if provider is None or provider.issuer != info.get("iss"):
        return None
    return provider


def begin_reauth(provider: IdentityProvider, redirect_uri: str, session: Any, *, user: AbstractBaseUser,
                 next_url: str, bound: dict[str, Any] | None = None) -> oidc.AuthorizationRequest:
    """The IdP URL to confirm at, with what the answer must match kept in the pending state.

    ``bound``: the held one-time action (``challenge``, ``action_digest``, ``body_sha256``).
    """
    start = oidc.begin(provider, redirect_uri, extra=REAUTH_PARAMS)
    sso = session.get(SSO_SESSION_KEY) or {}
    pending = {**start.pending, "purpose": PURPOSE, "user": user.pk, "sub": str(sso.get("sub") or ""),
               "next": next_url, **(bound or {})}
    return oidc.AuthorizationRequest(start.url, start.state, pending)


def reauth_refusal(provider: IdentityProvider, pending: dict[str, Any], claims: dict[str, Any]) -> str:
    """Why a verified ID token does not confirm this step-up (a code of :data:`REFUSALS`), or ""."""
    if not pending.get("sub") or str(claims.get("sub")) != pending["sub"]:
        return "other_subject"
    auth_time = claims.get("auth_time")
    earliest = float(pending.get("started", 0)) - CLOCK_SKEW_SECONDS
    if not isinstance(auth_time, int | float) or auth_time < earliest:
        return "stale_auth_time"
    if not idp_did_mfa(provider, claims):
        return "no_idp_mfa"
    return ""


def linked_account(provider: IdentityProvider, user: AbstractBaseUser,
                   claims: dict[str, Any]) -> SsoLink | None:
    """The link of this IdP account to this user (gone when an admin revoked it)."""
    return SsoLink.objects.filter(issuer=provider.issuer, subject=str(claims.get("sub")), user=user).first()


def mark_reauth(request: HttpRequest, link: SsoLink, claims: dict[str, Any]) -> None:
    """Record the IdP's fresh MFA as this session's last confirmation: new session key,
    verified by the link's IdP device, ``mfa_time`` = the IdP's ``auth_time``, amr
    ``["fed", *the IdP's]`` (the factor reads as ``idp``), and the IdP session it came from."""
    request.session.cycle_key()
    django_otp.login(request, mfa_device(link))
    now = int(time.time())
    request.session[MFA_TIME_KEY] = min(now, int(claims["auth_time"]))
    request.session[AMR_KEY] = [FEDERATED_AMR, *idp_amr(claims)]
    sso = dict(request.session.get(SSO_SESSION_KEY) or {})
    if claims.get("sid"):
        sso["sid"] = str(claims["sid"])  # back-channel logout of the IdP session she has now
    request.session[SSO_SESSION_KEY] = sso
