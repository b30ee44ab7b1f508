"""The policy decision: one pure function, default deny.

No I/O, no clock, no database: every input arrives in :class:`DecisionInput`, so the same
call serves enforcement, "My apps" and the admin's simulator, and runs in microseconds.
Rules run in a fixed order; the first that refuses decides, and every rule that was checked
on the way to an allow is listed too, so a person can see why access was given.
"""

from __future__ import annotations

from types import MappingProxyType

from tiers.types import (
    Action,
    Decision,
    DecisionInput,
    Outcome,
    Reason,
    ResourceInfo,
    TierPolicy,
    factor_words,
)

__all__ = ["RISK_DENY", "RISK_STEP_UP", "decide", "obligations_for"]

RISK_STEP_UP = 0.5
RISK_DENY = 0.8

_PATHWAY = {"http": {"web"}, "view": {"web", "vnc", "ssh", "rdp"}}
_STREAM_KINDS = {"vnc", "ssh", "rdp"}


def obligations_for(tier: TierPolicy, action: Action) -> MappingProxyType:
    """What an enforcement point must do when the tier allows: record, controls, limits."""
    return MappingProxyType({
        "record": tier.recording,
        "read_only": tier.read_only,
        "watermark": tier.watermark,
        "clipboard_in": str(tier.clipboard_in),
        "clipboard_out": str(tier.clipboard_out),
        "file_transfer": str(tier.file_transfer),
        "mfa_max_age": tier.mfa_freshness(action.action_class),
        "session_max_seconds": tier.session_max_seconds,
        "idle_seconds": tier.idle_seconds,
        "reauth_interval_seconds": tier.reauth_interval_seconds,
        "rate_limit_per_minute": tier.rate_limit_per_minute,
    })


def _refuse(outcome: Outcome, reason: Reason, passed: list[Reason]) -> Decision:
    return Decision(outcome, (reason, *passed))


def _pathway_ok(resource: ResourceInfo, action: Action) -> bool:
    if action.kind in _PATHWAY:
        return resource.kind in _PATHWAY[action.kind]
    # desktop.*, clipboard.*, file.* only exist for pixel-streamed resources: desktops and
    # hosts, and web apps whose tier streams them (an isolated browser in a disposable slot)
    return resource.kind in _STREAM_KINDS or (resource.kind == "web"
                                              and resource.tier.access_mode == "stream")


