"""The desktop's one door to the decision (:mod:`tiers.enforcement`); nothing else here calls tiers.

Opening a desktop is a sensitive action; keeping it open is re-decided as a read action on
the same resource (so the tier's read freshness is how long a session goes without a new
code); clipboard and file transfers set to "step_up" are sensitive actions of their own.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db.models import Q, QuerySet

from tiers.enforcement import authorize, load_resource, step_up_url
from tiers.models import Resource
from tiers.querysets import visible_to
from tiers.types import Action, ActionClass, Decision

__all__ = [
    "CONTINUE",
    "STREAM_KINDS",
    "control_action",
    "decide_continue",
    "decide_control",
    "decide_open",
    "desktop_for",
    "open_action",
    "step_up_location",
    "visible_desktops",
]

STREAM_KINDS = ("vnc", "ssh", "rdp")
CONTINUE = Action("desktop.continue", ActionClass.READ)


def open_action(path: str) -> Action:
    return Action("desktop.open", ActionClass.SENSITIVE, path=path)


def control_action(kind: str) -> Action:
    """``clipboard.in``, ``clipboard.out`` or ``file.transfer`` as a sensitive action."""
    return Action(kind, ActionClass.SENSITIVE, path=kind)


def visible_desktops(user: AbstractBaseUser) -> QuerySet[Resource]:
    """Desktops and hosts, and web apps whose tier streams them (an isolated browser)."""
    return visible_to(user).filter(Q(kind__in=STREAM_KINDS) | Q(kind="web", tier__access_mode="stream"))


def desktop_for(user: AbstractBaseUser, slug: str) -> Resource | None:
    """The pixel-streamed resource ``slug`` if ``user`` may see it (else None: a 404)."""
    if not visible_desktops(user).filter(slug=slug).exists():
        return None
    return load_resource(slug)


def decide_open(user: AbstractBaseUser, session: Any, client_address: str, resource: Resource,
                path: str, request_id: str = "") -> Decision:
    return authorize(user, session, client_address, resource, open_action(path), request_id=request_id)


def decide_continue(user: AbstractBaseUser, session: Any, client_address: str, resource_id: int,
                    *, audit_allows: bool = False) -> tuple[Decision, Resource] | None:
    """Re-decide a live session; None when the resource is gone. Allows are not audited
    (every 30 s per session would drown the trail); everything else is."""
    slug = Resource.objects.filter(pk=resource_id).values_list("slug", flat=True).first()
    resource = load_resource(slug) if slug else None
    if resource is None:
        return None
    return authorize(user, session, client_address, resource, CONTINUE, audit_allows=audit_allows), resource


def decide_control(user: AbstractBaseUser, session: Any, client_address: str, resource_id: int,
                   kind: str) -> Decision | None:
    slug = Resource.objects.filter(pk=resource_id).values_list("slug", flat=True).first()
    resource = load_resource(slug) if slug else None
    if resource is None:
        return None
    return authorize(user, session, client_address, resource, control_action(kind))


def step_up_location(user: AbstractBaseUser, session: Any, resource: Resource, decision: Decision,
                     path: str) -> str:
    return step_up_url(user, session, resource, open_action(path), decision, path)
