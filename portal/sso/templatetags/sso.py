"""``{% sso_providers as idps %}``: the configured IdPs, for the sign-in page's buttons."""

from django import template
from django.conf import settings

from portal.sso.providers import IdentityProvider

register = template.Library()


@register.simple_tag
def sso_providers() -> tuple[IdentityProvider, ...]:
    return tuple(settings.PORTAL_OIDC_PROVIDERS)


@register.simple_tag
def sso_links_of(person: object) -> list:
    """The person's SSO links, for the People page (read-only)."""
    from portal.sso.models import SsoLink

    return list(SsoLink.objects.filter(user=person).order_by("provider", "subject"))
