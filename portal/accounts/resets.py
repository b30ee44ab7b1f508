"""Lost-device reset: every authenticator of a person removed, on two admins' word.

The pattern of four eyes for lowering protection (docs/decisions/0018): one admin asks, with
a reason; nothing changes until a *different* admin approves, and then it applies in the
same transaction. Neither the requester nor the person herself can approve; a request not
approved within :data:`RESET_TTL` lapses. Every step (refusals included) is on the audit
chain. On approval the person's authenticator app, backup codes and passkeys are removed and
her web sessions end (live desktops and the proxy's memory of her follow the sign-out path);
her next sign-in enrols a new authenticator.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta

from django.contrib.auth import get_user_model, user_logged_out
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.models import Session
from django.db import transaction
from django.utils import timezone
from django_otp.plugins.otp_static.models import StaticDevice
from django_otp.plugins.otp_totp.models import TOTPDevice

from portal.accounts.models import AuthenticatorReset
from portal.audit.chain import record
from portal.passkeys.models import PasskeyDevice

__all__ = ["RESET_TTL", "ResetError", "Where", "approve_reset", "cancel_reset", "pending_resets",
           "request_reset"]

RESET_TTL = timedelta(hours=24)


class ResetError(Exception):
    """The step was refused; the message says why, in words for the admin."""


@dataclass(frozen=True)
class Where:
    """Where a step came from, for the audit trail."""

    client_address: str = ""
    request_id: str = ""


def _audit(action: str, outcome: str, reset: AuthenticatorReset, by: AbstractBaseUser, where: Where,
           message: str = "", **detail: object) -> None:
    record(action, outcome=outcome, actor=by.get_username(), client_address=where.client_address,
           request_id=where.request_id, reasons=[{"rule": "authenticator_reset", "message": message}]
           if message else None,
           detail={"user": reset.person.get_username(), "reset": reset.pk, "reason": reset.reason, **detail})


def pending_resets() -> dict[int, AuthenticatorReset]:
    """The request waiting for each person (expired ones are marked so on the way)."""
    now = timezone.now()
    AuthenticatorReset.objects.filter(state=AuthenticatorReset.State.PENDING, expires_at__lte=now).update(
        state=AuthenticatorReset.State.EXPIRED)
    waiting = AuthenticatorReset.objects.filter(state=AuthenticatorReset.State.PENDING).select_related(
        "requested_by")
    return {reset.person_id: reset for reset in waiting}


def request_reset(person: AbstractBaseUser, *, by: AbstractBaseUser, reason: str,
                  where: Where = Where()) -> AuthenticatorReset:
    """File a reset of ``person``'s authenticators for a second admin to approve."""
    reason = reason.strip()
    if not reason:
        raise ResetError("Say why (e.g. phone lost): the approving admin and the audit trail see it.")
    if (existing := pending_resets().get(person.pk)) is not None:
        raise ResetError(f"A reset of {person.get_username()} already waits for approval "
                         f"(asked by {existing.requested_by.get_username()}).")
    reset = AuthenticatorReset.objects.create(person=person, requested_by=by, reason=reason[:200],
                                              expires_at=timezone.now() + RESET_TTL)
    _audit("authenticator.reset_requested", "pending", reset, by, where,
           expires_at=reset.expires_at.isoformat())
    return reset


def _refusal(reset: AuthenticatorReset, by: AbstractBaseUser) -> str:
    """Why ``by`` may not approve ``reset`` now, or "" (an expired request is marked so)."""
    if reset.state == AuthenticatorReset.State.PENDING and reset.expires_at <= timezone.now():
        reset.state = AuthenticatorReset.State.EXPIRED
        reset.save(update_fields=["state"])
    if reset.state != AuthenticatorReset.State.PENDING:
        return f"This reset request is {reset.get_state_display().lower()}; ask again if it is still needed."
    if reset.requested_by_id == by.pk:
        return "You asked for this reset, so another admin must approve it."
    if reset.person_id == by.pk:
        return "Nobody approves a reset of their own authenticators."
    return ""


def approve_reset(reset_id: int, *, by: AbstractBaseUser, where: Where = Where()) -> dict[str, int]:
    """A second admin approves: remove every authenticator of the person and end her sessions.

    Returns what was removed and ended (counts). Refused, and audited as refused, for the
    requester, the person herself, or a request that is no longer waiting.
    """
    with transaction.atomic():
        reset = (AuthenticatorReset.objects.select_for_update().select_related("person", "requested_by")
                 .filter(pk=reset_id).first())
        if reset is None:
            raise ResetError("There is no such reset request.")
        refusal = _refusal(reset, by)
        if not refusal:
            person = reset.person
            removed = {kind: _remove(model, person) for kind, model in
                       (("totp", TOTPDevice), ("backup", StaticDevice), ("passkey", PasskeyDevice))}
            ended = _end_web_sessions(person)
            reset.state = AuthenticatorReset.State.APPLIED
            reset.decided_by, reset.decided_at = by, timezone.now()
            reset.save(update_fields=["state", "decided_by", "decided_at"])
            _audit("authenticator.reset_approved", "success", reset, by, where,
                   requested_by=reset.requested_by.get_username(), removed=removed, web_sessions_ended=ended)
            return {**removed, "web_sessions_ended": ended}
    _audit("authenticator.reset_approved", "refused", reset, by, where, refusal)
    raise ResetError(refusal)


def cancel_reset(reset_id: int, *, by: AbstractBaseUser, where: Where = Where()) -> None:
    """Any admin (the requester included) withdraws a waiting request; audited."""
    with transaction.atomic():
        reset = (AuthenticatorReset.objects.select_for_update().select_related("person")
                 .filter(pk=reset_id, state=AuthenticatorReset.State.PENDING).first())
        if reset is None:
            raise ResetError("That reset request no longer waits.")
        reset.state = AuthenticatorReset.State.CANCELLED
        reset.decided_by, reset.decided_at = by, timezone.now()
        reset.save(update_fields=["state", "decided_by", "decided_at"])
        _audit("authenticator.reset_cancelled", "success", reset, by, where)


def _remove(model: type, person: AbstractBaseUser) -> int:
    """Delete the person's devices of one kind; how many (a backup device's codes not counted)."""
    devices = model.objects.filter(user=person)
    count = devices.count()
    devices.delete()
    return count


def _end_web_sessions(person: AbstractBaseUser) -> int:
    """End every portal session of ``person``, then take the sign-out path (live desktops
    re-decide at once and close; the proxy forgets her)."""
    from django.contrib.sessions.backends.cached_db import SessionStore

    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(person.pk):
            SessionStore(session.session_key).delete()  # the cached copy too
            ended += 1
    user = get_user_model()._default_manager.get(pk=person.pk)
    transaction.on_commit(lambda: user_logged_out.send(sender=type(user), request=None, user=user))
    return ended
