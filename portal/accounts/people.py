"""The admins' people page: who has which role, who is locked; lock and unlock; each person's
authenticators (authenticator app, backup codes, passkeys) with revoke; a lost-device reset
of all of them, which a second admin approves (:mod:`portal.accounts.resets`)."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.accounts import resets
from portal.accounts.lockout import LockError, lock_user, unlock_user
from portal.accounts.roles import ROLE_PERMISSIONS
from portal.audit.chain import record
from portal.passkeys.models import PasskeyDevice

__all__ = ["Authenticator", "authenticators_of", "lock_view", "people_view", "reset_approve_view",
           "reset_cancel_view", "reset_request_view", "revoke_authenticator", "revoke_authenticator_view",
           "unlock_view"]

# The kinds of authenticator an admin can revoke, and the django-otp model of each.
_KINDS = {"totp": TOTPDevice, "backup": StaticDevice, "passkey": PasskeyDevice}


@dataclass(frozen=True)
class Authenticator:
    """One second factor of a person, as the People page lists it."""

    kind: str  # totp | backup | passkey
    device_id: int
    label: str


def authenticators_of(user_ids: Iterable[int]) -> dict[int, list[Authenticator]]:
    """Each person's confirmed authenticators (three queries for the whole page)."""
    found: dict[int, list[Authenticator]] = defaultdict(list)
    ids = list(user_ids)
    for device in TOTPDevice.objects.filter(user_id__in=ids, confirmed=True).order_by("id"):
        found[device.user_id].append(Authenticator("totp", device.pk, "Authenticator app"))
    for device in StaticDevice.objects.filter(user_id__in=ids, confirmed=True).prefetch_related("token_set"):
        found[device.user_id].append(Authenticator("backup", device.pk,
                                                   f"Backup codes ({len(device.token_set.all())} left)"))
    for device in PasskeyDevice.objects.filter(user_id__in=ids, confirmed=True):
        found[device.user_id].append(Authenticator("passkey", device.pk, f"Passkey “{device.name}”"))
    return found


def revoke_authenticator(user: object, kind: str, device_id: int, *, by: str, client_address: str = "",
                         request_id: str = "") -> Authenticator | None:
    """Remove one authenticator of ``user`` and audit it; None when there is no such one.

    A sign-in verified with it is no longer verified (django-otp finds no device), so that
    session must confirm again with what is left; with nothing left, the next sign-in enrols anew.
    """
    model = _KINDS.get(kind)
    device = model.objects.filter(pk=device_id, user=user).first() if model else None
    if device is None:
        return None
    revoked = next(a for a in authenticators_of([device.user_id])[device.user_id]
                   if a.kind == kind and a.device_id == device.pk)
    device.delete()
    remaining = len(authenticators_of([device.user_id]).get(device.user_id, []))
    record("authenticator.revoke", outcome="success", actor=by, client_address=client_address,
           request_id=request_id,
           detail={"user": user.get_username(), "kind": kind, "device": revoked.label,
                   "remaining": remaining})
    return revoked


@require_http_methods(["GET", "HEAD"])
@permission_required("accounts.manage_sessions", raise_exception=True)
def people_view(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    # sso_links: each row shows the person's SSO links (templates/sso/people_links.html)
    users = get_user_model().objects.prefetch_related("groups", "sso_links").order_by("username")
    if query:
        users = users.filter(username__icontains=query)
    people = list(users[:500])
    factors = authenticators_of(u.pk for u in people)
    waiting = resets.pending_resets()
    rows = [(u, sorted(g.name for g in u.groups.all() if g.name in ROLE_PERMISSIONS), factors.get(u.pk, []),
             waiting.get(u.pk)) for u in people]
    return render(request, "accounts/people.html", {"rows": rows, "q": query, "section": "people"})


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def lock_view(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    try:
        ended = lock_user(user, by=request.user.get_username(), reason=request.POST.get("reason", ""),
                          client_address=request.client_address, request_id=request.request_id)
    except LockError as exc:
        messages.error(request, str(exc))
        return redirect("people")
    messages.success(request, f"{user.get_username()} is locked: {ended} web session(s) ended, "
                              "live desktops close within seconds.")
    return redirect("people")


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def unlock_view(request: HttpRequest, user_id: int) -> HttpResponse:
    user = get_object_or_404(get_user_model(), pk=user_id)
    unlock_user(user, by=request.user.get_username(), client_address=request.client_address,
                request_id=request.request_id)
    messages.success(request, f"{user.get_username()} is unlocked.")
    return redirect("people")


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def revoke_authenticator_view(request: HttpRequest, user_id: int, kind: str, device_id: int) -> HttpResponse:
    """An admin revokes a lost or compromised authenticator of a person."""
    user = get_object_or_404(get_user_model(), pk=user_id)
    revoked = revoke_authenticator(user, kind, device_id, by=request.user.get_username(),
                                   client_address=request.client_address, request_id=request.request_id)
    if revoked is None:
        messages.error(request, "That authenticator is already gone.")
    else:
        messages.success(request, f"{revoked.label} of {user.get_username()} revoked; a sign-in "
                                  "confirmed with it must confirm again.")
    return redirect("people")


def _where(request: HttpRequest) -> resets.Where:
    return resets.Where(request.client_address, request.request_id)


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def reset_request_view(request: HttpRequest, user_id: int) -> HttpResponse:
    """Ask for a lost-device reset of a person; another admin must approve it."""
    person = get_object_or_404(get_user_model(), pk=user_id)
    try:
        resets.request_reset(person, by=request.user, reason=request.POST.get("reason", ""),
                             where=_where(request))
    except resets.ResetError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Reset of {person.get_username()}'s authenticators requested: another "
                                  "admin must approve it within 24 h.")
    return redirect("people")


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def reset_approve_view(request: HttpRequest, reset_id: int) -> HttpResponse:
    """The second admin approves: authenticators removed, sessions ended."""
    try:
        done = resets.approve_reset(reset_id, by=request.user, where=_where(request))
    except resets.ResetError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, f"Authenticators removed ({done['totp']} app, {done['backup']} backup code "
                                  f"sets, {done['passkey']} passkeys); {done['web_sessions_ended']} web "
                                  "session(s) ended. The next sign-in enrols a new authenticator.")
    return redirect("people")


@require_POST
@permission_required("accounts.manage_sessions", raise_exception=True)
def reset_cancel_view(request: HttpRequest, reset_id: int) -> HttpResponse:
    """Withdraw a waiting reset request."""
    try:
        resets.cancel_reset(reset_id, by=request.user, where=_where(request))
    except resets.ResetError as exc:
        messages.error(request, str(exc))
    else:
        messages.success(request, "Reset request cancelled.")
    return redirect("people")
