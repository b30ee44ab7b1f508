"""Four eyes for lowering protection: what weakens a tier or a move, and the change requests.

The person a control checks must not be able to switch it off alone (DESIGN section 6,
separation of duties). So a change that makes anything less strict — a tier's rules, or a
resource moved to a tier whose rules are weaker — is not written: it becomes a
:class:`~tiers.models.PolicyChangeRequest` that another admin approves, and until then the
stronger rules stay in force. Changes that keep or raise protection apply at once.

:func:`weakens` is the one rule, pure and table-tested; the other functions are the steps
(file, approve, reject), each audited (``policy.change_requested`` / ``_approved`` /
``_rejected``), called by the Manage pages and ``manage.py catalog apply``. See
docs/decisions/0018-four-eyes-for-lowering-protection.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import QuerySet
from django.utils import timezone

from portal.audit.chain import record
from tiers.jit import NO_ORIGIN, Origin
from tiers.models import NetworkZone, PolicyChangeRequest, Resource, Tier, TierChange
from tiers.pages import note_tier_change
from tiers.rules import TIER_RULES, Looser, TierRule, factors_widened, normal_factors, shown

__all__ = [
    "MANAGE_PERMISSION", "RULE_KEYS", "NotAllowed", "NotPending", "PolicyChangeError", "RetagOutcome",
    "SelfApproval", "Stale", "TierEditOutcome", "Weakening", "approve", "edit_tier", "file_request",
    "lowering_moves", "move_weakens", "pending_changes", "reject", "retag", "rule_label", "shown",
    "tier_state", "weakens",
]

MANAGE_PERMISSION = "accounts.manage_catalog"

_NEVER = float("-inf")


def _strength(rule: TierRule) -> Callable[[Any], Any]:
    """How strict a value of ``rule`` is: higher = stricter (see ``Looser``)."""
    if rule.looser is Looser.LOWER:
        return lambda value: _NEVER if value is None else value
    if rule.looser is Looser.HIGHER:  # None = no limit, or no fresh code needed: the weakest
        return lambda value: _NEVER if value is None else -value
    if rule.looser is Looser.OFF:
        return bool
    order = {value: i for i, (value, _) in enumerate(rule.choices)}
    return lambda value: order.get(value, -1)


# Each protective rule of a tier (tiers.rules.TIER_RULES): its label and how strict a value is.
# A change to any of them that lowers the strength is a weakening; zones and factors are
# compared as sets. ``description`` is not protective.
RULES: dict[str, TierRule] = {rule.name: rule for rule in TIER_RULES if rule.looser is not Looser.NEVER}
RULE_KEYS = tuple(RULES)
_STRENGTH = {rule.name: _strength(rule) for rule in RULES.values() if rule.looser is not Looser.WIDER}
# Rules that only act on a pixel-streamed session: on a proxied tier they protect nothing (the
# browser holds the app's HTML), so loosening them there weakens nothing.
STREAM_ONLY = frozenset(rule.name for rule in RULES.values() if rule.stream_only)
# Operational limits, compared on a tier's own edits but not when a resource changes tier: a
# tier of higher rank whose gates are all at least as strict is a raise even if, say, it has
# no rate limit (streamed desktops have none to speak of).
OPERATIONAL = frozenset(rule.name for rule in RULES.values() if rule.operational)


def rule_label(key: str) -> str:
    """A field's name for people."""
    return RULES[key].label if key in RULES else key.replace("_", " ").capitalize()


@dataclass(frozen=True)
class Weakening:
    """One field that a change makes less strict."""

    field: str
    old: Any
    new: Any

    def __str__(self) -> str:
        return f"{rule_label(self.field)}: {shown(self.field, self.old)} -> {shown(self.field, self.new)}"


def _zones_widened(old: Iterable[str], new: Iterable[str]) -> bool:
    """Empty means any network: widening is adding a zone to a list, or emptying it."""
    before, after = set(old), set(new)
    return bool(before) and (not after or bool(after - before))


