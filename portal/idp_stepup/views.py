"""Step-up at the IdP, start and finish (docs/decisions/0028).

The identity part (the request with ``prompt=login``/``max_age=0``, and which answers count)
is :mod:`portal.sso.reauth`. This module sits above the tiers, as :mod:`portal.passkeys`
does, because a one-time (freshness 0) step-up is bound to the held action: the challenge id
and the action's digest are put in the server-side pending state at the start, the action
is read again at the finish and must have the same digest, and only then is that challenge
(and no other) armed, with an :class:`~portal.sso.models.IdpActionProof` telling the decision
the confirmation was the IdP's MFA. Every outcome is audited as ``mfa.step_up``.
"""

from __future__ import annotations

from typing import Any

from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from portal.accounts.redirects import safe_next
from portal.audit.chain import record_request
from portal.metrics import SIGN_INS
from portal.passkeys.binding import held_action
from portal.sso import oidc, reauth
from portal.sso.models import IdpActionProof
from portal.sso.providers import IdentityProvider
from portal.sso.views import keep_pending, provider_named, take_pending
from tiers.enforcement import verify_challenge

__all__ = ["finish_view", "start_view"]


def _audit(request: HttpRequest, outcome: str, pending: dict[str, Any] | None, *, reason: str = "",
           **detail: Any) -> None:
    pending = pending or {}
    record_request(request, "mfa.step_up", outcome=outcome,
                   reasons=[{"rule": reason, "message": reason}] if reason else None,
                   detail={"factor": "idp", "provider": pending.get("provider"),
                           "action_digest": pending.get("action_digest") or None,
                           "body_sha256": pending.get("body_sha256") or None, **detail})
    SIGN_INS.labels(step="mfa.step_up", outcome=outcome).inc()


def _failed(request: HttpRequest, provider: IdentityProvider, message: str, status: int) -> HttpResponse:
    return render(request, "sso/error.html", {"provider": provider, "message": message,
                                              "step_up": True}, status=status)


@never_cache
@require_POST
def start_view(request: HttpRequest, name: str) -> HttpResponse:
    """From the step-up page: send the browser to the IdP to sign in again, bound to what waits."""
    provider = provider_named(name)
    own = reauth.session_provider(request.session)
    if own is None or own.name != provider.name:
        return _failed(request, provider, _("This session did not sign in through %(idp)s, so it cannot "
                                            "confirm there.") % {"idp": provider.label}, 403)
    next_url = safe_next(request, request.POST.get("next"))
    bound = None
    if challenge := request.POST.get("challenge"):
        held = held_action(request.user, request.session.session_key, challenge, next_url)
        if held is None:
            return _failed(request, provider, _("The action this confirmation was for is no longer waiting. "
                                                "Start it again."), 410)
        bound = {"challenge": held.challenge_id, "action_digest": held.digest,
                 "body_sha256": held.body_sha256}
    redirect_uri = request.build_absolute_uri(reverse("sso:callback", args=[provider.name]))
    try:
        start = reauth.begin_reauth(provider, redirect_uri, request.session, user=request.user,
                                    next_url=next_url, bound=bound)
    except oidc.SsoError as exc:
        _audit(request, "failure", bound, reason=exc.reason)
        return _failed(request, provider, _("%(idp)s cannot be reached right now. Try again in a minute.")
                       % {"idp": provider.label}, 502)
    keep_pending(request, start)
    return HttpResponseRedirect(start.url)


def _still_bound(request: HttpRequest, pending: dict[str, Any]) -> bool:
    """The held action is still waiting and is the very one the request was started for."""
    if not pending.get("challenge"):
        return True
    held = held_action(request.user, request.session.session_key, str(pending["challenge"]),
                       str(pending.get("next") or ""))
    return held is not None and held.digest == pending.get("action_digest")


@never_cache
@require_GET
def finish_view(request: HttpRequest, name: str) -> HttpResponse:
    """The IdP's answer (forwarded by the callback): count it only for the same account, a fresh
    sign-in with MFA there, and the same held action; then back to what the person was doing."""
    provider = provider_named(name)
    pending = take_pending(request, provider)
    if pending is None or pending.get("purpose") != reauth.PURPOSE or pending.get("user") != request.user.pk:
        _audit(request, "failure", pending, reason="unknown_state")
        return _failed(request, provider,
                       _("This confirmation was not started here, or it was already used."), 400)
    try:
        claims = oidc.finish(provider, pending, request.GET.dict())
    except oidc.SsoError as exc:
        _audit(request, "failure", pending, reason=exc.reason, error=exc.detail[:300])
        return _failed(request, provider, _("%(idp)s did not confirm it, so nothing was confirmed.")
                       % {"idp": provider.label}, 400)
    refusal = reauth.reauth_refusal(provider, pending, claims)
    link = None if refusal else reauth.linked_account(provider, request.user, claims)
    refusal = refusal or ("" if link is not None else "not_linked")
    if not refusal and not _still_bound(request, pending):
        refusal = "action_mismatch"
    if refusal:
        _audit(request, "refused", pending, reason=refusal, subject=str(claims.get("sub") or ""))
        words = reauth.REFUSALS.get(refusal, "The action this confirmation was for is no longer waiting.")
        return _failed(request, provider, _(words) % {"idp": provider.label}, 403)
    old_key = request.session.session_key
    reauth.mark_reauth(request, link, claims)
    armed = False
    if pending.get("challenge"):
        armed = verify_challenge(request.user, request.session.session_key, old_key,
                                 str(pending["challenge"]))
        if armed:
            IdpActionProof.objects.create(challenge_id=pending["challenge"], link=link,
                                          action_digest=pending["action_digest"])
    _audit(request, "success", pending, next=pending.get("next"), one_time_grant=armed,
           auth_time=claims.get("auth_time"), amr=reauth.idp_amr(claims))
    return HttpResponseRedirect(safe_next(request, str(pending.get("next") or "")))
