"""Gathering the decision's inputs: the only I/O before a decision.

Each function reads the database once or twice and returns frozen data from
:mod:`tiers.types`; :func:`tiers.decision.decide` then runs without touching anything.
"""

from __future__ import annotations

import fnmatch
import functools
import hashlib
import ipaddress
import re
import time
import unicodedata
from collections.abc import Callable, Mapping
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.utils import timezone

from portal.accounts.mfa import AMR_KEY, DEFAULT_AMR, MFA_TIME_KEY
from tiers.models import AccessGrant, ActionChallenge, NetworkZone, Resource, Tier
from tiers.rules import policy_values
from tiers.types import (
    Action,
    ActionClass,
    DecisionInput,
    DeviceInfo,
    Factor,
    ResourceInfo,
    Subject,
    TierPolicy,
    ZoneInfo,
)

__all__ = [
    "CHALLENGE_TTL_SECONDS",
    "CompiledRule",
    "classify",
    "classify_compiled",
    "compile_action_rules",
    "factor_of_amr",
    "forget_zones",
    "gather",
    "needs_lookups",
    "resolve_zone",
    "resolve_zone_in_memory",
    "resource_info",
    "session_hash",
    "subject_for",
    "subject_from",
    "tier_policy",
    "user_groups",
    "zone_table",
]

CHALLENGE_TTL_SECONDS = 300
FEDERATED = "fed"  # RFC 8176: authenticated by a federated IdP (portal.sso.sessions)
_SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_ZONE_MEMO_SIZE = 4096

# An action rule ready to match: (its methods, "*" included; its path's glob matcher; its class).
CompiledRule = tuple[frozenset[str], Callable[[str], re.Match[str] | None], str]


def session_hash(session_key: str | None) -> str:
    """A stable, non-secret handle on a session (the key itself never leaves the session store)."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()


def factor_of_amr(amr: Any) -> str | None:
    """The factor of the session's last confirmation, read from its RFC 8176 ``amr``.

    ``hwk`` is a passkey and ``otp`` a code. An SSO session's amr is ``["fed", *the IdP's]``:
    the IdP's values stay (the assertion names them) but are the IdP's, not the portal's, so
    they count as :attr:`Factor.IDP`. A portal code on top goes in front of ``fed``
    (``portal.accounts.mfa.mark_mfa``) and a passkey replaces the list: what precedes ``fed``
    is the portal's own.
    """
    methods = [m for m in amr if isinstance(m, str)] if isinstance(amr, list | tuple) else []
    own = methods[:methods.index(FEDERATED)] if FEDERATED in methods else methods
    if "hwk" in own:
        return Factor.PASSKEY
    if "otp" in own:
        return Factor.TOTP
    if FEDERATED in methods:
        return Factor.IDP
    return None


def subject_for(user: AbstractBaseUser, session: Mapping[str, Any] | None, now: float,
                groups: frozenset[str] | None = None) -> Subject:
    """The user as the decision sees them, with the MFA age of this session and its factor."""
    session = session or {}
    return subject_from(user.get_username(), groups if groups is not None else user_groups(user),
                        is_active=user.is_active, mfa_time=session.get(MFA_TIME_KEY),
                        amr=session.get(AMR_KEY, list(DEFAULT_AMR)), now=now)


def subject_from(username: str, groups: frozenset[str], *, is_active: bool, mfa_time: float | None,
                 amr: Any, now: float) -> Subject:
    """The subject from facts already read: one builder whether they come from the database
    or from an enforcement point's memory (the proxy's admission cache), so both decide alike."""
    return Subject(
        username=username, groups=groups, is_active=is_active,
        mfa_age=None if mfa_time is None else max(0.0, now - float(mfa_time)),
        mfa_factor=None if mfa_time is None else factor_of_amr(amr),
    )


def user_groups(user: AbstractBaseUser) -> frozenset[str]:
    """The names of the user's groups (read once per request by enforcement points)."""
    return frozenset(user.groups.values_list("name", flat=True))


class _ZoneTable:
    """Network zones, parsed once and kept until a zone changes (they change rarely and are
    read on every decision). A save in any process clears its own copy at once; other
    processes re-read within ``ttl`` seconds."""

    ttl = 5.0

    def __init__(self) -> None:
        self._zones: list[tuple[NetworkZone, list[Any]]] | None = None
        self._loaded = 0.0

    def get(self) -> list[tuple[NetworkZone, list[Any]]]:
        zones = self.peek()
        if zones is None:
            zones = [(z, z.networks()) for z in NetworkZone.objects.all()]
            self._zones, self._loaded = zones, time.monotonic()
        return zones

    def peek(self) -> list[tuple[NetworkZone, list[Any]]] | None:
        """The table if it is in memory and fresh, else None (never reads the database)."""
        zones = self._zones
        if zones is None or time.monotonic() - self._loaded > self.ttl:
            return None
        return zones

    def clear(self, **kwargs: Any) -> None:
        self._zones = None


