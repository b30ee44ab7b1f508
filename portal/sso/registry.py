"""Which IdPs the portal trusts now: the environment's, then those entered in the admin.

On a name clash the environment wins (:func:`portal.sso.providers.merge_providers`). An admin
entry that cannot be used (its secret no longer opens, a rule it breaks) is left out and
logged, never guessed at: the sign-in page simply does not offer it.
"""

from __future__ import annotations

import logging

from django.conf import settings

from portal.sso.models import OidcProvider
from portal.sso.providers import IdentityProvider, ProviderConfigError, merge_providers
from portal.sso.sealing import SealError

__all__ = ["configured_providers", "find_provider"]

log = logging.getLogger(__name__)


def _from_admin() -> tuple[IdentityProvider, ...]:
    found = []
    for row in OidcProvider.objects.filter(enabled=True):
        try:
            found.append(row.as_provider())
        except (ProviderConfigError, SealError) as exc:
            log.warning("IdP %s from the admin is left out: %s", row.name, exc)
    return tuple(found)


def configured_providers() -> tuple[IdentityProvider, ...]:
    """Every IdP a person may sign in through, environment first."""
    return merge_providers(tuple(settings.PORTAL_OIDC_PROVIDERS), _from_admin())


def find_provider(name: str) -> IdentityProvider | None:
    """The IdP of that name (the environment's when both have it), or None."""
    from_env = next((p for p in settings.PORTAL_OIDC_PROVIDERS if p.name == name), None)
    if from_env is not None:
        return from_env
    row = OidcProvider.objects.filter(name=name, enabled=True).first()
    if row is None:
        return None
    try:
        return row.as_provider()
    except (ProviderConfigError, SealError) as exc:
        log.warning("IdP %s from the admin is left out: %s", name, exc)
        return None