def weakens(old_state: Mapping[str, Any], new_state: Mapping[str, Any], *,
            keys: Iterable[str] = RULE_KEYS) -> list[Weakening]:
    """What going from ``old_state`` to ``new_state`` makes less strict, field by field.

    Both are tier states (:func:`tier_state`); only ``keys`` present in both are compared,
    and the pixel-streaming rules only when the old state streams or denies. Pure.
    """
    found = []
    proxied = old_state.get("access_mode") == "proxy"
    wanted = set(keys)
    for key in RULES:
        if key not in wanted or key not in old_state or key not in new_state:
            continue
        if proxied and key in STREAM_ONLY:
            continue
        old, new = old_state[key], new_state[key]
        if key == "allowed_zones":
            if _zones_widened(old, new):
                found.append(Weakening(key, sorted(old), sorted(new)))
        elif key == "accepted_factors":
            if factors_widened(old, new):
                found.append(Weakening(key, normal_factors(old), normal_factors(new)))
        elif old != new and _STRENGTH[key](new) < _STRENGTH[key](old):
            found.append(Weakening(key, old, new))
    return found


def move_weakens(from_state: Mapping[str, Any], to_state: Mapping[str, Any]) -> list[Weakening]:
    """What moving a resource from one tier to another makes less strict: a lower rank, or any
    gate (access mode, fresh codes, device, networks, approval, stream controls) weaker.

    Rank alone is not trusted: an admin could raise a lax tier's rank first (that applies at
    once), so the gates are compared too. Operational limits are not (see ``OPERATIONAL``).
    """
    return weakens(from_state, to_state, keys=[k for k in RULE_KEYS if k not in OPERATIONAL])


def tier_state(tier: Tier) -> dict[str, Any]:
    """A tier's protective rules (and description) as plain values, zones by name, factors
    in one spelling (so a re-spelt list is no change)."""
    state = tier.rule_values()
    state["accepted_factors"] = normal_factors(state["accepted_factors"])
    return state


# --- errors ---------------------------------------------------------------------------------


class PolicyChangeError(Exception):
    """A step on a change request was refused; ``str(exc)`` says why, for people."""

    code = "refused"


class NotAllowed(PolicyChangeError):
    code = "not_allowed"


class SelfApproval(PolicyChangeError):
    code = "self_approval"


class NotPending(PolicyChangeError):
    code = "not_pending"


class Stale(PolicyChangeError):
    code = "stale"


# --- filing ---------------------------------------------------------------------------------


def _actor(user: AbstractBaseUser | None) -> str:
    return user.get_username() if user is not None else "catalog"


def _audit(action: str, outcome: str, change: PolicyChangeRequest, actor: str, origin: Origin,
           reasons: Any = None, **detail: Any) -> None:
    record(action, outcome=outcome, actor=actor, resource=change.target_name, reasons=reasons,
           client_address=origin.client_address, request_id=origin.request_id,
           detail={"change_request": change.pk, "kind": change.kind, "target": change.target_name,
                   "changes": change.changes, "weakens": change.weakens, **detail})


def file_request(*, tier: Tier | None = None, resource: Resource | None = None,
                 changes: Mapping[str, list[Any]], weakenings: Iterable[Weakening],
                 by: AbstractBaseUser | None, reason: str = "", source: str = "",
                 origin: Origin = NO_ORIGIN) -> PolicyChangeRequest:
    """Hold a weakening change for a second admin (audited); an identical pending one is reused."""
    kind = PolicyChangeRequest.Kind.RETAG if resource is not None else PolicyChangeRequest.Kind.TIER
    changes = {k: list(v) for k, v in changes.items()}
    existing = PolicyChangeRequest.objects.filter(
        kind=kind, tier=tier, resource=resource, state=PolicyChangeRequest.State.PENDING)
    for candidate in existing:
        if candidate.changes == changes:
            return candidate
    change = PolicyChangeRequest.objects.create(
        kind=kind, tier=tier, resource=resource, changes=changes,
        weakens=[str(w) for w in weakenings], reason=reason[:500], source=source[:300], requested_by=by)
    _audit("policy.change_requested", "pending", change, _actor(by), origin, reason=change.reason,
           source=change.source)
    return change


@dataclass(frozen=True)
class RetagOutcome:
    """What a re-tag did: the moves made at once, and those held for a second admin."""

    moved: list[TierChange] = field(default_factory=list)
    held: list[PolicyChangeRequest] = field(default_factory=list)
    unchanged: int = 0