zone_table = _ZoneTable()


def forget_zones(change: object) -> None:
    """Drop the zone table: subscribed to catalog changes (tiers.changes, from
    ``TiersConfig.ready``) at once and from other processes, so none waits out ``ttl``."""
    zone_table.clear()


def resolve_zone(address: str, zones: list[NetworkZone] | None = None) -> ZoneInfo:
    """The most specific zone whose networks contain ``address`` (``internet`` if none)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return ZoneInfo(address=address)
    table = [(z, z.networks()) for z in zones] if zones is not None else zone_table.get()
    return _zone_of(ip, address, table)


class _ZoneMemo:
    """Addresses already resolved against one zone table (the proxy sees the same few clients
    on every request). Holding the table itself, not its id, means a reloaded or cleared
    table can never be mistaken for the one the answers came from."""

    def __init__(self) -> None:
        self._state: tuple[object, dict[str, ZoneInfo]] = (None, {})

    def resolve(self, address: str, table: list[tuple[NetworkZone, list[Any]]]) -> ZoneInfo:
        owner, answers = self._state
        if owner is not table:
            answers = {}
            self._state = (table, answers)
        zone = answers.get(address)
        if zone is None:
            try:
                zone = _zone_of(ipaddress.ip_address(address), address, table)
            except ValueError:
                zone = ZoneInfo(address=address)
            if len(answers) >= _ZONE_MEMO_SIZE:  # bounded: start over rather than grow
                answers.clear()
            answers[address] = zone
        return zone


_zone_memo = _ZoneMemo()


def resolve_zone_in_memory(address: str) -> ZoneInfo | None:
    """:func:`resolve_zone` from the zone table in memory; None when it must be read again.

    Answers are remembered per table (a :class:`ZoneInfo` is immutable), so a zone change,
    which replaces the table, is seen on the next call.
    """
    table = zone_table.peek()
    if table is None:
        return None
    return _zone_memo.resolve(address, table)


def _zone_of(ip: Any, address: str, table: list[tuple[NetworkZone, list[Any]]]) -> ZoneInfo:
    best: tuple[int, NetworkZone] | None = None
    for zone, networks in table:
        for net in networks:
            if ip.version == net.version and ip in net and (best is None or net.prefixlen > best[0]):
                best = (net.prefixlen, zone)
    if best is None:
        return ZoneInfo(address=address)
    return ZoneInfo(name=best[1].name, trusted=best[1].trusted, address=address)


def tier_policy(tier: Tier) -> TierPolicy:
    """A tier row as the decision's frozen policy (its fields: the rules that decide)."""
    return TierPolicy(name=tier.name, **policy_values(tier.rule_values()))


def resource_info(resource: Resource) -> ResourceInfo:
    """A resource row (with its tier and sharing) as frozen data."""
    return ResourceInfo(
        slug=resource.slug, name=resource.name, kind=resource.kind, tier=tier_policy(resource.tier),
        allowed_groups=frozenset(g.name for g in resource.allowed_groups.all()),
        allowed_users=frozenset(u.get_username() for u in resource.allowed_users.all()),
        enabled=resource.enabled,
    )


@functools.lru_cache(maxsize=4096)
def _glob(pattern: str, case_sensitive: bool = True) -> Callable[[str], re.Match[str] | None]:
    """The matcher :func:`fnmatch.fnmatchcase` uses for ``pattern``, compiled once per pattern
    (ignoring case unless the resource routes case-sensitively)."""
    return re.compile(fnmatch.translate(pattern), 0 if case_sensitive else re.IGNORECASE).match


def compile_action_rules(resource: Resource) -> tuple[CompiledRule, ...]:
    """``resource``'s action rules, parsed once, for :func:`classify_compiled`.

    A holder of a long-lived resource row (the proxy's catalog cache) keeps this next to the
    row, so a request neither re-reads the related manager nor re-splits ``methods``.
    """
    case_sensitive = bool(getattr(resource, "paths_case_sensitive", False))
    return tuple(
        (frozenset(m.strip().upper() for m in rule.methods.split(",") if m.strip()),
         _glob(rule.path, case_sensitive),
         rule.action_class)
        for rule in resource.action_rules.all())


_STRICTNESS = {ActionClass.READ: 0, ActionClass.WRITE: 1, ActionClass.SENSITIVE: 2}
_SEGMENT_PARAMS = re.compile(r";[^/]*")
_SEGMENT_TAIL = re.compile(r"[. ]+(?=/|$)")


