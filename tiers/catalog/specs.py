"""What a valid catalog file says, and what applying it does: frozen specs, problems, changes."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any

from tiers.models import PolicyChangeRequest
from tiers.policy_changes import Weakening
from tiers.rules import TIER_RULES, normal_factors, yaml_state

__all__ = [
    "ACTOR", "DEFAULT_RULES", "MAX_BYTES", "ActionRuleSpec", "Applied", "Catalog", "CatalogError",
    "Change", "Held", "KnownNames", "Problem", "ResourceSpec", "TierSpec", "ZoneSpec",
]

ACTOR = "catalog"
MAX_BYTES = 1024 * 1024
DEFAULT_RULES: Mapping[str, Any] = MappingProxyType({rule.name: rule.default for rule in TIER_RULES})


# --- the specs: what a valid file says --------------------------------------------------------


@dataclass(frozen=True)
class ZoneSpec:
    """A network zone as the file describes it."""

    name: str
    cidrs: tuple[str, ...]
    trusted: bool = False
    line: int = field(default=0, compare=False)

    def state(self) -> dict[str, Any]:
        return {"cidrs": list(self.cidrs), "trusted": self.trusted}


@dataclass(frozen=True)
class TierSpec:
    """A tier as the file describes it: its name and one value per rule of
    :data:`tiers.rules.TIER_RULES` (a key missing from the file means the rule's default)."""

    name: str
    rules: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType(DEFAULT_RULES))
    line: int = field(default=0, compare=False)

    def state(self) -> dict[str, Any]:
        return yaml_state(self.rules)

    def tier_state(self) -> dict[str, Any]:
        """As a :func:`tiers.policy_changes.tier_state`."""
        return {**self.rules, "allowed_zones": sorted(self.rules["allowed_zones"]),
                "accepted_factors": normal_factors(self.rules["accepted_factors"])}

    def but(self, **values: Any) -> TierSpec:
        """This spec with some rules set otherwise (the held ones, kept as they are)."""
        return replace(self, rules=MappingProxyType({**self.rules, **values}))


@dataclass(frozen=True)
class ActionRuleSpec:
    """One action rule; the file's order is the evaluation order (first match wins)."""

    methods: tuple[str, ...]
    path: str
    action_class: str

    def state(self) -> dict[str, Any]:
        return {"methods": list(self.methods), "path": self.path, "class": self.action_class}


@dataclass(frozen=True)
class ResourceSpec:
    """A resource as the file describes it."""

    slug: str
    name: str
    kind: str
    upstream: str
    tier: str
    groups: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    description: str = ""
    enabled: bool = True
    paths_case_sensitive: bool = False
    actions: tuple[ActionRuleSpec, ...] = ()
    line: int = field(default=0, compare=False)

    def state(self) -> dict[str, Any]:
        return {
            "name": self.name, "kind": self.kind, "upstream": self.upstream, "tier": self.tier,
            "groups": sorted(self.groups), "users": sorted(self.users),
            "description": self.description, "enabled": self.enabled,
            "paths_case_sensitive": self.paths_case_sensitive,
            "actions": [a.state() for a in self.actions],
        }


@dataclass(frozen=True)
class Catalog:
    """A whole, valid catalog file."""

    source: str
    zones: tuple[ZoneSpec, ...] = ()
    tiers: tuple[TierSpec, ...] = ()
    resources: tuple[ResourceSpec, ...] = ()


@dataclass(frozen=True)
class KnownNames:
    """What already exists, for checking references: gathered before parsing."""

    groups: frozenset[str] = frozenset()
    users: frozenset[str] = frozenset()
    tiers: tuple[str, ...] = ()  # by rank, for messages
    zones: tuple[str, ...] = ()


@dataclass(frozen=True)
class Problem:
    """One thing wrong with the file, and where: ``file:line: path: message``."""

    source: str
    line: int
    path: str
    message: str

    def __str__(self) -> str:
        where = f"{self.path}: " if self.path else ""
        return f"{self.source}:{self.line}: {where}{self.message}"


class CatalogError(ValueError):
    """The file is not a valid catalog; carries every problem found, not just the first."""

    def __init__(self, problems: Iterable[Problem]) -> None:
        self.problems = tuple(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class Change:
    """One item that applying would create or update, with each changed key's (old, new)."""

    kind: str  # zone | tier | resource
    name: str
    verb: str  # create | update
    fields: Mapping[str, tuple[Any, Any]] = field(default_factory=lambda: MappingProxyType({}))

    @property
    def retag(self) -> tuple[str, str] | None:
        """(from, to) when a resource moves to another tier ("" as from on creation)."""
        if self.kind != "resource" or "tier" not in self.fields:
            return None
        old, new = self.fields["tier"]
        return (old or "", new)

    def __str__(self) -> str:
        if self.verb == "create":
            return f"create {self.kind} {self.name}"
        diffs = "; ".join(f"{key}: {old!r} -> {new!r}" for key, (old, new) in self.fields.items())
        return f"update {self.kind} {self.name}: {diffs}"


@dataclass(frozen=True)
class Held:
    """A weakening item of the file that was not applied: it waits for a second admin."""

    source: str
    line: int
    kind: str  # tier | resource
    name: str
    weakenings: tuple[Weakening, ...]
    request: PolicyChangeRequest | None = None  # None on a dry run

    def __str__(self) -> str:
        what = "; ".join(str(w) for w in self.weakenings)
        filed = (f"change request #{self.request.pk} filed" if self.request is not None
                 else "a change request would be filed")
        return (f"{self.source}:{self.line}: {self.kind} {self.name}: lowers protection ({what}); "
                f"not applied, {filed}: it needs a second admin's approval")


@dataclass(frozen=True)
class Applied:
    """What an apply wrote (``changes``) and what it held for a second admin (``held``)."""

    changes: tuple[Change, ...]
    held: tuple[Held, ...] = ()

