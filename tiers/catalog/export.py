"""Exporting the catalog as YAML that :func:`tiers.catalog.parse.parse_catalog` reads back
to the same state (export, then apply, is a no-op)."""

from __future__ import annotations

from typing import Any

import yaml

from tiers.catalog.plan import resource_state, resources_qs, tier_state, tiers_qs, zone_state
from tiers.models import NetworkZone

__all__ = ["EXPORT_HEADER", "export_catalog"]


class _Flow(dict):
    """A small mapping written on one line, e.g. ``mfa: {read: 900, write: 0, sensitive: 0}``."""


class _Dumper(yaml.SafeDumper):
    """Plain YAML that our own loader accepts: no anchors, short lists on one line."""

    def ignore_aliases(self, data: Any) -> bool:
        return True


def _represent_list(dumper: yaml.SafeDumper, data: list[Any]) -> yaml.Node:
    flat = all(isinstance(v, str | int | bool) or v is None for v in data)
    return dumper.represent_sequence("tag:yaml.org,2002:seq", data, flow_style=flat)


def _represent_flow(dumper: yaml.SafeDumper, data: _Flow) -> yaml.Node:
    return dumper.represent_mapping("tag:yaml.org,2002:map", data.items(), flow_style=True)


_Dumper.add_representer(list, _represent_list)
_Dumper.add_representer(_Flow, _represent_flow)

EXPORT_HEADER = (
    "# The portal's catalog, as printed by `manage.py catalog export`.\n"
    "# Apply with `manage.py catalog apply FILE` (see docs/catalog.md); unchanged items stay untouched.\n"
)


def export_catalog() -> str:
    """The whole catalog as YAML that :func:`parse_catalog` reads back to the same state."""
    zones = [{"name": z.name, **zone_state(z)} for z in NetworkZone.objects.order_by("name")]
    tiers = []
    for tier in tiers_qs().order_by("rank", "name"):
        state = tier_state(tier)
        for key, value in state.items():
            if isinstance(value, dict):  # mfa, accepted_factors: small, on one line
                state[key] = _Flow(value)
        tiers.append({"name": tier.name, **state})
    resources = []
    for resource in resources_qs().order_by("slug"):
        state = resource_state(resource)
        state["actions"] = [{"methods": a["methods"], "path": a["path"], "class": a["class"]}
                            for a in state["actions"]]
        resources.append({"slug": resource.slug, **state})
    sections = [yaml.dump({key: items}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)
                for key, items in (("zones", zones), ("tiers", tiers), ("resources", resources))]
    return EXPORT_HEADER + "\n".join(sections)
