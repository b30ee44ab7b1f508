"""Desktop pages: open a session, step up inside it, and the admin's live sessions with kill
and a read-only view.

Views translate HTTP to :mod:`streaming.desktop.access` (the decision) and
:mod:`streaming.desktop.broker` (the session's life), nothing more.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth.decorators import permission_required
from django.http import Http404, HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.cache import never_cache
from django.views.decorators.debug import sensitive_post_parameters
from django.views.decorators.http import require_GET, require_POST

from portal.accounts import mfa
from portal.audit.chain import record_request
from portal.passkeys.ceremony import (
    PasskeyError,
    Purpose,
    authentication_options,
    finish_authentication,
    has_passkey,
    mark_passkey,
)
from streaming.desktop import access, broker, groups, live, signins, stepup
from streaming.desktop.models import StreamSession
from streaming.isolation import pool
from streaming.isolation.launches import is_slot_backed

__all__ = ["desktop_view", "kill_view", "live_sessions_view", "step_up_view", "watch_view"]


@never_cache
@require_GET
def desktop_view(request: HttpRequest, slug: str) -> HttpResponse:
    """Decide, then hand the page a one-time ticket for the tunnel (or say why not)."""
    resource = access.desktop_for(request.user, slug)
    if resource is None:
        raise Http404("No such desktop")
    decision = access.decide_open(request.user, request.session, request.client_address, resource,
                                  request.path, getattr(request, "request_id", ""))
    if decision.outcome == "step_up":
        return redirect(access.step_up_location(request.user, request.session, resource, decision,
                                                request.path))
    if not decision.allowed:
        return render(request, "desktop/denied.html",
                      {"resource": resource, "reasons": decision.reasons, "denial": decision.denial},
                      status=403)
    if is_slot_backed(resource):
        state = pool.pool_state()
        if state.busy:  # a clear page, never an error: how busy, and it tries again by itself
            response = render(request, "desktop/busy.html", {"resource": resource, "state": state},
                              status=503)
            response["Retry-After"] = "15"
            return response
    signins.bind(request.session, request.user)  # the tunnel follows this sign-in across step-ups
    stream, ticket = broker.issue_session(request.user, resource, dict(decision.obligations),
                                         request.client_address)
    return render(request, "desktop/session.html", {
        "resource": resource, "stream": stream, "ticket": ticket, "obligations": stream.obligations,
        "tunnel_path": f"/ws/desktop/{stream.pk}/",
    })


@never_cache
@sensitive_post_parameters("otp_token")
@require_POST
def step_up_view(request: HttpRequest, slug: str, session_id: str) -> HttpResponse:
    """A fresh code or passkey from inside a live session; the tunnel is told and releases held input.

    A form post carries a code; JSON asks for a passkey's options (``{"step": "options"}``) or
    carries the browser's answer (``{"credential": ...}``). Both name the ``action`` the tunnel
    asked about: its tier says which factors count, and a passkey signs that action only.
    """
    stream = get_object_or_404(StreamSession.objects.select_related("resource__tier"), pk=session_id,
                               user=request.user, resource__slug=slug, state=StreamSession.State.LIVE)
    if request.content_type == "application/json":
        return _passkey_step_up(request, stream)
    action = stepup.desktop_action(request.POST.get("action"))
    if refusal := stepup.code_refusal(stepup.accepted_factors(stream.resource.tier, action)):
        # Checked before the code, so a code that would not count is not spent either.
        record_request(request, "mfa.step_up", outcome="refused", resource=slug,
                       reasons=[{"rule": "factor_not_accepted", "message": refusal}],
                       detail={"session": str(stream.pk), "factor": "totp", "action": action})
        return JsonResponse({"ok": False, "error": refusal}, status=403)
    result = mfa.verify_second_factor(request.user, request.POST.get("otp_token", ""))
    if not result.ok:
        record_request(request, "mfa.step_up", outcome="throttled" if result.throttled_for else "failure",
                       resource=slug, detail={"session": str(stream.pk)})
        message = (f"Too many wrong codes. Wait {result.throttled_for} seconds." if result.throttled_for
                   else "That code is not right, or it was already used. Wait for the next one.")
        return JsonResponse({"ok": False, "error": message}, status=429 if result.throttled_for else 401)
    mfa.mark_mfa(request, result.device)
    return _stepped_up(request, stream, {"factor": "totp", "action": action})


def _passkey_step_up(request: HttpRequest, stream: StreamSession) -> HttpResponse:
    """The two halves of a passkey ceremony bound to this session's action (see stepup)."""
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        data = {}
    data = data if isinstance(data, dict) else {}
    bound = stepup.binding_for(stream, request.user, data.get("action"))
    if not has_passkey(request.user):
        return JsonResponse({"ok": False, "error": "You have no passkey yet: add one under Security."},
                            status=400)
    if data.get("step") == "options":
        return HttpResponse(authentication_options(request, Purpose.STEP_UP, request.user, bound.digest),
                            content_type="application/json")
    try:
        device = finish_authentication(request, Purpose.STEP_UP, data.get("credential"), request.user,
                                       bound.digest)
    except PasskeyError as error:
        record_request(request, "mfa.step_up", outcome="failure", resource=stream.resource.slug,
                       reasons=[{"rule": error.code, "message": error.message}],
                       detail={"session": str(stream.pk), "factor": "passkey", "action": bound.action,
                               "action_digest": bound.digest})
        return JsonResponse({"ok": False, "error": error.message}, status=401)
    amr = request.session.get(mfa.AMR_KEY) or list(mfa.DEFAULT_AMR)
    mark_passkey(request, device, with_password="pwd" in amr)
    return _stepped_up(request, stream, {"factor": "passkey", "device": device.name, "action": bound.action,
                                         "action_digest": bound.digest})


