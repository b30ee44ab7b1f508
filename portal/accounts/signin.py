"""The password step of signing in, as plain functions the views call.

Who may be told what: a wrong password and an unknown username get the same answer. Only
someone who typed the *right* password of a locked account learns that it is locked and whom
to ask, because that person already proved they know the secret. The throttle counts that
answer as a failure, so it is no oracle for guessing the passwords of locked accounts.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.contrib.auth import authenticate, get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.hashers import make_password
from django.http import HttpRequest
from django.utils.translation import gettext as _
from django.utils.translation import ngettext

__all__ = ["PasswordCheck", "check_password", "codes_wait_message", "generic_failure_message",
           "locked_message", "wait_message"]


@dataclass(frozen=True)
class PasswordCheck:
    """The outcome of one password check: the user when right, or whether the account is locked."""

    user: AbstractBaseUser | None
    locked: bool = False
    locked_by: str = ""


def check_password(request: HttpRequest, username: str, password: str) -> PasswordCheck:
    """Authenticate; on failure, tell a locked account with the right password apart.

    Every failure costs one extra password hash, whether or not the account exists or is
    locked, so timing says no more than the answer does.
    """
    user = authenticate(request, username=username, password=password)
    if user is not None:
        return PasswordCheck(user)
    model = get_user_model()
    inactive = model._default_manager.filter(**{model.USERNAME_FIELD: username},
                                             is_active=False).first()
    if inactive is None:
        make_password(password)
        return PasswordCheck(None)
    if not inactive.check_password(password):
        return PasswordCheck(None)
    return PasswordCheck(None, locked=True, locked_by=_who_locked(inactive.get_username()))


def _who_locked(username: str) -> str:
    from portal.audit.models import AuditEvent

    event = (AuditEvent.objects.filter(action="account.lock", detail__user=username)
             .order_by("-seq").values_list("actor", flat=True).first())
    return event or ""


def generic_failure_message() -> str:
    """The one answer for a wrong password or an unknown username."""
    return _("The username or password is not right. Check both and try again.")


def locked_message(locked_by: str) -> str:
    """What the owner of a locked account is told (only after typing its right password)."""
    if locked_by:
        return _("This account is locked, so it cannot sign in. It was locked by %(admin)s: ask "
                 "them, or another portal administrator, to unlock it.") % {"admin": locked_by}
    return _("This account is locked, so it cannot sign in. Ask a portal administrator (your "
             "IT security team) to unlock it.")


def wait_message(seconds: int) -> str:
    """Sign-in paused after too many failures, in whole seconds, properly pluralised."""
    return ngettext(
        "Too many failed attempts. For your account's safety, sign-in is paused: "
        "try again in %(count)d second.",
        "Too many failed attempts. For your account's safety, sign-in is paused: "
        "try again in %(count)d seconds.",
        seconds) % {"count": seconds}


def codes_wait_message(seconds: int) -> str:
    """Codes paused after too many wrong ones, properly pluralised."""
    return ngettext("Too many wrong codes. Wait %(count)d second, then enter a new code.",
                    "Too many wrong codes. Wait %(count)d seconds, then enter a new code.",
                    seconds) % {"count": seconds}
