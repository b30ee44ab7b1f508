"""Portal sessions made by an IdP sign-in, and their end when the IdP says so.

The session remembers which IdP session it came from (issuer, ``sub``, ``sid``) under
:data:`SSO_SESSION_KEY`; a verified back-channel logout token ends every portal session that
matches it. Ending goes the way sign-out does: the session row (and its cached copy) is
deleted, which the proxy hears (post_delete of the session: app-origin sessions are admitted
on it and end with it), and ``user_logged_out`` is sent, which live desktops and the proxy
already listen to (streaming/desktop/signals.py re-decides each of the user's desktops; the
ones bound to the deleted session end).
"""

from __future__ import annotations

import time
from datetime import UTC, datetime
from typing import Any

import django_otp
from django.contrib.auth import get_user_model, login
from django.contrib.auth.signals import user_logged_out
from django.contrib.sessions.models import Session
from django.db import IntegrityError, transaction
from django.http import HttpRequest
from django.utils import timezone

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.sso.models import LogoutTokenUse, SsoLink
from portal.sso.oidc import LogoutClaims
from portal.sso.providers import IdentityProvider
from portal.sso.signin import idp_amr, idp_did_mfa, mfa_device

__all__ = ["SSO_SESSION_KEY", "end_sessions", "first_use_of", "start_session"]

SSO_SESSION_KEY = "sso"
FEDERATED_AMR = "fed"  # RFC 8176: the person was authenticated by a federated IdP


def start_session(request: HttpRequest, provider: IdentityProvider, link: SsoLink,
                  claims: dict[str, Any]) -> bool:
    """Sign the person in (new session key); True when the IdP's MFA verifies the session too."""
    login(request, link.user, backend="django.contrib.auth.backends.ModelBackend")
    request.session[SSO_SESSION_KEY] = {"provider": provider.name, "iss": provider.issuer,
                                        "sub": str(claims["sub"]), "sid": str(claims.get("sid") or "")}
    request.session[AMR_KEY] = [FEDERATED_AMR, *idp_amr(claims)]
    if not idp_did_mfa(provider, claims):
        return False  # the portal's own second factor comes next
    django_otp.login(request, mfa_device(link))
    now = int(time.time())
    at = claims.get("auth_time") if isinstance(claims.get("auth_time"), int | float) else claims.get("iat")
    request.session[MFA_TIME_KEY] = min(now, int(at)) if isinstance(at, int | float) else now
    return True


def first_use_of(claims: LogoutClaims) -> bool:
    """Record the logout token's ``jti``; False when it was seen before (a replay)."""
    LogoutTokenUse.objects.filter(expires__lt=timezone.now()).delete()
    try:
        with transaction.atomic():
            LogoutTokenUse.objects.create(issuer=claims.issuer, jti=claims.jti,
                                          expires=datetime.fromtimestamp(claims.exp + 3600, tz=UTC))
    except IntegrityError:
        return False
    return True


def _matches(info: Any, claims: LogoutClaims) -> bool:
    if not isinstance(info, dict) or info.get("iss") != claims.issuer:
        return False
    if claims.sid and info.get("sid") != claims.sid:
        return False
    return not (claims.sub and info.get("sub") != claims.sub)


def end_sessions(claims: LogoutClaims) -> list[str]:
    """End every portal session of that IdP session (``sid``) or person (``sub`` alone);
    returns the usernames whose sessions ended."""
    from django.contrib.sessions.backends.cached_db import SessionStore

    user_ids: set[str] = set()
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        data = session.get_decoded()
        if _matches(data.get(SSO_SESSION_KEY), claims):
            SessionStore(session.session_key).delete()  # the cached copy too
            user_ids.add(str(data.get("_auth_user_id", "")))
    users = list(get_user_model()._default_manager.filter(pk__in=[u for u in user_ids if u.isdigit()]))
    for user in users:
        # The path sign-out takes: live desktops and the proxy's memory of this user re-decide.
        user_logged_out.send(sender=type(user), request=None, user=user)
    return [u.get_username() for u in users]
