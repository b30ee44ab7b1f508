"""Catalog as code: tiers, network zones and resources from YAML, and back again.

Admins keep the catalog in git and apply it, as with Pomerium routes or Teleport resources.
Reading follows the house pattern: :func:`known_names` is the only I/O, :func:`parse_catalog`
is pure and turns the YAML into frozen specs or one :class:`CatalogError` listing every
problem with its line, and :func:`apply_catalog` writes only the differences, in one
transaction. An item in the file is described completely (a missing key means its default);
an item missing from the file is left alone.
"""

from __future__ import annotations

import difflib
import ipaddress
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

import yaml
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import Group
from django.db import transaction
from django.db.models import QuerySet

from portal.audit.chain import record
from tiers.models import (
    AccessMode,
    ActionRule,
    NetworkZone,
    PolicyChangeRequest,
    Resource,
    ResourceKind,
    Tier,
    TierChange,
)
from tiers.policy_changes import Weakening, file_request, move_weakens, tier_state, weakens
from tiers.types import ActionClass, StreamControl

__all__ = [
    "ACTOR", "MAX_BYTES", "ActionRuleSpec", "Applied", "Catalog", "CatalogError", "Change", "Held",
    "KnownNames", "Problem", "ResourceSpec", "TierSpec", "ZoneSpec", "apply_catalog", "apply_reviewed",
    "export_catalog",
    "known_names", "load_catalog", "parse_catalog", "plan_catalog", "upstream_problem",
]

ACTOR = "catalog"
MAX_BYTES = 1024 * 1024

_MAX_INT = 2_147_483_647  # PositiveIntegerField on PostgreSQL
_MAX_SMALL = 32_767
# The same rule as tiers.models.slug_validator, anchored with fullmatch (``$`` admits "\n").
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")
_METHOD = re.compile(r"[A-Z]{1,16}")
_HOST_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")

_STR, _INT, _BOOL, _NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))
_TYPE_NAMES = {_STR: "a string", _INT: "an integer", _BOOL: "true/false", _NULL: "null",
               "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:timestamp": "a date"}

ZONE_KEYS = ("name", "cidrs", "trusted")
TIER_KEYS = (
    "name", "rank", "description", "access_mode", "mfa", "device_trust_required", "zones",
    "approval_required", "session_max_seconds", "idle_seconds", "reauth_interval_seconds",
    "clipboard_in", "clipboard_out", "file_transfer", "read_only", "recording", "watermark",
    "rate_limit_per_minute", "retention_days",
)
MFA_KEYS = ("read", "write", "sensitive")
RESOURCE_KEYS = ("slug", "name", "kind", "upstream", "tier", "groups", "users", "description",
                 "enabled", "paths_case_sensitive", "actions")
ACTION_KEYS = ("methods", "path", "class")


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
    """A tier as the file describes it; defaults are the model's."""

    name: str
    rank: int = 0
    description: str = ""
    access_mode: str = AccessMode.PROXY.value
    mfa_read: int | None = None
    mfa_write: int | None = None
    mfa_sensitive: int | None = 0
    device_trust_required: bool = False
    zones: tuple[str, ...] = ()
    approval_required: bool = False
    session_max_seconds: int = 8 * 3600
    idle_seconds: int = 30 * 60
    reauth_interval_seconds: int = 30
    clipboard_in: str = StreamControl.DENY.value
    clipboard_out: str = StreamControl.DENY.value
    file_transfer: str = StreamControl.DENY.value
    read_only: bool = False
    recording: bool = False
    watermark: bool = False
    rate_limit_per_minute: int | None = None
    retention_days: int = 365
    line: int = field(default=0, compare=False)

    def state(self) -> dict[str, Any]:
        return {
            "rank": self.rank, "description": self.description, "access_mode": self.access_mode,
            "mfa": {"read": self.mfa_read, "write": self.mfa_write, "sensitive": self.mfa_sensitive},
            "device_trust_required": self.device_trust_required, "zones": sorted(self.zones),
            "approval_required": self.approval_required,
            "session_max_seconds": self.session_max_seconds, "idle_seconds": self.idle_seconds,
            "reauth_interval_seconds": self.reauth_interval_seconds,
            "clipboard_in": self.clipboard_in, "clipboard_out": self.clipboard_out,
            "file_transfer": self.file_transfer, "read_only": self.read_only,
            "recording": self.recording, "watermark": self.watermark,
            "rate_limit_per_minute": self.rate_limit_per_minute,
            "retention_days": self.retention_days,
        }


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


