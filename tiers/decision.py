"""The policy decision: one pure function, default deny.

No I/O, no clock, no database: every input arrives in :class:`DecisionInput`, so the same
call serves enforcement, "My apps" and the admin's simulator, and runs in microseconds.
Rules run in a fixed order (:data:`_GATES`, then the second factor); the first that refuses
decides, and every rule that was checked on the way to an allow is listed too, so a person
can see why access was given. Sentences are :class:`~tiers.types.Text`: English here,
translated where they are shown.
"""

from __future__ import annotations

from collections.abc import Callable
from types import MappingProxyType

from tiers.types import (
    Action,
    ActionKind,
    Decision,
    DecisionInput,
    Obligation,
    Outcome,
    Reason,
    ResourceInfo,
    Text,
    TierPolicy,
    factor_words,
)

__all__ = ["RISK_DENY", "RISK_STEP_UP", "decide", "obligations_for"]

RISK_STEP_UP = 0.5
RISK_DENY = 0.8

_ = Text  # a sentence for people, marked for makemessages
_PATHWAY = {ActionKind.HTTP: {"web"}, ActionKind.VIEW: {"web", "vnc", "ssh", "rdp"}}
_STREAM_KINDS = {"vnc", "ssh", "rdp"}

# A refusal: the outcome and the reason that decided it.
Refusal = tuple[Outcome, Reason]
Gate = Callable[[DecisionInput, list[Reason]], Refusal | None]


def obligations_for(tier: TierPolicy, action: Action) -> MappingProxyType:
    """What an enforcement point must do when the tier allows: record, controls, limits."""
    return MappingProxyType({
        Obligation.RECORD: tier.recording,
        Obligation.READ_ONLY: tier.read_only,
        Obligation.WATERMARK: tier.watermark,
        Obligation.CLIPBOARD_IN: str(tier.clipboard_in),
        Obligation.CLIPBOARD_OUT: str(tier.clipboard_out),
        Obligation.FILE_TRANSFER: str(tier.file_transfer),
        Obligation.MFA_MAX_AGE: tier.mfa_freshness(action.action_class),
        Obligation.SESSION_MAX_SECONDS: tier.session_max_seconds,
        Obligation.IDLE_SECONDS: tier.idle_seconds,
        Obligation.REAUTH_INTERVAL_SECONDS: tier.reauth_interval_seconds,
        Obligation.RATE_LIMIT_PER_MINUTE: tier.rate_limit_per_minute,
    })


def decide(inp: DecisionInput) -> Decision:
    """Decide ``inp.action`` by ``inp.subject`` on ``inp.resource``."""
    passed: list[Reason] = []
    for gate in _GATES:
        refusal = gate(inp, passed)
        if refusal is not None:
            outcome, reason = refusal
            return Decision(outcome, (reason, *passed))
    return _second_factor(inp, passed)


# --- the gates, in order: each refuses, or notes what it checked and lets the next one look ---


def _deny(rule: str, message: str, values: dict[str, object], remedy: str) -> Refusal:
    return Outcome.DENY, Reason(rule, message, values, remedy)


