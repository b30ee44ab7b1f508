"""The signing keys: private files, a JWKS that tracks rotation, and an overlap that holds."""

from __future__ import annotations

import stat
import time

import jwt
import pytest
from django.core.management import call_command

from streaming.proxy.assertion import (
    AssertionKeyError,
    Identity,
    KeyRing,
    assertion_claims,
    sign_assertion,
)

ALICE = Identity(subject="7", username="alice", email="alice@example.com", groups=("employee",),
                 tier="low", amr=("pwd", "otp"), auth_time=1_700_000_000, mfa_time=1_700_000_100)


def _verify(token: str, ring: KeyRing) -> dict:
    kid = jwt.get_unverified_header(token)["kid"]
    [jwk] = [k for k in ring.jwks()["keys"] if k["kid"] == kid]
    return jwt.decode(token, jwt.PyJWK(jwk).key, algorithms=["ES256"], audience="notes")


def test_keys_are_private_files(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    kid = ring.active().kid
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    assert stat.S_IMODE((tmp_path / "keys" / f"{kid}.pem").stat().st_mode) == 0o600
    assert "PRIVATE" not in str(ring.jwks())


def test_a_directory_others_can_read_is_refused(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    ring.active()
    (tmp_path / "keys").chmod(0o755)
    with pytest.raises(AssertionKeyError, match="chmod 700"):
        KeyRing(tmp_path / "keys").active()


def test_lifetime_is_capped_at_five_minutes():
    claims = assertion_claims(ALICE, issuer="https://portal", audience="notes", now=1000.0, lifetime=3600)
    assert claims["exp"] - claims["iat"] == 300


def test_rotation_keeps_old_assertions_verifiable_during_the_overlap(tmp_path, settings):
    settings.PORTAL_ASSERTION_KEYS_DIR = tmp_path / "keys"
    ring = KeyRing(tmp_path / "keys", reload_interval=0)
    old = ring.active()
    token = sign_assertion(old, assertion_claims(ALICE, issuer="i", audience="notes", now=time.time(),
                                                 lifetime=60))
    call_command("rotate_signing_key", "--overlap", "600")
    new = ring.active()
    assert new.kid != old.kid
    assert {k["kid"] for k in ring.jwks()["keys"]} == {old.kid, new.kid}
    assert _verify(token, ring)["sub"] == "7"
    fresh = sign_assertion(new, assertion_claims(ALICE, issuer="i", audience="notes", now=time.time(),
                                                 lifetime=60))
    assert jwt.get_unverified_header(fresh)["kid"] == new.kid


def test_a_key_past_its_overlap_is_unpublished_and_deleted(tmp_path):
    ring = KeyRing(tmp_path / "keys", reload_interval=0)
    first = ring.active().kid
    ring.rotate(overlap=300)
    manifest = (tmp_path / "keys" / "keyring.json")
    import json

    data = json.loads(manifest.read_text())
    for entry in data["keys"]:
        if entry["kid"] == first:
            entry["retire_at"] = time.time() - 1
    manifest.write_text(json.dumps(data))
    assert first not in {k["kid"] for k in ring.jwks()["keys"]}
    _, _, removed = ring.rotate(overlap=300)
    assert removed == [first]
    assert not (tmp_path / "keys" / f"{first}.pem").exists()


def test_an_overlap_shorter_than_an_assertion_is_refused(tmp_path):
    with pytest.raises(AssertionKeyError, match="outlive"):
        KeyRing(tmp_path / "keys").rotate(overlap=60)


def test_an_assertion_is_a_standard_es256_jwt_any_library_verifies(tmp_path):
    ring = KeyRing(tmp_path / "keys")
    key = ring.active()
    claims = assertion_claims(ALICE, issuer="https://portal.test", audience="notes", now=time.time(),
                              lifetime=60)

    token = sign_assertion(key, claims)

    assert jwt.get_unverified_header(token) == {"alg": "ES256", "kid": key.kid, "typ": "JWT"}
    assert _verify(token, ring) == claims
    # the same claims through jwt.encode read back the same (only the ECDSA nonce differs)
    by_pyjwt = jwt.encode(claims, key.private_key, algorithm="ES256", headers={"kid": key.kid})
    assert _verify(by_pyjwt, ring) == _verify(token, ring)


def test_an_assertion_with_a_changed_claim_or_another_keys_signature_is_refused(tmp_path):
    ring, other = KeyRing(tmp_path / "keys"), KeyRing(tmp_path / "other")
    claims = assertion_claims(ALICE, issuer="https://portal.test", audience="notes", now=time.time(),
                              lifetime=60)
    header, payload, signature = sign_assertion(ring.active(), claims).split(".")
    forged = jwt.utils.base64url_encode(jwt.utils.base64url_decode(payload).replace(b"alice", b"admin"))

    with pytest.raises(jwt.InvalidSignatureError):
        _verify(f"{header}.{forged.decode()}.{signature}", ring)
    foreign = sign_assertion(other.active(), claims)
    with pytest.raises(ValueError):  # its kid is not in this ring's JWKS
        _verify(foreign, ring)
