"""The admins' people page: who has which role, who is locked; lock and unlock."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth import get_user_model
from django.contrib.auth.decorators import permission_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.views.decorators.http import require_http_methods, require_POST

from portal.accounts.lockout import LockError, lock_user, unlock_user
from portal.accounts.roles import ROLE_PERMISSIONS

__all__ = ["lock_view", "people_view", "unlock_view"]


@require_http_methods(["GET", "HEAD"])
@permission_required("accounts.manage_sessions", raise_exception=True)
def people_view(request: HttpRequest) -> HttpResponse:
    query = request.GET.get("q", "").strip()
    users = get_user_model().objects.prefetch_related("groups").order_by("username")
    if query:
        users = users.filter(username__icontains=query)
    rows = [(u, sorted(g.name for g in u.groups.all() if g.name in ROLE_PERMISSIONS)) for u in users[:500]]
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
