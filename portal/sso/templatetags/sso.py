"""``{% sso_providers as idps %}``: the configured IdPs (environment and admin), for the
sign-in page's buttons."""

from django import template

from portal.sso.providers import IdentityProvider

register = template.Library()


@register.simple_tag
def sso_providers() -> tuple[IdentityProvider, ...]:
    from portal.sso.registry import configured_providers

    return configured_providers()


@register.simple_tag
def sso_links_of(person: object) -> list:
    """The person's SSO links, for the People page (read-only): prefetched there as
    ``sso_links``, so a page of people costs one query for all their links."""
    return sorted(person.sso_links.all(), key=lambda link: (link.provider, link.subject))  # type: ignore[attr-defined]
