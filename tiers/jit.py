"""Just-in-time access: request, approve, deny, cancel and revoke time-boxed grants.

Tiers with ``approval_required`` only open for a user who holds an active
:class:`~tiers.models.AccessGrant`; the decision reads its ``expires_at``, so a grant ends on
time without anyone acting. Each step here is a plain function that refuses with a
:class:`JitError` saying why in words, and writes itself to the audit chain (refusals too).
Views only translate HTTP to these calls.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from portal.audit.chain import record
from tiers.models import AccessGrant, AccessRequest, Resource
from tiers.querysets import visible_to

__all__ = [
    "APPROVE_PERMISSION", "DURATION_CHOICES", "JUSTIFICATION_MAX", "NOTE_MAX", "NO_ORIGIN",
    "AlreadyGranted", "AlreadyPending", "GrantInactive", "InvalidRequest", "JitError", "NotApprover",
    "NotPending",
    "NotRequestable", "Origin", "SelfDecision", "active_grants", "approve", "cancel", "deny",
    "duration_label", "pending_requests", "request_access", "requestable_by", "revoke",
]

APPROVE_PERMISSION = "accounts.approve_access"
JUSTIFICATION_MAX = 1000
DURATION_CHOICES: tuple[tuple[int, str], ...] = (
    (15 * 60, "15 minutes"), (3600, "1 hour"), (4 * 3600, "4 hours"), (8 * 3600, "8 hours"),
)
NOTE_MAX = 300


def duration_label(seconds: int) -> str:
    """How long a request asks for, in words."""
    return dict(DURATION_CHOICES).get(seconds) or f"{seconds // 60} minutes"


class JitError(Exception):
    """A just-in-time step was refused; ``str(exc)`` says why, for people."""

    code = "refused"


class InvalidRequest(JitError):
    code = "invalid"


class NotRequestable(JitError):
    code = "not_requestable"


class AlreadyGranted(JitError):
    code = "already_granted"


class AlreadyPending(JitError):
    code = "already_pending"


class NotApprover(JitError):
    code = "not_approver"


class SelfDecision(JitError):
    code = "self_decision"


class NotPending(JitError):
    code = "not_pending"


class GrantInactive(JitError):
    code = "grant_inactive"


@dataclass(frozen=True)
class Origin:
    """Where a step came from, for the audit trail."""

    client_address: str = ""
    request_id: str = ""

    @classmethod
    def of(cls, request: Any) -> Origin:
        """The origin of an HTTP request (client address set by the portal's middleware)."""
        return cls(client_address=getattr(request, "client_address", "") or "",
                   request_id=getattr(request, "request_id", "") or "")


NO_ORIGIN = Origin()


def _audit(action: str, outcome: str, actor: AbstractBaseUser, resource: Resource, origin: Origin,
           **detail: Any) -> None:
    record(action, outcome=outcome, actor=actor.get_username(), resource=resource.slug,
           client_address=origin.client_address, request_id=origin.request_id, detail=detail)


def _refused(action: str, actor: AbstractBaseUser, resource: Resource, origin: Origin,
             exc: JitError, **detail: Any) -> JitError:
    record(action, outcome="refused", actor=actor.get_username(), resource=resource.slug,
           reasons=[{"rule": exc.code, "message": str(exc)}],
           client_address=origin.client_address, request_id=origin.request_id, detail=detail)
    return exc


def requestable_by(user: AbstractBaseUser) -> QuerySet[Resource]:
    """Resources ``user`` can see whose tier only opens with an approved request, less those
    she already holds a grant for (there is nothing to ask for until it ends)."""
    held = active_grants().filter(user=user).values("resource_id")
    return visible_to(user).filter(tier__approval_required=True, enabled=True).exclude(pk__in=held)


def pending_requests() -> QuerySet[AccessRequest]:
    """Requests waiting for an approver, oldest first."""
    return (AccessRequest.objects.filter(state=AccessRequest.State.PENDING)
            .select_related("requester", "resource__tier").order_by("created_at"))


def active_grants(now: datetime | None = None) -> QuerySet[AccessGrant]:
    """Grants in force now (not revoked, not expired), soonest to end first."""
    now = now or timezone.now()
    return (AccessGrant.objects.filter(revoked_at__isnull=True, starts_at__lte=now, expires_at__gt=now)
            .select_related("user", "resource__tier").order_by("expires_at"))


def request_access(user: AbstractBaseUser, resource: Resource, justification: str,
                   duration_seconds: int, *, origin: Origin = NO_ORIGIN,
                   now: datetime | None = None) -> AccessRequest:
    """Ask for time-boxed access to ``resource``. Raises :class:`JitError` when refused."""
    justification = (justification or "").strip()
    try:
        grant = active_grants().filter(user=user, resource=resource).first()
        if grant is not None:
            raise AlreadyGranted(f"You already hold access to {resource.name} until "
                                 f"{timezone.localtime(grant.expires_at):%H:%M} UTC: there is nothing to "
                                 "request until it ends.")
        if not requestable_by(user).filter(pk=resource.pk).exists():
            raise NotRequestable(f"{resource.name} opens without an approval, or is not shared "
                                 "with you: there is nothing to request.")
        if not justification:
            raise InvalidRequest("Say briefly why you need access.")
        if len(justification) > JUSTIFICATION_MAX:
            raise InvalidRequest(f"Keep the justification under {JUSTIFICATION_MAX} characters.")
        if duration_seconds not in dict(DURATION_CHOICES):
            raise InvalidRequest("Choose one of the offered durations.")
        if AccessRequest.objects.filter(requester=user, resource=resource,
                                        state=AccessRequest.State.PENDING).exists():
            raise AlreadyPending(f"You already have a request for {resource.name} waiting for an "
                                 "approver.")
    except JitError as exc:
        raise _refused("access.request", user, resource, origin, exc) from None
    with transaction.atomic():
        access_request = AccessRequest.objects.create(
            requester=user, resource=resource, justification=justification,
            duration_seconds=duration_seconds, created_at=now or timezone.now())
        _audit("access.request", "success", user, resource, origin, request=access_request.pk,
               duration_seconds=duration_seconds, justification=justification)
    return access_request


def _check_decider(access_request: AccessRequest, decider: AbstractBaseUser) -> None:
    if not decider.has_perm(APPROVE_PERMISSION):
        raise NotApprover("Only approvers can decide access requests.")
    if access_request.requester_id == decider.pk:
        raise SelfDecision("You cannot decide your own access request: another approver must.")
    if access_request.state != AccessRequest.State.PENDING:
        raise NotPending(f"This request was already {access_request.state}.")


def _decide(access_request: AccessRequest, decider: AbstractBaseUser, note: str, approved: bool,
            origin: Origin, now: datetime | None) -> AccessGrant | None:
    action = "access.approve" if approved else "access.deny"
    note = (note or "").strip()[:NOTE_MAX]
    now = now or timezone.now()
    try:
        with transaction.atomic():
            # Locked, so two approvers clicking at once cannot both grant.
            locked = AccessRequest.objects.select_for_update().get(pk=access_request.pk)
            _check_decider(locked, decider)
            locked.state = AccessRequest.State.APPROVED if approved else AccessRequest.State.DENIED
            locked.decided_by, locked.decided_at, locked.decision_note = decider, now, note
            locked.save(update_fields=["state", "decided_by", "decided_at", "decision_note"])
            grant = None
            detail: dict[str, Any] = {"request": locked.pk, "requester": locked.requester.get_username(),
                                      "note": note}
            if approved:
                grant = AccessGrant.objects.create(
                    user=locked.requester, resource=locked.resource, request=locked,
                    granted_by=decider.get_username(), starts_at=now,
                    expires_at=now + timedelta(seconds=locked.duration_seconds))
                detail |= {"grant": grant.pk, "expires_at": grant.expires_at.isoformat()}
            _audit(action, "success", decider, locked.resource, origin, **detail)
    except JitError as exc:
        raise _refused(action, decider, access_request.resource, origin, exc,
                       request=access_request.pk) from None
    access_request.refresh_from_db()
    return grant


def approve(access_request: AccessRequest, approver: AbstractBaseUser, note: str = "", *,
            origin: Origin = NO_ORIGIN, now: datetime | None = None) -> AccessGrant:
    """Approve a pending request: a grant from now for the requested duration."""
    grant = _decide(access_request, approver, note, True, origin, now)
    assert grant is not None
    return grant


def deny(access_request: AccessRequest, approver: AbstractBaseUser, note: str = "", *,
         origin: Origin = NO_ORIGIN, now: datetime | None = None) -> None:
    """Deny a pending request, with a note for the requester."""
    _decide(access_request, approver, note, False, origin, now)


def cancel(access_request: AccessRequest, user: AbstractBaseUser, *, origin: Origin = NO_ORIGIN) -> None:
    """The requester withdraws their own pending request."""
    try:
        with transaction.atomic():
            locked = AccessRequest.objects.select_for_update().get(pk=access_request.pk)
            if locked.requester_id != user.pk:
                raise NotPending("Only the requester can cancel a request.")
            if locked.state != AccessRequest.State.PENDING:
                raise NotPending(f"This request was already {locked.state}.")
            locked.state = AccessRequest.State.CANCELLED
            locked.save(update_fields=["state"])
            _audit("access.cancel", "success", user, locked.resource, origin, request=locked.pk)
    except JitError as exc:
        raise _refused("access.cancel", user, access_request.resource, origin, exc,
                       request=access_request.pk) from None
    access_request.refresh_from_db()


def revoke(grant: AccessGrant, by: AbstractBaseUser, *, origin: Origin = NO_ORIGIN,
           now: datetime | None = None) -> None:
    """End a grant before its time. The next decision on it denies."""
    now = now or timezone.now()
    try:
        with transaction.atomic():
            locked = AccessGrant.objects.select_for_update().get(pk=grant.pk)
            if not by.has_perm(APPROVE_PERMISSION):
                raise NotApprover("Only approvers can revoke access grants.")
            if locked.revoked_at is not None or locked.expires_at <= now:
                raise GrantInactive("This grant has already ended.")
            locked.revoked_at = now
            locked.save(update_fields=["revoked_at"])
            _audit("access.revoke", "success", by, locked.resource, origin, grant=locked.pk,
                   user=locked.user.get_username())
    except JitError as exc:
        raise _refused("access.revoke", by, grant.resource, origin, exc, grant=grant.pk) from None
    grant.refresh_from_db()
