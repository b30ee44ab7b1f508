"""What the tiers pages show and change, as plain functions the views call.

"My apps" previews each resource with the same :func:`tiers.decision.decide` the enforcement
points use (nothing is audited: a preview opens nothing); the denial page renders a
decision's reasons; the admin pages re-tag resources, edit tiers and run the policy
simulator. None of this holds a policy ``if``: outcomes and reasons come from the decision.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.db import transaction
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.utils.translation import gettext, ngettext

from portal.accounts.mfa import AMR_KEY, MFA_TIME_KEY
from portal.audit.chain import record
from tiers.context import gather, resolve_zone, resource_info, subject_for
from tiers.decision import decide
from tiers.jit import NO_ORIGIN, Origin
from tiers.models import AccessMode, AccessRequest, NetworkZone, Resource, ResourceKind, Tier, TierChange
from tiers.querysets import visible_to
from tiers.rules import TIER_RULES, Kind, shown
from tiers.types import (
    Action,
    ActionClass,
    ActionKind,
    Decision,
    DecisionInput,
    DeviceInfo,
    Factor,
    Outcome,
    Reason,
    Text,
    ZoneInfo,
    factor_words,
)

__all__ = [
    "AppCard",
    "Simulation",
    "TierGroup",
    "app_groups",
    "entry_point",
    "human_seconds",
    "live_effect",
    "note_tier_change",
    "open_action",
    "render_denial",
    "render_unavailable",
    "retag",
    "seconds_ago",
    "simulate",
    "simulation_summary",
    "tier_rules",
    "translated",
]

# Short words for the rule that stopped a preview, as a card can show them.
MISSING = {
    "resource_disabled": "Switched off for now",
    "account_locked": "Your account is locked",
    "pathway_not_allowed": "Cannot be opened this way",
    "not_entitled": "Not shared with you",
    "tier_closed": "Closed by an admin",
    "network_zone_not_allowed": "Not from this network",
    "device_not_trusted": "Needs a trusted device",
    "approval_required": "Needs approval",
    "risk_too_high": "Blocked: unusual activity",
    "mfa_stale": "Needs a fresh code",
    "mfa_per_action": "Needs a code for each action",
    "mfa_factor_not_accepted": "Needs another second factor",
}

# The amr a session holds after each factor (portal.accounts.mfa, portal.passkeys.ceremony).
# The amr a session confirmed with each factor carries (tiers.context.factor_of_amr reads it back).
_AMR_OF = {Factor.TOTP: ["pwd", "otp"], Factor.PASSKEY: ["pwd", "hwk", "user"], Factor.IDP: ["fed", "mfa"]}


def accepted_factors_words(accepted: dict[str, list[str]] | None) -> str:
    """A tier's ``accepted_factors`` in words, per action class; "any" when nothing is narrowed."""
    parts = [f"{c}: {factor_words(frozenset(accepted[c]))}" for c in (a.value for a in ActionClass)
             if accepted and accepted.get(c)]
    return "; ".join(parts) or "any (authenticator app code or passkey)"


def translated(text: object) -> str:
    """A decision's sentence in the reader's language: its template translated first, then
    formatted (a :class:`~tiers.types.Text`; anything else is shown as it is)."""
    if not isinstance(text, Text):
        return str(text)
    params = {key: translated(value) if isinstance(value, Text) else value
              for key, value in text.params.items()}
    return gettext(text.template) % params if params else gettext(text.template)


def human_seconds(seconds: int | None, *, none: str = "not needed") -> str:
    """``3600`` -> ``1 h``; ``0`` -> ``every action``; ``None`` -> ``none``."""
    if seconds is None:
        return none
    if seconds == 0:
        return "every action"
    for unit, size in (("h", 3600), ("min", 60)):
        if seconds % size == 0:
            return f"{seconds // size} {unit}"
    return f"{seconds} s"


def seconds_ago(seconds: int) -> str:
    """``1`` -> ``1 second ago``, ``60`` -> ``60 seconds ago`` (the plural through ngettext)."""
    return ngettext("%(count)d second ago", "%(count)d seconds ago", seconds) % {"count": seconds}


# --- My apps --------------------------------------------------------------------------------

def entry_point(resource: Resource) -> tuple[str, str]:
    """Where a resource opens in the portal and how that is described: (path, label).

    Web apps of a pixel-streamed tier open as an isolated desktop (the proxy would answer
    ``isolate`` anyway); desktops and hosts always do.
    """
    if resource.kind == ResourceKind.WEB and resource.tier.access_mode != AccessMode.STREAM:
        return f"/apps/{resource.slug}/", "Opens directly, through the portal"
    return f"/desktop/{resource.slug}/", "Opens in an isolated desktop (you only receive pixels)"


