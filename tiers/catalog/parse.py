"""Parsing a catalog file: pure, every problem at once, each named by ``file:line`` and path.

A tier entry is read rule by rule (:data:`tiers.rules.TIER_RULES`) and then validated by the
same form as the Manage page's tier edit (:class:`tiers.forms.TierRulesForm`), so the file
and the page accept and refuse the same things. References (zones, tiers, groups, users) are
checked against :class:`~tiers.catalog.specs.KnownNames`, gathered beforehand.
"""

from __future__ import annotations

import ipaddress
import re
from types import MappingProxyType
from typing import Any

import yaml

from tiers.catalog.reader import NULL, Reader, compose, known_list, line_of
from tiers.catalog.specs import (
    DEFAULT_RULES,
    ActionRuleSpec,
    Catalog,
    CatalogError,
    KnownNames,
    Problem,
    ResourceSpec,
    TierSpec,
    ZoneSpec,
)
from tiers.catalog.upstream import upstream_problem
from tiers.forms import TierRulesForm
from tiers.models import ResourceKind
from tiers.rules import RULES_BY_NAME, TIER_RULES, Kind, TierRule
from tiers.types import ActionClass

__all__ = ["ACTION_KEYS", "MFA_KEYS", "RESOURCE_KEYS", "TIER_KEYS", "ZONE_KEYS", "parse_catalog"]

_METHOD = re.compile(r"[A-Z]{1,16}")

ZONE_KEYS = ("name", "cidrs", "trusted")
TIER_KEYS = ("name", *dict.fromkeys(rule.path[0] for rule in TIER_RULES))
MFA_KEYS = tuple(rule.path[1] for rule in TIER_RULES if rule.path[0] == "mfa")
RESOURCE_KEYS = ("slug", "name", "kind", "upstream", "tier", "groups", "users", "description",
                 "enabled", "paths_case_sensitive", "actions")
ACTION_KEYS = ("methods", "path", "class")


def parse_catalog(text: str | bytes, *, source: str, known: KnownNames) -> Catalog:
    """The catalog in ``text``, or a :class:`CatalogError` with every problem (pure: no I/O)."""
    root, loader, problems = compose(text, source)
    if problems or loader is None:
        raise CatalogError(problems)
    if root is None:
        raise CatalogError([Problem(source, 1, "", "the file is empty; expected zones, tiers, resources")])
    reader = Reader(source, loader, known)
    top = reader.mapping(root, "", ("zones", "tiers", "resources"))
    if top is None:
        raise CatalogError(reader.problems)

    def section(key: str) -> list[yaml.Node]:
        node = top.get(key)
        if isinstance(node, yaml.ScalarNode) and node.tag == NULL:
            return []  # "tiers:" with every entry commented out
        return reader.sequence(node, key)

    zone_nodes, tier_nodes, resource_nodes = section("zones"), section("tiers"), section("resources")
    zones = _parse_all(zone_nodes, "zones", "name", lambda n, p: _parse_zone(n, p, reader), reader)
    known_zones = list(dict.fromkeys([*_names_in(zone_nodes, "name"), *known.zones]))
    tiers = _parse_all(tier_nodes, "tiers", "name",
                       lambda n, p: _parse_tier(n, p, reader, known_zones), reader)
    known_tiers = list(dict.fromkeys([*_names_in(tier_nodes, "name"), *known.tiers]))
    resources = _parse_all(resource_nodes, "resources", "slug",
                           lambda n, p: _parse_resource(n, p, reader, known_tiers), reader)
    if reader.problems:
        raise CatalogError(sorted(reader.problems, key=lambda p: p.line))
    return Catalog(source=source, zones=tuple(zones), tiers=tuple(tiers), resources=tuple(resources))


def _named(item: yaml.Node, key: str) -> list[tuple[str, yaml.Node]]:
    """The ``key`` value of one entry (with its node), even if the entry has other problems."""
    if not isinstance(item, yaml.MappingNode):
        return []
    return [(v.value, v) for k, v in item.value
            if isinstance(k, yaml.ScalarNode) and k.value == key and isinstance(v, yaml.ScalarNode)][:1]


