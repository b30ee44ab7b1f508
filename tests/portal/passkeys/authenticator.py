"""A software FIDO2 authenticator: real P-256 keys, real CBOR, real signatures.

It answers the WebAuthn options the portal sends exactly as a browser plus a platform
authenticator would (attestation "none", user present and verified), so the tests exercise
the portal's real checks; only the hardware is replaced. Its counter can be set back to
play a cloned authenticator.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import struct
from dataclasses import dataclass, field
from typing import Any

import cbor2
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec

__all__ = ["SoftAuthenticator", "b64url", "unb64url"]

_UP, _UV, _AT = 0x01, 0x04, 0x40


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def unb64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class _Credential:
    id: bytes
    key: ec.EllipticCurvePrivateKey
    rp_id: str
    user_handle: bytes
    sign_count: int = 0


@dataclass
class SoftAuthenticator:
    """Holds discoverable credentials; ``origin`` is what the "browser" writes in clientDataJSON."""

    origin: str = "https://testserver"
    user_verified: bool = True
    credentials: list[_Credential] = field(default_factory=list)

    def _client_data(self, kind: str, challenge: str) -> bytes:
        return json.dumps({"type": kind, "challenge": challenge, "origin": self.origin,
                           "crossOrigin": False}).encode()

    def _flags(self, extra: int = 0) -> int:
        return _UP | (_UV if self.user_verified else 0) | extra

    def create(self, options: dict[str, Any]) -> dict[str, Any]:
        """``navigator.credentials.create`` for ``options`` (the portal's JSON)."""
        rp_id = options["rp"]["id"]
        cred = _Credential(os.urandom(32), ec.generate_private_key(ec.SECP256R1()), rp_id,
                           unb64url(options["user"]["id"]))
        numbers = cred.key.public_key().public_numbers()
        cose = cbor2.dumps({1: 2, 3: -7, -1: 1, -2: numbers.x.to_bytes(32, "big"),
                            -3: numbers.y.to_bytes(32, "big")})
        auth_data = (hashlib.sha256(rp_id.encode()).digest() + bytes([self._flags(_AT)])
                     + struct.pack(">I", cred.sign_count) + b"\x00" * 16
                     + struct.pack(">H", len(cred.id)) + cred.id + cose)
        self.credentials.append(cred)
        return {"id": b64url(cred.id), "rawId": b64url(cred.id), "type": "public-key",
                "response": {"clientDataJSON": b64url(self._client_data("webauthn.create",
                                                                        options["challenge"])),
                             "attestationObject": b64url(cbor2.dumps(
                                 {"fmt": "none", "attStmt": {}, "authData": auth_data})),
                             "transports": ["internal"]},
                "clientExtensionResults": {}}

    def get(self, options: dict[str, Any], credential: _Credential | None = None) -> dict[str, Any]:
        """``navigator.credentials.get`` for ``options``; signs with ``credential`` or the first
        one allowed (any, when the list is empty: a discoverable sign-in)."""
        allowed = {unb64url(c["id"]) for c in options.get("allowCredentials") or []}
        cred = credential or next(c for c in self.credentials if not allowed or c.id in allowed)
        cred.sign_count += 1
        auth_data = (hashlib.sha256(options["rpId"].encode()).digest() + bytes([self._flags()])
                     + struct.pack(">I", cred.sign_count))
        client_data = self._client_data("webauthn.get", options["challenge"])
        signature = cred.key.sign(auth_data + hashlib.sha256(client_data).digest(),
                                  ec.ECDSA(hashes.SHA256()))
        return {"id": b64url(cred.id), "rawId": b64url(cred.id), "type": "public-key",
                "response": {"clientDataJSON": b64url(client_data), "authenticatorData": b64url(auth_data),
                             "signature": b64url(signature), "userHandle": b64url(cred.user_handle)},
                "clientExtensionResults": {}}
