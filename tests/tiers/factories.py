"""Typed factories for the catalog: network zones, tiers and resources."""

from __future__ import annotations

from typing import Any

import factory
from django.contrib.auth.models import Group

from tiers.models import NetworkZone, Resource, Tier

__all__ = ["NetworkZoneFactory", "ResourceFactory", "TierFactory", "client_for", "person", "share"]


class NetworkZoneFactory(factory.django.DjangoModelFactory):
    class Meta:
        model = NetworkZone
        django_get_or_create = ("name",)

    name = factory.Sequence(lambda n: f"zone{n}")
    cidrs = "10.8.0.0/16"
    trusted = True


class TierFactory(factory.django.DjangoModelFactory):
    """A low-risk proxy tier unless told otherwise."""

    class Meta:
        model = Tier
        django_get_or_create = ("name",)
        skip_postgeneration_save = True

    name = factory.Sequence(lambda n: f"tier{n}")
    description = factory.LazyAttribute(lambda t: f"The {t.name} tier")
    rank = 10
    access_mode = "proxy"
    mfa_read = None
    mfa_write = 3600
    mfa_sensitive = 0

    @factory.post_generation
    def zones(self: Tier, create: bool, extracted: list[NetworkZone] | None, **kwargs: Any) -> None:
        if create and extracted:
            self.allowed_zones.set(extracted)


class ResourceFactory(factory.django.DjangoModelFactory):
    """A web app shared with the ``employee`` role group unless told otherwise."""

    class Meta:
        model = Resource
        django_get_or_create = ("slug",)
        skip_postgeneration_save = True

    slug = factory.Sequence(lambda n: f"app{n}")
    name = factory.LazyAttribute(lambda r: r.slug.replace("-", " ").title())
    kind = "web"
    upstream = factory.LazyAttribute(lambda r: f"http://127.0.0.1:9/{r.slug}")
    description = factory.LazyAttribute(lambda r: f"What {r.slug} is for")
    tier = factory.SubFactory(TierFactory)

    @factory.post_generation
    def groups(self: Resource, create: bool, extracted: list[str] | None, **kwargs: Any) -> None:
        if create:
            names = ["employee"] if extracted is None else extracted
            self.allowed_groups.set([Group.objects.get_or_create(name=n)[0] for n in names])


def share(resource: Resource, *users: Any) -> Resource:
    """Share ``resource`` with ``users`` directly."""
    resource.allowed_users.add(*users)
    return resource


def person(username: str, role: str = "employee") -> Any:
    """A user of ``role`` with a confirmed authenticator (so they can sign in fully)."""
    from tests.factories import UserFactory, enrol_totp

    user = UserFactory(username=username, role=role)
    user.totp = enrol_totp(user)
    return user


def client_for(user: Any) -> Any:
    """An HTTPS client signed in as ``user`` with password and TOTP."""
    from tests.conftest import https_client, sign_in

    client = https_client()
    sign_in(client, user)
    return client
