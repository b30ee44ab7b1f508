"""The identity assertion handed to upstream apps: an ES256 JWT, fresh for every request.

Keys live as PEM files (0600) in a 0700 directory outside the repository's tracked files
(``var/assertion_keys`` by default). A manifest names the active key and the retired keys
still published in the JWKS until their overlap ends, so assertions signed just before a
rotation keep verifying. Every process re-reads the manifest when it changes on disk, so a
rotation reaches running replicas that share the directory without a restart.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = [
    "MAX_LIFETIME",
    "AssertionKeyError",
    "Identity",
    "KeyRing",
    "SigningKey",
    "assertion_claims",
    "sign_assertion",
]

MAX_LIFETIME = 300
ALGORITHM = "ES256"
_MANIFEST = "keyring.json"
_LOCK = ".lock"


class AssertionKeyError(RuntimeError):
    """The signing keys are missing, unreadable or too open to trust."""


@dataclass(frozen=True)
class Identity:
    """Who the portal vouches for, as the upstream app will read it."""

    subject: str
    username: str
    email: str
    groups: tuple[str, ...]
    tier: str
    amr: tuple[str, ...]
    auth_time: int | None
    mfa_time: int | None


@dataclass(frozen=True)
class SigningKey:
    """One P-256 key pair, named by its RFC 7638 thumbprint."""

    kid: str
    private_key: ec.EllipticCurvePrivateKey
    created: float
    retire_at: float | None = None

    @cached_property
    def header_segment(self) -> bytes:
        """The JWS header every assertion signed with this key carries, encoded once."""
        header = {"alg": ALGORITHM, "kid": self.kid, "typ": "JWT"}
        return _b64url(json.dumps(header, separators=(",", ":"), sort_keys=True).encode())

    def public_jwk(self) -> dict[str, str]:
        jwk = jwt.algorithms.ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"kty": "EC", "crv": "P-256", "x": jwk["x"], "y": jwk["y"], "kid": self.kid,
                "use": "sig", "alg": ALGORITHM}


def _thumbprint(key: ec.EllipticCurvePrivateKey) -> str:
    jwk = jwt.algorithms.ECAlgorithm.to_jwk(key.public_key(), as_dict=True)
    canonical = json.dumps({"crv": jwk["crv"], "kty": "EC", "x": jwk["x"], "y": jwk["y"]},
                           separators=(",", ":"), sort_keys=True)
    return base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()


def assertion_claims(identity: Identity, *, issuer: str, audience: str, now: float,
                     lifetime: int, tier: str | None = None) -> dict[str, Any]:
    """The claim set for one request (pure: ``now`` and the lifetime come from the caller).

    ``tier``, when given, stands in for ``identity.tier``: the proxy keeps one tier-less
    identity per session and names the tier per resource without copying the identity.
    The ``jti`` is 128 random bits as 32 hex digits (cheaper than a uuid4, as unguessable).
    """
    lifetime = max(1, min(int(lifetime), MAX_LIFETIME))
    issued = int(now)
    claims: dict[str, Any] = {
        "iss": issuer, "aud": audience, "sub": identity.subject,
        "preferred_username": identity.username, "email": identity.email,
        "groups": list(identity.groups), "tier": identity.tier if tier is None else tier,
        "amr": list(identity.amr), "auth_time": identity.auth_time, "mfa_time": identity.mfa_time,
        "iat": issued, "nbf": issued, "exp": issued + lifetime, "jti": os.urandom(16).hex(),
    }
    return claims


def sign_assertion(key: SigningKey, claims: Mapping[str, Any]) -> str:
    """The compact JWS (RFC 7515, section 7.1) for ``claims``, with the key's ``kid`` in the header.

    The signature is PyJWT's ES256 (``ECAlgorithm.sign``: ECDSA P-256 with SHA-256 in the
    raw ``r || s`` form); only the three segments are joined here, with the header encoded
    once per key, because ``jwt.encode`` re-encodes the same header and re-checks the key on
    every call, a seventh of the proxy's time per request (docs/performance.md). Apps verify
    it with any JWT library; the tests verify it with ``jwt.decode``.
    """
    payload = _b64url(json.dumps(claims, separators=(",", ":")).encode())
    signing_input = key.header_segment + b"." + payload
    return (signing_input + b"." + _b64url(_ES256.sign(signing_input, key.private_key))).decode("ascii")


def _b64url(data: bytes) -> bytes:
    return base64.urlsafe_b64encode(data).rstrip(b"=")


_ES256 = jwt.algorithms.ECAlgorithm(jwt.algorithms.ECAlgorithm.SHA256)


class KeyRing:
    """The signing keys in one directory: the active one, and those still published."""

    def __init__(self, directory: Path | str, *, reload_interval: float = 1.0) -> None:
        self.directory = Path(directory)
        self.reload_interval = reload_interval
        self._lock = threading.Lock()
        self._loaded_mtime: float | None = None
        self._checked_at = 0.0
        self._keys: tuple[SigningKey, ...] = ()
        self._active: SigningKey | None = None
        self._jwks: dict[str, Any] = {"keys": []}

    # --- reading -----------------------------------------------------------------------

    def active(self) -> SigningKey:
        """The key to sign with now (made on first use, so a fresh install just works)."""
        self._refresh()
        if self._active is None:
            self.ensure()
            self._refresh(force=True)
        if self._active is None:
            raise AssertionKeyError(f"no active signing key in {self.directory}")
        return self._active

    def jwks(self) -> dict[str, Any]:
        """The public keys verifiers may meet: active plus retired-but-overlapping ones."""
        self.active()
        return self._jwks

    def keys(self) -> tuple[SigningKey, ...]:
        self._refresh()
        return self._keys

    def _manifest_path(self) -> Path:
        return self.directory / _MANIFEST

    def _refresh(self, *, force: bool = False) -> None:
        now = time.monotonic()
        if not force and now - self._checked_at < self.reload_interval and self._active is not None:
            return
        with self._lock:
            self._checked_at = now
            try:
                mtime = self._manifest_path().stat().st_mtime_ns
            except FileNotFoundError:
                self._keys, self._active, self._jwks = (), None, {"keys": []}
                return
            if not force and mtime == self._loaded_mtime:
                return
            self._load()
            self._loaded_mtime = mtime

    def _load(self) -> None:
        self._check_permissions()
        manifest = json.loads(self._manifest_path().read_text())
        wall = time.time()
        keys = []
        for entry in manifest["keys"]:
            retire_at = entry.get("retire_at")
            if retire_at is not None and retire_at <= wall:
                continue
            pem = (self.directory / f"{entry['kid']}.pem").read_bytes()
            private = serialization.load_pem_private_key(pem, password=None)
            if not isinstance(private, ec.EllipticCurvePrivateKey):
                raise AssertionKeyError(f"{entry['kid']}.pem is not an EC key")
            keys.append(SigningKey(entry["kid"], private, entry["created"], retire_at))
        active = next((k for k in keys if k.kid == manifest.get("active")), None)
        self._keys, self._active = tuple(keys), active
        self._jwks = {"keys": [k.public_jwk() for k in keys]}

    def _check_permissions(self) -> None:
        mode = self.directory.stat().st_mode & 0o777
        if mode & 0o077:
            raise AssertionKeyError(
                f"{self.directory} is readable by others (mode {mode:o}); run chmod 700 on it")

    # --- writing (the rotate_signing_key command, and first use) -----------------------

    @contextlib.contextmanager
    def _exclusive(self) -> Iterator[dict[str, Any]]:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.directory.chmod(0o700)
        with open(self.directory / _LOCK, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            path = self._manifest_path()
            manifest = json.loads(path.read_text()) if path.exists() else {"active": None, "keys": []}
            yield manifest
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps(manifest, indent=2))
            tmp.chmod(0o600)
            os.replace(tmp, path)

    def _new_key(self) -> dict[str, Any]:
        private = ec.generate_private_key(ec.SECP256R1())
        kid = _thumbprint(private)
        pem = private.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                    serialization.NoEncryption())
        fd = os.open(self.directory / f"{kid}.pem", os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        return {"kid": kid, "created": time.time(), "retire_at": None}

    def ensure(self) -> str:
        """Make a first key if there is none; return the active kid."""
        with self._exclusive() as manifest:
            if manifest["active"] is None:
                entry = self._new_key()
                manifest["keys"].append(entry)
                manifest["active"] = entry["kid"]
            return manifest["active"]

    def rotate(self, *, overlap: int) -> tuple[str, str | None, list[str]]:
        """A new active key; the old one stays published for ``overlap`` seconds.

        Returns (new kid, previous kid, kids removed because their overlap had ended).
        """
        if overlap < MAX_LIFETIME:
            raise AssertionKeyError(
                f"the overlap ({overlap} s) must outlive an assertion ({MAX_LIFETIME} s)")
        with self._exclusive() as manifest:
            now = time.time()
            previous = manifest["active"]
            for entry in manifest["keys"]:
                if entry["kid"] == previous:
                    entry["retire_at"] = now + overlap
            removed = _prune(self.directory, manifest["keys"], now)
            entry = self._new_key()
            manifest["keys"] = [e for e in manifest["keys"] if e["kid"] not in removed] + [entry]
            manifest["active"] = entry["kid"]
        self._refresh(force=True)
        return entry["kid"], previous, removed


def _prune(directory: Path, entries: Sequence[dict[str, Any]], now: float) -> list[str]:
    removed = []
    for entry in entries:
        if entry.get("retire_at") is not None and entry["retire_at"] <= now:
            (directory / f"{entry['kid']}.pem").unlink(missing_ok=True)
            removed.append(entry["kid"])
    return removed
