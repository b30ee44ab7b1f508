"""An IdP's client secret entered in the admin, sealed at rest with Fernet.

The keys are the vault's (``PORTAL_VAULT_KEYS``, newest first; with none configured, one key
derived from the secret key, with its own HKDF label so it differs from the vault's). The
secret is opened only to call the IdP's token endpoint; the admin never shows it back.
"""

from __future__ import annotations

import base64

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings

__all__ = ["SealError", "open_sealed", "seal"]


class SealError(Exception):
    """The sealed secret cannot be opened with any configured key."""


def _keys() -> MultiFernet:
    configured = [k for k in getattr(settings, "PORTAL_VAULT_KEYS", ()) if k]
    if configured:
        return MultiFernet([Fernet(k) for k in configured])
    hkdf = HKDF(algorithm=hashes.SHA256(), length=32, salt=b"zt-portal-sso", info=b"idp client secret v1")
    return MultiFernet([Fernet(base64.urlsafe_b64encode(hkdf.derive(settings.SECRET_KEY.encode())))])


def seal(secret: str) -> str:
    """Encrypt ``secret`` with the newest key."""
    return _keys().encrypt(secret.encode()).decode()


def open_sealed(sealed: str) -> str:
    """Decrypt with any configured key."""
    try:
        return _keys().decrypt(sealed.encode()).decode()
    except (InvalidToken, ValueError) as exc:
        raise SealError("The IdP's client secret cannot be opened with the configured keys: "
                        "enter it again in the admin.") from exc