def decide(inp: DecisionInput) -> Decision:
    """Decide ``inp.action`` by ``inp.subject`` on ``inp.resource``."""
    subject, resource, tier, action = inp.subject, inp.resource, inp.resource.tier, inp.action
    passed: list[Reason] = []

    if not resource.enabled:
        return _refuse(Outcome.DENY, Reason(
            "resource_disabled", f"{resource.name} is switched off by an admin.",
            {"resource": resource.slug}, "Ask the resource's owner when it will be back."), passed)
    if not subject.is_active:
        return _refuse(Outcome.DENY, Reason(
            "account_locked", "Your account is locked.", {"user": subject.username},
            "Contact your admin or the help desk."), passed)
    if not _pathway_ok(resource, action):
        return _refuse(Outcome.DENY, Reason(
            "pathway_not_allowed",
            f"{resource.name} cannot be reached this way ({action.kind} to a {resource.kind} resource).",
            {"action": action.kind, "kind": resource.kind}, "Open it from My apps."), passed)

    via_user = subject.username in resource.allowed_users
    via_groups = sorted(subject.groups & resource.allowed_groups)
    if not via_user and not via_groups:
        return _refuse(Outcome.DENY, Reason(
            "not_entitled", f"{resource.name} is not shared with you or any of your groups.",
            {"your_groups": sorted(subject.groups), "allowed_groups": sorted(resource.allowed_groups)},
            "Ask an admin to add you or your team to this resource."), passed)
    passed.append(Reason("entitled", "Shared with you" + (" directly" if via_user else
                         f" through {', '.join(via_groups)}") + ".",
                         {"user": via_user, "groups": via_groups}))

    if tier.access_mode == "deny":
        return _refuse(Outcome.DENY, Reason(
            "tier_closed", f"The {tier.name} tier allows no access at the moment.",
            {"tier": tier.name}, "Contact your admin."), passed)

    if tier.allowed_zones and inp.zone.name not in tier.allowed_zones:
        return _refuse(Outcome.DENY, Reason(
            "network_zone_not_allowed",
            f"The {tier.name} tier cannot be used from the network you are on ({inp.zone.name}).",
            {"zone": inp.zone.name, "allowed_zones": sorted(tier.allowed_zones),
             "address": inp.zone.address},
            f"Connect from an allowed network ({', '.join(sorted(tier.allowed_zones))}), "
            "for example the office or the VPN."), passed)
    passed.append(Reason("network_zone", f"Network zone {inp.zone.name} is allowed.",
                         {"zone": inp.zone.name}))

    if tier.device_trust_required and not inp.device.trusted:
        return _refuse(Outcome.DENY, Reason(
            "device_not_trusted",
            "This resource needs a registered, trusted device, and this one is not.",
            {"device": inp.device.id or None, "registered": inp.device.registered},
            "Register this device with IT, or use a company device."), passed)

    if tier.approval_required:
        if inp.grant_expires_at is None or inp.grant_expires_at <= inp.now:
            return _refuse(Outcome.DENY, Reason(
                "approval_required",
                f"The {tier.name} tier needs an approved, time-boxed access request.",
                {"tier": tier.name}, "Request access with a short justification; an admin approves it."),
                passed)
        passed.append(Reason("approved_grant", "An approved access grant is active.",
                             {"expires_in": int(inp.grant_expires_at - inp.now)}))

    if inp.risk_score >= RISK_DENY:
        return _refuse(Outcome.DENY, Reason(
            "risk_too_high", "Unusual activity was detected on this session.",
            {"score": inp.risk_score, "signals": list(inp.risk_signals)},
            "Sign in again, or contact the security team."), passed)

    if resource.kind == "web" and tier.access_mode == "stream" and action.kind == "http" \
            and not inp.via_isolation:
        return _refuse(Outcome.ISOLATE, Reason(
            "isolation_required",
            f"The {tier.name} tier only allows this app inside an isolated desktop.",
            {"tier": tier.name}, "Open it from My apps as an isolated session."), passed)

    freshness = tier.mfa_freshness(action.action_class)
    if inp.risk_score >= RISK_STEP_UP:
        freshness = 0  # unusual activity: confirm this very action
    if freshness is not None:
        accepted = tier.factors_for(action.action_class)
        if freshness == 0:
            if not inp.one_time_mfa or (accepted and not inp.one_time_mfa_factors & accepted):
                return _refuse(Outcome.STEP_UP, _per_action_reason(action, accepted), passed)
            passed.append(Reason("mfa_one_time", "A one-time confirmation for this action was used.",
                                 {"action_class": str(action.action_class)}))
            return Decision(Outcome.ALLOW, tuple(passed), obligations_for(tier, action),
                            consumed_one_time_mfa=True)
        age = subject.mfa_age
        if age is None or age > freshness:
            return _refuse(Outcome.STEP_UP, _stale_reason(
                "mfa_stale", action, freshness, accepted,
                {"mfa_age": None if age is None else int(age)}), passed)
        if accepted and subject.mfa_factor not in accepted:
            return _refuse(Outcome.STEP_UP, _stale_reason(
                "mfa_factor_not_accepted", action, freshness, accepted,
                {"mfa_age": int(age), "used_factor": subject.mfa_factor}), passed)
        passed.append(Reason("mfa_fresh", f"Second factor confirmed {int(age)} s ago "
                             f"(limit {freshness} s).", {"mfa_age": int(age), "freshness": freshness}
                             | ({"factor": subject.mfa_factor, "accepted_factors": sorted(accepted)}
                                if accepted else {})))
    else:
        passed.append(Reason("mfa_not_needed",
                             f"The {tier.name} tier asks no fresh code for {action.action_class} actions.",
                             {"action_class": str(action.action_class)}))

    return Decision(Outcome.ALLOW, tuple(passed), obligations_for(tier, action))


def _factor_remedy(accepted: frozenset[str]) -> str:
    remedy = f"Confirm with {factor_words(accepted)}."
    if "passkey" in accepted:
        remedy += " No passkey yet? Add one under Security (/accounts/mfa/)."
    return remedy


def _per_action_reason(action: Action, accepted: frozenset[str]) -> Reason:
    """A confirmation of this very action is missing (or was made with a factor that does not count)."""
    values = {"action_class": str(action.action_class), "freshness": 0}
    if not accepted:
        return Reason("mfa_per_action",
                      f"This {action.action_class} action needs a fresh code for this action alone.",
                      values, "Enter a code from your authenticator app.")
    return Reason("mfa_per_action",
                  f"This {action.action_class} action needs a fresh confirmation for this action "
                  f"alone. Accepted here: {factor_words(accepted)}.",
                  values | {"accepted_factors": sorted(accepted)}, _factor_remedy(accepted))


def _stale_reason(rule: str, action: Action, freshness: int, accepted: frozenset[str],
                  seen: dict[str, object]) -> Reason:
    """No confirmation recent enough (``mfa_stale``), or only one by a factor that does not
    count here (``mfa_factor_not_accepted``); both read the same to the person."""
    values = {"action_class": str(action.action_class), "freshness": freshness} | seen
    if not accepted:
        return Reason(rule, f"This {action.action_class} action needs a code confirmed in the last "
                      f"{_human(freshness)}.", values, "Enter a code from your authenticator app.")
    return Reason(rule, f"This {action.action_class} action needs a confirmation in the last "
                  f"{_human(freshness)}. Accepted here: {factor_words(accepted)}.",
                  values | {"accepted_factors": sorted(accepted)}, _factor_remedy(accepted))


def _human(seconds: int) -> str:
    if seconds % 3600 == 0:
        return f"{seconds // 3600} h"
    if seconds % 60 == 0:
        return f"{seconds // 60} min"
    return f"{seconds} s"