def _stepped_up(request: HttpRequest, stream: StreamSession, detail: dict[str, Any]) -> JsonResponse:
    """Audit the confirmation and tell the tunnel, which re-decides and releases held input."""
    request.session.save()
    record_request(request, "mfa.step_up", outcome="success", resource=stream.resource.slug,
                   detail={"session": str(stream.pk), **detail})
    broker.push(groups.for_session(stream.pk), {"type": "desktop.stepped_up", "user_id": request.user.pk,
                                                "session_key": request.session.session_key})
    return JsonResponse({"ok": True})


@never_cache
@permission_required("accounts.manage_sessions", raise_exception=True)
@require_GET
def live_sessions_view(request: HttpRequest) -> HttpResponse:
    """Every live desktop session, newest first, with a kill button (or "ending" once killed)."""
    return render(request, "desktop/live_sessions.html", {
        "sessions": live.live_sessions(), "hosts": pool.hosts_for_admins(), "pool": pool.pool_state()})


@never_cache
@permission_required("accounts.manage_sessions", raise_exception=True)
@require_POST
def kill_view(request: HttpRequest, session_id: str) -> HttpResponse:
    """End a live session now; audited with the admin's name."""
    stream = get_object_or_404(StreamSession.objects.select_related("user", "resource"), pk=session_id,
                               state=StreamSession.State.LIVE)
    broker.kill_session(stream, request.user, request.client_address)
    messages.success(request, f"The session of {stream.user.get_username()} on {stream.resource.name} was "
                              "killed: it closes within seconds and they are told who ended it.")
    return redirect("desktop:live")


@never_cache
@permission_required("accounts.manage_sessions", raise_exception=True)
@require_GET
def watch_view(request: HttpRequest, session_id: str) -> HttpResponse:
    """A read-only view of a live session: the page gets a one-time ticket bound to this admin."""
    stream = get_object_or_404(StreamSession.objects.select_related("user", "resource__tier"), pk=session_id,
                               state=StreamSession.State.LIVE)
    if not stream.guacd_connection_id:
        raise Http404("The session is not connected yet")
    signins.bind(request.session, request.user)
    watch, ticket = broker.issue_watch(stream, request.user, request.client_address)
    return render(request, "desktop/session.html", {
        "resource": stream.resource, "stream": stream, "ticket": ticket, "watching": stream.user,
        "obligations": {**stream.obligations, "read_only": True},
        "tunnel_path": f"/ws/desktop/-/watch/{watch.pk}/",
    })
