"""The relying-party side of OpenID Connect, on Authlib (docs/decisions/0021-oidc-sso.md).

Authlib (with joserfc, its JOSE library) gives the PKCE challenge, the ID token's claim rules
(``CodeIDToken``) and signature checks; the two HTTP calls (discovery, token) are plain httpx,
as everywhere else in the portal (Authlib's own httpx client is being moved to another package).

Authorization Code with PKCE (S256), ``state`` and ``nonce`` kept server-side in the session,
the ID token verified against the IdP's JWKS (signature with an asymmetric algorithm only,
``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce``, ``at_hash``), and back-channel logout
tokens verified the way OpenID Back-Channel Logout 1.0 section 2.6 says. The claim checks are
pure functions of (token, keys, expectations, now) so they are tested without a network; the
network part only fetches discovery metadata and keys.
"""

from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote

import httpx
from authlib.common.urls import add_params_to_uri
from authlib.oauth2.rfc7636 import create_s256_code_challenge
from authlib.oidc.core import CodeIDToken
from joserfc import jwt
from joserfc.errors import JoseError
from joserfc.jwk import KeySet
from joserfc.jwt import JWTClaimsRegistry

from portal.sso.providers import IdentityProvider

__all__ = ["BACKCHANNEL_EVENT", "AuthorizationRequest", "LogoutClaims", "SsoError",
           "begin", "check_id_token", "check_logout_token", "finish", "keys", "verify_logout_token"]

BACKCHANNEL_EVENT = "http://schemas.openid.net/event/backchannel-logout"
# Asymmetric only: an HS256 token would be signed with the client secret, which is no proof
# the IdP made it; "none" is never accepted.
SIGNING_ALGORITHMS = ("RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512",
                      "EdDSA")
LEEWAY_SECONDS = 60
LOGOUT_TOKEN_MAX_AGE = 300  # an older iat is refused even if exp says otherwise
PENDING_MAX_AGE = 600  # an authorization left unfinished this long is void
HTTP_TIMEOUT = 5.0
METADATA_SECONDS = 3600.0
KEYS_REFRESH_MIN_SECONDS = 30.0  # an unknown kid refetches the JWKS at most this often


class SsoError(Exception):
    """The IdP's answer cannot be trusted or used; ``reason`` is a short code for the audit."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


@dataclass(frozen=True)
class AuthorizationRequest:
    """What the browser is sent to, and what the session keeps to check the answer."""

    url: str
    state: str
    pending: dict[str, Any]


@dataclass(frozen=True)
class LogoutClaims:
    """A verified logout token: which IdP session (``sid``) and/or person (``sub``) ended."""

    issuer: str
    jti: str
    sub: str | None
    sid: str | None
    exp: int


_lock = threading.Lock()
_metadata: dict[str, tuple[float, dict[str, Any]]] = {}
_keys: dict[str, tuple[float, KeySet]] = {}


def _basic(provider: IdentityProvider) -> tuple[str, str]:
    # RFC 6749 2.3.1: id and secret are form-encoded before they go into HTTP Basic.
    return quote(provider.client_id, safe=""), quote(provider.client_secret, safe="")


def _http() -> httpx.Client:
    return httpx.Client(timeout=HTTP_TIMEOUT, follow_redirects=False)


def metadata(provider: IdentityProvider) -> dict[str, Any]:
    """The IdP's discovery document (cached an hour); its ``issuer`` must be the configured one."""
    with _lock:
        cached = _metadata.get(provider.issuer)
    if cached and time.monotonic() - cached[0] < METADATA_SECONDS:
        return cached[1]
    try:
        with _http() as http:
            response = http.get(f"{provider.issuer}/.well-known/openid-configuration")
            response.raise_for_status()
            document = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoError("idp_unreachable", f"discovery of {provider.issuer} failed: {exc}") from exc
    if document.get("issuer") != provider.issuer:
        raise SsoError("issuer_mismatch", f"discovery names {document.get('issuer')!r}")
    with _lock:
        _metadata[provider.issuer] = (time.monotonic(), document)
    return document


