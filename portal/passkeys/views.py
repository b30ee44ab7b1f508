"""Passkey endpoints: enrol and remove (Security), sign in, second factor, step-up.

Each ceremony is two POSTs from ``static/passkeys/passkeys.js``: ``.../options/`` returns the
WebAuthn options as JSON, the next POST carries the browser's answer and gets
``{"location": ...}`` (where to go) or ``{"error": ...}`` (a sentence for the person).
Views only translate; the checks are in :mod:`portal.passkeys.ceremony` and
:mod:`portal.passkeys.binding`. Every outcome is audited.
"""

from __future__ import annotations

import json
from typing import Any

from django.contrib import messages
from django.contrib.auth import login
from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import redirect
from django.urls import reverse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_POST

from portal.accounts import mfa
from portal.accounts.redirects import safe_next, take_next
from portal.audit.chain import record_request
from portal.metrics import SIGN_INS
from portal.passkeys.binding import HeldAction, held_action
from portal.passkeys.ceremony import (
    PasskeyError,
    Purpose,
    authentication_options,
    finish_authentication,
    finish_registration,
    mark_passkey,
    registration_options,
)
from portal.passkeys.models import ActionProof, PasskeyDevice
from tiers.enforcement import verify_challenge

__all__ = [
    "mfa_finish", "mfa_options", "register_finish", "register_options", "remove_view", "signin_finish",
    "signin_options", "step_up_finish", "step_up_options",
]

ENROL_FRESHNESS_SECONDS = 300  # adding or removing an authenticator needs a recent second factor
_BACKEND = "django.contrib.auth.backends.ModelBackend"


def _audit(request: HttpRequest, step: str, *, outcome: str, **kwargs: Any) -> None:
    record_request(request, step, outcome=outcome, **kwargs)
    SIGN_INS.labels(step=step, outcome=outcome).inc()


def _body(request: HttpRequest) -> dict[str, Any]:
    try:
        data = json.loads(request.body or b"{}")
    except (ValueError, UnicodeDecodeError):
        return {}
    return data if isinstance(data, dict) else {}


def _options(text: str) -> HttpResponse:
    return HttpResponse(text, content_type="application/json")


def _refused(request: HttpRequest, step: str, error: PasskeyError, status: int = 400,
             **kwargs: Any) -> JsonResponse:
    _audit(request, step, outcome="failure",
           reasons=[{"rule": error.code, "message": error.message}], **kwargs)
    return JsonResponse({"error": error.message}, status=status)


def _recently_verified(request: HttpRequest) -> bool:
    age = mfa.mfa_age(request)
    return request.user.is_verified() and age is not None and age <= ENROL_FRESHNESS_SECONDS


def _needs_step_up(next_path: str) -> JsonResponse:
    location = f"{reverse('accounts:step_up')}?next={next_path}"
    return JsonResponse({"error": "Confirm it is you first.", "location": location}, status=403)


# --- enrolment (Security) --------------------------------------------------------------------

@never_cache
@require_POST
def register_options(request: HttpRequest) -> HttpResponse:
    """Start adding a passkey: password alone, or an old confirmation, is never enough."""
    if not _recently_verified(request):
        return _needs_step_up(reverse("accounts:mfa"))
    return _options(registration_options(request, request.user))


@never_cache
@require_POST
def register_finish(request: HttpRequest) -> JsonResponse:
    """Keep the new passkey under the name the person gave it."""
    if not _recently_verified(request):
        return _needs_step_up(reverse("accounts:mfa"))
    data = _body(request)
    try:
        device = finish_registration(request, request.user, data.get("credential"),
                                     str(data.get("name") or ""))
    except PasskeyError as error:
        return _refused(request, "mfa.passkey_enrol", error)
    _audit(request, "mfa.passkey_enrol", outcome="success",
           detail={"device": device.name, "device_id": device.pk, "aaguid": device.aaguid,
                   "backed_up": device.backed_up})
    messages.success(request, f"Passkey “{device.name}” added.")
    return JsonResponse({"location": reverse("accounts:mfa")})


@never_cache
@require_POST
def remove_view(request: HttpRequest, device_id: int) -> HttpResponse:
    """Remove one of the person's own passkeys (a sign-in verified with it must verify again)."""
    if not _recently_verified(request):
        return redirect(f"{reverse('accounts:step_up')}?next={reverse('accounts:mfa')}")
    device = PasskeyDevice.objects.filter(pk=device_id, user=request.user).first()
    if device is not None:
        _audit(request, "mfa.passkey_remove", outcome="success",
               detail={"device": device.name, "device_id": device.pk})
        device.delete()
        messages.success(request, f"Passkey “{device.name}” removed.")
    return redirect("accounts:mfa")


