"""The credential vault: target logins sealed with Fernet, opened only for the guacd handshake.

Keys come from settings (``PORTAL_VAULT_KEYS``, newest first); with none configured, one key
is derived from ``SECRET_KEY`` so a single-machine install works out of the box. Rotation:
put the new key first, keep the old ones after it, run :func:`rotate` (``manage.py vault
rotate``), then drop the old keys. A :class:`TargetSecret` never prints its values.
"""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass, field

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction

from streaming.desktop.models import TargetCredential

__all__ = ["TargetSecret", "VaultError", "open_secret", "rotate", "seal", "store", "vault_keys"]


class VaultError(RuntimeError):
    """A sealed credential cannot be opened with the configured keys (or keys are bad)."""


@dataclass(frozen=True)
class TargetSecret:
    """A target login in the clear: lives in memory for one handshake, never in a repr."""

    username: str = ""
    password: str = field(default="", repr=False)
    private_key: str = field(default="", repr=False)
    passphrase: str = field(default="", repr=False)

    def values(self) -> tuple[str, ...]:
        """The secret values, for scanning logs and traffic in tests and checks."""
        return tuple(v for v in (self.password, self.private_key, self.passphrase) if v)


def _derived_key() -> bytes:
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"zt-portal-vault", info=b"vault key v1")
    return base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode()))


def vault_keys() -> MultiFernet:
    """The configured keys, newest (the one that seals) first."""
    configured = [k for k in getattr(settings, "PORTAL_VAULT_KEYS", ()) if k]
    try:
        fernets = [Fernet(k) for k in configured] or [Fernet(_derived_key())]
    except (ValueError, TypeError) as exc:
        raise VaultError("PORTAL_VAULT_KEYS holds a key that is not a Fernet key "
                         "(make one with: python -c 'from cryptography.fernet import Fernet; "
                         "print(Fernet.generate_key().decode())')") from exc
    return MultiFernet(fernets)


def seal(secret: TargetSecret) -> str:
    """Encrypt ``secret`` with the newest key."""
    payload = json.dumps({"u": secret.username, "p": secret.password, "k": secret.private_key,
                          "q": secret.passphrase}).encode()
    return vault_keys().encrypt(payload).decode()


def open_secret(sealed: str) -> TargetSecret:
    """Decrypt a sealed credential with any configured key."""
    try:
        data = json.loads(vault_keys().decrypt(sealed.encode()))
    except InvalidToken as exc:
        raise VaultError("a target credential cannot be opened with the configured vault keys") from exc
    return TargetSecret(data.get("u", ""), data.get("p", ""), data.get("k", ""), data.get("q", ""))


def store(resource: object, secret: TargetSecret) -> TargetCredential:
    """Create or replace the credential of ``resource``."""
    credential, _ = TargetCredential.objects.update_or_create(
        resource=resource, defaults={"sealed": seal(secret)})
    return credential


def secret_for(resource_id: int) -> TargetSecret | None:
    """The opened credential of a resource, or None when it has none."""
    sealed = TargetCredential.objects.filter(resource_id=resource_id).values_list("sealed", flat=True).first()
    return open_secret(sealed) if sealed else None


def rotate() -> int:
    """Re-seal every credential with the newest key; returns how many were re-sealed."""
    keys = vault_keys()
    count = 0
    with transaction.atomic():
        for credential in TargetCredential.objects.select_for_update():
            try:
                credential.sealed = keys.rotate(credential.sealed.encode()).decode()
            except InvalidToken as exc:
                raise VaultError(f"{credential!r} cannot be opened with the configured keys") from exc
            credential.save(update_fields=["sealed", "updated_at"])
            count += 1
    return count