def retag(resources: Iterable[Resource], tier: Tier, by: AbstractBaseUser, *, reason: str = "",
          source: str = "Manage: Resources", origin: Origin = NO_ORIGIN) -> RetagOutcome:
    """Move ``resources`` to ``tier``: a move that keeps or raises protection at once, one that
    lowers it becomes a change request. Each row is locked while it is judged and moved."""
    moved: list[TierChange] = []
    held: list[PolicyChangeRequest] = []
    unchanged = 0
    with transaction.atomic():
        target = Tier.objects.prefetch_related("allowed_zones").get(pk=tier.pk)
        target_state = tier_state(target)
        for resource in Resource.objects.select_for_update().select_related("tier").filter(
                pk__in=[r.pk for r in resources]).order_by("pk"):
            if resource.tier_id == target.pk:
                unchanged += 1
                continue
            current = Tier.objects.prefetch_related("allowed_zones").get(pk=resource.tier_id)
            found = move_weakens(tier_state(current), target_state)
            if found:
                held.append(file_request(
                    resource=resource, changes={"tier": [current.name, target.name]}, weakenings=found,
                    by=by, reason=reason, source=source, origin=origin))
                continue
            resource.tier = target
            resource.save(update_fields=["tier"])
            moved.append(note_tier_change(resource, current.name, target.name, by.get_username(),
                                                  origin))
    return RetagOutcome(moved, held, unchanged)


@dataclass(frozen=True)
class TierEditOutcome:
    """What a tier edit did: the fields changed at once, and the request holding the rest."""

    applied: dict[str, list[Any]]
    held: PolicyChangeRequest | None = None


def _set_values(tier: Tier, values: Mapping[str, Any]) -> None:
    """Write ``values`` (state keys) to ``tier``; raises ValidationError for a forbidden mix."""
    if not values:
        return
    for key, value in values.items():
        if key != "allowed_zones":
            setattr(tier, key, value)
    tier.clean()
    tier.save()
    if "allowed_zones" in values:
        tier.allowed_zones.set(NetworkZone.objects.filter(name__in=values["allowed_zones"]))


def edit_tier(tier: Tier, wanted: Mapping[str, Any], by: AbstractBaseUser, *, reason: str = "",
              source: str = "Manage: Tiers", origin: Origin = NO_ORIGIN) -> TierEditOutcome:
    """Apply what keeps or raises protection now (``tier.update``); hold what weakens.

    ``wanted`` is a tier state (:func:`tier_state` keys). When the strict part alone would
    be a forbidden mix (see ``Tier.clean``), the whole edit is held.
    """
    with transaction.atomic():
        locked = Tier.objects.select_for_update().get(pk=tier.pk)
        before = tier_state(locked)
        diff = {k: [before[k], wanted[k]] for k in before if k in wanted and before[k] != wanted[k]}
        found = weakens(before, wanted)
        held_keys = {w.field for w in found}
        now_keys = {k for k in diff if k not in held_keys}
        if held_keys:
            try:
                with transaction.atomic():
                    _set_values(locked, {k: wanted[k] for k in now_keys})
            except ValidationError:
                held_keys, now_keys = set(diff), set()
                locked = Tier.objects.get(pk=tier.pk)
        else:
            _set_values(locked, {k: wanted[k] for k in now_keys})
        applied = {k: diff[k] for k in diff if k in now_keys}
        if applied:
            record("tier.update", outcome="success", actor=by.get_username(), resource=locked.name,
                   client_address=origin.client_address, request_id=origin.request_id,
                   detail={"tier": locked.name, "changes": applied})
        held = None
        if held_keys:
            held = file_request(tier=locked, changes={k: diff[k] for k in diff if k in held_keys},
                                weakenings=found, by=by, reason=reason, source=source, origin=origin)
    return TierEditOutcome(applied, held)


def lowering_moves(resource: Resource) -> dict[str, list[Weakening]]:
    """For each other tier, what moving ``resource`` there would weaken (tiers that weaken nothing
    are left out): the re-tag form marks these as needing a second admin."""
    tiers = list(Tier.objects.prefetch_related("allowed_zones"))
    current = next(t for t in tiers if t.pk == resource.tier_id)
    moves = {t.name: move_weakens(tier_state(current), tier_state(t)) for t in tiers
             if t.pk != current.pk}
    return {name: found for name, found in moves.items() if found}


# --- deciding -------------------------------------------------------------------------------