# --- passwordless sign-in ----------------------------------------------------------------------

@login_not_required
@never_cache
@require_POST
def signin_options(request: HttpRequest) -> HttpResponse:
    """Options for any discoverable passkey of this portal (conditional UI or the button)."""
    return _options(authentication_options(request, Purpose.SIGN_IN))


@login_not_required
@never_cache
@require_POST
def signin_finish(request: HttpRequest) -> JsonResponse:
    """Sign in with a passkey alone: it is both factors (something held, user verified on it)."""
    data = _body(request)
    try:
        device = finish_authentication(request, Purpose.SIGN_IN, data.get("credential"))
    except PasskeyError as error:
        return _refused(request, "login.passkey", error, status=401)
    user = device.user
    if not user.is_active:
        error = PasskeyError("account_locked", "This account is locked, so it cannot sign in. Ask a "
                             "portal administrator to unlock it.")
        return _refused(request, "login.passkey", error, status=403, actor=user.get_username())
    next_url = safe_next(request, str(data.get("next") or ""))
    login(request, user, backend=_BACKEND)
    mark_passkey(request, device, with_password=False)
    _audit(request, "login.passkey", outcome="success",
           detail={"device": device.name, "device_id": device.pk, "amr": request.session[mfa.AMR_KEY]})
    return JsonResponse({"location": next_url})


# --- second factor after the password --------------------------------------------------------

@never_cache
@require_POST
def mfa_options(request: HttpRequest) -> HttpResponse:
    """Options listing the signed-in (password only) user's passkeys."""
    return _options(authentication_options(request, Purpose.SECOND_FACTOR, request.user))


@never_cache
@require_POST
def mfa_finish(request: HttpRequest) -> JsonResponse:
    """The passkey as the second step of a password sign-in."""
    data = _body(request)
    try:
        device = finish_authentication(request, Purpose.SECOND_FACTOR, data.get("credential"),
                                       request.user)
    except PasskeyError as error:
        return _refused(request, "mfa.verify", error, status=401, detail={"factor": "passkey"})
    mark_passkey(request, device, with_password=True)
    _audit(request, "mfa.verify", outcome="success",
           detail={"device": "PasskeyDevice", "device_name": device.name, "factor": "passkey"})
    return JsonResponse({"location": take_next(request)})


# --- step-up -------------------------------------------------------------------------------------

def _step_up_target(request: HttpRequest, data: dict[str, Any]) -> tuple[str, str, HeldAction | None]:
    """(next, binding, held action) of a step-up; the binding is the held action's digest."""
    next_url = safe_next(request, str(data.get("next") or ""))
    challenge = str(data.get("challenge") or "")
    if not challenge:
        return next_url, "", None
    held = held_action(request.user, request.session.session_key, challenge, next_url)
    if held is None:
        raise PasskeyError("no_action", "The action this confirmation was for is no longer "
                           "waiting. Start it again.")
    return next_url, held.digest, held


@never_cache
@require_POST
def step_up_options(request: HttpRequest) -> HttpResponse:
    """Options whose challenge is derived from the held action (for a one-time step-up)."""
    try:
        _, binding, _ = _step_up_target(request, _body(request))
    except PasskeyError as error:
        return JsonResponse({"error": error.message}, status=400)
    return _options(authentication_options(request, Purpose.STEP_UP, request.user, binding))


@never_cache
@require_POST
def step_up_finish(request: HttpRequest) -> JsonResponse:
    """Check the passkey against the action as it is now; arm the one-time grant for it."""
    data = _body(request)
    try:
        next_url, binding, held = _step_up_target(request, data)
        device = finish_authentication(request, Purpose.STEP_UP, data.get("credential"),
                                       request.user, binding)
    except PasskeyError as error:
        request.session.pop("passkeys.ceremony", None)  # one try per ceremony
        return _refused(request, "mfa.step_up", error, status=401,
                        detail={"factor": "passkey", "action_digest": binding or None})
    old_key = request.session.session_key
    amr = request.session.get(mfa.AMR_KEY) or list(mfa.DEFAULT_AMR)
    mark_passkey(request, device, with_password="pwd" in amr)
    armed = False
    if held is not None:
        armed = verify_challenge(request.user, request.session.session_key, old_key,
                                 str(held.challenge_id))
        if armed:
            ActionProof.objects.create(challenge_id=held.challenge_id, device=device,
                                       action_digest=held.digest)
    _audit(request, "mfa.step_up", outcome="success",
           detail={"next": next_url, "one_time_grant": armed, "factor": "passkey",
                   "device": device.name, "action_digest": binding or None,
                   "body_sha256": held.body_sha256 if held else None})
    return JsonResponse({"location": next_url})
