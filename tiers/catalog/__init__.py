"""Catalog as code: tiers, network zones and resources from YAML, and back again.

Admins keep the catalog in git and apply it, as with Pomerium routes or Teleport resources.
Reading follows the house pattern: :func:`known_names` is the only I/O, :func:`parse_catalog`
is pure and turns the YAML into frozen specs or one :class:`CatalogError` listing every
problem with its line, and :func:`apply_catalog` writes only the differences, in one
transaction. An item in the file is described completely (a missing key means its default);
an item missing from the file is left alone. A tier's keys come from its rules
(:data:`tiers.rules.TIER_RULES`) and are checked by the same form as the Manage page's.

The modules: :mod:`.specs` (what a file says), :mod:`.reader` (YAML with lines),
:mod:`.upstream`, :mod:`.parse`, :mod:`.plan` (the database side), :mod:`.apply`, :mod:`.export`.
"""

from __future__ import annotations

from tiers.catalog.apply import apply_catalog, apply_reviewed
from tiers.catalog.export import EXPORT_HEADER, export_catalog
from tiers.catalog.parse import ACTION_KEYS, MFA_KEYS, RESOURCE_KEYS, TIER_KEYS, ZONE_KEYS, parse_catalog
from tiers.catalog.plan import known_names, load_catalog, plan_catalog
from tiers.catalog.specs import (
    ACTOR,
    MAX_BYTES,
    ActionRuleSpec,
    Applied,
    Catalog,
    CatalogError,
    Change,
    Held,
    KnownNames,
    Problem,
    ResourceSpec,
    TierSpec,
    ZoneSpec,
)
from tiers.catalog.upstream import upstream_problem

__all__ = [
    "ACTION_KEYS", "ACTOR", "EXPORT_HEADER", "MAX_BYTES", "MFA_KEYS", "RESOURCE_KEYS", "TIER_KEYS",
    "ZONE_KEYS", "ActionRuleSpec", "Applied", "Catalog", "CatalogError", "Change", "Held", "KnownNames",
    "Problem", "ResourceSpec", "TierSpec", "ZoneSpec", "apply_catalog", "apply_reviewed", "export_catalog",
    "known_names", "load_catalog", "parse_catalog", "plan_catalog", "upstream_problem",
]