def open_action(resource: Resource) -> Action:
    """What opening ``resource`` from My apps amounts to, as its enforcement point asks it.

    A web app's first page is a plain read; opening a desktop is a sensitive action (the
    desktop broker asks it that way: every tunnel open needs a fresh code).
    """
    if resource.kind == ResourceKind.WEB:
        return Action(ActionKind.HTTP, ActionClass.READ, "GET", "/")
    return Action(ActionKind.DESKTOP_OPEN, ActionClass.SENSITIVE, path=f"/desktop/{resource.slug}/")


@dataclass(frozen=True)
class AppCard:
    """One resource on My apps, with what the decision would say if it were opened now."""

    resource: Resource
    decision: Decision
    path: str
    how: str
    pending_request: AccessRequest | None = None

    @property
    def can_open(self) -> bool:
        """Allow, isolate and step-up all start by following the link (step-up asks on the way)."""
        return self.decision.outcome is not Outcome.DENY

    @property
    def missing(self) -> Reason | None:
        return self.decision.denial

    @property
    def missing_label(self) -> str:
        reason = self.decision.denial
        if reason is None or self.decision.outcome is Outcome.ISOLATE:
            return ""
        return MISSING.get(reason.rule, reason.message)

    @property
    def needs_request(self) -> bool:
        reason = self.decision.denial
        return reason is not None and reason.rule == "approval_required"

    @property
    def needs_approval(self) -> bool:
        return self.resource.tier.approval_required


@dataclass(frozen=True)
class TierGroup:
    tier: Tier
    cards: list[AppCard] = field(default_factory=list)


def app_groups(user: AbstractBaseUser, session: Any, client_address: str,
               *, now: float | None = None) -> list[TierGroup]:
    """The resources ``user`` may see, grouped by tier (least sensitive first), each previewed."""
    now = time.time() if now is None else now
    pending = {r.resource_id: r for r in AccessRequest.objects.filter(
        requester=user, state=AccessRequest.State.PENDING)}
    groups: dict[int, TierGroup] = {}
    resources = visible_to(user).order_by("tier__rank", "tier__name", "name")
    for resource in resources:
        decision = decide(gather(user, session, client_address, resource, open_action(resource), now=now))
        path, how = entry_point(resource)
        group = groups.setdefault(resource.tier_id, TierGroup(resource.tier))
        group.cards.append(AppCard(resource, decision, path, how, pending.get(resource.pk)))
    return list(groups.values())


# --- the denial page -------------------------------------------------------------------------

def render_denial(request: HttpRequest, resource: Resource | Any, decision: Decision,
                  status: int = 403) -> HttpResponse:
    """A page that says why ``decision`` refused ``resource`` and what to do about it.

    ``resource`` is a :class:`Resource` or anything with ``name`` and ``slug`` (e.g. a
    :class:`~tiers.types.ResourceInfo`). Enforcement points return this for ``deny``.
    """
    denial = decision.denial
    passed = [r for r in decision.reasons if r is not denial]
    return render(request, "tiers/denied.html", {
        "resource": resource, "decision": decision, "denial": denial, "passed": passed, "status": status,
        "missing_label": MISSING.get(denial.rule, "") if denial else "",
        "request_access": denial is not None and denial.rule == "approval_required",
        "step_up": decision.outcome is Outcome.STEP_UP,
        "isolate": decision.outcome is Outcome.ISOLATE,
    }, status=status)


def render_unavailable(request: HttpRequest) -> HttpResponse:
    """Fail closed: a dependency the decision needs is down, so nothing is allowed (503)."""
    response = render(request, "errors/503.html", status=503)
    response["Retry-After"] = "30"
    return response


# --- catalog administration -----------------------------------------------------------------

def note_tier_change(resource: Resource, from_tier: str, to_tier: str, by: str,
                     origin: Origin = NO_ORIGIN) -> TierChange:
    """Write one tier move to the resource's history and to the audit chain."""
    change = TierChange.objects.create(resource=resource, from_tier=from_tier, to_tier=to_tier,
                                       changed_by=by)
    record("catalog.retag", outcome="success", actor=by, resource=resource.slug,
           client_address=origin.client_address, request_id=origin.request_id,
           detail={"from": from_tier, "to": to_tier, "change": change.pk})
    return change


def retag(resources: Iterable[Resource], tier: Tier, by: AbstractBaseUser,
          origin: Origin = NO_ORIGIN) -> list[TierChange]:
    """Move ``resources`` to ``tier``; each real move is kept in history and audited."""
    changes = []
    with transaction.atomic():
        for resource in Resource.objects.select_for_update().select_related("tier").filter(
                pk__in=[r.pk for r in resources]).order_by("pk"):
            if resource.tier_id == tier.pk:
                continue
            from_tier = resource.tier.name
            resource.tier = tier
            resource.save(update_fields=["tier"])
            changes.append(note_tier_change(resource, from_tier, tier.name, by.get_username(), origin))
    return changes