def pending_changes() -> QuerySet[PolicyChangeRequest]:
    """Change requests waiting for a second admin, oldest first."""
    return (PolicyChangeRequest.objects.filter(state=PolicyChangeRequest.State.PENDING)
            .select_related("tier", "resource__tier", "requested_by").order_by("requested_at", "pk"))


def _refuse(action: str, change: PolicyChangeRequest, by: AbstractBaseUser, origin: Origin,
            exc: PolicyChangeError) -> PolicyChangeError:
    _audit(action, "refused", change, by.get_username(), origin,
           reasons=[{"rule": exc.code, "message": str(exc)}])
    return exc


def _check_pending(change: PolicyChangeRequest) -> None:
    if change.state != PolicyChangeRequest.State.PENDING:
        raise NotPending(f"This change request was already {change.state}.")


def approve(change: PolicyChangeRequest, by: AbstractBaseUser, note: str = "", *,
            origin: Origin = NO_ORIGIN) -> PolicyChangeRequest:
    """A second admin approves: the held change is applied now, if nothing moved since."""
    action = "policy.change_approved"
    try:
        with transaction.atomic():
            change = PolicyChangeRequest.objects.select_for_update().get(pk=change.pk)
            if not by.has_perm(MANAGE_PERMISSION):
                raise NotAllowed("Only catalog admins decide policy changes.")
            if change.requested_by_id is not None and change.requested_by_id == by.pk:
                raise SelfApproval("You asked for this change: another admin must approve it.")
            _check_pending(change)
            _apply(change, by, origin)
            now = timezone.now()
            change.state = PolicyChangeRequest.State.APPLIED
            change.decided_by, change.decided_at, change.applied_at = by, now, now
            change.decision_note = note[:300]
            change.save()
            _audit(action, "success", change, by.get_username(), origin,
                   requested_by=change.requester_name, note=change.decision_note)
    except PolicyChangeError as exc:
        # Written after the rollback, so the refusal itself stays on the record.
        raise _refuse(action, change, by, origin, exc) from None
    return change


def _apply(change: PolicyChangeRequest, by: AbstractBaseUser, origin: Origin) -> None:
    stale = Stale("The catalog changed since this was asked; reject it and ask again.")
    who = f"{change.requester_name}, approved by {by.get_username()}"[:150]
    if change.kind == PolicyChangeRequest.Kind.RETAG:
        resource = Resource.objects.select_for_update().select_related("tier").get(pk=change.resource_id)
        old, new = change.changes["tier"]
        target = Tier.objects.filter(name=new).first()
        if resource.tier.name != old or target is None:
            raise stale
        resource.tier = target
        resource.save(update_fields=["tier"])
        note_tier_change(resource, old, new, who, origin)
        return
    tier = Tier.objects.select_for_update().get(pk=change.tier_id)
    current = tier_state(tier)
    if any(current.get(k) != old for k, (old, _) in change.changes.items()):
        raise stale
    try:
        _set_values(tier, {k: new for k, (_, new) in change.changes.items()})
    except ValidationError as exc:
        raise Stale(f"Applying it now would leave the tier invalid: {' '.join(exc.messages)}") from None
    record("tier.update", outcome="success", actor=who, resource=tier.name,
           client_address=origin.client_address, request_id=origin.request_id,
           detail={"tier": tier.name, "changes": change.changes, "change_request": change.pk})


def reject(change: PolicyChangeRequest, by: AbstractBaseUser, note: str = "", *,
           origin: Origin = NO_ORIGIN) -> PolicyChangeRequest:
    """Turn a change down (the requester may withdraw their own: that weakens nothing)."""
    action = "policy.change_rejected"
    try:
        with transaction.atomic():
            change = PolicyChangeRequest.objects.select_for_update().get(pk=change.pk)
            if not by.has_perm(MANAGE_PERMISSION):
                raise NotAllowed("Only catalog admins decide policy changes.")
            _check_pending(change)
            own = change.requested_by_id is not None and change.requested_by_id == by.pk
            change.state = (PolicyChangeRequest.State.WITHDRAWN if own
                            else PolicyChangeRequest.State.REJECTED)
            change.decided_by, change.decided_at = by, timezone.now()
            change.decision_note = note[:300]
            change.save()
            _audit(action, "success", change, by.get_username(), origin,
                   requested_by=change.requester_name, withdrawn=own, note=change.decision_note)
    except PolicyChangeError as exc:
        raise _refuse(action, change, by, origin, exc) from None
    return change
