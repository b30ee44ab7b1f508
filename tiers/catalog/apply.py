"""Applying a catalog: only the differences, in one transaction, audited; what lowers
protection is held for a second admin (four eyes, docs/decisions/0018)."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import transaction

from portal.audit.chain import record
from tiers.catalog.plan import diff, plan_catalog, resource_state, resources_qs, tier_state, tiers_qs
from tiers.catalog.specs import ACTOR, Applied, Catalog, Change, Held, ResourceSpec, TierSpec, ZoneSpec
from tiers.models import ActionRule, NetworkZone, Resource, Tier, TierChange
from tiers.policy_changes import Weakening, file_request, move_weakens, weakens
from tiers.policy_changes import tier_state as rules_state
from tiers.rules import TIER_RULES, Kind

__all__ = ["apply_catalog", "apply_reviewed"]


def apply_catalog(catalog: Catalog, *, dry_run: bool = False,
                  requested_by: AbstractBaseUser | None = None) -> tuple[Change, ...]:
    """The changes :func:`apply_reviewed` wrote (or would write, on a dry run)."""
    return apply_reviewed(catalog, dry_run=dry_run, requested_by=requested_by).changes


def apply_reviewed(catalog: Catalog, *, dry_run: bool = False,
                   requested_by: AbstractBaseUser | None = None) -> Applied:
    """Create or update what differs, all in one transaction, with audit events — except what
    lowers protection, which becomes a change request for a second admin (four eyes).

    Each created or updated item writes one ``catalog.apply`` event; a resource that moves
    to another tier also gets a :class:`TierChange` row and a ``catalog.retag`` event. A tier
    whose rules the file loosens gets the rest of its changes, and the loosened fields stay
    as they are; a resource the file moves to a weaker tier (judged on the tiers as this
    apply leaves them) keeps its tier and gets the rest. Each held item files one
    ``policy.change_requested`` naming ``FILE:LINE``.
    """
    with transaction.atomic():
        return _Apply(catalog, dry_run, requested_by).run()


class _Apply:
    """One apply run: each planned change written (or not, on a dry run) or held."""

    def __init__(self, catalog: Catalog, dry_run: bool, requested_by: AbstractBaseUser | None) -> None:
        self.catalog, self.dry_run, self.requested_by = catalog, dry_run, requested_by
        self.zones = {s.name: s for s in catalog.zones}
        self.tiers = {s.name: s for s in catalog.tiers}
        self.resources = {s.slug: s for s in catalog.resources}
        self.tiers_after: dict[str, dict[str, Any]] = {}  # rules as this apply leaves them
        self.applied: list[Change] = []
        self.held: list[Held] = []

    def run(self) -> Applied:
        for change in plan_catalog(self.catalog):
            step = {"zone": self.zone, "tier": self.tier}.get(change.kind, self.resource)
            item = step(change)
            if item is None:
                continue
            self.applied.append(item)
            if not self.dry_run:
                record("catalog.apply", outcome="success", actor=ACTOR,
                       resource=item.name if item.kind == "resource" else "",
                       detail=_audit_detail(item, self.catalog.source))
        return Applied(tuple(self.applied), tuple(self.held))

    def zone(self, change: Change) -> Change | None:
        if not self.dry_run:
            _write_zone(self.zones[change.name])
        return change

    def tier(self, change: Change) -> Change | None:
        """Write the tier, all but the rules it loosens (those are held)."""
        spec, item = self.tiers[change.name], change
        if change.verb == "update":
            tier = tiers_qs().get(name=change.name)
            before = rules_state(tier)
            found = weakens(before, spec.tier_state())
            if found:
                self.hold("tier", spec.line, spec.name, found, {w.field: [w.old, w.new] for w in found},
                          tier=tier)
                spec = spec.but(**{w.field: before[w.field] for w in found})
                item = diff("tier", spec.name, tier_state(tier), spec.state())
        self.tiers_after[spec.name] = spec.tier_state()
        if item is not None and not self.dry_run:
            _write_tier(spec)
        return item

    def resource(self, change: Change) -> Change | None:
        """Write the resource, but keep its tier when the move would lower protection."""
        spec, item = self.resources[change.name], change
        if change.verb == "update" and "tier" in change.fields:
            resource = resources_qs().get(slug=change.name)
            found = move_weakens(self.tier_after(resource.tier.name), self.tier_after(spec.tier))
            if found:
                self.hold("resource", spec.line, spec.slug, found,
                          {"tier": [resource.tier.name, spec.tier]}, resource=resource)
                spec = replace(spec, tier=resource.tier.name)
                item = diff("resource", spec.slug, resource_state(resource), spec.state())
        if item is not None and not self.dry_run:
            _write_resource(spec, item)
        return item

    def tier_after(self, name: str) -> dict[str, Any]:
        if name not in self.tiers_after:
            self.tiers_after[name] = rules_state(tiers_qs().get(name=name))
        return self.tiers_after[name]

    def hold(self, kind: str, line: int, name: str, found: list[Weakening],
             changes: dict[str, list[Any]], **target: Any) -> None:
        source = self.catalog.source
        request = None if self.dry_run else file_request(
            changes=changes, weakenings=found, by=self.requested_by,
            reason=f"catalog apply {source}", source=f"{source}:{line}", **target)
        self.held.append(Held(source, line, kind, name, tuple(found), request))


def _audit_detail(change: Change, source: str) -> dict[str, Any]:
    if change.verb == "create":
        fields: Any = {k: new for k, (_, new) in change.fields.items()}
    else:
        fields = {k: {"from": old, "to": new} for k, (old, new) in change.fields.items()}
    return {"kind": change.kind, "name": change.name, "change": change.verb, "source": source,
            "fields": fields}


def _write_zone(spec: ZoneSpec) -> None:
    zone = NetworkZone.objects.filter(name=spec.name).first() or NetworkZone(name=spec.name)
    zone.cidrs = "\n".join(spec.cidrs)
    zone.trusted = spec.trusted
    zone.save()


def _write_tier(spec: TierSpec) -> None:
    tier = Tier.objects.filter(name=spec.name).first() or Tier(name=spec.name)
    for rule in TIER_RULES:
        if rule.kind is not Kind.ZONES:
            setattr(tier, rule.name, spec.rules[rule.name])
    tier.save()
    tier.allowed_zones.set(NetworkZone.objects.filter(name__in=spec.rules["allowed_zones"]))


def _write_resource(spec: ResourceSpec, change: Change) -> None:
    User = get_user_model()
    resource = Resource.objects.filter(slug=spec.slug).first() or Resource(slug=spec.slug)
    resource.name, resource.kind, resource.upstream = spec.name, spec.kind, spec.upstream
    resource.description, resource.enabled = spec.description, spec.enabled
    resource.paths_case_sensitive = spec.paths_case_sensitive
    resource.tier = Tier.objects.get(name=spec.tier)
    resource.save()
    resource.allowed_groups.set([Group.objects.get(name=name) for name in spec.groups])
    resource.allowed_users.set([User.objects.get(**{User.USERNAME_FIELD: name}) for name in spec.users])
    if "actions" in change.fields:
        resource.action_rules.all().delete()
        ActionRule.objects.bulk_create(
            ActionRule(resource=resource, order=i, methods=",".join(rule.methods), path=rule.path,
                       action_class=rule.action_class)
            for i, rule in enumerate(spec.actions))
    if (retag := change.retag) is not None:
        TierChange.objects.create(resource=resource, from_tier=retag[0], to_tier=retag[1],
                                  changed_by=ACTOR)
        if change.verb == "update":
            record("catalog.retag", outcome="success", actor=ACTOR, resource=spec.slug,
                   detail={"from": retag[0], "to": retag[1]})
