"""Where each role lands at ``/``: the start of its work (issue 16).

An employee sees My apps; an admin sees what needs attention (access requests, held policy
changes, live desktop sessions, locked people, each with a count and a link) above her own
apps; an auditor who has no apps goes straight to the audit workspace. The rules are plain
functions (:func:`landing_for`, :func:`attention_items`); :func:`home` only translates.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.http import HttpRequest, HttpResponse
from django.shortcuts import redirect, render
from django.urls import NoReverseMatch, reverse
from django.utils.translation import ngettext
from django.views.decorators.http import require_http_methods

__all__ = ["MANAGE_PERMISSIONS", "AttentionItem", "Landing", "attention_items", "home", "landing_for"]

MANAGE_PERMISSIONS = ("accounts.manage_catalog", "accounts.approve_access", "accounts.manage_sessions")


class Landing(StrEnum):
    MY_APPS = "my-apps"
    MANAGE = "manage"
    AUDIT = "audit"


def landing_for(user: AbstractBaseUser) -> Landing:
    """Where ``user`` starts: admins on the overview, auditors without apps on the audit trail.

    By permission, not by group name, so any group holding admin permissions lands like an
    admin. An auditor who also uses apps keeps My apps (the Audit link is in the menu).
    """
    if any(user.has_perm(p) for p in MANAGE_PERMISSIONS):
        return Landing.MANAGE
    if user.has_perm("accounts.view_audit") and not user.has_perm("accounts.use_portal"):
        return Landing.AUDIT
    return Landing.MY_APPS


@dataclass(frozen=True)
class AttentionItem:
    """One thing on the admin's overview: how many, what (in words agreeing with the count), where to act."""

    key: str
    count: int
    text: str
    url: str
    action: str


def _url(name: str, fallback: str) -> str:
    try:
        return reverse(name)
    except NoReverseMatch:
        return reverse(fallback)


def attention_items(user: AbstractBaseUser) -> list[AttentionItem]:
    """What waits for this admin, limited to what her permissions let her act on."""
    from streaming.desktop.live import live_desktop_sessions
    from tiers.jit import pending_requests
    from tiers.models import PolicyChangeRequest

    items = []
    if user.has_perm("accounts.approve_access"):
        n = pending_requests().count()
        items.append(AttentionItem(
            "access-requests", n,
            ngettext("access request waits for a decision",
                     "access requests wait for a decision", n),
            reverse("manage:requests"), "Decide requests"))
    if user.has_perm("accounts.manage_catalog"):
        n = PolicyChangeRequest.objects.filter(state=PolicyChangeRequest.State.PENDING).count()
        items.append(AttentionItem(
            "policy-changes", n,
            ngettext("policy change waits for a second admin",
                     "policy changes wait for a second admin", n),
            _url("manage:changes", "manage:index"), "Review changes"))
    if user.has_perm("accounts.manage_sessions"):
        n = live_desktop_sessions().count()
        items.append(AttentionItem(
            "live-sessions", n,
            ngettext("desktop session is live", "desktop sessions are live", n),
            reverse("desktop:live"), "See live sessions"))
        n = get_user_model().objects.filter(is_active=False).count()
        items.append(AttentionItem(
            "locked-people", n,
            ngettext("person is locked", "people are locked", n),
            reverse("people"), "See people"))
    return items


@require_http_methods(["GET", "HEAD"])
def home(request: HttpRequest) -> HttpResponse:
    """``/``: each role lands where its work is."""
    from tiers import views as tier_views
    from tiers.pages import app_groups

    landing = landing_for(request.user)
    if landing is Landing.AUDIT:
        return redirect("audit:workspace")
    if landing is Landing.MY_APPS:
        return tier_views.my_apps(request)
    return render(request, "portal/overview.html", {
        "items": attention_items(request.user),
        "groups": app_groups(request.user, request.session, request.client_address),
    })
