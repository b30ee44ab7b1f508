"""A form post held while its author steps up, replayed exactly once afterwards.

The request (method, path, headers, body; bounded in size) is encrypted with AES-GCM under
a key derived from the portal's secret, bound to the user and the resource as associated
data, and kept in the cache (Redis in production) under a hash of a random token. Only the
token travels in the step-up URL. Taking it is a delete that only one caller can win.

A one-time grant (a tier's freshness of 0) is bound to the held request's :attr:`digest`:
the step-up files its challenge for that digest and the replay is decided on it, so a grant
confirmed for one held post never releases another with the same method and path.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from collections.abc import AsyncIterator, Iterable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.cache import cache

from streaming.proxy.headers import HOP_BY_HOP
from tiers.enforcement import step_up_url

if TYPE_CHECKING:
    from django.contrib.auth.base_user import AbstractBaseUser
    from django.contrib.sessions.backends.base import SessionBase

    from tiers.models import Resource
    from tiers.types import Action, Decision

__all__ = ["REPLAY_PREFIX", "HeldRequest", "StepUpTicket", "held_request", "hold", "hold_for_step_up",
           "peek", "read_to_hold", "take"]

REPLAY_PREFIX = "/.portal/replay/"
# Hop-by-hop and framing headers are never held: the replay frames its own request.
_NOT_HELD = HOP_BY_HOP | {"host", "content-length"}


@dataclass(frozen=True)
class HeldRequest:
    """The form post as the browser sent it (headers already cleaned of hop-by-hop ones)."""

    method: str
    upstream_path: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes

    @property
    def digest(self) -> str:
        """SHA-256 over everything the replay would send: what a one-time grant is bound to."""
        fields = {"method": self.method, "upstream_path": self.upstream_path, "query": self.query,
                  "headers": [list(h) for h in self.headers],
                  "body_sha256": hashlib.sha256(self.body).hexdigest()}
        return hashlib.sha256(json.dumps(fields, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class StepUpTicket:
    """What the admission read for a post it sends to a step-up, for binding the held post to
    that step-up once its body is in (the admission's user, session, resource, action and
    decision: nothing is read twice)."""

    user: AbstractBaseUser
    session: SessionBase
    resource: Resource
    action: Action
    decision: Decision


def _key() -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None,
                info=b"zt-portal proxy held request").derive(settings.SECRET_KEY.encode())


def _cache_key(token: str) -> str:
    return "proxy:held:" + hashlib.sha256(token.encode()).hexdigest()


def _aad(user_id: object, slug: str) -> bytes:
    return f"{user_id}|{slug}".encode()


def hold(held: HeldRequest, *, user_id: object, slug: str) -> str:
    """Store ``held`` encrypted; return the one-time token naming it."""
    token = secrets.token_urlsafe(24)
    plain = json.dumps({"method": held.method, "upstream_path": held.upstream_path,
                        "path": held.path, "query": held.query, "headers": held.headers,
                        "body": base64.b64encode(held.body).decode()}).encode()
    nonce = os.urandom(12)
    sealed = nonce + AESGCM(_key()).encrypt(nonce, plain, _aad(user_id, slug))
    cache.set(_cache_key(token), sealed, timeout=settings.PORTAL_PROXY_HOLD_SECONDS)
    return token


def peek(token: str, *, user_id: object, slug: str) -> HeldRequest | None:
    """The held request if it exists and belongs to this user and resource (not taken)."""
    sealed = cache.get(_cache_key(token))
    if not sealed:
        return None
    try:
        plain = AESGCM(_key()).decrypt(sealed[:12], sealed[12:], _aad(user_id, slug))
    except InvalidTag:
        return None
    data = json.loads(plain)
    return HeldRequest(data["method"], data["upstream_path"], data["path"], data["query"],
                       tuple((k, v) for k, v in data["headers"]), base64.b64decode(data["body"]))


def take(token: str) -> bool:
    """Claim the held request; True for exactly one caller."""
    return bool(cache.delete(_cache_key(token)))


async def read_to_hold(chunks: AsyncIterator[bytes], length: int | None, limit: int) -> bytes | None:
    """The body to hold, read up to ``limit`` bytes; None when it is larger (nothing is kept)."""
    if length is not None and length > limit:
        return None
    body = bytearray()
    async for chunk in chunks:
        body += chunk
        if len(body) > limit:
            return None
    return bytes(body)


def held_request(method: str, target_path: tuple[str, str, str], headers: Iterable[tuple[bytes, bytes]],
                 body: bytes) -> HeldRequest:
    """The post as it will be replayed: ``target_path`` is (upstream path, decoded path, query)."""
    kept = tuple((k, v) for k, v in ((n.decode("latin-1").lower(), v.decode("latin-1")) for n, v in headers)
                 if k not in _NOT_HELD)
    upstream_path, path, query = target_path
    return HeldRequest(method, upstream_path, path, query, kept, body)


def hold_for_step_up(ticket: StepUpTicket, held: HeldRequest, slug: str) -> str:
    """Keep a form post for after the step-up; return where to send the browser.

    The step-up's one-time grant (when the tier asks for one) is filed for this post's digest,
    so confirming it releases this post and no other.
    """
    token = hold(held, user_id=ticket.user.pk, slug=slug)
    action = replace(ticket.action, digest=held.digest)
    return step_up_url(ticket.user, ticket.session, ticket.resource, action, ticket.decision,
                       f"/apps/{slug}{REPLAY_PREFIX}{token}")
