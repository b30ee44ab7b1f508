"""Sign-in through an IdP (start, callback) and the IdP's back-channel logout.

Views translate HTTP to :mod:`portal.sso.oidc`, :mod:`portal.sso.signin` and
:mod:`portal.sso.sessions`, and write an audit event for every outcome.
"""

from __future__ import annotations

from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import login_not_required, permission_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import redirect, render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_GET, require_POST

from portal.accounts import mfa
from portal.accounts.redirects import remember_next, take_next
from portal.accounts.signin import locked_message
from portal.audit.chain import record_request
from portal.metrics import SIGN_INS
from portal.sso import links, oidc, reauth, registry, sessions, signin
from portal.sso.providers import IdentityProvider

__all__ = ["backchannel_logout_view", "callback_view", "keep_pending", "login_view", "provider_named",
           "revoke_link_view", "take_pending"]

PENDING_KEY = "sso_pending"
PENDING_MAX = 5  # sign-ins started in other tabs that may still come back


def provider_named(name: str) -> IdentityProvider:
    """The configured IdP of that name (environment or admin), or 404."""
    provider = registry.find_provider(name)
    if provider is None:
        raise Http404("No such identity provider.")
    return provider


def _audit(request: HttpRequest, action: str, *, outcome: str, **kwargs: object) -> None:
    record_request(request, action, outcome=outcome, **kwargs)
    SIGN_INS.labels(step=action, outcome=outcome).inc()


def _failed(request: HttpRequest, provider: IdentityProvider, message: str, status: int) -> HttpResponse:
    return render(request, "sso/error.html", {"provider": provider, "message": message}, status=status)


@login_not_required
@never_cache
@require_GET
def login_view(request: HttpRequest, name: str) -> HttpResponse:
    """Send the browser to the IdP with a fresh state, nonce and PKCE challenge."""
    provider = provider_named(name)
    redirect_uri = request.build_absolute_uri(reverse("sso:callback", args=[provider.name]))
    try:
        start = oidc.begin(provider, redirect_uri)
    except oidc.SsoError as exc:
        _audit(request, "login.sso", outcome="failure", detail={"provider": name, "reason": exc.reason})
        message = _("%(idp)s cannot be reached right now. Try again in a minute, or ask IT if it keeps "
                    "happening.") % {"idp": provider.label}
        return _failed(request, provider, message, 502)
    keep_pending(request, start)
    remember_next(request, request.GET.get("next"))
    return HttpResponseRedirect(start.url)


def keep_pending(request: HttpRequest, start: oidc.AuthorizationRequest) -> None:
    """Remember an authorization request in the session (a few at once: other tabs)."""
    pending = dict(list(request.session.get(PENDING_KEY, {}).items())[-(PENDING_MAX - 1):])
    pending[start.state] = start.pending
    request.session[PENDING_KEY] = pending


def take_pending(request: HttpRequest, provider: IdentityProvider) -> dict[str, Any] | None:
    """The pending request the answer's ``state`` names, used up; None when unknown or another IdP's."""
    pending_all = request.session.get(PENDING_KEY, {})
    pending = pending_all.pop(request.GET.get("state", ""), None)
    request.session[PENDING_KEY] = pending_all
    if pending is None or pending.get("provider") != provider.name:
        return None
    return pending


@login_not_required
@never_cache
@require_GET
def callback_view(request: HttpRequest, name: str) -> HttpResponse:
    """The IdP's answer: check it, sign the person in, then MFA here unless the IdP did it."""
    provider = provider_named(name)
    waiting = request.session.get(PENDING_KEY, {}).get(request.GET.get("state", "")) or {}
    if waiting.get("purpose") == reauth.PURPOSE:
        # A step-up at the IdP: finished where a held action's one-time grant can be armed.
        return redirect(f"{reverse('idp_stepup:finish', args=[provider.name])}?{request.GET.urlencode()}")
    pending = take_pending(request, provider)
    if pending is None:
        _audit(request, "login.sso", outcome="failure", detail={"provider": name, "reason": "unknown_state"})
        return _failed(request, provider, _("This sign-in was not started here, or it was already used. "
                                            "Start again from the sign-in page."), 400)
    try:
        claims = oidc.finish(provider, pending, request.GET.dict())
    except oidc.SsoError as exc:
        _audit(request, "login.sso", outcome="failure",
               detail={"provider": name, "reason": exc.reason, "error": exc.detail[:300]})
        message = (_("You cancelled the sign-in at %(idp)s, or it refused it.") if exc.reason == "idp_refused"
                   else _("The answer from %(idp)s could not be trusted, so nobody was signed in."))
        return _failed(request, provider, message % {"idp": provider.label} + " " +
                       _("Start again from the sign-in page."), 400)
    result = signin.sign_in_person(provider, claims)
    if result.refused:
        _audit(request, "login.sso", outcome="failure", actor=result.user.get_username(),
               reasons=[{"rule": result.refused, "message": "The account is locked."}],
               detail={"provider": name})
        return _failed(request, provider, locked_message(""), 403)
    verified = sessions.start_session(request, provider, result.link, claims)
    _audit(request, "login.sso", outcome="success",
           detail={"provider": name, "new_account": result.created, "idp_mfa": verified,
                   "amr": signin.idp_amr(claims), "acr": str(claims.get("acr") or "")})
    if verified:
        return redirect(take_next(request))
    return redirect("accounts:mfa_verify" if mfa.has_confirmed_totp(result.user) else "accounts:mfa")


def _refused(request: HttpRequest, name: str, reason: str, detail: str = "") -> JsonResponse:
    _audit(request, "sso.backchannel_logout", outcome="failure", actor=f"idp:{name}",
           detail={"reason": reason, "error": detail[:300]})
    response = JsonResponse({"error": "invalid_request", "error_description": reason}, status=400)
    response["Cache-Control"] = "no-store"
    return response


@csrf_exempt  # server to server: the logout token's signature is the proof, not a cookie
@login_not_required
@require_POST
def backchannel_logout_view(request: HttpRequest, name: str) -> HttpResponse:
    """OpenID Back-Channel Logout 1.0: a verified, first-seen logout token ends those sessions."""
    provider = provider_named(name)
    try:
        claims = oidc.verify_logout_token(provider, request.POST.get("logout_token", ""))
    except oidc.SsoError as exc:
        return _refused(request, name, exc.reason, exc.detail)
    if not sessions.first_use_of(claims):
        return _refused(request, name, "replayed_logout_token", claims.jti)
    ended = sessions.end_sessions(claims)
    _audit(request, "sso.backchannel_logout", outcome="success", actor=f"idp:{name}",
           detail={"sid": claims.sid or "", "sub": claims.sub or "", "users": ended})
    response = HttpResponse(status=200)
    response["Cache-Control"] = "no-store"
    return response


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def revoke_link_view(request: HttpRequest, link_id: int) -> HttpResponse:
    """From People: an IdP account no longer signs in as this person; its sessions end."""
    link = links.revoke_link(link_id, by=request.user, client_address=request.client_address,
                             request_id=request.request_id)
    if link is None:
        messages.error(request, _("That SSO link is already gone."))
    else:
        messages.success(request, _("%(user)s no longer signs in through %(idp)s as %(subject)s; its "
                                    "sessions ended.") % {"user": link.user.get_username(),
                                                          "idp": link.provider, "subject": link.subject})
    return redirect("people")