def tier_rules(tier: Tier) -> list[tuple[str, str]]:
    """A tier's rules as (label, value) rows, in words: one row per rule of
    :data:`tiers.rules.TIER_RULES` but the description."""
    values = tier.rule_values()
    rows = []
    for rule in TIER_RULES:
        value = values[rule.name]
        if rule.kind is Kind.TEXT:
            continue
        if rule.kind is Kind.SECONDS:
            words = human_seconds(value)
        elif rule.kind is Kind.CHOICE:
            words = dict(rule.choices).get(value, value)
        elif rule.kind is Kind.FACTORS:
            words = accepted_factors_words(value)
        else:
            words = shown(rule.name, value)
        rows.append((rule.label, words))
    return rows


# --- policy simulator ------------------------------------------------------------------------

@dataclass(frozen=True)
class Simulation:
    """A "what if": the input the simulator built and what the decision said."""

    input: DecisionInput
    decision: Decision


def simulate(user: AbstractBaseUser, resource: Resource, action: Action, *,
             zone: NetworkZone | None = None, client_address: str = "",
             mfa_age: int | None = None, has_grant: bool = False, device_trusted: bool = False,
             one_time_mfa: bool = False, risk_score: float = 0.0,
             now: float | None = None, mfa_factor: str = Factor.TOTP) -> Simulation:
    """Decide a hypothetical action with the real :func:`decide`. Reads only; changes nothing.

    The network is the client address's zone when one is given, else ``zone`` (``None`` =
    the internet). A grant, when assumed, runs for an hour from ``now``. The last MFA (and a
    waiting one-time confirmation) is assumed made with ``mfa_factor``.
    """
    now = time.time() if now is None else now
    session = {} if mfa_age is None else {MFA_TIME_KEY: now - mfa_age, AMR_KEY: _AMR_OF[Factor(mfa_factor)]}
    if client_address:
        zone_info = resolve_zone(client_address)
    elif zone is not None:
        zone_info = ZoneInfo(name=zone.name, trusted=zone.trusted)
    else:
        zone_info = ZoneInfo()
    inp = DecisionInput(
        subject=subject_for(user, session, now),
        device=DeviceInfo(id="simulated" if device_trusted else "", registered=device_trusted,
                          trusted=device_trusted),
        zone=zone_info, resource=resource_info(resource), action=action, now=now,
        grant_expires_at=now + 3600 if has_grant else None, one_time_mfa=one_time_mfa,
        one_time_mfa_factors=frozenset({mfa_factor}) if one_time_mfa else frozenset(),
        risk_score=risk_score, risk_signals=("simulated",) if risk_score else (),
    )
    return Simulation(inp, decide(inp))


def simulation_summary(sim: Simulation) -> Sequence[tuple[str, str]]:
    """The simulated input in words, so the admin sees what was assumed."""
    inp = sim.input
    return [
        ("User", f"{inp.subject.username} ({', '.join(sorted(inp.subject.groups)) or 'no groups'})"
                 + ("" if inp.subject.is_active else ", locked")),
        ("Resource", f"{inp.resource.name} ({inp.resource.slug}, {inp.resource.kind}, "
                     f"tier {inp.resource.tier.name})"),
        ("Action", f"{inp.action.kind}, {inp.action.action_class}"),
        ("Network zone", inp.zone.name + (f" (from {inp.zone.address})" if inp.zone.address else "")),
        ("Last MFA", "never" if inp.subject.mfa_age is None else seconds_ago(int(inp.subject.mfa_age))),
        ("Last MFA made with", factor_words(frozenset({inp.subject.mfa_factor or ""})) or "nothing"),
        (f"Second factors that count for {inp.action.action_class} actions",
         factor_words(inp.resource.tier.factors_for(inp.action.action_class))
         or "any (authenticator app code or passkey)"),
        ("Approved grant", "yes" if inp.grant_expires_at else "no"),
        ("Trusted device", "yes" if inp.device.trusted else "no"),
        ("One-time code waiting", "yes" if inp.one_time_mfa else "no"),
        ("Risk score", f"{inp.risk_score:.2f}"),
        ("Evaluated at", datetime.fromtimestamp(inp.now, tz=UTC).isoformat(timespec="seconds")),
    ]


def live_effect(resource: Resource, target: Tier) -> str:
    """What moving ``resource`` to ``target`` does to the sessions open on it right now (the
    change is pushed to every enforcement point: streaming/proxy/signals.py, desktop re-checks)."""
    name, now, then = resource.name, resource.tier.access_mode, target.access_mode
    if then == "deny":
        return f"Every live session of {name} ends within seconds."
    if resource.kind == "web" and now != "stream" and then == "stream":
        return (f"People using {name} right now are sent to an isolated desktop at their next request; "
                "its open WebSockets close within seconds.")
    if resource.kind == "web" and now == "stream" and then != "stream":
        return (f"Isolated sessions of {name} end at their next re-check (within 30 s); "
                "people open it directly again.")
    return (f"Live sessions of {name} are checked again under {target.name}'s rules; "
            "any it does not allow end.")