def _names_in(items: list[yaml.Node], key: str) -> list[str]:
    return [name for item in items for name, _ in _named(item, key)]


def _parse_all(items: list[yaml.Node], section: str, key: str, parse: Any, reader: Reader) -> list[Any]:
    """Parse each entry of a section; keep the ones without problems; flag duplicate names."""
    specs, seen = [], {}
    for i, item in enumerate(items):
        path = f"{section}[{i}]"
        before = len(reader.problems)
        spec = parse(item, path)
        for name, name_node in _named(item, key):
            reader.unique(name_node, f"{path}.{key}", name, seen, "slug" if key == "slug" else "name")
        if spec is not None and len(reader.problems) == before:
            specs.append(spec)
    return specs


def _parse_zone(node: yaml.Node, path: str, reader: Reader) -> ZoneSpec | None:
    m = reader.mapping(node, path, ZONE_KEYS, required=("name", "cidrs"))
    if m is None:
        return None
    name = reader.slug(m.get("name"), f"{path}.name", max_length=63)
    cidrs: list[str] = []
    items = reader.sequence(m.get("cidrs"), f"{path}.cidrs")
    if "cidrs" in m and not items and isinstance(m["cidrs"], yaml.SequenceNode):
        reader.error(m["cidrs"], f"{path}.cidrs", "a zone needs at least one network")
    for i, item in enumerate(items):
        cidr = reader.string(item, f"{path}.cidrs[{i}]", max_length=50, required=True)
        if not cidr:
            continue
        try:
            ipaddress.ip_network(cidr, strict=False)
        except ValueError:
            reader.error(item, f"{path}.cidrs[{i}]", f"'{cidr}' is not a network (e.g. 10.0.0.0/8)")
            continue
        if cidr in cidrs:
            reader.error(item, f"{path}.cidrs[{i}]", f"'{cidr}' is listed twice")
        cidrs.append(cidr)
    trusted = reader.boolean(m.get("trusted"), f"{path}.trusted", default=False)
    return ZoneSpec(name=name, cidrs=tuple(cidrs), trusted=trusted, line=line_of(node))


def _parse_tier(node: yaml.Node, path: str, reader: Reader, known_zones: list[str]) -> TierSpec | None:
    """A tier entry: each rule read as YAML typed it, then checked by the tier form itself."""
    m = reader.mapping(node, path, TIER_KEYS, required=("name",))
    if m is None:
        return None
    name = reader.slug(m.get("name"), f"{path}.name", max_length=32)
    nested = {"mfa": reader.mapping(m["mfa"], f"{path}.mfa", MFA_KEYS) or {}} if "mfa" in m else {}
    values, nodes = dict(DEFAULT_RULES), {}
    for rule in TIER_RULES:
        *parents, key = rule.path
        value_node = (nested.get(parents[0], {}) if parents else m).get(key)
        if value_node is None:
            continue
        nodes[rule.name] = value_node
        read, value = _read_rule(reader, rule, value_node, _rule_path(path, rule), known_zones)
        if read:
            values[rule.name] = value
    form = TierRulesForm(values, zone_names=known_zones)
    if not form.is_valid():
        for field, messages in form.errors.items():
            where = _rule_path(path, RULES_BY_NAME[field]) if field in nodes else path
            for message in messages:
                reader.error(nodes.get(field, node), where, message)
        return None
    return TierSpec(name=name, rules=MappingProxyType(form.wanted_state()), line=line_of(node))


def _rule_path(path: str, rule: TierRule) -> str:
    return ".".join((path, *rule.path))


def _read_rule(reader: Reader, rule: TierRule, node: yaml.Node, where: str,
               known_zones: list[str]) -> tuple[bool, Any]:
    """One rule's value as YAML typed it: (read, value); a wrong type is a problem noted."""
    if rule.kind is Kind.TEXT:
        return True, reader.string(node, where, max_length=rule.max_length)
    if rule.kind in (Kind.COUNT, Kind.SECONDS):
        return reader.number(node, where, nullable=rule.nullable,
                             unit="seconds" if rule.kind is Kind.SECONDS else "")
    if rule.kind is Kind.CHOICE:
        value = reader.text(node, where, "one of " + ", ".join(v for v, _ in rule.choices))
        return value is not None, value
    if rule.kind is Kind.FLAG:
        return True, reader.boolean(node, where, default=rule.default)
    if rule.kind is Kind.ZONES:
        return True, reader.names(node, where, known=known_zones, what="zone")
    factors = reader.factors(node, where)
    return factors is not None, factors


