"""``{% sso_providers as idps %}``: the configured IdPs, for the sign-in page's buttons."""

from django import template
from django.conf import settings

from portal.sso.providers import IdentityProvider

register = template.Library()


@register.simple_tag
def sso_providers() -> tuple[IdentityProvider, ...]:
    return tuple(settings.PORTAL_OIDC_PROVIDERS)