def _resource_enabled(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    resource = inp.resource
    if resource.enabled:
        return None
    return _deny("resource_disabled", _("%(name)s is switched off by an admin.", name=resource.name),
                 {"resource": resource.slug}, _("Ask the resource's owner when it will be back."))


def _account_active(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    if inp.subject.is_active:
        return None
    return _deny("account_locked", _("Your account is locked."), {"user": inp.subject.username},
                 _("Contact your admin or the help desk."))


def _pathway_ok(resource: ResourceInfo, action: Action) -> bool:
    if action.kind in _PATHWAY:
        return resource.kind in _PATHWAY[action.kind]
    # desktop.*, clipboard.*, file.* only exist for pixel-streamed resources: desktops and
    # hosts, and web apps whose tier streams them (an isolated browser in a disposable slot)
    return resource.kind in _STREAM_KINDS or (resource.kind == "web"
                                              and resource.tier.access_mode == "stream")


def _pathway(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    resource, action = inp.resource, inp.action
    if _pathway_ok(resource, action):
        return None
    return _deny("pathway_not_allowed",
                 _("%(name)s cannot be reached this way (%(action)s to a %(kind)s resource).",
                   name=resource.name, action=action.kind, kind=resource.kind),
                 {"action": action.kind, "kind": resource.kind}, _("Open it from My apps."))


def _entitled(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    subject, resource = inp.subject, inp.resource
    via_user = subject.username in resource.allowed_users
    via_groups = sorted(subject.groups & resource.allowed_groups)
    if not via_user and not via_groups:
        return _deny(
            "not_entitled", _("%(name)s is not shared with you or any of your groups.", name=resource.name),
            {"your_groups": sorted(subject.groups), "allowed_groups": sorted(resource.allowed_groups)},
            _("Ask an admin to add you or your team to this resource."))
    message = (_("Shared with you directly.") if via_user
               else _("Shared with you through %(groups)s.", groups=", ".join(via_groups)))
    passed.append(Reason("entitled", message, {"user": via_user, "groups": via_groups}))
    return None


def _tier_open(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    tier = inp.resource.tier
    if tier.access_mode != "deny":
        return None
    return _deny("tier_closed", _("The %(tier)s tier allows no access at the moment.", tier=tier.name),
                 {"tier": tier.name}, _("Contact your admin."))


def _network_zone(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    tier, zone = inp.resource.tier, inp.zone
    if tier.allowed_zones and zone.name not in tier.allowed_zones:
        allowed = sorted(tier.allowed_zones)
        return _deny(
            "network_zone_not_allowed",
            _("The %(tier)s tier cannot be used from the network you are on (%(zone)s).",
              tier=tier.name, zone=zone.name),
            {"zone": zone.name, "allowed_zones": allowed, "address": zone.address},
            _("Connect from an allowed network (%(zones)s), for example the office or the VPN.",
              zones=", ".join(allowed)))
    passed.append(Reason("network_zone", _("Network zone %(zone)s is allowed.", zone=zone.name),
                         {"zone": zone.name}))
    return None


def _device(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    if not inp.resource.tier.device_trust_required or inp.device.trusted:
        return None
    return _deny("device_not_trusted",
                 _("This resource needs a registered, trusted device, and this one is not."),
                 {"device": inp.device.id or None, "registered": inp.device.registered},
                 _("Register this device with IT, or use a company device."))


def _approval(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    tier = inp.resource.tier
    if not tier.approval_required:
        return None
    if inp.grant_expires_at is None or inp.grant_expires_at <= inp.now:
        return _deny("approval_required",
                     _("The %(tier)s tier needs an approved, time-boxed access request.", tier=tier.name),
                     {"tier": tier.name},
                     _("Request access with a short justification; an admin approves it."))
    passed.append(Reason("approved_grant", _("An approved access grant is active."),
                         {"expires_in": int(inp.grant_expires_at - inp.now)}))
    return None


def _risk(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    if inp.risk_score < RISK_DENY:
        return None
    return _deny("risk_too_high", _("Unusual activity was detected on this session."),
                 {"score": inp.risk_score, "signals": list(inp.risk_signals)},
                 _("Sign in again, or contact the security team."))


def _isolation(inp: DecisionInput, passed: list[Reason]) -> Refusal | None:
    resource, tier = inp.resource, inp.resource.tier
    if not (resource.kind == "web" and tier.access_mode == "stream" and inp.action.kind == ActionKind.HTTP
            and not inp.via_isolation):
        return None
    return Outcome.ISOLATE, Reason(
        "isolation_required", _("The %(tier)s tier only allows this app inside an isolated desktop.",
                                tier=tier.name),
        {"tier": tier.name}, _("Open it from My apps as an isolated session."))


_GATES: tuple[Gate, ...] = (_resource_enabled, _account_active, _pathway, _entitled, _tier_open,
                            _network_zone, _device, _approval, _risk, _isolation)


# --- the second factor ------------------------------------------------------------------------


def _second_factor(inp: DecisionInput, passed: list[Reason]) -> Decision:
    """Allow, or ask for a fresh (or per-action) confirmation by a factor the tier accepts."""
    tier, action = inp.resource.tier, inp.action
    freshness = tier.mfa_freshness(action.action_class)
    if inp.risk_score >= RISK_STEP_UP:
        freshness = 0  # unusual activity: confirm this very action
    if freshness is None:
        passed.append(Reason("mfa_not_needed",
                             _("The %(tier)s tier asks no fresh code for %(action_class)s actions.",
                               tier=tier.name, action_class=action.action_class),
                             {"action_class": str(action.action_class)}))
        return Decision(Outcome.ALLOW, tuple(passed), obligations_for(tier, action))
    accepted = tier.factors_for(action.action_class)
    if freshness == 0:
        return _one_time(inp, passed, accepted)
    refusal = _fresh_enough(inp, freshness, accepted)
    if refusal is not None:
        return Decision(Outcome.STEP_UP, (refusal, *passed))
    age = int(inp.subject.mfa_age or 0)
    passed.append(Reason("mfa_fresh", _("Second factor confirmed %(age)d s ago (limit %(limit)d s).",
                                        age=age, limit=freshness),
                         {"mfa_age": age, "freshness": freshness}
                         | ({"factor": inp.subject.mfa_factor, "accepted_factors": sorted(accepted)}
                            if accepted else {})))
    return Decision(Outcome.ALLOW, tuple(passed), obligations_for(tier, action))


def _one_time(inp: DecisionInput, passed: list[Reason], accepted: frozenset[str]) -> Decision:
    """Freshness 0: only a confirmation of this very action, by an accepted factor, will do."""
    action = inp.action
    if not inp.one_time_mfa or (accepted and not inp.one_time_mfa_factors & accepted):
        return Decision(Outcome.STEP_UP, (_per_action_reason(action, accepted), *passed))
    passed.append(Reason("mfa_one_time", _("A one-time confirmation for this action was used."),
                         {"action_class": str(action.action_class)}))
    return Decision(Outcome.ALLOW, tuple(passed), obligations_for(inp.resource.tier, action),
                    consumed_one_time_mfa=True)


def _fresh_enough(inp: DecisionInput, freshness: int, accepted: frozenset[str]) -> Reason | None:
    """Why the session's last confirmation does not do (too old, or by another factor), or None."""
    age, action = inp.subject.mfa_age, inp.action
    if age is None or age > freshness:
        return _stale_reason("mfa_stale", action, freshness, accepted,
                             {"mfa_age": None if age is None else int(age)})
    if accepted and inp.subject.mfa_factor not in accepted:
        return _stale_reason("mfa_factor_not_accepted", action, freshness, accepted,
                             {"mfa_age": int(age), "used_factor": inp.subject.mfa_factor})
    return None


def _factor_remedy(accepted: frozenset[str]) -> str:
    remedy = _("Confirm with %(factors)s.", factors=factor_words(accepted))
    if "passkey" in accepted:
        return _("%(remedy)s No passkey yet? Add one under Security (/accounts/mfa/).", remedy=remedy)
    return remedy


def _per_action_reason(action: Action, accepted: frozenset[str]) -> Reason:
    """A confirmation of this very action is missing (or was made with a factor that does not count)."""
    values = {"action_class": str(action.action_class), "freshness": 0}
    if not accepted:
        return Reason("mfa_per_action",
                      _("This %(action_class)s action needs a fresh code for this action alone.",
                        action_class=action.action_class),
                      values, _("Enter a code from your authenticator app."))
    return Reason("mfa_per_action",
                  _("This %(action_class)s action needs a fresh confirmation for this action alone. "
                    "Accepted here: %(factors)s.", action_class=action.action_class,
                    factors=factor_words(accepted)),
                  values | {"accepted_factors": sorted(accepted)}, _factor_remedy(accepted))


def _stale_reason(rule: str, action: Action, freshness: int, accepted: frozenset[str],
                  seen: dict[str, object]) -> Reason:
    """No confirmation recent enough (``mfa_stale``), or only one by a factor that does not
    count here (``mfa_factor_not_accepted``); both read the same to the person."""
    values = {"action_class": str(action.action_class), "freshness": freshness} | seen
    if not accepted:
        return Reason(rule, _("This %(action_class)s action needs a code confirmed in the last %(window)s.",
                              action_class=action.action_class, window=_human(freshness)),
                      values, _("Enter a code from your authenticator app."))
    return Reason(rule, _("This %(action_class)s action needs a confirmation in the last %(window)s. "
                          "Accepted here: %(factors)s.", action_class=action.action_class,
                          window=_human(freshness), factors=factor_words(accepted)),
                  values | {"accepted_factors": sorted(accepted)}, _factor_remedy(accepted))


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
