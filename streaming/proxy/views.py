"""The public half of the identity assertion: the JWKS upstream apps verify against."""

from __future__ import annotations

from django.contrib.auth.decorators import login_not_required
from django.http import HttpRequest, JsonResponse
from django.views.decorators.http import require_GET

from streaming.proxy.access import keyring

__all__ = ["jwks"]


@login_not_required
@require_GET
def jwks(request: HttpRequest) -> JsonResponse:
    """Active and overlapping public keys; short cache so a rotation is seen within a minute."""
    response = JsonResponse(keyring().jwks())
    response["Cache-Control"] = "public, max-age=60"
    return response