def keys(provider: IdentityProvider, *, refresh: bool = False) -> KeySet:
    """The IdP's public keys; ``refresh`` (an unknown kid) refetches, at most every 30 s."""
    with _lock:
        cached = _keys.get(provider.issuer)
    if cached and not (refresh and time.monotonic() - cached[0] > KEYS_REFRESH_MIN_SECONDS):
        return cached[1]
    try:
        with _http() as http:
            response = http.get(metadata(provider)["jwks_uri"])
            response.raise_for_status()
            key_set = KeySet.import_key_set(response.json())
    except (httpx.HTTPError, ValueError, KeyError, JoseError) as exc:
        raise SsoError("idp_unreachable", f"keys of {provider.issuer}: {exc}") from exc
    with _lock:
        _keys[provider.issuer] = (time.monotonic(), key_set)
    return key_set


def _decode(token: str, key_set: KeySet) -> jwt.Token:
    return jwt.decode(token, key_set, algorithms=list(SIGNING_ALGORITHMS))


def _verified(provider: IdentityProvider, token: str) -> jwt.Token:
    """Signature checked with the IdP's keys (refetched once when the key id is new)."""
    try:
        return _decode(token, keys(provider))
    except JoseError as first:
        try:
            return _decode(token, keys(provider, refresh=True))
        except JoseError as exc:
            raise SsoError("bad_signature", f"{type(exc).__name__}: {exc}") from first


def begin(provider: IdentityProvider, redirect_uri: str, *,
          extra: tuple[tuple[str, str], ...] = ()) -> AuthorizationRequest:
    """Start a sign-in: a fresh state, nonce and PKCE verifier, and the IdP URL to go to.

    ``extra`` adds request parameters (a step-up asks ``prompt=login`` and ``max_age=0``).
    """
    endpoint = metadata(provider)["authorization_endpoint"]
    state, nonce, verifier = (secrets.token_urlsafe(32) for _ in range(3))
    url = add_params_to_uri(endpoint, [
        ("response_type", "code"), ("client_id", provider.client_id), ("redirect_uri", redirect_uri),
        ("scope", " ".join(provider.scopes)), ("state", state), ("nonce", nonce),
        ("code_challenge", create_s256_code_challenge(verifier)), ("code_challenge_method", "S256"),
        *extra,
    ])
    return AuthorizationRequest(url, state, {
        "provider": provider.name, "nonce": nonce, "code_verifier": verifier,
        "redirect_uri": redirect_uri, "started": int(time.time()),
    })


def check_id_token(token: jwt.Token, *, issuer: str, client_id: str, nonce: str, access_token: str,
                   now: float | None = None) -> dict[str, Any]:
    """The ID token's claims once ``iss``, ``aud``, ``azp``, ``exp``, ``iat``, ``nonce`` and
    ``at_hash`` hold; raises :class:`SsoError` otherwise."""
    claims = CodeIDToken(token.claims, token.header,
                         {"iss": {"essential": True, "value": issuer},
                          "aud": {"essential": True, "value": client_id},
                          "nonce": {"essential": True, "value": nonce},
                          "sub": {"essential": True}},
                         {"nonce": nonce, "client_id": client_id, "access_token": access_token})
    try:
        claims.validate(now=int(now or time.time()), leeway=LEEWAY_SECONDS)
    except JoseError as exc:
        raise SsoError("bad_id_token", f"{type(exc).__name__}: {exc}") from exc
    return dict(claims)


