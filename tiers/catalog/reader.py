"""Reading a catalog's YAML safely, keeping each value's line, and checking its shapes.

:class:`Reader` walks the composed YAML and collects every problem (``file:line: path:
message``) instead of stopping at the first; the values' own rules are the forms' to check.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable
from typing import Any

import yaml

from tiers.catalog.specs import MAX_BYTES, KnownNames, Problem
from tiers.rules import MAX_INT
from tiers.types import ActionClass, Factor

__all__ = [
    "BOOL", "INT", "NULL", "STR", "Loader", "Reader", "compose", "join_path", "known_list", "line_of",
    "shown_node", "split_cidrs", "split_methods",
]

# The same rule as tiers.models.slug_validator, anchored with fullmatch (``$`` admits "\n").
_SLUG = re.compile(r"[a-z0-9][a-z0-9-]{0,62}")

STR, INT, BOOL, NULL = (f"tag:yaml.org,2002:{t}" for t in ("str", "int", "bool", "null"))
_TYPE_NAMES = {STR: "a string", INT: "an integer", BOOL: "true/false", NULL: "null",
               "tag:yaml.org,2002:float": "a number", "tag:yaml.org,2002:timestamp": "a date"}


class Loader(yaml.SafeLoader):
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


def line_of(node: yaml.Node) -> int:
    return node.start_mark.line + 1


def shown_node(node: yaml.Node) -> str:
    if isinstance(node, yaml.MappingNode):
        return "a mapping"
    if isinstance(node, yaml.SequenceNode):
        return "a list"
    value = node.value if len(node.value) <= 40 else node.value[:37] + "..."
    return f"{_TYPE_NAMES.get(node.tag, 'a value')} ({value!r})" if node.tag != NULL else "null"


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def known_list(names: Iterable[str], limit: int = 12) -> str:
    names = list(names)
    shown = ", ".join(names[:limit]) + (", ..." if len(names) > limit else "")
    return f"known: {shown}" if names else "none exist yet"



def split_cidrs(text: str) -> list[str]:
    """The CIDRs of a zone as stored: one per line or comma-separated (see NetworkZone)."""
    return [p.strip() for p in text.replace(",", "\n").splitlines() if p.strip()]


def split_methods(text: str) -> list[str]:
    return [m.strip().upper() for m in text.split(",") if m.strip()]


class Reader:
    """Walks the composed YAML, collecting every problem instead of stopping at the first."""

    def __init__(self, source: str, loader: Loader, known: KnownNames) -> None:
        self.source = source
        self.loader = loader
        self.known = known
        self.problems: list[Problem] = []

    def error(self, node: yaml.Node, path: str, message: str) -> None:
        self.problems.append(Problem(self.source, line_of(node), path, message))

    # shapes

    def mapping(self, node: yaml.Node, path: str, keys: tuple[str, ...],
                required: tuple[str, ...] = ()) -> dict[str, yaml.Node] | None:
        if not isinstance(node, yaml.MappingNode):
            self.error(node, path, f"expected a mapping with keys {', '.join(keys)}; got {shown_node(node)}")
            return None
        found: dict[str, yaml.Node] = {}
        lines: dict[str, int] = {}
        for key_node, value_node in node.value:
            if not isinstance(key_node, yaml.ScalarNode) or key_node.tag != STR:
                self.error(key_node, path, f"keys must be plain strings, got {shown_node(key_node)}")
                continue
            key = key_node.value
            if key in lines:
                self.error(key_node, join_path(path, key), f"duplicate key (first at line {lines[key]})")
                continue
            lines[key] = line_of(key_node)
            if key not in keys:
                close = difflib.get_close_matches(key, keys, n=1)
                hint = f"did you mean '{close[0]}'?" if close else f"allowed: {', '.join(keys)}"
                self.error(key_node, join_path(path, key), f"unknown key '{key}' ({hint})")
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
            self.error(node, path, f"expected a list, got {shown_node(node)}")
            return []
        return list(node.value)

    def _scalar(self, node: yaml.Node, path: str, tags: tuple[str, ...], expected: str) -> Any:
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            self.error(node, path, f"expected {expected}, got {shown_node(node)}")
            return None
        return self.loader.construct_object(node)

    # values

    def string(self, node: yaml.Node | None, path: str, *, default: str = "", max_length: int,
               required: bool = False) -> str:
        if node is None:
            return default
        value = self._scalar(node, path, (STR,), "a string")
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
                maximum: int = MAX_INT, nullable: bool = False, unit: str = "") -> int | None:
        if node is None:
            return default
        tags = (INT, NULL) if nullable else (INT,)
        expected = "an integer" + (f" ({unit})" if unit else "") + (" or null" if nullable else "")
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            self.error(node, path, f"expected {expected}, got {shown_node(node)}")
            return default
        value = self.loader.construct_object(node)
        if value is not None and not minimum <= value <= maximum:
            self.error(node, path, f"must be between {minimum} and {maximum}, got {value}")
            return default
        return value

    def boolean(self, node: yaml.Node | None, path: str, *, default: bool) -> bool:
        if node is None:
            return default
        value = self._scalar(node, path, (BOOL,), "true or false")
        return default if value is None else value

    def choice(self, node: yaml.Node | None, path: str, choices: Iterable[str], *, default: str) -> str:
        if node is None:
            return default
        choices = list(choices)
        value = self._scalar(node, path, (STR,), f"one of {', '.join(choices)}")
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
                hint = f" ({known_list(sorted(known_set))})" if list_known else ""
                self.error(item, f"{path}[{i}]", f"unknown {what} '{name}'{hint}")
            else:
                names.append(name)
        return tuple(names)

    def number(self, node: yaml.Node, path: str, *, nullable: bool,
               unit: str = "") -> tuple[bool, int | None]:
        """A whole number (or null, when ``nullable``) as YAML typed it: (read, value). Its range
        is the form's to check (:class:`tiers.forms.TierRulesForm`)."""
        tags = (INT, NULL) if nullable else (INT,)
        if not isinstance(node, yaml.ScalarNode) or node.tag not in tags:
            expected = "an integer" + (f" ({unit})" if unit else "") + (" or null" if nullable else "")
            self.error(node, path, f"expected {expected}, got {shown_node(node)}")
            return False, None
        return True, self.loader.construct_object(node)

    def text(self, node: yaml.Node, path: str, expected: str) -> str | None:
        """A plain string, or None (a problem noted) when YAML typed it otherwise."""
        return self._scalar(node, path, (STR,), expected)

    def factors(self, node: yaml.Node, path: str) -> dict[str, list[str]] | None:
        """``{action class: [factor, ...]}``: classes and factors by name, each listed once."""
        found = self.mapping(node, path, tuple(c.value for c in ActionClass))
        if found is None:
            return None
        chosen: dict[str, list[str]] = {}
        for action_class, value_node in found.items():
            where = f"{path}.{action_class}"
            items = self.sequence(value_node, where)
            if isinstance(value_node, yaml.SequenceNode) and not items:
                self.error(value_node, where, "name at least one factor, or leave the class out (any counts)")
            listed = chosen.setdefault(action_class, [])
            for i, item in enumerate(items):
                factor = self.choice(item, f"{where}[{i}]", [f.value for f in Factor], default="")
                if factor and factor in listed:
                    self.error(item, f"{where}[{i}]", f"'{factor}' is listed twice")
                elif factor:
                    listed.append(factor)
        return chosen

    def unique(self, node: yaml.Node, path: str, value: str, seen: dict[str, int], what: str) -> None:
        if value in seen:
            self.error(node, path, f"duplicate {what} '{value}' (first at line {seen[value]})")
        else:
            seen[value] = line_of(node)


# --- composing ----------------------------------------------------------------------------------


def compose(text: str | bytes, source: str) -> tuple[yaml.Node | None, Loader | None, list[Problem]]:
    size = len(text.encode() if isinstance(text, str) else text)
    if size > MAX_BYTES:
        return None, None, [Problem(source, 1, "", f"the file is over {MAX_BYTES} bytes (1 MiB); "
                                                    "split the catalog or trim it")]
    if isinstance(text, bytes):
        try:
            text = text.decode("utf-8")
        except UnicodeDecodeError as exc:
            return None, None, [Problem(source, 1, "", f"not UTF-8 text ({exc.reason} at byte {exc.start})")]
    loader: Loader | None = None
    try:
        loader = Loader(text)
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

