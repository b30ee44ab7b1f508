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
from django.db import transaction

__all__ = ["SealError", "open_sealed", "reseal_all", "seal"]


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


def reseal_all() -> int:
    """Re-seal every IdP client secret entered in the admin with the newest key (part of
    ``manage.py vault rotate``, so old keys can be dropped); returns how many."""
    from portal.sso.models import OidcProvider

    keys, count = _keys(), 0
    with transaction.atomic():
        for provider in OidcProvider.objects.select_for_update().exclude(client_secret_sealed=""):
            try:
                provider.client_secret_sealed = keys.rotate(provider.client_secret_sealed.encode()).decode()
            except InvalidToken as exc:
                raise SealError(f"The client secret of IdP {provider.name!r} cannot be opened with the "
                                "configured keys: enter it again in the admin.") from exc
            provider.save(update_fields=["client_secret_sealed"])
            count += 1
    return count
