"""Live desktops follow the sign-in, not the session key.

Every second factor rotates the portal's session key (``mfa.mark_mfa``), so a tunnel bound to
the key it opened under would read a step-up anywhere (another desktop, a write action in a
web app) as a sign-out and close ~one re-check later. A random sign-in id is kept in the
session's data (``cycle_key`` carries it over; sign-out flushes it); every save of a session
that carries one records the key it now lives under. A tunnel whose key is gone looks the
sign-in up and goes on only if that session exists, still carries the same sign-in and
belongs to the same user with the same password hash.
"""

from __future__ import annotations

import secrets
from importlib import import_module
from typing import Any

from django.conf import settings
from django.contrib.auth import HASH_SESSION_KEY, SESSION_KEY
from django.utils.crypto import constant_time_compare

from streaming.desktop.models import PortalSignIn

__all__ = ["SIGN_IN_KEY", "bind", "current_session", "follow"]

SIGN_IN_KEY = "_desktop_sign_in"


def bind(session: Any, user: Any) -> str:
    """The sign-in id of this portal session (made on first use) with its current key recorded."""
    sign_in = session.get(SIGN_IN_KEY)
    if not sign_in:
        sign_in = session[SIGN_IN_KEY] = secrets.token_urlsafe(32)
    if session.session_key is None:
        session.save()
    PortalSignIn.objects.update_or_create(pk=sign_in,
                                          defaults={"user": user, "session_key": session.session_key})
    return sign_in


def follow(session_key: str, data: dict[str, Any]) -> None:
    """A session was saved under ``session_key``: a sign-in it carries lives there now."""
    sign_in = data.get(SIGN_IN_KEY)
    if sign_in:
        PortalSignIn.objects.filter(pk=sign_in).exclude(session_key=session_key).update(session_key=session_key)


def current_session(user: Any, session_key: str, sign_in: str) -> tuple[str, Any]:
    """The session a tunnel should be judged by: its own key while it exists, else the key its
    sign-in moved to if that session is genuinely the same sign-in of the same user."""
    store = import_module(settings.SESSION_ENGINE).SessionStore
    session = store(session_key)
    if not sign_in or (session_key and session.exists(session_key)):
        return session_key, session
    moved_key = (PortalSignIn.objects.filter(pk=sign_in, user_id=user.pk)
                 .values_list("session_key", flat=True).first())
    if not moved_key or moved_key == session_key:
        return session_key, session
    moved = store(moved_key)
    if (moved.exists(moved_key) and moved.get(SIGN_IN_KEY) == sign_in
            and str(moved.get(SESSION_KEY)) == str(user.pk)
            and constant_time_compare(moved.get(HASH_SESSION_KEY, ""), user.get_session_auth_hash())):
        return moved_key, moved
    return session_key, session
