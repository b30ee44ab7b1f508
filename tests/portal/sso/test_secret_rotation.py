"""`manage.py vault rotate` re-seals the IdP client secrets entered in the admin, so the old
vault key can go without anyone typing the secrets in again."""

from __future__ import annotations

import io

import pytest
from cryptography.fernet import Fernet
from django.core.management import call_command

from portal.sso.models import OidcProvider
from portal.sso.sealing import SealError, open_sealed, seal

pytestmark = pytest.mark.django_db


def _provider(name: str, secret: str) -> OidcProvider:
    return OidcProvider.objects.create(name=name, issuer="https://idp.example", client_id=name,
                                       client_secret_sealed=seal(secret))


def test_vault_rotate_reseals_idp_secrets_and_the_old_key_can_then_go(settings):
    old, new = Fernet.generate_key().decode(), Fernet.generate_key().decode()
    settings.PORTAL_VAULT_KEYS = [old]
    _provider("corp", "corp-secret")
    _provider("partner", "partner-secret")
    settings.PORTAL_VAULT_KEYS = [new, old]
    out = io.StringIO()

    call_command("vault", "rotate", stdout=out)

    assert "2 IdP client secret(s)" in out.getvalue()
    settings.PORTAL_VAULT_KEYS = [new]
    assert [open_sealed(p.client_secret_sealed) for p in OidcProvider.objects.order_by("name")] == [
        "corp-secret", "partner-secret"]


def test_a_secret_no_configured_key_opens_stops_the_rotation_by_naming_the_idp(settings):
    settings.PORTAL_VAULT_KEYS = [Fernet.generate_key().decode()]
    _provider("corp", "corp-secret")
    settings.PORTAL_VAULT_KEYS = [Fernet.generate_key().decode()]

    with pytest.raises(SealError, match="IdP 'corp'"):
        call_command("vault", "rotate", stdout=io.StringIO())
