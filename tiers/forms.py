"""Forms of the tiers pages: admin filters and edits, the simulator, access requests."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from tiers.jit import DURATION_CHOICES, JUSTIFICATION_MAX, NOTE_MAX, requestable_by
from tiers.models import NetworkZone, Resource, Tier
from tiers.rules import TIER_RULES, Kind, TierRule, combination_problems, normal_factors
from tiers.types import FACTOR_WORDS, ActionClass, ActionKind

__all__ = [
    "REASON_MAX", "AcceptedFactorsField", "AccessRequestForm", "DecisionNoteForm",
    "RetagForm", "SimulatorForm", "TierForm", "TierRulesForm", "rule_form_field",
]

REASON_MAX = 500


def _reason_field() -> forms.CharField:
    return forms.CharField(
        label="Reason", max_length=REASON_MAX, required=False,
        widget=forms.TextInput(attrs={"placeholder": "Shown to the approving admin"}))


class RetagForm(forms.Form):
    """Move the selected resources to one tier."""

    resources = forms.ModelMultipleChoiceField(
        Resource.objects.all(), to_field_name="slug",
        error_messages={"required": "Select at least one resource to re-tag."})
    tier = forms.ModelChoiceField(Tier.objects.all(), to_field_name="name", label="Move selected to",
                                  empty_label="Choose a tier")
    reason = _reason_field()

    def __init__(self, *args: Any, lowering: Mapping[str, object] | None = None,
                 **kwargs: Any) -> None:
        """``lowering``: tier names a move to which lowers protection, marked in the choice."""
        super().__init__(*args, **kwargs)
        marked = lowering or {}
        self.fields["tier"].label_from_instance = lambda tier: (
            f"{tier.name} (lowers protection: needs a second admin's approval)"
            if tier.name in marked else tier.name)


class AcceptedFactorsField(forms.MultipleChoiceField):
    """``accepted_factors`` as ticks: one per action class and factor; a class with none ticked
    (or all) accepts any factor. Cleans to the one spelling of :func:`tiers.rules.normal_factors`."""

    widget = forms.CheckboxSelectMultiple

    def __init__(self, **kwargs: Any) -> None:
        choices = [(f"{c}:{f}", f"{c}: {FACTOR_WORDS[f]}") for c in ActionClass for f in FACTOR_WORDS]
        super().__init__(choices=choices, **kwargs)

    def to_python(self, value: Any) -> list[str]:
        if isinstance(value, Mapping):  # a catalog file's mapping, already read
            value = [f"{c}:{f}" for c, listed in value.items() for f in listed]
        return super().to_python(value)

    def prepare_value(self, value: Any) -> Any:
        if isinstance(value, Mapping):
            return [f"{c}:{f}" for c, listed in value.items() for f in listed]
        return value

    def clean(self, value: Any) -> dict[str, list[str]]:
        ticked = super().clean(value)
        chosen: dict[str, list[str]] = {}
        for token in ticked:
            action_class, _, factor = token.partition(":")
            chosen.setdefault(action_class, []).append(factor)
        return normal_factors(chosen)


def rule_form_field(rule: TierRule, zone_names: Iterable[str] = ()) -> forms.Field:
    """The form field of one rule of :data:`tiers.rules.TIER_RULES`."""
    common: dict[str, Any] = {"label": rule.label, "help_text": rule.help, "required": False}
    if rule.kind is Kind.ZONES:
        return forms.MultipleChoiceField(choices=[(z, z) for z in zone_names],
                                         widget=forms.CheckboxSelectMultiple, **common)
    if rule.kind is Kind.FACTORS:
        return AcceptedFactorsField(**common)
    if rule.kind is Kind.FLAG:
        return forms.BooleanField(**common)
    if rule.kind is Kind.TEXT:
        return forms.CharField(max_length=rule.max_length, **common)
    if rule.kind is Kind.CHOICE:
        words = ", ".join(value for value, _ in rule.choices)
        return forms.ChoiceField(choices=list(rule.choices), **common | {"required": True}, error_messages={
            "invalid_choice": f"'%(value)s' is not one of {words}"})
    between = f"must be between {rule.minimum} and {rule.maximum}, got %(value)s"
    label = f"{rule.label} (seconds)" if rule.kind is Kind.SECONDS else rule.label
    return forms.IntegerField(min_value=rule.minimum, max_value=rule.maximum,
                              **common | {"label": label, "required": not rule.nullable},
                              error_messages={"min_value": between, "max_value": between})


class TierRulesForm(forms.Form):
    """A tier's rules, one field per row of :data:`tiers.rules.TIER_RULES`: what the Manage page
    edits and what a catalog file's tier is checked with (:mod:`tiers.catalog`), so both refuse
    the same things in the same words. ``zone_names``: the networks that may be chosen."""

    def __init__(self, *args: Any, zone_names: Iterable[str] = (), **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        names = list(zone_names)
        for rule in TIER_RULES:
            self.fields[rule.name] = rule_form_field(rule, names)

    def clean(self) -> dict[str, Any]:
        cleaned = super().clean()
        if all(rule.name in cleaned for rule in TIER_RULES):
            for name, problem in combination_problems(cleaned).items():
                self.add_error(name, problem)
        return cleaned

    def wanted_state(self) -> dict[str, Any]:
        """The valid form as a tier state (see :func:`tiers.policy_changes.tier_state`)."""
        state = {rule.name: self.cleaned_data[rule.name] for rule in TIER_RULES}
        state["allowed_zones"] = sorted(state["allowed_zones"])
        return state


class TierForm(TierRulesForm):
    """A tier's rules on the Manage page, and why. The name is fixed here: catalogs in git
    refer to it."""

    def __init__(self, *args: Any, tier: Tier, **kwargs: Any) -> None:
        kwargs.setdefault("initial", tier.rule_values())
        super().__init__(*args, zone_names=NetworkZone.objects.values_list("name", flat=True), **kwargs)
        self.fields["reason"] = _reason_field()


class SimulatorForm(forms.Form):
    """A hypothetical request for the policy simulator."""

    user = forms.ModelChoiceField(get_user_model().objects.order_by("username"),
                                  to_field_name="username", empty_label="Choose a user")
    resource = forms.ModelChoiceField(Resource.objects.select_related("tier").order_by("name"),
                                      to_field_name="slug", empty_label="Choose a resource")
    action_kind = forms.ChoiceField(label="Action", choices=[
        (ActionKind.HTTP.value, "HTTP request to a web app (proxy)"),
        (ActionKind.DESKTOP_OPEN.value, "Open a desktop session")])
    action_class = forms.ChoiceField(label="Action class",
                                     choices=[(c.value, c.value) for c in ActionClass])
    zone = forms.ModelChoiceField(NetworkZone.objects.all(), to_field_name="name", required=False,
                                  label="Network zone", empty_label="internet (no zone)")
    client_address = forms.GenericIPAddressField(
        required=False, label="Or a client IP address",
        help_text="When given, its zone is looked up and the zone choice above is ignored.")
    mfa_age = forms.CharField(
        label="Last MFA, seconds ago", initial="0", max_length=10,
        help_text='A number of seconds, or "never".')
    has_grant = forms.BooleanField(required=False, label="Has an approved access grant")
    device_trusted = forms.BooleanField(required=False, label="From a trusted device")
    one_time_mfa = forms.BooleanField(required=False, label="A one-time code for this action is waiting")
    risk_score = forms.FloatField(min_value=0.0, max_value=1.0, initial=0.0, label="Risk score",
                                  help_text="0 = nothing unusual, 1 = certainly unusual.")

    def clean_mfa_age(self) -> int | None:
        value = self.cleaned_data["mfa_age"].strip().lower()
        if value in {"", "never"}:
            return None
        if not value.isdigit():
            raise forms.ValidationError('Enter a number of seconds, or "never".')
        return int(value)


class AccessRequestForm(forms.Form):
    """An employee asks for time-boxed access to a resource that needs approval."""

    resource = forms.ModelChoiceField(Resource.objects.none(), to_field_name="slug",
                                      empty_label="Choose a resource")
    justification = forms.CharField(
        max_length=JUSTIFICATION_MAX, widget=forms.Textarea(attrs={"rows": 3}),
        help_text="What you need to do, and why now. An approver reads this.")
    duration = forms.TypedChoiceField(coerce=int, choices=DURATION_CHOICES, initial=3600,
                                      label="For how long")

    def __init__(self, *args: Any, user: AbstractBaseUser, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fields["resource"].queryset = requestable_by(user).order_by("name")


class DecisionNoteForm(forms.Form):
    """The approver's note to the requester."""

    note = forms.CharField(max_length=NOTE_MAX, required=False,
                           widget=forms.TextInput(attrs={"placeholder": "Note to the requester"}))
