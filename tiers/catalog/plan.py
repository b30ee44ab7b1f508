"""The database side of a catalog: what exists now, each item's state, and what applying would change."""

from __future__ import annotations

from types import MappingProxyType
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db.models import QuerySet

from tiers.catalog.parse import parse_catalog
from tiers.catalog.reader import split_cidrs, split_methods
from tiers.catalog.specs import Catalog, Change, KnownNames
from tiers.models import NetworkZone, Resource, Tier
from tiers.rules import yaml_state

__all__ = [
    "diff", "known_names", "load_catalog", "plan_catalog", "resource_state", "resources_qs", "tier_state",
    "tiers_qs", "zone_state",
]


def known_names() -> KnownNames:
    """Groups, users, tiers and zones that exist now, for checking a file's references."""
    User = get_user_model()
    return KnownNames(
        groups=frozenset(Group.objects.values_list("name", flat=True)),
        users=frozenset(User.objects.values_list(User.USERNAME_FIELD, flat=True)),
        tiers=tuple(Tier.objects.order_by("rank", "name").values_list("name", flat=True)),
        zones=tuple(NetworkZone.objects.order_by("name").values_list("name", flat=True)),
    )


def load_catalog(text: str | bytes, *, source: str) -> Catalog:
    """Parse ``text`` against what exists now (see :func:`parse_catalog`)."""
    return parse_catalog(text, source=source, known=known_names())


def zone_state(zone: NetworkZone) -> dict[str, Any]:
    return {"cidrs": split_cidrs(zone.cidrs), "trusted": zone.trusted}


def tier_state(tier: Tier) -> dict[str, Any]:
    """A tier row as a catalog file writes it (see :func:`tiers.rules.yaml_state`)."""
    return yaml_state(tier.rule_values())


def resource_state(resource: Resource) -> dict[str, Any]:
    return {
        "name": resource.name, "kind": resource.kind, "upstream": resource.upstream,
        "tier": resource.tier.name,
        "groups": sorted(g.name for g in resource.allowed_groups.all()),
        "users": sorted(u.get_username() for u in resource.allowed_users.all()),
        "description": resource.description, "enabled": resource.enabled,
        "paths_case_sensitive": resource.paths_case_sensitive,
        "actions": [{"methods": split_methods(r.methods) or ["*"], "path": r.path,
                     "class": r.action_class} for r in resource.action_rules.all()],
    }


def tiers_qs() -> QuerySet[Tier]:
    return Tier.objects.prefetch_related("allowed_zones")


def resources_qs() -> QuerySet[Resource]:
    return Resource.objects.select_related("tier").prefetch_related(
        "allowed_groups", "allowed_users", "action_rules")


def diff(kind: str, name: str, old: dict[str, Any] | None, new: dict[str, Any]) -> Change | None:
    if old is None:
        return Change(kind, name, "create", MappingProxyType({k: (None, v) for k, v in new.items()}))
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    return Change(kind, name, "update", MappingProxyType(changed)) if changed else None


def plan_catalog(catalog: Catalog) -> tuple[Change, ...]:
    """What applying ``catalog`` would change, item by item; nothing for unchanged items."""
    zones = {z.name: zone_state(z) for z in NetworkZone.objects.filter(
        name__in=[s.name for s in catalog.zones])}
    tiers = {t.name: tier_state(t) for t in tiers_qs().filter(name__in=[s.name for s in catalog.tiers])}
    resources = {r.slug: resource_state(r) for r in resources_qs().filter(
        slug__in=[s.slug for s in catalog.resources])}
    changes = [
        *(diff("zone", s.name, zones.get(s.name), s.state()) for s in catalog.zones),
        *(diff("tier", s.name, tiers.get(s.name), s.state()) for s in catalog.tiers),
        *(diff("resource", s.slug, resources.get(s.slug), s.state()) for s in catalog.resources),
    ]
    return tuple(c for c in changes if c is not None)
