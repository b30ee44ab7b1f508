"""The proxy's pages on the portal origin: the JWKS apps verify against, and the hand-off of a
signed-in user to an app's own origin."""

from __future__ import annotations

from urllib.parse import urlencode

from django.conf import settings
from django.contrib.auth.decorators import login_not_required
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from streaming.proxy.access import keyring
from streaming.proxy.handoff import issue_code, safe_next, valid_state
from streaming.proxy.origins import RESERVED_PREFIX, app_origin, split_host
from tiers.models import Resource, ResourceKind

__all__ = ["handoff", "jwks"]


@login_not_required
@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """Active and overlapping public keys; short cache so a rotation is seen within a minute."""
    response = JsonResponse(keyring().jwks())
    response["Cache-Control"] = "public, max-age=60"
    return response


@require_GET
def handoff(request: HttpRequest, slug: str) -> HttpResponse:
    """Send a signed-in, verified user back to ``slug``'s own origin with a one-time code.

    Login and the second factor are required by the middleware like on every portal page;
    the code is bound to this portal session, the app and the ``state`` the app origin put in
    its own cookie (:mod:`streaming.proxy.handoff`).
    """
    state = request.GET.get("state")
    domain = settings.PORTAL_APPS_DOMAIN
    resource = Resource.objects.filter(slug=slug, kind=ResourceKind.WEB).first()
    if resource is None:
        raise Http404("no such app")
    if not domain:
        return HttpResponseRedirect(f"/apps/{slug}/")
    if not valid_state(state) or request.session.session_key is None:
        return render(request, "proxy/bad_request.html", {
            "problem": "this sign-in link for the app is incomplete",
            "app_url": f"/apps/{slug}/"}, status=400)
    code = issue_code(session_key=request.session.session_key, user_id=request.user.pk,
                      slug=slug, state=state or "")
    _domain, port = split_host(request.get_host())
    origin = app_origin(slug, domain, scheme=request.scheme or "https", port=port)
    query = urlencode({"code": code, "next": safe_next(request.GET.get("next"))})
    response = HttpResponseRedirect(f"{origin}{RESERVED_PREFIX}callback?{query}")
    response["Cache-Control"] = "no-store"
    response["Referrer-Policy"] = "no-referrer"
    return response