def _parse_action(node: yaml.Node, path: str, reader: Reader) -> ActionRuleSpec | None:
    m = reader.mapping(node, path, ACTION_KEYS, required=("class",))
    if m is None:
        return None
    methods: list[str] = []
    items = reader.sequence(m.get("methods"), f"{path}.methods") if "methods" in m else None
    if items is not None and not items and isinstance(m["methods"], yaml.SequenceNode):
        reader.error(m["methods"], f"{path}.methods", "list at least one method, or '*' for any")
    for i, item in enumerate(items or []):
        method = reader.string(item, f"{path}.methods[{i}]", max_length=16, required=True).upper()
        if method and method != "*" and not _METHOD.fullmatch(method):
            reader.error(item, f"{path}.methods[{i}]", f"'{method}' is not an HTTP method (or '*')")
        elif method in methods:
            reader.error(item, f"{path}.methods[{i}]", f"'{method}' is listed twice")
        elif method:
            methods.append(method)
    if len(",".join(methods)) > 64:
        reader.error(m["methods"], f"{path}.methods", "too many methods (at most 64 characters joined)")
    glob = reader.string(m.get("path"), f"{path}.path", default="*", max_length=200, required=True)
    if glob and not (glob.startswith("/") or glob == "*"):
        reader.error(m["path"], f"{path}.path", f"a path glob starts with '/' (or is '*'), got {glob!r}")
    action_class = reader.choice(m.get("class"), f"{path}.class", [c.value for c in ActionClass],
                                 default=ActionClass.READ.value)
    return ActionRuleSpec(methods=tuple(methods or ["*"]), path=glob, action_class=action_class)


def _parse_resource(node: yaml.Node, path: str, reader: Reader,
                    known_tiers: list[str]) -> ResourceSpec | None:
    m = reader.mapping(node, path, RESOURCE_KEYS, required=("slug", "name", "kind", "upstream", "tier"))
    if m is None:
        return None
    kind = reader.choice(m.get("kind"), f"{path}.kind", [k.value for k in ResourceKind], default="")
    upstream = reader.string(m.get("upstream"), f"{path}.upstream", max_length=300, required=True)
    if upstream and kind and (problem := upstream_problem(kind, upstream)):
        reader.error(m["upstream"], f"{path}.upstream", problem)
    tier = reader.string(m.get("tier"), f"{path}.tier", max_length=32, required=True)
    if tier and tier not in known_tiers:
        reader.error(m["tier"], f"{path}.tier", f"unknown tier '{tier}' ({known_list(known_tiers)})")
    actions = []
    for i, item in enumerate(reader.sequence(m.get("actions"), f"{path}.actions")):
        rule = _parse_action(item, f"{path}.actions[{i}]", reader)
        if rule is not None:
            actions.append(rule)
    return ResourceSpec(
        slug=reader.slug(m.get("slug"), f"{path}.slug", max_length=63),
        name=reader.string(m.get("name"), f"{path}.name", max_length=100, required=True),
        kind=kind, upstream=upstream, tier=tier,
        groups=reader.names(m.get("groups"), f"{path}.groups", known=reader.known.groups, what="group"),
        users=reader.names(m.get("users"), f"{path}.users", known=reader.known.users, what="user",
                           list_known=False),
        description=reader.string(m.get("description"), f"{path}.description", max_length=300),
        enabled=reader.boolean(m.get("enabled"), f"{path}.enabled", default=True),
        paths_case_sensitive=reader.boolean(m.get("paths_case_sensitive"),
                                            f"{path}.paths_case_sensitive", default=False),
        actions=tuple(actions),
        line=line_of(node),
    )