def finish(provider: IdentityProvider, pending: dict[str, Any], params: dict[str, str]) -> dict[str, Any]:
    """Exchange the code (with the PKCE verifier) and return the verified ID token's claims."""
    if params.get("error"):
        raise SsoError("idp_refused", f"{params.get('error')}: {params.get('error_description', '')}"[:300])
    if time.time() - float(pending.get("started", 0)) > PENDING_MAX_AGE:
        raise SsoError("expired", "the sign-in took too long")
    # RFC 9207: an IdP that names itself in the answer must name the one we asked (mix-up).
    if "iss" in params and params["iss"] != provider.issuer:
        raise SsoError("issuer_mismatch", f"the answer came from {params['iss']!r}")
    code = params.get("code")
    if not code:
        raise SsoError("no_code", "the IdP sent no authorization code")
    document = metadata(provider)
    try:
        with _http() as http:
            response = http.post(document["token_endpoint"], auth=_basic(provider),
                                 data={"grant_type": "authorization_code", "code": code,
                                       "redirect_uri": pending["redirect_uri"],
                                       "code_verifier": pending["code_verifier"]},
                                 headers={"Accept": "application/json"})
            token = response.json()
    except (httpx.HTTPError, ValueError) as exc:
        raise SsoError("token_exchange_failed", f"{type(exc).__name__}: {exc}"[:300]) from exc
    if response.status_code != 200 or not isinstance(token, dict):
        error = token.get("error", "") if isinstance(token, dict) else ""
        raise SsoError("token_exchange_failed", f"HTTP {response.status_code} {error}"[:300])
    if not token.get("id_token"):
        raise SsoError("no_id_token", "the token endpoint sent no ID token")
    return check_id_token(_verified(provider, token["id_token"]), issuer=provider.issuer,
                          client_id=provider.client_id, nonce=pending["nonce"],
                          access_token=token.get("access_token", ""))


def check_logout_token(token: jwt.Token, *, issuer: str, client_id: str,
                       now: float | None = None) -> LogoutClaims:
    """Back-Channel Logout 1.0, 2.6: iss, aud, iat (and exp), jti, the logout event, sid and/or
    sub, and no nonce (so an ID token can never pass as a logout token)."""
    now = int(now or time.time())
    typ = str(token.header.get("typ", "")).lower()
    if typ and typ not in {"logout+jwt", "application/logout+jwt"}:
        raise SsoError("bad_logout_token", f"typ {typ!r} is not a logout token")
    try:
        JWTClaimsRegistry(now=now, leeway=LEEWAY_SECONDS,
                          iss={"essential": True, "value": issuer},
                          aud={"essential": True, "value": client_id},
                          iat={"essential": True}, jti={"essential": True}).validate(token.claims)
    except JoseError as exc:
        raise SsoError("bad_logout_token", f"{type(exc).__name__}: {exc}") from exc
    claims = token.claims
    iat = claims.get("iat")
    if not isinstance(iat, int | float) or now - iat > LOGOUT_TOKEN_MAX_AGE + LEEWAY_SECONDS:
        raise SsoError("bad_logout_token", "iat is too old")
    events = claims.get("events")
    if not isinstance(events, dict) or not isinstance(events.get(BACKCHANNEL_EVENT), dict):
        raise SsoError("bad_logout_token", "no back-channel logout event")
    if "nonce" in claims:
        raise SsoError("bad_logout_token", "a logout token carries no nonce")
    sub, sid = claims.get("sub"), claims.get("sid")
    if not (isinstance(sub, str) and sub) and not (isinstance(sid, str) and sid):
        raise SsoError("bad_logout_token", "neither sub nor sid")
    if not isinstance(claims.get("jti"), str) or not claims["jti"]:
        raise SsoError("bad_logout_token", "jti must be a string")
    exp = claims.get("exp")
    exp = int(exp) if isinstance(exp, int | float) else int(claims["iat"]) + LOGOUT_TOKEN_MAX_AGE
    return LogoutClaims(issuer=issuer, jti=claims["jti"], sub=sub or None, sid=sid or None, exp=exp)


def verify_logout_token(provider: IdentityProvider, raw: str) -> LogoutClaims:
    """A logout token from ``provider``: signature against its JWKS, then the claims."""
    if not raw or len(raw) > 16 * 1024:
        raise SsoError("bad_logout_token", "missing or oversized logout_token")
    return check_logout_token(_verified(provider, raw), issuer=provider.issuer, client_id=provider.client_id)
