"""A tier's rules, declared once.

Each row of :data:`TIER_RULES` says what one rule of a tier is: its kind, label, help, default,
limits, choices, where it sits in a catalog file, and which way is looser (four eyes,
docs/decisions/0018). The model's fields (:mod:`tiers.models`), the form that the Manage page
and the catalog both validate with (:mod:`tiers.forms`), the catalog's YAML keys, state and
export (:mod:`tiers.catalog`), the admin's sections, the rules in words (:mod:`tiers.pages`),
the weakening check (:mod:`tiers.policy_changes`) and the decision's :class:`TierPolicy`
(:func:`policy_values`) are all derived from it. Adding a rule is one row here plus a
migration (and a :class:`TierPolicy` field when the decision reads it).

Plain Python: no ORM, so the pure layers may read it too. See docs/decisions/0025.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from tiers.types import ActionClass, Factor, StreamControl, factor_words

__all__ = [
    "MAX_INT", "MAX_SMALL", "RULES_BY_NAME", "STREAM_FLAG_MESSAGE", "TIER_RULES", "Kind", "Looser",
    "TierRule",
    "accepted_factors_problem", "combination_problems", "factors_widened", "normal_factors",
    "policy_values", "rule_groups", "shown", "yaml_state",
]

MAX_INT = 2_147_483_647  # PositiveIntegerField on PostgreSQL
MAX_SMALL = 32_767
STREAM_FLAG_MESSAGE = "only applies to pixel-streamed tiers (access_mode: stream)"


class Kind(StrEnum):
    """What sort of value a rule holds: picks the model field, form field and YAML check."""

    TEXT = "text"
    COUNT = "count"  # a whole number
    SECONDS = "seconds"  # a whole number of seconds
    CHOICE = "choice"
    FLAG = "flag"
    ZONES = "zones"  # network zone names; empty = any network
    FACTORS = "factors"  # {action class: [factor, ...]}; a class not listed accepts any


class Looser(StrEnum):
    """Which change of a rule lowers protection (four eyes)."""

    NEVER = "never"  # not protective (the description)
    LOWER = "lower"  # a smaller number (rank, retention)
    HIGHER = "higher"  # a larger number, or none (no limit / no fresh code needed)
    OFF = "off"  # a flag switched off
    EARLIER = "earlier"  # a choice earlier in ``choices`` (they are listed weakest first)
    WIDER = "wider"  # more networks or more factors


@dataclass(frozen=True)
class TierRule:
    """One rule of a tier, for every place that reads, writes, checks or shows it."""

    name: str
    kind: Kind
    label: str
    help: str
    default: Any
    group: str
    looser: Looser
    yaml: tuple[str, ...] = ()  # the key path in a catalog file; () = (name,)
    nullable: bool = False  # None is a value (no limit / not needed)
    minimum: int = 0
    maximum: int = MAX_INT
    max_length: int = 0
    choices: tuple[tuple[str, str], ...] = ()  # (value, words), weakest first
    stream_only: bool = False  # only acts on a pixel-streamed session
    operational: bool = False  # a limit, not a gate: not compared when a resource moves tier
    decides: bool = True  # a field of tiers.types.TierPolicy

    @property
    def path(self) -> tuple[str, ...]:
        return self.yaml or (self.name,)


def _seconds(name: str, label: str, help_text: str, default: int | None, group: str, **kw: Any) -> TierRule:
    return TierRule(name, Kind.SECONDS, label, help_text, default, group, Looser.HIGHER, **kw)


def _freshness(action: str, words: str, default: int | None) -> TierRule:
    return _seconds(f"mfa_{action}", f"Fresh code for {words}",
                    f"Seconds an MFA stays fresh for {action} actions; 0 = a code for each action; "
                    "empty = no fresh code needed.", default, "Second factor", yaml=("mfa", action),
                    nullable=True)


def _control(name: str, label: str) -> TierRule:
    return TierRule(name, Kind.CHOICE, label, f"{label}: deny, allow, or allow after step-up.",
                    StreamControl.DENY.value, "Pixel streaming", Looser.EARLIER, max_length=8,
                    choices=(("allow", "allow"), ("step_up", "step_up"), ("deny", "deny")),
                    stream_only=True)


def _stream_flag(name: str, label: str, help_text: str) -> TierRule:
    return TierRule(name, Kind.FLAG, label, help_text, False, "Pixel streaming", Looser.OFF, stream_only=True)


TIER_RULES: tuple[TierRule, ...] = (
    TierRule("rank", Kind.COUNT, "Rank (sensitivity)", "Higher = more sensitive.", 0, "", Looser.LOWER,
             maximum=MAX_SMALL),
    TierRule("description", Kind.TEXT, "Description", "What the tier is for, in a sentence.", "", "",
             Looser.NEVER, max_length=200, decides=False),
    TierRule("access_mode", Kind.CHOICE, "How it is reached",
             "Identity-aware proxy, pixel streaming, or no access at all.", "proxy", "",
             Looser.EARLIER, max_length=8, choices=(("proxy", "Identity-aware proxy"),
                                                    ("stream", "Pixel streaming"), ("deny", "No access"))),
    _freshness("read", "reading", None),
    _freshness("write", "writing", None),
    _freshness("sensitive", "sensitive actions", 0),
    TierRule("accepted_factors", Kind.FACTORS, "Second factors that count",
             "Per action class, the second factors that count: totp (an authenticator app or backup "
             "code), passkey, and idp (the MFA of the company sign-in, for SSO sessions). A class "
             "with none named accepts any.", {}, "Second factor",
             Looser.WIDER),
    TierRule("device_trust_required", Kind.FLAG, "Only from a trusted device",
             "Only a registered, trusted device may reach this tier.", False, "Where from", Looser.OFF),
    TierRule("allowed_zones", Kind.ZONES, "Allowed networks", "Empty = any network.", (), "Where from",
             Looser.WIDER, yaml=("zones",)),
    TierRule("approval_required", Kind.FLAG, "Approval before access",
             "Access needs an approved just-in-time request.", False, "Where from", Looser.OFF),
    _seconds("session_max_seconds", "Longest session", "The longest a session may last.", 8 * 3600,
             "Sessions", minimum=1, operational=True),
    _seconds("idle_seconds", "Idle time before a session ends", "A session idle this long ends.",
             30 * 60, "Sessions", minimum=1, operational=True),
    _seconds("reauth_interval_seconds", "Re-decide a live session every",
             "How often a live desktop session is decided again.", 30, "Sessions", minimum=1,
             operational=True, stream_only=True),
    TierRule("rate_limit_per_minute", Kind.COUNT, "Rate limit (requests per minute)",
             "Requests per user and resource; empty = no limit.", None, "Sessions", Looser.HIGHER,
             nullable=True, minimum=1, operational=True),
    _control("clipboard_in", "Paste into the session"),
    _control("clipboard_out", "Copy out of the session"),
    _control("file_transfer", "File transfer"),
    _stream_flag("read_only", "Read-only", "The session shows the desktop but takes no input."),
    _stream_flag("recording", "Recording", "Sessions are recorded for the auditors."),
    _stream_flag("watermark", "Watermark", "The person's name is drawn over the session."),
    TierRule("retention_days", Kind.COUNT, "Retention of recordings and records (days)",
             "How long recordings and access records are kept.", 365, "Pixel streaming", Looser.LOWER,
             minimum=1, operational=True, decides=False),
)
RULES_BY_NAME: Mapping[str, TierRule] = {rule.name: rule for rule in TIER_RULES}


def rule_groups() -> list[tuple[str, list[str]]]:
    """The rules by section, in table order ("" first: the tier's identity)."""
    groups: dict[str, list[str]] = {}
    for rule in TIER_RULES:
        groups.setdefault(rule.group, []).append(rule.name)
    return list(groups.items())


# --- values ---------------------------------------------------------------------------------


def normal_factors(value: Mapping[str, Iterable[str]] | None) -> dict[str, list[str]]:
    """``accepted_factors`` in one spelling: classes in order, factors sorted, a class that
    names every factor left out (it accepts any, like a class not named)."""
    everything = {f.value for f in Factor}
    normal = {}
    for action_class in ActionClass:
        listed = set((value or {}).get(action_class.value) or ())
        if listed and listed != everything:
            normal[action_class.value] = sorted(listed)
    return normal


def accepted_factors_problem(value: object) -> str:
    """What is wrong with a tier's ``accepted_factors`` in words, or "" when it is right."""
    if not isinstance(value, dict):
        return "Give a mapping of action class to a list of factors."
    classes, factors = {c.value for c in ActionClass}, {f.value for f in Factor}
    for action_class, listed in value.items():
        if action_class not in classes:
            return f"{action_class!r} is not an action class ({', '.join(sorted(classes))})."
        if not isinstance(listed, list) or not listed or not set(listed) <= factors:
            return (f"The factors for {action_class} must be a non-empty list of "
                    f"{', '.join(sorted(factors))}.")
    return ""


def combination_problems(values: Mapping[str, Any]) -> dict[str, str]:
    """Rules that are fine alone but not together, by field: the model and the form both ask."""
    problems = {}
    if values.get("access_mode") == "proxy":
        # A proxied app is not a stream the portal could record, mark or make read-only.
        for rule in TIER_RULES:
            if rule.kind is Kind.FLAG and rule.stream_only and values.get(rule.name):
                problems[rule.name] = STREAM_FLAG_MESSAGE
    if "accepted_factors" in values and (problem := accepted_factors_problem(values["accepted_factors"])):
        problems["accepted_factors"] = problem
    return problems


def factors_widened(old: Mapping[str, Iterable[str]], new: Mapping[str, Iterable[str]]) -> bool:
    """Whether ``new`` counts a factor for some action class that ``old`` did not."""
    everything = frozenset(f.value for f in Factor)
    for action_class in ActionClass:
        before = frozenset((old or {}).get(action_class.value) or ()) or everything
        after = frozenset((new or {}).get(action_class.value) or ()) or everything
        if after - before:
            return True
    return False


def _policy_factors(value: Mapping[str, Iterable[str]] | None) -> tuple[tuple[str, frozenset[str]], ...]:
    return tuple((c, frozenset(f)) for c, f in sorted((value or {}).items()))


_TO_POLICY: dict[Kind, Callable[[Any], Any]] = {
    Kind.ZONES: frozenset,
    Kind.FACTORS: _policy_factors,
}


def policy_values(values: Mapping[str, Any]) -> dict[str, Any]:
    """A tier's rule values (zones by name) as the keyword arguments of a ``TierPolicy``."""
    policy = {}
    for rule in TIER_RULES:
        if rule.decides:
            value = values[rule.name]
            convert = _TO_POLICY.get(rule.kind)
            if convert is not None:
                value = convert(value)
            elif rule.kind is Kind.CHOICE and rule.stream_only:
                value = StreamControl(value)
            policy[rule.name] = value
    return policy


def yaml_state(values: Mapping[str, Any]) -> dict[str, Any]:
    """Rule values shaped as a catalog file writes them (``mfa: {read: ..}``, ``zones``)."""
    state: dict[str, Any] = {}
    for rule in TIER_RULES:
        value = values[rule.name]
        if rule.kind is Kind.ZONES:
            value = sorted(value)
        elif rule.kind is Kind.FACTORS:
            value = normal_factors(value)
        *parents, key = rule.path
        target = state
        for parent in parents:
            target = target.setdefault(parent, {})
        target[key] = value
    return state


# --- in words --------------------------------------------------------------------------------


def _factors_in_words(value: Mapping[str, Iterable[str]] | None) -> str:
    parts = [f"{c}: {factor_words(frozenset(f))}" for c, f in normal_factors(value).items()]
    return "; ".join(parts) or "any (passkey, authenticator app code or company sign-in's MFA)"


def shown(key: str, value: Any) -> str:
    """A rule's value in words, as the pages and the four-eyes messages show it."""
    rule = RULES_BY_NAME.get(key)
    kind = rule.kind if rule else None
    if kind is Kind.FACTORS:
        return _factors_in_words(value)
    if kind is Kind.ZONES:
        return ", ".join(value) if value else "any network"
    if rule is not None and rule.yaml[:1] == ("mfa",):
        return "not needed" if value is None else ("every action" if value == 0 else f"{value} s")
    if key == "rate_limit_per_minute":
        return "no limit" if value is None else f"{value} / min"
    if isinstance(value, bool):
        return "on" if value else "off"
    if kind is Kind.SECONDS:
        return f"{value} s"
    return "none" if value is None else str(value)