def lenient_reading(path: str) -> str:
    """``path`` as the most lenient upstream might read it: Unicode compatibility forms folded
    (NFKC), ``;parameters`` cut from each segment (Tomcat, Jetty), trailing dots and spaces cut
    from each segment (IIS). Rules are matched on this reading too, and the stricter class
    wins, so no spelling of a path can reach the app under a milder rule than it deserves."""
    folded = unicodedata.normalize("NFKC", path)
    return _SEGMENT_TAIL.sub("", _SEGMENT_PARAMS.sub("", folded))


def _first_match(rules: tuple[CompiledRule, ...], method: str, path: str) -> ActionClass:
    for methods, matches, action_class in rules:
        if ("*" in methods or method in methods) and matches(path) is not None:
            return ActionClass(action_class)
    return ActionClass.READ if method in _SAFE_METHODS else ActionClass.WRITE


def classify_compiled(rules: tuple[CompiledRule, ...], method: str, path: str) -> ActionClass:
    """:func:`classify` from rules made by :func:`compile_action_rules`."""
    method = method.upper()
    found = _first_match(rules, method, path)
    if not rules or found is ActionClass.SENSITIVE:
        return found
    lenient = lenient_reading(path)
    if lenient == path:
        return found
    other = _first_match(rules, method, lenient)
    return other if _STRICTNESS[other] > _STRICTNESS[found] else found


def classify(resource: Resource, method: str, path: str) -> ActionClass:
    """The action class of ``method path`` on ``resource``: first matching rule, else by method.

    ``path`` must already be normalised by the enforcement point (no dot segments or
    encoded slashes), so a trick in the URL cannot pick a milder rule.
    """
    return classify_compiled(compile_action_rules(resource), method, path)


def _active_grant_expiry(user: AbstractBaseUser, resource: Resource) -> float | None:
    now = timezone.now()
    grant = (AccessGrant.objects.filter(user=user, resource=resource, revoked_at__isnull=True,
                                        starts_at__lte=now, expires_at__gt=now)
             .order_by("-expires_at").first())
    return grant.expires_at.timestamp() if grant else None


def _one_time_mfa_waiting(user: AbstractBaseUser, session_key: str | None, resource: Resource,
                          action: Action) -> frozenset[str]:
    """The factors of the one-time confirmations waiting for ``action`` (empty: none waits).

    A confirmation made with a passkey carries its proof (``portal.passkeys.ActionProof``),
    one made at the IdP its own (``portal.sso.IdpActionProof``); any other was a code.
    """
    since = timezone.now() - timezone.timedelta(seconds=CHALLENGE_TTL_SECONDS)
    proofs = ActionChallenge.objects.filter(
        user=user, session_hash=session_hash(session_key), resource=resource,
        method=action.method or action.kind, path=action.path, digest=action.digest,
        verified_at__gte=since, consumed_at__isnull=True,
    ).values_list("passkey_proof", "idp_proof")
    return frozenset(Factor.PASSKEY if passkey is not None else Factor.IDP if idp is not None
                     else Factor.TOTP for passkey, idp in proofs)


def needs_lookups(tier: TierPolicy, action_class: ActionClass) -> bool:
    """Whether deciding ``action_class`` under ``tier`` needs more than the subject, zone and
    resource: an approval grant or a one-time MFA confirmation, both read from the database.
    Enforcement points that decide from memory send such requests the full way."""
    return tier.approval_required or tier.mfa_freshness(action_class) == 0


def gather(user: AbstractBaseUser, session: Any, client_address: str, resource: Resource,
           action: Action, *, device: DeviceInfo | None = None, now: float | None = None,
           groups: frozenset[str] | None = None, via_isolation: bool = False) -> DecisionInput:
    """Everything the decision needs for ``action`` by ``user`` on ``resource``.

    Grants and one-time MFA confirmations are only looked up when the tier could ask for
    them (approval needed; freshness 0 for this action class): the answer is the same, the
    common request is a few queries cheaper.
    """
    now = time.time() if now is None else now
    info = resource_info(resource)
    per_action = info.tier.mfa_freshness(action.action_class) == 0
    waiting = _one_time_mfa_waiting(user, getattr(session, "session_key", None), resource,
                                    action) if per_action else frozenset()
    # keep in step with needs_lookups(): it says when these look-ups may be skipped
    return DecisionInput(
        subject=subject_for(user, session, now, groups),
        device=device or DeviceInfo(),
        zone=resolve_zone(client_address),
        resource=info,
        action=action,
        now=now,
        grant_expires_at=_active_grant_expiry(user, resource) if info.tier.approval_required else None,
        one_time_mfa=bool(waiting),
        one_time_mfa_factors=waiting,
        via_isolation=via_isolation,
    )
