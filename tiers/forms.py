"""Forms of the tiers pages: admin filters and edits, the simulator, access requests."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from django import forms
from django.contrib.auth import get_user_model
from django.contrib.auth.base_user import AbstractBaseUser

from tiers.jit import DURATION_CHOICES, JUSTIFICATION_MAX, NOTE_MAX, requestable_by
from tiers.models import NetworkZone, Resource, ResourceKind, Tier
from tiers.types import ActionClass

__all__ = [
    "REASON_MAX", "AccessRequestForm", "DecisionNoteForm", "ResourceFilterForm", "RetagForm",
    "SimulatorForm", "TierForm",
]

REASON_MAX = 500


def _reason_field() -> forms.CharField:
    return forms.CharField(
        label="Reason", max_length=REASON_MAX, required=False,
        widget=forms.TextInput(attrs={"placeholder": "Shown to the approving admin"}))


class ResourceFilterForm(forms.Form):
    """Narrow the admin's resource list (GET)."""

    tier = forms.ModelChoiceField(Tier.objects.all(), to_field_name="name", required=False,
                                  label="Show tier", empty_label="All tiers")
    kind = forms.ChoiceField(choices=[("", "All kinds"), *ResourceKind.choices], required=False)
    q = forms.CharField(label="Name, slug or description", max_length=100, required=False,
                        widget=forms.TextInput(attrs={"placeholder": "e.g. wiki"}))


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


class TierForm(forms.ModelForm):
    """A tier's rules. The name is fixed here: catalogs in git refer to it."""

    reason = _reason_field()

    class Meta:
        model = Tier
        fields = [
            "description", "rank", "access_mode", "mfa_read", "mfa_write", "mfa_sensitive",
            "device_trust_required", "allowed_zones", "approval_required", "session_max_seconds",
            "idle_seconds", "reauth_interval_seconds", "clipboard_in", "clipboard_out", "file_transfer",
            "read_only", "recording", "watermark", "rate_limit_per_minute", "retention_days",
        ]
        widgets = {"allowed_zones": forms.CheckboxSelectMultiple}
        labels = {
            "mfa_read": "Fresh code for reading (seconds)",
            "mfa_write": "Fresh code for writing (seconds)",
            "mfa_sensitive": "Fresh code for sensitive actions (seconds)",
            "device_trust_required": "Only from a trusted device",
            "allowed_zones": "Allowed networks",
            "approval_required": "Approval before access",
            "session_max_seconds": "Longest session (seconds)",
            "idle_seconds": "Idle time before a session ends (seconds)",
            "reauth_interval_seconds": "Re-decide a live session every (seconds)",
            "clipboard_in": "Paste into the session",
            "clipboard_out": "Copy out of the session",
            "rate_limit_per_minute": "Rate limit (requests per minute)",
        }

    def wanted_state(self) -> dict[str, Any]:
        """The valid form as a tier state (see :func:`tiers.policy_changes.tier_state`)."""
        state = {name: self.cleaned_data[name] for name in self.Meta.fields if name != "allowed_zones"}
        state["allowed_zones"] = sorted(z.name for z in self.cleaned_data["allowed_zones"])
        return state


class SimulatorForm(forms.Form):
    """A hypothetical request for the policy simulator."""

    user = forms.ModelChoiceField(get_user_model().objects.order_by("username"),
                                  to_field_name="username", empty_label="Choose a user")
    resource = forms.ModelChoiceField(Resource.objects.select_related("tier").order_by("name"),
                                      to_field_name="slug", empty_label="Choose a resource")
    action_kind = forms.ChoiceField(label="Action", choices=[
        ("http", "HTTP request to a web app (proxy)"), ("desktop.open", "Open a desktop session")])
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
