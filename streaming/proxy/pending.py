"""A form post held while its author steps up, replayed exactly once afterwards.

The request (method, path, headers, body; bounded in size) is encrypted with AES-GCM under
a key derived from the portal's secret, bound to the user and the resource as associated
data, and kept in the cache (Redis in production) under a hash of a random token. Only the
token travels in the step-up URL. Taking it is a delete that only one caller can win.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import secrets
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.core.cache import cache

__all__ = ["REPLAY_PREFIX", "HeldRequest", "hold", "peek", "take"]

REPLAY_PREFIX = "/.portal/replay/"


@dataclass(frozen=True)
class HeldRequest:
    """The form post as the browser sent it (headers already cleaned of hop-by-hop ones)."""

    method: str
    upstream_path: str
    path: str
    query: str
    headers: tuple[tuple[str, str], ...]
    body: bytes


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
