"""Input the database cannot store is refused at the door of the sign-in pages.

PostgreSQL refuses NUL characters in text (and strings that are not valid Unicode cannot be
encoded): such a value reaching a query, the session or an audit event raised a database
error half-way through a step, which the portal answered as an outage (503) after the step
had already changed the session, and the audit event for it was lost. Checking every field
name and value before the view runs makes it a plain 400 that says what was wrong, with
nothing changed and one audit event saying so.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from portal.audit.chain import record_request

__all__ = ["invalid_fields", "refuse_invalid_input", "refuses_invalid_input"]

_UNSTORABLE = re.compile("[\x00\ud800-\udfff]")


def invalid_fields(request: HttpRequest) -> list[str]:
    """Names of the query or form fields whose name or value the database could not store."""
    bad: list[str] = []
    for data in (request.GET, request.POST):
        for name, values in data.lists():
            if _UNSTORABLE.search(name) or any(_UNSTORABLE.search(v) for v in values):
                bad.append(_UNSTORABLE.sub("\N{REPLACEMENT CHARACTER}", name)[:64])
    return bad


def refuse_invalid_input(step: str) -> Callable[[Callable[..., HttpResponse]], Callable[..., HttpResponse]]:
    """Decorate a sign-in view: unstorable input is a 400 page and an audit event for ``step``."""

    def decorate(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
        @functools.wraps(view)
        def wrapped(request: HttpRequest, *args: object, **kwargs: object) -> HttpResponse:
            bad = invalid_fields(request)
            if not bad:
                return view(request, *args, **kwargs)
            record_request(request, step, outcome="invalid_input", detail={"fields": sorted(bad)})
            return render(request, "accounts/invalid_input.html",
                          {"fields": sorted(bad), "request_id": getattr(request, "request_id", "")},
                          status=400)

        wrapped.refuses_invalid_input = True  # type: ignore[attr-defined]
        return wrapped

    return decorate


def refuses_invalid_input(view: Callable[..., HttpResponse]) -> bool:
    """Whether ``view`` refuses unstorable input itself (audited under its own step)."""
    return bool(getattr(view, "refuses_invalid_input", False))
