"""Where to send a user after a sign-in step: only ever back into this portal."""

import re

from django.http import HttpRequest
from django.utils.http import url_has_allowed_host_and_scheme

__all__ = ["NEXT_KEY", "remember_next", "safe_next", "take_next"]

NEXT_KEY = "next_after_mfa"
_NEVER_RETURN_TO = ("/accounts/logout", "/accounts/login")
# Control characters (NUL above all) are never part of a URL the portal made; the database
# and the audit trail refuse NUL.
_CONTROL = re.compile("[\x00-\x1f\x7f]")


def safe_next(request: HttpRequest, candidate: str | None, default: str = "/") -> str:
    """``candidate`` if it is a path on this host, else ``default`` (no open redirects)."""
    if not candidate or "\\" in candidate or candidate.startswith(_NEVER_RETURN_TO):
        return default
    if _CONTROL.search(candidate):
        return default
    if not candidate.startswith("/") or candidate.startswith("//"):
        return default
    if not url_has_allowed_host_and_scheme(
        candidate, allowed_hosts={request.get_host()}, require_https=request.is_secure()
    ):
        return default
    return candidate


def remember_next(request: HttpRequest, candidate: str | None) -> None:
    """Keep a validated ``next`` on the session across the MFA step."""
    request.session[NEXT_KEY] = safe_next(request, candidate)


def take_next(request: HttpRequest) -> str:
    """Pop the remembered ``next`` (validated again, it came from the session)."""
    return safe_next(request, request.session.pop(NEXT_KEY, None))
