"""Locking and unlocking accounts: the kill switch for a person.

A lock makes the account inactive (every enforcement point denies it on the next request
or re-check), ends its web sessions, and sends :data:`account_locked` naming the admin who
did it and why: the policy change bus (tiers/changes.py) turns it into one change that the
proxy and live desktops hear, so a desktop's end in the audit trail says who and why.
"""

from __future__ import annotations

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.sessions.models import Session
from django.db import transaction
from django.dispatch import Signal
from django.utils import timezone

from portal.audit.chain import record

# Sent inside the lock's transaction with ``why`` and ``by`` (tiers.changes publishes it;
# enforcement points hear it after commit). The update sends no post_save of its own.
account_locked = Signal()

__all__ = ["LockError", "account_locked", "lock_user", "unlock_user"]


class LockError(Exception):
    """The lock or unlock was refused (the message says why)."""


def _end_web_sessions(user: AbstractBaseUser) -> int:
    from django.contrib.sessions.backends.cached_db import SessionStore

    ended = 0
    for session in Session.objects.filter(expire_date__gt=timezone.now()).iterator():
        if session.get_decoded().get("_auth_user_id") == str(user.pk):
            SessionStore(session.session_key).delete()  # the cached copy too
            ended += 1
    return ended


def lock_user(user: AbstractBaseUser, *, by: str, reason: str, client_address: str = "",
              request_id: str = "") -> int:
    """Lock ``user``; returns how many web sessions were ended."""
    if user.get_username() == by:
        raise LockError("You cannot lock your own account.")
    if not reason.strip():
        raise LockError("Say why the account is locked: the audit trail and the person will see it.")
    with transaction.atomic():
        # An update, not save(): the generic "user changed" push would race this named one.
        type(user)._default_manager.filter(pk=user.pk).update(is_active=False)
        user.is_active = False
        account_locked.send(sender=type(user), user=user, why=f"account locked: {reason.strip()}", by=by)
        ended = _end_web_sessions(user)
        record("account.lock", outcome="success", actor=by, client_address=client_address,
               request_id=request_id, reasons=[{"rule": "admin_lock", "message": reason.strip()}],
               detail={"user": user.get_username(), "web_sessions_ended": ended})
    return ended


def unlock_user(user: AbstractBaseUser, *, by: str, client_address: str = "", request_id: str = "") -> None:
    """Unlock ``user`` (they sign in again, with their second factor)."""
    user.is_active = True
    user.save(update_fields=["is_active"])
    record("account.unlock", outcome="success", actor=by, client_address=client_address,
           request_id=request_id, detail={"user": user.get_username()})