# --- reading YAML safely, keeping lines ---------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe loading without anchors, aliases or explicit tags: a catalog is plain data.

    Refusing aliases also rules out "billion laughs" expansion; refusing tags keeps every
    value one of the plain YAML types that the checks below understand.
    """

    def compose_node(self, parent: Any, index: Any) -> Any:
        event = self.peek_event()
        if isinstance(event, yaml.AliasEvent):
            raise yaml.composer.ComposerError(
                None, None, f"aliases (*{event.anchor}) are not allowed in a catalog", event.start_mark)
        if getattr(event, "anchor", None) is not None:
            raise yaml.composer.ComposerError(
                None, None, f"anchors (&{event.anchor}) are not allowed in a catalog", event.start_mark)
        if getattr(event, "tag", None) not in (None, "!"):
            raise yaml.composer.ComposerError(
                None, None, f"tags ({event.tag}) are not allowed in a catalog", event.start_mark)
        return super().compose_node(parent, index)


def _line(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def _shown(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"{_TYPE_NAMES.get(node.tag, 'a value')} ({value!r})" if node.tag != _NULL else "null"


def _join(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def _known_list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"known: {shown}" if names else "none exist yet"


# --- checking values ------------------------------------------------------------------------------


def upstream_problem(kind: str, upstream: str) -> str | None:
    """Why ``upstream`` cannot serve a resource of ``kind``, or None when it can."""
    if not upstream or any(c.isspace() for c in upstream):
        return "must not be empty or contain spaces"
    if kind == ResourceKind.WEB:
        try:
            parts = urlsplit(upstream)
        except ValueError:
            return f"not a valid URL: {upstream!r}"
        if parts.scheme not in ("http", "https") or not parts.netloc:
            return f"a web upstream must be an http:// or https:// URL, got {upstream!r}"
        if parts.username is not None or parts.password is not None:
            return "must not carry credentials (they would end up in git)"
        if not parts.hostname:
            return f"has no host: {upstream!r}"
        try:
            parts.port  # noqa: B018 - urlsplit checks the port only when asked
        except ValueError:
            return f"has an invalid port: {upstream!r}"
        if parts.fragment:
            return "must not have a #fragment"
        if ":" not in parts.hostname:
            return _host_problem(parts.hostname)
        try:
            ipaddress.IPv6Address(parts.hostname)
        except ValueError:
            return f"not a valid IPv6 address: {parts.hostname!r}"
        return None
    if "://" in upstream:
        return f"a {kind} upstream is host:port, not a URL (got {upstream!r})"
    if upstream.startswith("["):
        host, sep, port = upstream[1:].partition("]:")
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            return f"expected [IPv6 address]:port, got {upstream!r}"
    else:
        host, sep, port = upstream.rpartition(":")
        if not sep or not host:
            return f"expected host:port (e.g. desktop.internal:5901), got {upstream!r}"
        if ":" in host:
            return f"put an IPv6 address in brackets, e.g. [::1]:{port or 5901}"
        if problem := _host_problem(host):
            return problem
    if not sep or not re.fullmatch(r"[0-9]{1,5}", port) or not 1 <= int(port) <= 65535:
        return f"port must be a number from 1 to 65535, got {port!r}"
    return None


def _host_problem(host: str) -> str | None:
    if re.fullmatch(r"[0-9.]+", host):
        try:
            ipaddress.IPv4Address(host)
        except ValueError:
            return f"not a valid IPv4 address: {host!r}"
        return None
    labels = host.rstrip(".").split(".")
    if len(host) > 253 or not all(_HOST_LABEL.fullmatch(label) for label in labels):
        return f"not a valid host name: {host!r}"
    return None


def _split_cidrs(text: str) -> list[str]:
    """The CIDRs of a zone as stored: one per line or comma-separated (see NetworkZone)."""
    return [p.strip() for p in text.replace(",", "\n").splitlines() if p.strip()]


def _split_methods(text: str) -> list[str]:
    return [m.strip().upper() for m in text.split(",") if m.strip()]


class _Reader:
    """Walks the composed YAML, collecting every problem instead of stopping at the first."""

    def __init__(self, source: str, loader: _Loader, known: KnownNames) -> None:
        self.source = source
        self.loader = loader
        self.known = known
        self.problems: list[Problem] = []

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, _line(node), path, message))

    # shapes

    def mapping(self, node: yaml.Node, path: str, keys: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping with keys {', '.join(keys)}; got {_shown(node)}")
            return None
        found: dict[str, yaml.Node] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != _STR:
                self.error(key_node, path, f"keys must be plain strings, got {_shown(key_node)}")
                continue
            key = key_node.value
            if key in lines:
                self.error(key_node, _join(path, key), f"duplicate key (first at line {lines[key]})")
                continue
            lines[key] = _line(key_node)
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(keys)}"
                self.error(key_node, _join(path, key), f"unknown key '{key}' ({hint})")
                continue
            found[key] = value_node
        for key in required:
            if key not in found and key not in lines:
                self.error(node, path, f"missing required key '{key}'")
        return found

    def sequence(self, node: yaml.Node | None, path: str) -> list[yaml.Node]:
        if node is None:
            return []
        if not isinstance(node, yaml.SequenceNode):
            self.error(node, path, f"expected a list, got {_shown(node)}")
            return []
        return list(node.value)

    def _scalar(self, node: yaml.Node, path: str, tags: tuple[str, ...], expected: str) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            self.error(node, path, f"expected {expected}, got {_shown(node)}")
            return None
        return self.loader.construct_object(node)

    # values

    def string(self, node: yaml.Node | None, path: str, *, default: str = "", max_length: int,
               required: bool = False) -> str:
        if node is None:
            return default
        value = self._scalar(node, path, (_STR,), "a string")
        if value is None:
            return default
        if required and not value.strip():
            self.error(node, path, "must not be empty")
        elif len(value) > max_length:
            self.error(node, path, f"is {len(value)} characters long (at most {max_length})")
        elif any(ord(c) < 32 for c in value):
            self.error(node, path, "must not contain control characters (e.g. newlines)")
        return value

    def slug(self, node: yaml.Node | None, path: str, *, max_length: int = 63) -> str:
        value = self.string(node, path, max_length=max_length, required=True)
        if value and not _SLUG.fullmatch(value) and len(value) <= max_length:
            self.error(node, path, f"'{value}' is not a valid name: use lowercase letters, digits "
                                   "and dashes, starting with a letter or digit")
        return value

    def integer(self, node: yaml.Node | None, path: str, *, default: int | None, minimum: int = 0,
                maximum: int = _MAX_INT, nullable: bool = False, unit: str = "") -> int | None:
        if node is None:
            return default
        tags = (_INT, _NULL) if nullable else (_INT,)
        expected = "an integer" + (f" ({unit})" if unit else "") + (" or null" if nullable else "")
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            self.error(node, path, f"expected {expected}, got {_shown(node)}")
            return default
        value = self.loader.construct_object(node)
        if value is not None and not minimum <= value <= maximum:
            self.error(node, path, f"must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def boolean(self, node: yaml.Node | None, path: str, *, default: bool) -> bool:
        if node is None:
            return default
        value = self._scalar(node, path, (_BOOL,), "true or false")
        return default if value is None else value

    def choice(self, node: yaml.Node | None, path: str, choices: Iterable[str], *, default: str) -> str:
        if node is None:
            return default
        choices = list(choices)
        value = self._scalar(node, path, (_STR,), f"one of {', '.join(choices)}")
        if value is None:
            return default
        if value not in choices:
            self.error(node, path, f"'{value}' is not one of {', '.join(choices)}")
            return default
        return value

    def names(self, node: yaml.Node | None, path: str, *, known: Iterable[str], what: str,
              list_known: bool = True) -> tuple[str, ...]:
        """A list of names that must each exist (groups, users, zones), each listed once."""
        known_set = set(known)
        names: list[str] = []
        for i, item in enumerate(self.sequence(node, path)):
            name = self.string(item, f"{path}[{i}]", max_length=150, required=True)
            if not name:
                continue
            if name in names:
                self.error(item, f"{path}[{i}]", f"{what} '{name}' is listed twice")
            elif name not in known_set:
                hint = f" ({_known_list(sorted(known_set))})" if list_known else ""
                self.error(item, f"{path}[{i}]", f"unknown {what} '{name}'{hint}")
            else:
                names.append(name)
        return tuple(names)

    def unique(self, node: yaml.Node, path: str, value: str, seen: dict[str, int], what: str) -> None:
        if value in seen:
            self.error(node, path, f"duplicate {what} '{value}' (first at line {seen[value]})")
        else:
            seen[value] = _line(node)


# --- parsing ------------------------------------------------------------------------------------


def _compose(text: str | bytes, source: str) -> tuple[yaml.Node | None, _Loader | None, list[Problem]]:
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_BYTES:
        return None, None, [Problem(source, 1, "", f"the file is over {MAX_BYTES} bytes (1 MiB); "
                                                    "split the catalog or trim it")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, None, [Problem(source, 1, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        return loader.get_single_node(), loader, []
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else 1
        message = exc.problem or "invalid YAML"
        if exc.context and message.startswith("but "):
            message = f"{exc.context}, {message}"
        elif exc.context:
            message = f"{message} ({exc.context})"
        return None, None, [Problem(source, line, "", f"invalid YAML: {message}")]
    except yaml.YAMLError as exc:
        return None, None, [Problem(source, 1, "", f"invalid YAML: {exc}")]
    except RecursionError:
        return None, None, [Problem(source, 1, "", "invalid YAML: nested too deeply")]
    finally:
        if loader is not None:
            loader.dispose()


def parse_catalog(text: str | bytes, *, source: str, known: KnownNames) -> Catalog:
    """The catalog in ``text``, or a :class:`CatalogError` with every problem (pure: no I/O)."""
    root, loader, problems = _compose(text, source)
    if problems or loader is None:
        raise CatalogError(problems)
    if root is None:
        raise CatalogError([Problem(source, 1, "", "the file is empty; expected zones, tiers, resources")])
    reader = _Reader(source, loader, known)
    top = reader.mapping(root, "", ("zones", "tiers", "resources"))
    if top is None:
        raise CatalogError(reader.problems)

    def section(key: str) -> list[yaml.Node]:
        node = top.get(key)
        if isinstance(node, yaml.ScalarNode) and node.tag == _NULL:
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


def _parse_all(items: list[yaml.Node], section: str, key: str, parse: Any, reader: _Reader) -> list[Any]:
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


def _parse_zone(node: yaml.Node, path: str, reader: _Reader) -> ZoneSpec | None:
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
    return ZoneSpec(name=name, cidrs=tuple(cidrs), trusted=trusted, line=_line(node))


def _parse_tier(node: yaml.Node, path: str, reader: _Reader, known_zones: list[str]) -> TierSpec | None:
    m = reader.mapping(node, path, TIER_KEYS, required=("name",))
    if m is None:
        return None
    d = TierSpec(name="")

    def positive(key: str, default: int) -> int:
        value = reader.integer(m.get(key), f"{path}.{key}", default=default, minimum=1)
        return default if value is None else value

    mfa: dict[str, int | None] = {"read": d.mfa_read, "write": d.mfa_write, "sensitive": d.mfa_sensitive}
    if "mfa" in m:
        mfa_map = reader.mapping(m["mfa"], f"{path}.mfa", MFA_KEYS)
        for key, value_node in (mfa_map or {}).items():
            mfa[key] = reader.integer(value_node, f"{path}.mfa.{key}", default=mfa[key], nullable=True,
                                      unit="seconds")
    controls = [c.value for c in StreamControl]
    spec = TierSpec(
        name=reader.slug(m.get("name"), f"{path}.name", max_length=32),
        rank=reader.integer(m.get("rank"), f"{path}.rank", default=d.rank, maximum=_MAX_SMALL) or 0,
        description=reader.string(m.get("description"), f"{path}.description", max_length=200),
        access_mode=reader.choice(m.get("access_mode"), f"{path}.access_mode",
                                  [c.value for c in AccessMode], default=d.access_mode),
        mfa_read=mfa["read"], mfa_write=mfa["write"], mfa_sensitive=mfa["sensitive"],
        device_trust_required=reader.boolean(m.get("device_trust_required"),
                                             f"{path}.device_trust_required", default=False),
        zones=reader.names(m.get("zones"), f"{path}.zones", known=known_zones, what="zone"),
        approval_required=reader.boolean(m.get("approval_required"), f"{path}.approval_required",
                                         default=False),
        session_max_seconds=positive("session_max_seconds", d.session_max_seconds),
        idle_seconds=positive("idle_seconds", d.idle_seconds),
        reauth_interval_seconds=positive("reauth_interval_seconds", d.reauth_interval_seconds),
        clipboard_in=reader.choice(m.get("clipboard_in"), f"{path}.clipboard_in", controls,
                                   default=d.clipboard_in),
        clipboard_out=reader.choice(m.get("clipboard_out"), f"{path}.clipboard_out", controls,
                                    default=d.clipboard_out),
        file_transfer=reader.choice(m.get("file_transfer"), f"{path}.file_transfer", controls,
                                    default=d.file_transfer),
        read_only=reader.boolean(m.get("read_only"), f"{path}.read_only", default=False),
        recording=reader.boolean(m.get("recording"), f"{path}.recording", default=False),
        watermark=reader.boolean(m.get("watermark"), f"{path}.watermark", default=False),
        rate_limit_per_minute=reader.integer(m.get("rate_limit_per_minute"),
                                             f"{path}.rate_limit_per_minute", default=None,
                                             minimum=1, nullable=True),
        retention_days=positive("retention_days", d.retention_days),
        line=_line(node),
    )
    if spec.access_mode == AccessMode.PROXY:
        # Mirrors Tier.clean(): a proxied app is not a stream we can record or mark.
        for key in ("recording", "watermark", "read_only"):
            if getattr(spec, key):
                reader.error(m[key], f"{path}.{key}",
                             "only applies to pixel-streamed tiers (access_mode: stream)")
    return spec


def _parse_action(node: yaml.Node, path: str, reader: _Reader) -> ActionRuleSpec | None:
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


def _parse_resource(node: yaml.Node, path: str, reader: _Reader,
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
        reader.error(m["tier"], f"{path}.tier", f"unknown tier '{tier}' ({_known_list(known_tiers)})")
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
        line=_line(node),
    )


# --- the database side --------------------------------------------------------------------------


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


def _zone_state(zone: NetworkZone) -> dict[str, Any]:
    return {"cidrs": _split_cidrs(zone.cidrs), "trusted": zone.trusted}


def _tier_state(tier: Tier) -> dict[str, Any]:
    return {
        "rank": tier.rank, "description": tier.description, "access_mode": tier.access_mode,
        "mfa": {"read": tier.mfa_read, "write": tier.mfa_write, "sensitive": tier.mfa_sensitive},
        "device_trust_required": tier.device_trust_required,
        "zones": sorted(z.name for z in tier.allowed_zones.all()),
        "approval_required": tier.approval_required,
        "session_max_seconds": tier.session_max_seconds, "idle_seconds": tier.idle_seconds,
        "reauth_interval_seconds": tier.reauth_interval_seconds,
        "clipboard_in": tier.clipboard_in, "clipboard_out": tier.clipboard_out,
        "file_transfer": tier.file_transfer, "read_only": tier.read_only,
        "recording": tier.recording, "watermark": tier.watermark,
        "rate_limit_per_minute": tier.rate_limit_per_minute, "retention_days": tier.retention_days,
    }


def _resource_state(resource: Resource) -> dict[str, Any]:
    return {
        "name": resource.name, "kind": resource.kind, "upstream": resource.upstream,
        "tier": resource.tier.name,
        "groups": sorted(g.name for g in resource.allowed_groups.all()),
        "users": sorted(u.get_username() for u in resource.allowed_users.all()),
        "description": resource.description, "enabled": resource.enabled,
        "paths_case_sensitive": resource.paths_case_sensitive,
        "actions": [{"methods": _split_methods(r.methods) or ["*"], "path": r.path,
                     "class": r.action_class} for r in resource.action_rules.all()],
    }


def _tiers_qs() -> QuerySet[Tier]:
    return Tier.objects.prefetch_related("allowed_zones")


def _resources_qs() -> QuerySet[Resource]:
    return Resource.objects.select_related("tier").prefetch_related(
        "allowed_groups", "allowed_users", "action_rules")


def _diff(kind: str, name: str, old: dict[str, Any] | None, new: dict[str, Any]) -> Change | None:
    if old is None:
        return Change(kind, name, "create", MappingProxyType({k: (None, v) for k, v in new.items()}))
    changed = {k: (old.get(k), v) for k, v in new.items() if old.get(k) != v}
    return Change(kind, name, "update", MappingProxyType(changed)) if changed else None


def plan_catalog(catalog: Catalog) -> tuple[Change, ...]:
    """What applying ``catalog`` would change, item by item; nothing for unchanged items."""
    zones = {z.name: _zone_state(z) for z in NetworkZone.objects.filter(
        name__in=[s.name for s in catalog.zones])}
    tiers = {t.name: _tier_state(t) for t in _tiers_qs().filter(name__in=[s.name for s in catalog.tiers])}
    resources = {r.slug: _resource_state(r) for r in _resources_qs().filter(
        slug__in=[s.slug for s in catalog.resources])}
    changes = [
        *(_diff("zone", s.name, zones.get(s.name), s.state()) for s in catalog.zones),
        *(_diff("tier", s.name, tiers.get(s.name), s.state()) for s in catalog.tiers),
        *(_diff("resource", s.slug, resources.get(s.slug), s.state()) for s in catalog.resources),
    ]
    return tuple(c for c in changes if c is not None)


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


def apply_catalog(catalog: Catalog, *, dry_run: bool = False,
                  requested_by: AbstractBaseUser | None = None) -> tuple[Change, ...]:
    """The changes :func:`apply_reviewed` wrote (or would write, on a dry run)."""
    return apply_reviewed(catalog, dry_run=dry_run, requested_by=requested_by).changes


def _spec_tier_state(spec: TierSpec) -> dict[str, Any]:
    """A tier spec as a :func:`tiers.policy_changes.tier_state`."""
    state = {key: getattr(spec, key) for key in _TIER_FIELDS}
    state["allowed_zones"] = sorted(spec.zones)
    return state


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
        planned = plan_catalog(catalog)
        zones = {s.name: s for s in catalog.zones}
        tiers = {s.name: s for s in catalog.tiers}
        resources = {s.slug: s for s in catalog.resources}
        tiers_after: dict[str, dict[str, Any]] = {}
        applied: list[Change] = []
        held: list[Held] = []

        def tier_after(name: str) -> dict[str, Any]:
            if name not in tiers_after:
                tiers_after[name] = tier_state(_tiers_qs().get(name=name))
            return tiers_after[name]

        def hold(kind: str, line: int, name: str, found: list[Weakening],
                 changes: dict[str, list[Any]], **target: Any) -> None:
            request = None if dry_run else file_request(
                changes=changes, weakenings=found, by=requested_by,
                reason=f"catalog apply {catalog.source}", source=f"{catalog.source}:{line}", **target)
            held.append(Held(catalog.source, line, kind, name, tuple(found), request))

        for change in planned:
            item: Change | None = change
            if change.kind == "zone":
                if not dry_run:
                    _write_zone(zones[change.name])
            elif change.kind == "tier":
                spec = tiers[change.name]
                if change.verb == "update":
                    tier = _tiers_qs().get(name=change.name)
                    before = tier_state(tier)
                    found = weakens(before, _spec_tier_state(spec))
                    if found:
                        hold("tier", spec.line, spec.name, found,
                             {w.field: [w.old, w.new] for w in found}, tier=tier)
                        spec = replace(spec, **{
                            ("zones" if w.field == "allowed_zones" else w.field):
                            (tuple(before["allowed_zones"]) if w.field == "allowed_zones"
                             else before[w.field]) for w in found})
                        item = _diff("tier", spec.name, _tier_state(tier), spec.state())
                tiers_after[spec.name] = _spec_tier_state(spec)
                if item is not None and not dry_run:
                    _write_tier(spec)
            else:
                spec = resources[change.name]
                if change.verb == "update" and "tier" in change.fields:
                    resource = _resources_qs().get(slug=change.name)
                    found = move_weakens(tier_after(resource.tier.name), tier_after(spec.tier))
                    if found:
                        hold("resource", spec.line, spec.slug, found,
                             {"tier": [resource.tier.name, spec.tier]}, resource=resource)
                        spec = replace(spec, tier=resource.tier.name)
                        item = _diff("resource", spec.slug, _resource_state(resource), spec.state())
                if item is not None and not dry_run:
                    _write_resource(spec, item)
            if item is None:
                continue
            applied.append(item)
            if not dry_run:
                record("catalog.apply", outcome="success", actor=ACTOR,
                       resource=item.name if item.kind == "resource" else "",
                       detail=_audit_detail(item, catalog.source))
    return Applied(tuple(applied), tuple(held))


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


_TIER_FIELDS = ("rank", "description", "access_mode", "mfa_read", "mfa_write", "mfa_sensitive",
                "device_trust_required", "approval_required", "session_max_seconds", "idle_seconds",
                "reauth_interval_seconds", "clipboard_in", "clipboard_out", "file_transfer",
                "read_only", "recording", "watermark", "rate_limit_per_minute", "retention_days")


def _write_tier(spec: TierSpec) -> None:
    tier = Tier.objects.filter(name=spec.name).first() or Tier(name=spec.name)
    for key in _TIER_FIELDS:
        setattr(tier, key, getattr(spec, key))
    tier.save()
    tier.allowed_zones.set(NetworkZone.objects.filter(name__in=spec.zones))


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


# --- export ---------------------------------------------------------------------------------------


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
    zones = [{"name": z.name, **_zone_state(z)} for z in NetworkZone.objects.order_by("name")]
    tiers = []
    for tier in _tiers_qs().order_by("rank", "name"):
        state = _tier_state(tier)
        state["mfa"] = _Flow(state["mfa"])
        tiers.append({"name": tier.name, **state})
    resources = []
    for resource in _resources_qs().order_by("slug"):
        state = _resource_state(resource)
        state["actions"] = [{"methods": a["methods"], "path": a["path"], "class": a["class"]}
                            for a in state["actions"]]
        resources.append({"slug": resource.slug, **state})
    sections = [yaml.dump({key: items}, Dumper=_Dumper, sort_keys=False, allow_unicode=True,
                          default_flow_style=False, width=100)
                for key, items in (("zones", zones), ("tiers", tiers), ("resources", resources))]
    return EXPORT_HEADER + "\n".join(sections)
