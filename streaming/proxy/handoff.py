"""Handing the portal session to one app origin, and nothing more (host mode).

The portal's session cookie is host-only on the portal's origin, so an app origin never sees
it. An app origin without a valid app session sends the browser to ``/handoff/<slug>/`` on
the portal (sign-in and MFA as usual) with a random ``state`` it has also put in a
host-only cookie of its own; the portal answers with a one-time ``code`` bound to the portal
session, the app and that state, and the app origin exchanges it at
``/.portal/callback`` for an app cookie valid for that app alone. The app cookie is an
opaque token that names the portal session server-side: every request is still admitted
on that portal session, so sign-out, lock or expiry end the app session at the next
request. A code is good for one exchange within ``CODE_SECONDS``, and only in the browser
that started the hand-off (the state cookie): a code lured into another browser is useless.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.utils.crypto import constant_time_compare

__all__ = [
    "APP_COOKIE",
    "CODE_SECONDS",
    "STATE_COOKIE",
    "AppSession",
    "Redeemed",
    "app_session",
    "issue_code",
    "issue_isolation_code",
    "new_state",
    "open_app_session",
    "redeem_code",
    "redeem_isolation_code",
    "remembered_app_session",
    "safe_next",
    "valid_state",
]

# __Host-: the browser refuses these names unless Secure, Path=/ and host-only, so neither a
# sibling app origin nor a subdomain can plant or overwrite them (cookie tossing).
APP_COOKIE = "__Host-portal-app"
STATE_COOKIE = "__Host-portal-state"
CODE_SECONDS = 60
STATE_SECONDS = 300
_STATE = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_TOKEN = re.compile(r"^[A-Za-z0-9_-]{32,64}$")
_MEMO_LIMIT = 10_000


@dataclass(frozen=True)
class Redeemed:
    """What a valid code stood for."""

    session_key: str
    user_id: int
    slug: str
    isolated: bool = False  # for the user's isolated browser in a slot (see issue_isolation_code)


@dataclass(frozen=True)
class AppSession:
    """What an app cookie names: the portal session, and whether it is an isolated browser's."""

    session_key: str
    isolated: bool = False


def _digest(value: str) -> str:
    return hashlib.sha256(value.encode()).hexdigest()


def _cache_key(kind: str, secret: str) -> str:
    return f"portal:handoff:{kind}:{_digest(secret)}"  # the secret itself is never a key


def new_state() -> str:
    """A fresh random state for one hand-off."""
    return secrets.token_urlsafe(32)


def valid_state(state: str | None) -> bool:
    return bool(state) and _STATE.match(state or "") is not None


def safe_next(value: str | None) -> str:
    """A path on the app's own origin to land on after the hand-off ("/" otherwise): never
    another origin (``//host``, ``/\\host``, a scheme) and nothing the browser could bend."""
    value = value or "/"
    if (not value.startswith("/") or value.startswith(("//", "/\\")) or len(value) > 4096
            or any(ord(c) < 0x21 or c in "\\\x7f" for c in value)):
        return "/"
    return value


def issue_code(*, session_key: str, user_id: int, slug: str, state: str) -> str:
    """A one-time code for ``slug``'s origin, bound to this portal session and ``state``."""
    code = secrets.token_urlsafe(32)
    cache.set(_cache_key("code", code),
              {"session": session_key, "user": user_id, "slug": slug, "state": _digest(state)},
              CODE_SECONDS)
    return code


def issue_isolation_code(*, session_key: str, user_id: int, slug: str) -> str:
    """A one-time code that opens ``slug`` in the user's isolated browser.

    It travels only inside the slot (the kiosk browser's start address), never through the
    user's own browser, so it needs no state cookie; the app session it opens is marked
    isolated, which is what lets a stream tier's app answer it (tiers.decision).
    """
    code = secrets.token_urlsafe(32)
    cache.set(_cache_key("isolated", code),
              {"session": session_key, "user": user_id, "slug": slug}, CODE_SECONDS)
    return code


def redeem_isolation_code(code: str | None, *, slug: str) -> Redeemed | None:
    """The session an isolation code stands for, once, for ``slug`` only."""
    if not code or not _TOKEN.match(code):
        return None
    key = _cache_key("isolated", code)
    value = cache.get(key)
    if value is None or not cache.delete(key) or value["slug"] != slug:
        return None
    return Redeemed(session_key=value["session"], user_id=int(value["user"]), slug=slug, isolated=True)


def redeem_code(code: str | None, *, slug: str, state: str | None) -> Redeemed | None:
    """The session ``code`` stands for, once: None when unknown, used, expired, for another
    app, or presented without the browser's own state."""
    if not code or not _TOKEN.match(code) or not valid_state(state):
        return None
    key = _cache_key("code", code)
    value = cache.get(key)
    # Only the caller whose delete removed the entry may use it: two racing exchanges of one
    # code cannot both win.
    if value is None or not cache.delete(key):
        return None
    if value["slug"] != slug or not constant_time_compare(value["state"], _digest(state or "")):
        return None
    return Redeemed(session_key=value["session"], user_id=int(value["user"]), slug=slug)


def open_app_session(redeemed: Redeemed) -> str:
    """A new app-session token for ``redeemed.slug`` naming the portal session."""
    token = secrets.token_urlsafe(32)
    cache.set(_cache_key("app", token), {"session": redeemed.session_key, "slug": redeemed.slug,
                                         "isolated": redeemed.isolated},
              settings.SESSION_COOKIE_AGE)
    _memo[token] = (redeemed.slug, AppSession(redeemed.session_key, redeemed.isolated))
    return token


# token -> (slug, app session). The binding never changes, so a process may keep it; whether
# the portal session is still good is decided on every request, not here.
_memo: dict[str, tuple[str, AppSession]] = {}


def remembered_app_session(token: str | None, slug: str) -> AppSession | bool | None:
    """From memory only: the app session, None (no such app session here), or False when
    memory does not know and the cache must be asked (:func:`app_session`)."""
    if not token:
        return None
    known = _memo.get(token)
    if known is None:
        return False
    return known[1] if known[0] == slug else None


def app_session(token: str | None, slug: str) -> AppSession | None:
    """The app session the app cookie ``token`` names for ``slug``, or None."""
    if not token or not _TOKEN.match(token):
        return None
    value = cache.get(_cache_key("app", token))
    if value is None or value.get("slug") != slug:
        return None
    found = AppSession(str(value["session"]), bool(value.get("isolated")))
    if len(_memo) >= _MEMO_LIMIT:
        _memo.clear()
    _memo[token] = (slug, found)
    return found
